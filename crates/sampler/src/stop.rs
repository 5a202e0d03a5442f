//! Stop strings over streamed text: text that might be the start of a stop string is held back
//! until it is certain either way, so a reader never sees any part of a stop string. Used by
//! the command line's `generate`/`chat` and by the server.

/// A stop string found in the text: which one, and the text that came after it in the same
/// push (not shown; `chat` keeps it to know where a turn really ended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopHit {
    pub stop: String,
    pub after: String,
}

/// Finds stop strings in text that arrives in pieces.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not shown yet: a suffix that is a prefix of some stop string.
    pending: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Adds text; returns the text that is safe to show and, when a stop string matched, the
    /// hit (the shown text then ends right before the stop string).
    pub fn push(&mut self, text: &str) -> (String, Option<StopHit>) {
        self.pending.push_str(text);
        // The earliest match wins; at one position, the longest stop string.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|&(at, s)| (at, std::cmp::Reverse(s.len())));
        if let Some((at, s)) = hit {
            let hit = StopHit {
                stop: s.clone(),
                after: self.pending[at + s.len()..].to_string(),
            };
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, Some(hit));
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let len = self.pending.len();
        let mut keep = 0;
        for s in &self.stops {
            for k in (keep + 1..s.len().min(len + 1)).rev() {
                let start = len - k;
                if self.pending.is_char_boundary(start) && s.starts_with(&self.pending[start..]) {
                    keep = k;
                    break;
                }
            }
        }
        let out = self.pending[..len - keep].to_string();
        self.pending.drain(..len - keep);
        (out, None)
    }

    /// Whatever is still held back (shown when generation ends without a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(stop: &str, after: &str) -> Option<StopHit> {
        Some(StopHit {
            stop: stop.into(),
            after: after.into(),
        })
    }

    #[test]
    fn held_back_and_cut() {
        let mut m = StopMatcher::new(vec!["\n\nUser:".into()]);
        assert_eq!(m.push("Hello"), ("Hello".into(), None));
        assert_eq!(m.push(" there\n"), (" there".into(), None));
        assert_eq!(m.push("\nUs"), ("".into(), None));
        assert_eq!(m.push("er: hi"), ("".into(), hit("\n\nUser:", " hi")));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("xEN"), ("x".into(), None));
        assert_eq!(m.push("Dy"), ("".into(), hit("END", "y")));
        let mut m = StopMatcher::new(vec!["ab".into()]);
        assert_eq!(m.push("a"), ("".into(), None));
        assert_eq!(m.push("c"), ("ac".into(), None));
        assert_eq!(m.finish(), "");
        let mut m = StopMatcher::new(vec!["你好".into()]);
        assert_eq!(m.push("说你"), ("说".into(), None));
        assert_eq!(m.finish(), "你");
    }

    #[test]
    fn earliest_of_several_and_empty_ignored() {
        let mut m = StopMatcher::new(vec!["".into(), "cd".into(), "b".into()]);
        assert_eq!(m.push("abcd"), ("a".into(), hit("b", "cd")));
        let mut m = StopMatcher::new(vec!["xyz".into(), "xy".into()]);
        assert_eq!(m.push("0xyz"), ("0".into(), hit("xyz", "")));
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("anything"), ("anything".into(), None));
    }
}
