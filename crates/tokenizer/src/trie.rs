//! A byte trie stored as a double array, for greedy longest-match encoding.
//!
//! Every trie node is a slot in one array of [`Unit`]s. The child of node `s` for byte `c` lives at
//! slot `units[s].base ^ c` and is valid only if that slot's `check` is `s`. A transition is
//! therefore one load and one compare, and the children of a node share one 256-slot block (XOR
//! only changes the low 8 bits), which keeps walks cache-friendly. This is the layout of
//! darts-clone / cedar, with an explicit parent `check` so that nodes may share a `base`.
//!
//! Building places nodes depth-first from the sorted keys; each node's children take the first
//! base whose slots are all free, searched over a window of the last [`OPEN_BLOCKS`] blocks (older
//! blocks are closed, leaving their few free slots unused), which bounds the build time.

/// No value / no parent / unused.
const NONE: u32 = u32::MAX;
const BLOCK: usize = 256;
/// How many of the newest blocks are searched for free slots.
const OPEN_BLOCKS: usize = 16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Unit {
    /// Children of this node are at `base ^ byte`.
    base: u32,
    /// The parent slot, or [`NONE`] for an unused slot (and the root).
    check: u32,
    /// The token id ending at this node, or [`NONE`].
    value: u32,
}

const UNUSED: Unit = Unit {
    base: 0,
    check: NONE,
    value: NONE,
};

#[derive(Clone, Debug)]
pub(crate) struct DoubleArray {
    units: Vec<Unit>,
}

impl DoubleArray {
    /// Builds the trie from `(key, id)` pairs. Keys must be non-empty. For duplicate keys the
    /// largest id wins (as in the RWKV reference, whose `token2idx` dict keeps the last id).
    pub(crate) fn build(mut keys: Vec<(&[u8], u32)>) -> DoubleArray {
        keys.sort_unstable();
        debug_assert!(keys.iter().all(|(k, _)| !k.is_empty()));
        let mut b = Builder::new();
        b.build_node(0, &keys, 0);
        let mut units = b.units;
        // Every slot a walk can reach is inside a whole block (XOR keeps it in its base's block),
        // so the array stays a whole number of blocks; shrink only the spare capacity.
        units.shrink_to_fit();
        DoubleArray { units }
    }

    /// Number of slots (used or not), for diagnostics.
    pub(crate) fn slots(&self) -> usize {
        self.units.len()
    }

    /// The longest key that is a prefix of `text`: `(id, length)`, or `None` if no key matches.
    #[inline]
    pub(crate) fn longest_prefix(&self, text: &[u8]) -> Option<(u32, usize)> {
        let units = &self.units[..];
        let mut s = 0usize;
        let mut best_id = NONE;
        let mut best_len = 0usize;
        for (i, &c) in text.iter().enumerate() {
            let t = (units[s].base ^ c as u32) as usize;
            // `t` is always inside the array: it lies in the block of `base`, and every base
            // in use points into an allocated block (unused slots have base 0 → block 0).
            let u = units[t];
            if u.check != s as u32 {
                break;
            }
            s = t;
            if u.value != NONE {
                best_id = u.value;
                best_len = i + 1;
            }
        }
        (best_id != NONE).then_some((best_id, best_len))
    }
}

struct Builder {
    units: Vec<Unit>,
    used: Vec<bool>,
    /// Doubly linked list of free slots in the open blocks, in increasing slot order.
    next_free: Vec<u32>,
    prev_free: Vec<u32>,
    head: u32,
    tail: u32,
    /// First block still open for placing children.
    open_from: usize,
}

impl Builder {
    fn new() -> Builder {
        let mut b = Builder {
            units: Vec::new(),
            used: Vec::new(),
            next_free: Vec::new(),
            prev_free: Vec::new(),
            head: NONE,
            tail: NONE,
            open_from: 0,
        };
        b.add_block();
        b.take(0); // the root
        b
    }

    /// Appends a block of free slots; returns its first slot.
    fn add_block(&mut self) -> usize {
        let start = self.units.len();
        let end = start + BLOCK;
        assert!(end < NONE as usize, "token trie too large");
        self.units.resize(end, UNUSED);
        self.used.resize(end, false);
        self.next_free.resize(end, NONE);
        self.prev_free.resize(end, NONE);
        for s in start..end {
            let s = s as u32;
            self.prev_free[s as usize] = self.tail;
            if self.tail == NONE {
                self.head = s;
            } else {
                self.next_free[self.tail as usize] = s;
            }
            self.tail = s;
        }
        let blocks = end / BLOCK;
        while blocks - self.open_from > OPEN_BLOCKS {
            let from = self.open_from * BLOCK;
            for s in from..from + BLOCK {
                if !self.used[s] {
                    self.unlink(s);
                }
            }
            self.open_from += 1;
        }
        start
    }

    fn unlink(&mut self, s: usize) {
        let (p, n) = (self.prev_free[s], self.next_free[s]);
        if p == NONE {
            self.head = n;
        } else {
            self.next_free[p as usize] = n;
        }
        if n == NONE {
            self.tail = p;
        } else {
            self.prev_free[n as usize] = p;
        }
    }

    fn take(&mut self, s: usize) {
        debug_assert!(!self.used[s]);
        self.used[s] = true;
        self.unlink(s);
    }

    /// A base whose slots for all `labels` (sorted, distinct, non-empty) are free.
    fn find_base(&mut self, labels: &[u8]) -> u32 {
        let first = labels[0] as u32;
        let mut f = self.head;
        while f != NONE {
            let base = f ^ first;
            if labels[1..]
                .iter()
                .all(|&c| !self.used[(base ^ c as u32) as usize])
            {
                return base;
            }
            f = self.next_free[f as usize];
        }
        let start = self.add_block() as u32;
        start ^ first
    }

    /// Places the children of `node`, whose keys (sorted) all share their first `depth` bytes.
    fn build_node(&mut self, node: usize, keys: &[(&[u8], u32)], depth: usize) {
        let mut lo = 0;
        while lo < keys.len() && keys[lo].0.len() == depth {
            self.units[node].value = keys[lo].1;
            lo += 1;
        }
        let keys = &keys[lo..];
        if keys.is_empty() {
            return;
        }
        let mut labels = Vec::new();
        let mut starts = Vec::new();
        for (i, (k, _)) in keys.iter().enumerate() {
            if labels.last() != Some(&k[depth]) {
                labels.push(k[depth]);
                starts.push(i);
            }
        }
        starts.push(keys.len());
        let base = self.find_base(&labels);
        self.units[node].base = base;
        for &c in &labels {
            let t = (base ^ c as u32) as usize;
            self.take(t);
            self.units[t].check = node as u32;
        }
        for (j, &c) in labels.iter().enumerate() {
            let t = (base ^ c as u32) as usize;
            self.build_node(t, &keys[starts[j]..starts[j + 1]], depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_longest_prefix() {
        let keys: Vec<(&[u8], u32)> = vec![
            (b"a", 1),
            (b"ab", 2),
            (b"abcd", 3),
            (b"b", 4),
            (b"\xff\x00", 5),
        ];
        let da = DoubleArray::build(keys);
        assert_eq!(da.longest_prefix(b"abc"), Some((2, 2)));
        assert_eq!(da.longest_prefix(b"abcd"), Some((3, 4)));
        assert_eq!(da.longest_prefix(b"abcde"), Some((3, 4)));
        assert_eq!(da.longest_prefix(b"a"), Some((1, 1)));
        assert_eq!(da.longest_prefix(b"ba"), Some((4, 1)));
        assert_eq!(da.longest_prefix(b"c"), None);
        assert_eq!(da.longest_prefix(b""), None);
        assert_eq!(da.longest_prefix(b"\xff"), None);
        assert_eq!(da.longest_prefix(b"\xff\x00\x01"), Some((5, 2)));
    }

    #[test]
    fn duplicate_keys_keep_the_largest_id() {
        let da = DoubleArray::build(vec![(b"x", 7), (b"x", 3), (b"x", 5)]);
        assert_eq!(da.longest_prefix(b"x"), Some((7, 1)));
    }

    #[test]
    fn many_keys_round_trip() {
        // Enough keys to open and close many blocks.
        let owned: Vec<Vec<u8>> = (0u32..20000)
            .map(|i| {
                let x = i.wrapping_mul(2654435761);
                let len = 1 + (x % 5) as usize;
                (0..len).map(|j| (x >> (j * 5)) as u8).collect()
            })
            .collect();
        let keys: Vec<(&[u8], u32)> = owned
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_slice(), i as u32))
            .collect();
        let da = DoubleArray::build(keys);
        for (i, k) in owned.iter().enumerate() {
            let (id, len) = da.longest_prefix(k).expect("key must be found");
            assert_eq!(len, k.len());
            // Duplicates resolve to the largest id with those bytes.
            let last = owned.iter().rposition(|o| o == k).unwrap();
            assert_eq!(id as usize, last.max(i));
        }
    }
}
