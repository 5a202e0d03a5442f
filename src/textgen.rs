//! Text generation on one engine slot: prefill a prompt, then sample, stream and feed back
//! tokens until a stop condition. Sampling runs on the GPU; only token ids come back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rwkv_engine::{Engine, Logits, SampleTicket, SlotInput};
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
/// Without `feed_last` (the state is not kept afterwards) each step is submitted before the
/// previous one's token is read, the token fed from the GPU ([`Engine::submit_sample_chained`]):
/// the GPU never waits for the CPU between tokens (on an H200, 2.9B Q4_K_M decodes at 366-372
/// tok/s that way against 320-335 one step at a time). A stop is then seen one step late,
/// so the slot has fed one token more than it kept; with `feed_last` (chat, which keeps
/// the state) the steps run one at a time.
pub fn generate(
    engine: &mut Engine,
    tokenizer: &Tokenizer,
    slot: usize,
    first: u32,
    g: &Generation,
    out: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<Generated> {
    let chained = !g.feed_last;
    let mut decoder = tokenizer.stream_decoder();
    let mut stops = StopMatcher::new(g.stop.clone());
    let mut next = first;
    let mut tokens = Vec::new();
    let mut decode = Duration::ZERO;
    // Chained: the submitted step that feeds `next` (and samples the token after it).
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
            // Nothing more will be sampled: feed the token only to keep the state whole.
            if g.feed_last {
                let t = Instant::now();
                advance(engine, slot, &[next])?;
                decode += t.elapsed();
            }
            finish_pending(engine, pending.take(), &mut decode)?;
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
        next = match chained {
            // The token after the one this step samples is wanted unless that one is the
            // last allowed.
            true => chained_next(
                engine,
                slot,
                next,
                &mut pending,
                tokens.len() + 1 < g.max_tokens,
            )?,
            false => feed(engine, slot, &[next])?,
        };
        decode += t.elapsed();
    };
    finish_pending(engine, pending, &mut decode)?;
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

/// The token sampled after `next` with chained steps (see [`generate`]): the step feeding
/// `next` is `pending`'s, or submitted now; with `more`, the step after it is submitted
/// (into `pending`) before this one's token is read.
fn chained_next(
    engine: &mut Engine,
    slot: usize,
    next: u32,
    pending: &mut Option<SampleTicket>,
    more: bool,
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
        *pending = Some(engine.submit_sample_chained(&current)?);
    }
    match engine.wait_sampled(current)?.first() {
        Some(&t) => Ok(t),
        None => bail!("the engine returned no sampled token"),
    }
}

/// Lets a step submitted past the stop finish (its token is not kept).
fn finish_pending(
    engine: &mut Engine,
    pending: Option<SampleTicket>,
    decode: &mut Duration,
) -> Result<()> {
    if let Some(ticket) = pending {
        let t = Instant::now();
        engine.wait_sampled(ticket)?;
        *decode += t.elapsed();
    }
    Ok(())
}
