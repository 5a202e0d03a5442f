//! The prefix state cache: RWKV's whole history is its state, so the state after a prompt
//! prefix (a system prompt, the earlier turns of a chat) stands in for re-reading that prefix.
//!
//! States are kept in host memory (read back from the engine after the prefix was fed, written
//! into a slot when a request starts with that prefix), keyed by the prefix's token ids,
//! bounded by bytes and evicted least recently used first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rwkv_model::State;

struct Entry {
    state: Arc<State>,
    bytes: u64,
    last_used: u64,
}

/// Token-prefix → state, least recently used out first.
pub struct PrefixCache {
    capacity: u64,
    bytes: u64,
    clock: u64,
    entries: HashMap<Vec<u32>, Entry>,
    /// How many entries have a key of each length (lookups try the longest first).
    lengths: BTreeMap<usize, usize>,
}

/// Bytes a state takes in the cache.
pub fn state_bytes(state: &State) -> u64 {
    state
        .layers
        .iter()
        .map(|l| (l.att_shift.len() + l.ffn_shift.len() + l.wkv.len()) as u64 * 4)
        .sum()
}

impl PrefixCache {
    /// A cache holding at most `capacity` bytes of states (0: caching off).
    pub fn new(capacity: u64) -> PrefixCache {
        PrefixCache {
            capacity,
            bytes: 0,
            clock: 0,
            entries: HashMap::new(),
            lengths: BTreeMap::new(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, tokens: &[u32]) -> bool {
        self.entries.contains_key(tokens)
    }

    /// The longest cached prefix of `tokens` of at most `max_len` tokens: its length and state.
    /// Marks it as used.
    pub fn lookup(&mut self, tokens: &[u32], max_len: usize) -> Option<(usize, Arc<State>)> {
        let max_len = max_len.min(tokens.len());
        if max_len == 0 {
            return None;
        }
        let lengths: Vec<usize> = self
            .lengths
            .range(1..=max_len)
            .rev()
            .map(|(&l, _)| l)
            .collect();
        for len in lengths {
            if let Some(e) = self.entries.get_mut(&tokens[..len]) {
                self.clock += 1;
                e.last_used = self.clock;
                return Some((len, e.state.clone()));
            }
        }
        None
    }

    /// Caches the state after `tokens`; returns how many entries were evicted to make room.
    /// A state larger than the whole cache is not kept.
    pub fn insert(&mut self, tokens: Vec<u32>, state: State) -> usize {
        let bytes = state_bytes(&state) + tokens.len() as u64 * 4;
        if tokens.is_empty() || bytes > self.capacity {
            return 0;
        }
        self.clock += 1;
        if let Some(e) = self.entries.get_mut(&tokens) {
            e.last_used = self.clock;
            return 0;
        }
        let mut evicted = 0;
        while self.bytes + bytes > self.capacity {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&oldest);
            evicted += 1;
        }
        self.bytes += bytes;
        *self.lengths.entry(tokens.len()).or_default() += 1;
        self.entries.insert(
            tokens,
            Entry {
                state: Arc::new(state),
                bytes,
                last_used: self.clock,
            },
        );
        evicted
    }

    fn remove(&mut self, key: &[u32]) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.bytes;
            if let Some(n) = self.lengths.get_mut(&key.len()) {
                *n -= 1;
                if *n == 0 {
                    self.lengths.remove(&key.len());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rwkv_model::LayerState;

    fn state(v: f32) -> State {
        State {
            layers: vec![LayerState {
                att_shift: vec![v; 4],
                ffn_shift: vec![v; 4],
                wkv: vec![v; 8],
            }],
        }
    }

    #[test]
    fn longest_prefix_within_limit() {
        let mut c = PrefixCache::new(1 << 20);
        c.insert(vec![1, 2], state(1.0));
        c.insert(vec![1, 2, 3, 4], state(2.0));
        c.insert(vec![9], state(3.0));
        let (len, s) = c.lookup(&[1, 2, 3, 4, 5], 10).unwrap();
        assert_eq!((len, s.layers[0].wkv[0]), (4, 2.0));
        // The prompt's last token must be fed, so a full-length match is not allowed.
        let (len, _) = c.lookup(&[1, 2, 3, 4], 3).unwrap();
        assert_eq!(len, 2);
        assert!(c.lookup(&[2, 1], 2).is_none());
        assert!(c.lookup(&[1, 3], 2).is_none());
    }

    #[test]
    fn bounded_by_bytes_least_recently_used_out() {
        let one = state_bytes(&state(0.0)) + 4;
        let mut c = PrefixCache::new(3 * one);
        for t in 0..3 {
            assert_eq!(c.insert(vec![t], state(t as f32)), 0);
        }
        assert_eq!((c.len(), c.bytes()), (3, 3 * one));
        // Use 0, so 1 is now the oldest.
        assert!(c.lookup(&[0, 5], 1).is_some());
        assert_eq!(c.insert(vec![7], state(7.0)), 1);
        assert!(!c.contains(&[1]));
        assert!(c.contains(&[0]) && c.contains(&[2]) && c.contains(&[7]));
        assert_eq!(c.bytes(), 3 * one);
        // Too big for the cache: not kept.
        let mut small = PrefixCache::new(one - 1);
        small.insert(vec![1], state(0.0));
        assert!(small.is_empty());
    }
}
