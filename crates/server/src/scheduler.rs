//! The scheduler: one thread owns the engine and runs it step after step for every request in
//! flight (continuous batching).
//!
//! Each step takes, for every busy slot, either the one token it decodes next or a chunk of its
//! prompt; prompt chunks share a budget of `prefill_chunk` tokens per step, so a long prompt is
//! read over several steps while the streams already decoding keep getting a token every step.
//! A request that arrives joins at the next step if a slot is free, and a finished or
//! cancelled one (its client went away) frees its slot at once.
//!
//! Steps are chained: each is submitted before the tokens of the step before are read, and a
//! slot that decodes feeds the token the GPU sampled for it there (the engine's
//! [`StepTokens::Sampled`]), so the GPU never waits for the CPU between steps. The CPU reads
//! a step's tokens (text, stop strings, limits) while the next one runs; a request that ends
//! there has had one more token fed and sampled in the step already running, which is thrown
//! away with its slot's state (a new request resets the slot first).
//!
//! Prompts are checked against the [`PrefixCache`] when they start: the state after the
//! longest cached prefix is written into the slot and only the rest is read. Prompt chunks end
//! at the request's cache points (e.g. the end of a system prompt), where the state is read
//! back and cached.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use gguf::GgufFile;
use rwkv_engine::{
    Engine, EngineOptions, Logits, SampleTicket, SamplingParams, StepInput, StepTokens,
};
use rwkv_gpu::{ContextOptions, GpuContext};
use rwkv_tokenizer::{StreamDecoder, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use crate::cache::PrefixCache;
use crate::metrics::{Finish, Metrics};
use rwkv_sampler::StopMatcher;

/// The World vocabulary's end of text (`<s>`, id 0).
pub const END_OF_TEXT: u32 = 0;

/// One generation request, tokenized and checked.
pub struct Job {
    pub prompt: Vec<u32>,
    /// Prompt lengths after which the state is worth caching (e.g. the end of a system prompt),
    /// ascending.
    pub cache_points: Vec<usize>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Where the text goes; the request is cancelled when the receiver is dropped.
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
}

/// What the scheduler tells a request's handler.
#[derive(Clone, Debug)]
pub enum Event {
    /// More text (never a broken UTF-8 character, never part of a stop string).
    Text(String),
    /// The end: nothing follows.
    Done(FinishReason, Usage),
    /// The engine failed on this request: nothing follows.
    Error(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop string or the end of text.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose state came from the prefix cache (not read again).
    pub cached_tokens: usize,
}

/// Sizes of the scheduler and its engine.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Sequences decoded together (engine slots).
    pub slots: usize,
    /// Prompt tokens read per step over all slots.
    pub prefill_chunk: usize,
    /// Resident f16 weights for batch steps (the engine's `f16_weights`).
    pub f16_weights: bool,
    /// Host memory for cached prefix states.
    pub cache_bytes: u64,
    /// Prefixes shorter than this are not cached.
    pub cache_min_tokens: usize,
}

/// What the HTTP side needs to know about the loaded model.
pub struct ModelInfo {
    pub tokenizer: Arc<Tokenizer>,
    pub vocab_size: usize,
}

/// Loads the model on its own thread and starts scheduling there. Returns once the model is
/// loaded: the queue to send jobs to (the scheduler ends when every sender is dropped), the
/// model's tokenizer, and the thread.
pub fn spawn(
    model: PathBuf,
    adapter: Option<String>,
    options: SchedulerOptions,
    metrics: Arc<Metrics>,
    mut progress: Box<dyn FnMut(u64, u64) + Send>,
) -> anyhow::Result<(mpsc::Sender<Job>, ModelInfo, JoinHandle<()>)> {
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("rwkv-scheduler".into())
        .spawn(move || {
            // However the thread ends (even by a panic), the server learns the engine is gone.
            struct Alive(Arc<Metrics>);
            impl Drop for Alive {
                fn drop(&mut self) {
                    self.0.scheduler_alive.store(false, Relaxed);
                }
            }
            let _alive = Alive(metrics.clone());
            let setup = || -> anyhow::Result<(Engine, Arc<Tokenizer>)> {
                let file =
                    GgufFile::open(&model).with_context(|| format!("{}", model.display()))?;
                let tokenizer = Tokenizer::from_gguf(&file).context("loading the tokenizer")?;
                let ctx = GpuContext::new(&ContextOptions { adapter })?;
                let engine_options = EngineOptions {
                    max_slots: options.slots,
                    max_rows: options.slots + options.prefill_chunk,
                    max_out: options.slots,
                    f16_weights: options.f16_weights,
                    ..EngineOptions::default()
                };
                let engine = Engine::load(Arc::new(ctx), &file, engine_options, &mut *progress)
                    .context("loading the model")?;
                Ok((engine, Arc::new(tokenizer)))
            };
            match setup() {
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
                Ok((engine, tokenizer)) => {
                    let info = ModelInfo {
                        tokenizer: tokenizer.clone(),
                        vocab_size: engine.config.vocab_size,
                    };
                    if ready_tx.send(Ok(info)).is_err() {
                        return;
                    }
                    let cache = PrefixCache::new(options.cache_bytes);
                    Scheduler {
                        engine,
                        cache,
                        metrics,
                        options,
                        steps: 0,
                        last_read: Instant::now(),
                    }
                    .run(&tokenizer, job_rx);
                }
            }
        })
        .context("starting the scheduler thread")?;
    let info = ready_rx
        .recv()
        .context("the scheduler thread ended while loading")??;
    Ok((job_tx, info, thread))
}

/// A request in a slot.
struct Running<'t> {
    job: Job,
    /// Arrival order, for sharing the prefill budget first come, first served.
    seq: u64,
    /// Prompt tokens already in the slot's state.
    fed: usize,
    /// Cache points still ahead (ascending).
    points: VecDeque<usize>,
    /// The token to feed next, once the prompt is read, when the CPU knows it (see
    /// `sampled_in`).
    next: Option<u32>,
    /// The step (by number) whose sampled token this request feeds next, while that step's
    /// tokens are not read yet: the next step feeds it from the GPU.
    sampled_in: Option<u64>,
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    generated: usize,
    cached: usize,
}

impl Running<'_> {
    /// Where the next prompt chunk must end: the next cache point or the prompt's end.
    fn chunk_end(&self) -> usize {
        self.points
            .front()
            .copied()
            .unwrap_or(self.job.prompt.len())
    }
}

/// Shares `budget` prompt tokens among requests that want `wants[i]` tokens each, first come
/// first served; returns each one's chunk (0: waits for a later step).
pub fn plan_prefill(wants: &[usize], budget: usize) -> Vec<usize> {
    let mut left = budget;
    wants
        .iter()
        .map(|&w| {
            let take = w.min(left);
            left -= take;
            take
        })
        .collect()
}

struct Scheduler {
    engine: Engine,
    cache: PrefixCache,
    metrics: Arc<Metrics>,
    options: SchedulerOptions,
    /// Steps submitted so far (the latest one's number).
    steps: u64,
    /// When the latest step's tokens were read.
    last_read: Instant,
}

/// What a slot does in a step.
enum Part {
    Prefill(usize),
    /// The token the CPU knows.
    Decode,
    /// The token sampled for it in the step before (not read yet).
    Chained,
}

/// Whether request `seq` is still in `slot`.
fn is_current(slots: &[Option<Running<'_>>], slot: usize, seq: u64) -> bool {
    slots[slot].as_ref().is_some_and(|r| r.seq == seq)
}

/// A submitted step whose tokens are not read yet.
struct InFlight {
    number: u64,
    ticket: SampleTicket,
    /// The request (slot and arrival number) of each token the step samples, in order. A
    /// request may have left its slot, even to a new one, by the time the step is read.
    sampled: Vec<(usize, u64)>,
    /// Every request in the step (the ones that fail with it if it fails).
    parts: Vec<(usize, u64)>,
    submitted: Instant,
}

impl Scheduler {
    fn run<'t>(mut self, tokenizer: &'t Tokenizer, jobs: Receiver<Job>) {
        let mut pending: VecDeque<Job> = VecDeque::new();
        let mut slots: Vec<Option<Running<'t>>> = (0..self.options.slots).map(|_| None).collect();
        let mut seq = 0u64;
        let mut in_flight: Option<InFlight> = None;
        let unchained = rwkv_gpu::env_set("WEB_RWKV_SERVE_UNCHAINED");
        loop {
            // Intake: block only when there is nothing to do.
            if pending.is_empty() && slots.iter().all(Option::is_none) && in_flight.is_none() {
                match jobs.recv() {
                    Ok(job) => pending.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = jobs.try_recv() {
                pending.push_back(job);
            }

            // Clients that went away: waiting ones leave the queue, running ones free their slot.
            pending.retain(|job| {
                let gone = job.events.is_closed();
                if gone {
                    self.end_request(Finish::Cancelled);
                }
                !gone
            });
            for s in slots.iter_mut() {
                if s.as_ref().is_some_and(|r| r.job.events.is_closed()) {
                    *s = None;
                    self.free_slot(Finish::Cancelled);
                }
            }

            // Waiting requests take free slots.
            while let Some(slot) = slots.iter().position(Option::is_none) {
                let Some(job) = pending.pop_front() else {
                    break;
                };
                seq += 1;
                slots[slot] = self.start(job, slot, seq, tokenizer);
            }

            // The next step goes to the GPU before the tokens of the one running are read.
            let next = match slots.iter().any(Option::is_some) {
                true => self.submit(&mut slots, in_flight.as_ref()),
                false => None,
            };
            if let Some(step) = in_flight.take() {
                self.read(&mut slots, step);
            }
            in_flight = next;
            // (`WEB_RWKV_SERVE_UNCHAINED=1`: each step read before the next is submitted, as
            // before chained steps; for measurements, and a fallback.)
            if unchained {
                if let Some(step) = in_flight.take() {
                    self.read(&mut slots, step);
                }
            }
        }
    }

    /// Puts a job into a free slot: the cached state of its longest cached prefix (or the zero
    /// state) and its sampling parameters. On failure the job ends with the error.
    fn start<'t>(
        &mut self,
        job: Job,
        slot: usize,
        seq: u64,
        tokenizer: &'t Tokenizer,
    ) -> Option<Running<'t>> {
        let m = &self.metrics;
        m.slots_busy.fetch_add(1, Relaxed);
        if job.prompt.is_empty() {
            return self.fail(job, "empty prompt".into());
        }
        // The last prompt token is always fed: its logits give the first token.
        let hit = self.cache.lookup(&job.prompt, job.prompt.len() - 1);
        let setup = (|| -> anyhow::Result<usize> {
            let fed = match &hit {
                Some((len, state)) => {
                    self.engine.write_state(slot, state)?;
                    *len
                }
                None => {
                    self.engine.reset(slot)?;
                    0
                }
            };
            self.engine.set_sampling(slot, &job.params)?;
            self.engine.reset_sampling(slot)?;
            Ok(fed)
        })();
        let fed = match setup {
            Ok(fed) => fed,
            Err(e) => return self.fail(job, format!("{e:#}")),
        };
        if fed > 0 {
            m.cache_hits.fetch_add(1, Relaxed);
            m.cache_hit_tokens.fetch_add(fed as u64, Relaxed);
        } else {
            m.cache_misses.fetch_add(1, Relaxed);
        }
        // No cache, no cache points (each costs a read of the state).
        let min = match self.cache.capacity() {
            0 => usize::MAX,
            _ => self.options.cache_min_tokens.max(1),
        };
        let points = job
            .cache_points
            .iter()
            .copied()
            .filter(|&p| p > fed && p < job.prompt.len() && p >= min)
            .filter(|&p| !self.cache.contains(&job.prompt[..p]))
            .collect();
        Some(Running {
            stops: StopMatcher::new(job.stop.clone()),
            job,
            seq,
            fed,
            points,
            next: None,
            sampled_in: None,
            decoder: tokenizer.stream_decoder(),
            generated: 0,
            cached: fed,
        })
    }

    /// A job that could not start ends with an error.
    fn fail<'t>(&self, job: Job, e: String) -> Option<Running<'t>> {
        let _ = job.events.send(Event::Error(e));
        self.free_slot(Finish::Error);
        None
    }

    /// A request left its slot.
    fn free_slot(&self, how: Finish) {
        self.metrics.slots_busy.fetch_sub(1, Relaxed);
        self.end_request(how);
    }

    fn end_request(&self, how: Finish) {
        self.metrics.inflight.fetch_sub(1, Relaxed);
        self.metrics.finished(how);
    }

    /// Plans and submits one engine step over every busy slot; `before` is the step in
    /// flight, whose sampled tokens the step feeds where a slot decodes. Returns the step, or
    /// `None` if it failed (its requests then ended with the error).
    fn submit(
        &mut self,
        slots: &mut [Option<Running<'_>>],
        before: Option<&InFlight>,
    ) -> Option<InFlight> {
        let latest = before.map(|f| f.number);
        // Decoding slots feed their next token; prompts share the prefill budget in order of
        // arrival.
        let mut parts: Vec<(usize, Part)> = Vec::new();
        let mut prefilling: Vec<&Running> = Vec::new();
        for (slot, r) in slots.iter().enumerate() {
            let Some(r) = r else { continue };
            if r.sampled_in.is_some() && r.sampled_in == latest {
                // Its token in flight ends it if it is the last one allowed.
                if r.generated + 1 < r.job.max_tokens {
                    parts.push((slot, Part::Chained));
                }
            } else if r.next.is_some() {
                parts.push((slot, Part::Decode));
            } else if r.sampled_in.is_none() {
                prefilling.push(r);
            }
        }
        prefilling.sort_by_key(|r| r.seq);
        let wants: Vec<usize> = prefilling.iter().map(|r| r.chunk_end() - r.fed).collect();
        let plan = plan_prefill(&wants, self.options.prefill_chunk.max(1));
        let prefill_slots: Vec<usize> = prefilling
            .iter()
            .map(|r| {
                slots
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.seq == r.seq))
                    .expect("the slot of a running request")
            })
            .collect();
        for (slot, take) in prefill_slots.into_iter().zip(plan) {
            if take > 0 {
                parts.push((slot, Part::Prefill(take)));
            }
        }
        if parts.is_empty() {
            return None;
        }
        let inputs: Vec<StepInput> = parts
            .iter()
            .map(|(slot, part)| {
                let r = slots[*slot].as_ref().expect("busy slot");
                let (tokens, logits) = match *part {
                    Part::Chained => (StepTokens::Sampled, Logits::Last),
                    Part::Decode => (
                        StepTokens::Known(std::slice::from_ref(r.next.as_ref().expect("known"))),
                        Logits::Last,
                    ),
                    Part::Prefill(n) => {
                        let end = r.fed + n;
                        let logits = match end == r.job.prompt.len() {
                            true => Logits::Last,
                            false => Logits::None,
                        };
                        (StepTokens::Known(&r.job.prompt[r.fed..end]), logits)
                    }
                };
                StepInput {
                    slot: *slot,
                    tokens,
                    logits,
                }
            })
            .collect();
        let sampled_slots: Vec<usize> = inputs
            .iter()
            .filter(|i| i.logits == Logits::Last)
            .map(|i| i.slot)
            .collect();

        let m = self.metrics.clone();
        let result = self
            .engine
            .submit_sample_step(&inputs, before.map(|f| &f.ticket));
        let submitted = Instant::now();
        m.steps.fetch_add(1, Relaxed);
        m.step_slots.fetch_add(inputs.len() as u64, Relaxed);
        m.step_max_slots.fetch_max(inputs.len(), Relaxed);
        drop(inputs);
        let seq_of = |slot: usize| slots[slot].as_ref().expect("busy slot").seq;
        let requests: Vec<(usize, u64)> = parts.iter().map(|(s, _)| (*s, seq_of(*s))).collect();
        let ticket = match result {
            Ok(ticket) => ticket,
            Err(e) => {
                self.fail_requests(slots, &requests, &e);
                return None;
            }
        };
        self.steps += 1;
        let number = self.steps;
        let step = InFlight {
            number,
            sampled: sampled_slots.iter().map(|&s| (s, seq_of(s))).collect(),
            parts: requests,
            ticket,
            submitted,
        };

        for (slot, part) in parts {
            let r = slots[slot].as_mut().expect("busy slot");
            match part {
                Part::Prefill(n) => {
                    m.prefill_tokens.fetch_add(n as u64, Relaxed);
                    r.fed += n;
                    if r.fed == r.job.prompt.len() {
                        r.sampled_in = Some(number);
                    }
                    // The state at a cache point is read before any later step changes it.
                    if r.points.front() == Some(&r.fed) {
                        r.points.pop_front();
                        let prefix = r.job.prompt[..r.fed].to_vec();
                        self.cache_state(slot, &prefix);
                    }
                }
                Part::Decode | Part::Chained => {
                    r.next = None;
                    r.sampled_in = Some(number);
                }
            }
        }
        Some(step)
    }

    /// Ends the `requests` (slot, arrival number) still in their slots with the engine's
    /// error `e`: every request of a failed step; the others go on.
    fn fail_requests(
        &self,
        slots: &mut [Option<Running<'_>>],
        requests: &[(usize, u64)],
        e: &dyn std::fmt::Display,
    ) {
        for &(slot, seq) in requests {
            if is_current(slots, slot, seq) {
                let r = slots[slot].take().expect("busy slot");
                let _ = r.job.events.send(Event::Error(format!("engine: {e}")));
                self.free_slot(Finish::Error);
            }
        }
    }

    /// Waits for a step's tokens and hands them to their requests (text out, stops, limits).
    /// Requests that left since it was submitted are skipped.
    fn read(&mut self, slots: &mut [Option<Running<'_>>], step: InFlight) {
        let m = self.metrics.clone();
        let tokens = match self.engine.wait_sampled(step.ticket) {
            Ok(tokens) => tokens,
            Err(e) => {
                self.fail_requests(slots, &step.parts, &e);
                return;
            }
        };
        // A step's time: from its submission, or from when the step before it was read if
        // it was submitted before that (its GPU work starts once that one's ends).
        let now = Instant::now();
        m.step_seconds
            .observe(now - step.submitted.max(self.last_read));
        self.last_read = now;

        for (&(slot, seq), token) in step.sampled.iter().zip(tokens) {
            if !is_current(slots, slot, seq) {
                continue;
            }
            let r = slots[slot].as_mut().expect("busy slot");
            if r.sampled_in == Some(step.number) {
                // Not fed by a later step: the CPU feeds it.
                r.sampled_in = None;
                r.next = Some(token);
            }
            let outcome = self.take_token(r, token);
            match outcome {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    let r = slots[slot].take().expect("busy slot");
                    let usage = Usage {
                        prompt_tokens: r.job.prompt.len(),
                        completion_tokens: r.generated,
                        cached_tokens: r.cached,
                    };
                    let _ = r.job.events.send(Event::Done(reason, usage));
                    self.free_slot(match reason {
                        FinishReason::Stop => Finish::Stop,
                        FinishReason::Length => Finish::Length,
                    });
                }
                Err(e) => {
                    let r = slots[slot].take().expect("busy slot");
                    let _ = r.job.events.send(Event::Error(e));
                    self.free_slot(Finish::Error);
                }
            }
        }
    }

    /// Reads the slot's state back and caches it under `prefix`.
    fn cache_state(&mut self, slot: usize, prefix: &[u32]) {
        // A failed read only costs the cache entry.
        if let Ok(state) = self.engine.read_state(slot) {
            let m = &self.metrics;
            let evicted = self.cache.insert(prefix.to_vec(), state);
            m.cache_evictions.fetch_add(evicted as u64, Relaxed);
            if self.cache.contains(prefix) {
                m.cache_inserts.fetch_add(1, Relaxed);
            }
            m.cache_entries.store(self.cache.len(), Relaxed);
            m.cache_bytes.store(self.cache.bytes(), Relaxed);
        }
    }

    /// Handles a sampled token: text out, stop strings, limits. `Some(reason)`: the request
    /// is done; `None`: it goes on (the token is fed next).
    fn take_token(&self, r: &mut Running, token: u32) -> Result<Option<FinishReason>, String> {
        let m = &self.metrics;
        if r.generated == 0 {
            m.ttft_seconds.observe(r.job.arrived.elapsed());
        }
        let send = |r: &Running, text: String| {
            if !text.is_empty() {
                let _ = r.job.events.send(Event::Text(text));
            }
        };
        if token != END_OF_TEXT {
            r.generated += 1;
            m.generated_tokens.fetch_add(1, Relaxed);
            let text = r.decoder.push(token).map_err(|e| e.to_string())?;
            let (out, hit) = r.stops.push(&text);
            send(r, out);
            if hit.is_some() {
                return Ok(Some(FinishReason::Stop));
            }
            if r.generated < r.job.max_tokens {
                return Ok(None);
            }
        }
        // The end: flush what was held back (an unfinished character, a partial stop string).
        let tail = r.decoder.finish();
        let (out, hit) = r.stops.push(&tail);
        send(r, out);
        if hit.is_some() {
            return Ok(Some(FinishReason::Stop));
        }
        let rest = r.stops.finish();
        send(r, rest);
        Ok(Some(if token == END_OF_TEXT {
            FinishReason::Stop
        } else {
            FinishReason::Length
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_budget_first_come_first_served() {
        assert_eq!(plan_prefill(&[10, 5, 3], 12), vec![10, 2, 0]);
        assert_eq!(plan_prefill(&[3, 4], 100), vec![3, 4]);
        assert_eq!(plan_prefill(&[300], 128), vec![128]);
        assert_eq!(plan_prefill(&[], 8), Vec::<usize>::new());
    }
}
