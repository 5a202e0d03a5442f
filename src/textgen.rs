//! Text generation on one engine slot: prefill a prompt, then sample, stream and feed back
//! tokens until a stop condition. Sampling runs on the GPU; only token ids come back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rwkv_engine::{Engine, Logits, Rollback, SampleTicket, SlotInput};
use rwkv_sampler::StopMatcher;
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

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::MaxTokens => write!(f, "max tokens"),
            StopReason::StopString(s) => write!(f, "stop string {s:?}"),
            StopReason::EndOfText => write!(f, "end of text"),
            StopReason::Interrupted => write!(f, "interrupted"),
        }
    }
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
            self.stop
        )
    }
}

/// Feeds `tokens` into `slot` without sampling (the state advances, no logits are computed).
pub fn advance(engine: &mut Engine, slot: usize, tokens: &[u32]) -> Result<()> {
    engine.step(&[SlotInput {
        slot,
        tokens,
        logits: Logits::None,
    }])?;
    Ok(())
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

/// What [`generate`] did.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The generated token ids (each shown, up to the stop string's end).
    pub tokens: Vec<u32>,
    /// Time spent in decode steps.
    pub decode: Duration,
    pub stop: StopReason,
    /// With a stop string: the text generated after it, not shown.
    pub after_stop: String,
}

/// Generates from `first` (sampled after the prompt) on `slot`, streaming text to `out`.
///
/// Each step is submitted before the previous one's token is read, the token fed from the
/// GPU ([`Engine::submit_sample_chained`]): the GPU never waits for the CPU between tokens
/// (on an H200, 2.9B Q4_K_M decodes at 366-372 tok/s that way against 320-335 one step at a
/// time). A stop is then seen one step late, when the slot has fed one token more than it
/// keeps and drawn one more. Without `feed_last` the slot is not used afterwards. With it
/// (chat keeps the state), an [`Engine::checkpoint`] before each such step lets the end
/// undo it: all of it at an end of text or an interruption (the token was not shown), the
/// draw only at a stop string (the token was shown, so it stays fed).
pub fn generate(
    engine: &mut Engine,
    tokenizer: &Tokenizer,
    slot: usize,
    first: u32,
    g: &Generation,
    out: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<Generated> {
    let mut decoder = tokenizer.stream_decoder();
    let mut stops = StopMatcher::new(g.stop.clone());
    let mut next = first;
    let mut tokens = Vec::new();
    let mut decode = Duration::ZERO;
    // The submitted step that feeds `next` (and samples the token after it), if any.
    let mut pending: Option<SampleTicket> = None;
    let stop = loop {
        if g.interrupt.load(Ordering::Relaxed) {
            break StopReason::Interrupted;
        }
        if tokens.len() >= g.max_tokens {
            break StopReason::MaxTokens;
        }
        if next == END_OF_TEXT {
            break StopReason::EndOfText;
        }
        tokens.push(next);
        let (text, hit) = stops.push(&decoder.push(next)?);
        out(&text)?;
        let last = hit.is_some() || tokens.len() >= g.max_tokens;
        if last {
            let t = Instant::now();
            match (g.feed_last, pending.take()) {
                // The step feeding the token ran: only its draw is undone.
                (true, Some(ticket)) => {
                    engine.wait_sampled(ticket)?;
                    engine.rollback(Rollback::Sampling)?;
                }
                // Nothing more is sampled: the token is fed only to keep the state whole.
                (true, None) => advance(engine, slot, &[next])?,
                (false, ticket) => finish(engine, ticket)?,
            }
            decode += t.elapsed();
            if let Some(hit) = hit {
                return Ok(Generated {
                    tokens,
                    decode,
                    stop: StopReason::StopString(hit.stop),
                    after_stop: hit.after,
                });
            }
            break StopReason::MaxTokens;
        }
        let t = Instant::now();
        // The token after the one this step samples is wanted unless that one is the last
        // allowed.
        let more = tokens.len() + 1 < g.max_tokens;
        next = chained_next(engine, slot, next, &mut pending, more, g.feed_last)?;
        decode += t.elapsed();
    };
    // Stopped before showing `next`: the step that fed it is undone where the state is kept.
    if let Some(ticket) = pending {
        let t = Instant::now();
        engine.wait_sampled(ticket)?;
        if g.feed_last {
            engine.rollback(Rollback::All)?;
        }
        decode += t.elapsed();
    }
    let mut rest = stops.finish();
    rest.push_str(&decoder.finish());
    out(&rest)?;
    Ok(Generated {
        tokens,
        decode,
        stop,
        after_stop: String::new(),
    })
}

/// The token sampled after `next` (see [`generate`]): the step feeding `next` is
/// `pending`'s, or submitted now; with `more`, the step after it is submitted (into
/// `pending`) before this one's token is read, after a checkpoint of the slot with
/// `checkpoint`.
fn chained_next(
    engine: &mut Engine,
    slot: usize,
    next: u32,
    pending: &mut Option<SampleTicket>,
    more: bool,
    checkpoint: bool,
) -> Result<u32> {
    let current = match pending.take() {
        Some(ticket) => ticket,
        None => engine.submit_sample(&[SlotInput {
            slot,
            tokens: &[next],
            logits: Logits::Last,
        }])?,
    };
    if more {
        if checkpoint {
            engine.checkpoint(slot)?;
        }
        *pending = Some(engine.submit_sample_chained(&current)?);
    }
    match engine.wait_sampled(current)?.first() {
        Some(&t) => Ok(t),
        None => bail!("the engine returned no sampled token"),
    }
}

/// Lets a step submitted past the stop finish (its token is not kept).
fn finish(engine: &mut Engine, pending: Option<SampleTicket>) -> Result<()> {
    if let Some(ticket) = pending {
        engine.wait_sampled(ticket)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rwkv_engine::{EngineOptions, SamplingParams};
    use std::sync::Arc;

    /// The tiny fixture model on the default adapter (lavapipe in CI), two slots.
    fn engine() -> (Engine, Tokenizer) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/mini-q4_k_m.gguf"
        );
        let file = gguf::GgufFile::open(path).expect("the fixture model");
        let tokenizer = Tokenizer::from_gguf(&file).unwrap();
        let ctx = rwkv_gpu::GpuContext::new(&rwkv_gpu::ContextOptions { adapter: None })
            .expect("a GPU adapter (CI installs lavapipe)");
        let options = EngineOptions {
            max_slots: 2,
            max_rows: 64,
            max_out: 2,
            ..EngineOptions::default()
        };
        let engine = Engine::load(Arc::new(ctx), &file, options, &mut |_, _| {}).unwrap();
        (engine, tokenizer)
    }

    /// With `feed_last`, a generation that ends with the chained step after its last shown
    /// token already submitted leaves the slot as if it had stepped one token at a time:
    /// the state holds the prompt and the shown tokens, the sampler has drawn once per shown
    /// token (and once more for the token an interruption hid). Slot 1 builds that one step
    /// at a time.
    #[test]
    fn feed_last_leaves_the_state_of_the_shown_tokens() {
        let (mut engine, tokenizer) = engine();
        let params = SamplingParams {
            presence_penalty: 0.3,
            frequency_penalty: 0.3,
            seed: 9,
            ..SamplingParams::default()
        };
        let prompt = tokenizer.encode(b"The sea was calm and");
        let never = AtomicBool::new(false);
        let start = |engine: &mut Engine| {
            for slot in 0..2 {
                engine.reset(slot).unwrap();
                engine.set_sampling(slot, &params).unwrap();
                engine.reset_sampling(slot).unwrap();
            }
            feed(engine, 0, &prompt).unwrap()
        };
        // A free run gives the text; its third token's text becomes the stop string.
        let first = start(&mut engine);
        let free = Generation {
            max_tokens: 12,
            stop: Vec::new(),
            feed_last: true,
            interrupt: &never,
        };
        let all = generate(&mut engine, &tokenizer, 0, first, &free, &mut |_| Ok(())).unwrap();
        assert_eq!(all.tokens.len(), 12, "{:?}", all.stop);
        let third =
            String::from_utf8_lossy(&tokenizer.decode(&all.tokens[2..3]).unwrap()).to_string();
        assert!(!third.is_empty());

        let interrupt = AtomicBool::new(false);
        let cases = [
            ("stop string", vec![third], &never, 12),
            ("interrupted", Vec::new(), &interrupt, 12),
        ];
        for (name, stop, flag, max_tokens) in cases {
            interrupt.store(false, Ordering::Relaxed);
            let first = start(&mut engine);
            let g = Generation {
                max_tokens,
                stop,
                feed_last: true,
                interrupt: flag,
            };
            let mut shown = 0;
            let got = generate(&mut engine, &tokenizer, 0, first, &g, &mut |t| {
                shown += usize::from(!t.is_empty());
                if shown == 4 {
                    interrupt.store(true, Ordering::Relaxed);
                }
                Ok(())
            })
            .unwrap();
            let want_stop = match name {
                "stop string" => matches!(got.stop, StopReason::StopString(_)),
                _ => got.stop == StopReason::Interrupted,
            };
            assert!(want_stop, "{name}: {:?}", got.stop);
            let k = got.tokens.len();
            assert!((1..12).contains(&k), "{name}: {k} tokens, {:?}", got.stop);
            // Slot 1: the prompt, then each shown token with a draw; at a stop string the
            // last one without.
            let mut t = feed(&mut engine, 1, &prompt).unwrap();
            for (n, &shown) in got.tokens.iter().enumerate() {
                assert_eq!(t, shown, "{name}: token {n}");
                match got.stop {
                    StopReason::StopString(_) if n + 1 == k => {
                        advance(&mut engine, 1, &[shown]).unwrap()
                    }
                    _ => t = feed(&mut engine, 1, &[shown]).unwrap(),
                }
            }
            assert!(
                engine.read_state(0).unwrap() == engine.read_state(1).unwrap(),
                "{name}: state"
            );
            let sampler = engine.sampler().unwrap();
            assert_eq!(
                sampler.counter(0).unwrap(),
                sampler.counter(1).unwrap(),
                "{name}"
            );
            assert_eq!(
                sampler.counts(0).unwrap(),
                sampler.counts(1).unwrap(),
                "{name}"
            );
        }
    }
}
