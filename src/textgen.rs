//! Text generation on one engine slot: prefill a prompt, then sample, stream and feed back
//! tokens until a stop condition. Sampling runs on the GPU; only token ids come back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rwkv_engine::{Engine, Logits, SlotInput};
use rwkv_tokenizer::Tokenizer;

/// RWKV's end-of-text token (stored as `<s>` in GGUF files).
pub const END_OF_TEXT: u32 = 0;

/// Why generation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    StopString(String),
    EndOfText,
    Interrupted,
}

/// What a generation did, for the summary line.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prefill: Duration,
    pub generated: usize,
    pub decode: Duration,
    pub stop: StopReason,
}

impl GenerationStats {
    pub fn summary(&self) -> String {
        let rate = |n: usize, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            }
        };
        format!(
            "prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | stop: {}",
            self.prompt_tokens,
            rate(self.prompt_tokens, self.prefill),
            self.generated,
            // The first generated token comes from the prefill; the rest from decode steps.
            rate(self.generated.saturating_sub(1), self.decode),
            match &self.stop {
                StopReason::MaxTokens => "max tokens".to_string(),
                StopReason::StopString(s) => format!("stop string {s:?}"),
                StopReason::EndOfText => "end of text".to_string(),
                StopReason::Interrupted => "interrupted".to_string(),
            }
        )
    }
}

/// Holds back streamed text that might be the start of a stop string.
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Adds text; returns the text that is safe to show, and the stop string if one matched
    /// (the text after it is dropped).
    pub fn push(&mut self, text: &str) -> (String, Option<String>) {
        self.pending.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|i| (i, s)))
            .min_by_key(|(i, _)| *i);
        if let Some((i, s)) = first {
            let out = self.pending[..i].to_string();
            let stop = s.clone();
            self.pending.clear();
            return (out, Some(stop));
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if self.pending.ends_with(&s[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, None)
    }

    /// Whatever is still held back (shown when generation ends without a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Feeds `tokens` into `slot` and returns the token sampled after the last one.
pub fn feed(engine: &mut Engine, slot: usize, tokens: &[u32]) -> Result<u32> {
    if tokens.is_empty() {
        bail!("nothing to feed: the text encodes to no tokens");
    }
    let out = engine.step_sample(&[SlotInput {
        slot,
        tokens,
        logits: Logits::Last,
    }])?;
    match out.first().copied().flatten() {
        Some(t) => Ok(t),
        None => bail!("the engine returned no sampled token"),
    }
}

/// Options of one generation.
pub struct Generation<'a> {
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Feed the last generated token too, so the slot's state holds everything shown
    /// (chat keeps going from it).
    pub feed_last: bool,
    pub interrupt: &'a AtomicBool,
}

/// Generates from `first` (sampled after the prompt) on `slot`, streaming text to `out`.
pub fn generate(
    engine: &mut Engine,
    tokenizer: &Tokenizer,
    slot: usize,
    first: u32,
    g: &Generation,
    out: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<(usize, Duration, StopReason)> {
    let mut decoder = tokenizer.stream_decoder();
    let mut stops = StopMatcher::new(g.stop.clone());
    let mut next = first;
    let mut generated = 0;
    let mut decode = Duration::ZERO;
    let stop = loop {
        if g.interrupt.load(Ordering::Relaxed) {
            break StopReason::Interrupted;
        }
        if generated >= g.max_tokens {
            break StopReason::MaxTokens;
        }
        if next == END_OF_TEXT {
            break StopReason::EndOfText;
        }
        generated += 1;
        let (text, hit) = stops.push(&decoder.push(next)?);
        out(&text)?;
        if let Some(s) = hit {
            if g.feed_last {
                let t = Instant::now();
                feed(engine, slot, &[next])?;
                decode += t.elapsed();
            }
            return Ok((generated, decode, StopReason::StopString(s)));
        }
        if generated >= g.max_tokens && !g.feed_last {
            break StopReason::MaxTokens;
        }
        let t = Instant::now();
        next = feed(engine, slot, &[next])?;
        decode += t.elapsed();
    };
    let mut rest = decoder.finish();
    rest.insert_str(0, &stops.finish());
    out(&rest)?;
    Ok((generated, decode, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let mut m = StopMatcher::new(vec!["\n\nUser:".into()]);
        assert_eq!(m.push("Hello"), ("Hello".into(), None));
        assert_eq!(m.push(" there\n"), (" there".into(), None));
        assert_eq!(m.push("\nUs"), ("".into(), None));
        assert_eq!(m.push("er: hi"), ("".into(), Some("\n\nUser:".into())));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("xEN"), ("x".into(), None));
        assert_eq!(m.push("Dy"), ("".into(), Some("END".into())));
        let mut m = StopMatcher::new(vec!["ab".into()]);
        assert_eq!(m.push("a"), ("".into(), None));
        assert_eq!(m.push("c"), ("ac".into(), None));
        assert_eq!(m.finish(), "");
        let mut m = StopMatcher::new(vec!["你好".into()]);
        assert_eq!(m.push("说你"), ("说".into(), None));
        assert_eq!(m.finish(), "你");
    }
}
