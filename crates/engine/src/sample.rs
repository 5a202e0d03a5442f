//! Sampling on the GPU: temperature, top-k, top-p, min-p and decaying presence/frequency
//! penalties computed by `kernels/sample.wgsl` right after the head, in the same pass, so a
//! step reads back 4 bytes per sequence (the token id) instead of its row of logits.
//!
//! The algorithm is the one `rwkv_sampler` specifies; its [`rwkv_sampler::CpuSampler`] picks
//! the same tokens from the same logits. Each slot's parameters, penalty counts
//! (`[slots][vocab]` f32) and step counter stay on the GPU between steps.

use std::sync::Arc;

use rwkv_gpu::GpuContext;
use rwkv_sampler::SamplingParams;

use crate::engine::{map_read, write_changed, Engine, Logits, SlotInput, StageTimes, Submitted};
use crate::error::{EngineError, Result};
use crate::kernels::{bind, pipeline, Kernels, Launch};

/// Bytes of one slot's parameters (`Params` in the kernel, `Prepared::words`).
const PARAMS_BYTES: u64 = 48;

/// The sampling kernel with its buffers: per-slot parameters, penalty counts and step
/// counters, and per-row scratch. Bound to the engine's logits buffer when the engine owns it
/// ([`Engine::sampler`]), or to its own ([`GpuSampler::new`]).
pub struct GpuSampler {
    ctx: Arc<GpuContext>,
    vocab: usize,
    max_slots: usize,
    max_rows: usize,
    logits: wgpu::Buffer,
    params: wgpu::Buffer,
    counts: wgpu::Buffer,
    counters: wgpu::Buffer,
    /// Per row: the slot (uploaded by [`GpuSampler::load_rows`] when it changes).
    slots: wgpu::Buffer,
    /// The bytes last written to `slots` (see [`write_changed`]).
    uploaded: std::cell::RefCell<Vec<u8>>,
    /// Two read-back buffers of sampled ids, used in turn, so that a step's ids can be read
    /// while the next step (submitted before, see [`Engine::submit_sample_chained`]) runs.
    readback: [wgpu::Buffer; 2],
    /// Per row: the sampled token, where it stays for a chained step to feed (the next
    /// step's first dispatch reads it before its own sampling writes it again).
    ids: wgpu::Buffer,
    launch: Launch,
    /// A slot's penalty counts and step counter kept by [`GpuSampler::record_checkpoint`].
    checkpoint: Option<[wgpu::Buffer; 2]>,
    /// The chained steps' first dispatch (feed_sampled.wgsl), bound to an engine's step
    /// uniform and token table ([`GpuSampler::bind_feed`]).
    feed: Option<Launch>,
    /// Kept alive for the bind group: info, table, weights.
    _buffers: Vec<wgpu::Buffer>,
}

fn storage(
    ctx: &GpuContext,
    label: &str,
    bytes: u64,
    contents: Option<&[u8]>,
) -> Result<wgpu::Buffer> {
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    Ok(ctx.create_buffer_checked(label, bytes.max(16), usage, contents)?)
}

impl GpuSampler {
    /// A sampler for up to `max_rows` rows of `vocab` logits per call, for `max_slots`
    /// sequences, with its own logits buffer (filled by [`GpuSampler::sample`]).
    pub fn new(
        ctx: Arc<GpuContext>,
        vocab: usize,
        max_slots: usize,
        max_rows: usize,
    ) -> Result<GpuSampler> {
        let logits = storage(&ctx, "sample logits", (max_rows * vocab * 4) as u64, None)?;
        GpuSampler::with_logits(ctx, vocab, max_slots, max_rows, logits)
    }

    /// A sampler reading `logits`, `[max_rows][vocab]` f32.
    pub(crate) fn with_logits(
        ctx: Arc<GpuContext>,
        vocab: usize,
        max_slots: usize,
        max_rows: usize,
        logits: wgpu::Buffer,
    ) -> Result<GpuSampler> {
        if vocab == 0
            || max_slots == 0
            || max_rows == 0
            || vocab > u32::MAX as usize / max_rows.max(max_slots)
        {
            return Err(EngineError::Invalid(format!(
                "cannot sample {max_rows} rows of {vocab} logits for {max_slots} slots"
            )));
        }
        let (v, s, r) = (vocab as u64, max_slots as u64, max_rows as u64);
        let info_uniform = ctx.create_buffer_checked(
            "sample info",
            16,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            Some(bytemuck::cast_slice(&[vocab as u32, 0, 0, 0])),
        )?;
        let defaults: Vec<u32> = (0..max_slots)
            .flat_map(|_| SamplingParams::default().prepare().words())
            .collect();
        let params = storage(
            &ctx,
            "sample params",
            s * PARAMS_BYTES,
            Some(bytemuck::cast_slice(&defaults)),
        )?;
        let table = storage(
            &ctx,
            "exp table",
            512 * 4,
            Some(bytemuck::cast_slice(rwkv_sampler::exp_table())),
        )?;
        let counts = storage(&ctx, "penalty counts", s * v * 4, None)?;
        let counters = storage(&ctx, "sample counters", s * 4, None)?;
        let slots = storage(&ctx, "sample slots", r * 4, None)?;
        let ids = storage(&ctx, "sampled ids", r * 4, None)?;
        let weights = storage(&ctx, "sample weights", r * v * 4, None)?;
        let readback_buffer = || {
            ctx.create_buffer_checked(
                "sampled ids",
                r * 4,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                None,
            )
        };
        let readback = [readback_buffer()?, readback_buffer()?];
        let source = format!(
            "const WG: u32 = {}u;\n{}",
            sample_workgroup(&ctx.limits),
            include_str!("kernels/sample.wgsl")
        );
        let pipeline = pipeline(&ctx.device, "sample", &source);
        let bind_group = bind(
            &ctx.device,
            &pipeline,
            "sample",
            &[
                &info_uniform,
                &logits,
                &params,
                &table,
                &counts,
                &counters,
                &slots,
                &weights,
                &ids,
            ],
        );
        // (The kernel compiles on a worker thread: ready when the sampler is.)
        rwkv_gpu::wait_for_compiles()?;
        Ok(GpuSampler {
            ctx,
            vocab,
            max_slots,
            max_rows,
            logits,
            params,
            counts,
            counters,
            slots,
            uploaded: Default::default(),
            ids,
            readback,
            launch: Launch {
                label: "sample",
                pipeline,
                bind_group,
            },
            feed: None,
            checkpoint: None,
            _buffers: vec![info_uniform, table, weights],
        })
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn max_slots(&self) -> usize {
        self.max_slots
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot >= self.max_slots {
            return Err(EngineError::Invalid(format!(
                "slot {slot} does not exist (the sampler has {} slots)",
                self.max_slots
            )));
        }
        Ok(())
    }

    /// Sets a slot's parameters from its next step on; its counts and counter stay.
    pub fn set_params(&mut self, slot: usize, params: &SamplingParams) -> Result<()> {
        self.check_slot(slot)?;
        params
            .validate()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let words = params.prepare().words();
        self.ctx.queue.write_buffer(
            &self.params,
            slot as u64 * PARAMS_BYTES,
            bytemuck::cast_slice(&words),
        );
        Ok(())
    }

    /// Zeroes a slot's penalty counts and step counter: the start of a new sequence.
    pub fn reset(&mut self, slot: usize) -> Result<()> {
        self.check_slot(slot)?;
        let v = self.vocab as u64 * 4;
        self.ctx
            .queue
            .write_buffer(&self.counters, slot as u64 * 4, &[0; 4]);
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.clear_buffer(&self.counts, slot as u64 * v, Some(v));
        self.ctx.queue.submit([encoder.finish()]);
        Ok(())
    }

    /// Makes the buffers [`GpuSampler::record_checkpoint`] copies to, once.
    pub(crate) fn make_checkpoint(&mut self) -> Result<()> {
        if self.checkpoint.is_none() {
            let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
            let v = self.vocab as u64 * 4;
            let counts = self
                .ctx
                .create_buffer_checked("checkpoint counts", v, usage, None)?;
            let counter = self
                .ctx
                .create_buffer_checked("checkpoint counter", 4, usage, None)?;
            self.checkpoint = Some([counts, counter]);
        }
        Ok(())
    }

    /// Records a copy of a slot's penalty counts and step counter (see
    /// [`Engine::checkpoint`]; nothing before [`GpuSampler::make_checkpoint`]).
    pub(crate) fn record_checkpoint(&self, encoder: &mut wgpu::CommandEncoder, slot: usize) {
        let Some([counts, counter]) = &self.checkpoint else {
            return;
        };
        let v = self.vocab as u64 * 4;
        encoder.copy_buffer_to_buffer(&self.counts, slot as u64 * v, counts, 0, v);
        encoder.copy_buffer_to_buffer(&self.counters, slot as u64 * 4, counter, 0, 4);
    }

    /// Records the copy back of what [`GpuSampler::record_checkpoint`] kept, into `slot`.
    pub(crate) fn record_rollback(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        slot: usize,
    ) -> Result<()> {
        self.check_slot(slot)?;
        let Some([counts, counter]) = &self.checkpoint else {
            return Err(EngineError::Invalid("no sampling checkpoint".into()));
        };
        let v = self.vocab as u64 * 4;
        encoder.copy_buffer_to_buffer(counts, 0, &self.counts, slot as u64 * v, v);
        encoder.copy_buffer_to_buffer(counter, 0, &self.counters, slot as u64 * 4, 4);
        Ok(())
    }

    /// A slot's penalty counts, read back.
    pub fn counts(&self, slot: usize) -> Result<Vec<f32>> {
        self.check_slot(slot)?;
        Ok(self
            .ctx
            .read_buffer_f32(&self.counts, (slot * self.vocab * 4) as u64, self.vocab)?)
    }

    /// A slot's step counter (draws since its last reset), read back.
    pub fn counter(&self, slot: usize) -> Result<u32> {
        self.check_slot(slot)?;
        let bytes = self
            .ctx
            .read_buffer_bytes(&self.counters, slot as u64 * 4, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Samples one token per `(slot, logits)` row (distinct slots), updating each slot's
    /// counts and counter; the logits are uploaded (for an engine's sampler, into its logits
    /// buffer). For testing the kernel on chosen logits and for sampling logits from elsewhere.
    pub fn sample(&mut self, rows: &[(usize, &[f32])]) -> Result<Vec<u32>> {
        if rows.len() > self.max_rows {
            return Err(EngineError::Invalid(format!(
                "{} rows to sample, the sampler takes at most {}",
                rows.len(),
                self.max_rows
            )));
        }
        let mut seen = vec![false; self.max_slots];
        for (n, &(slot, logits)) in rows.iter().enumerate() {
            self.check_slot(slot)?;
            if std::mem::replace(&mut seen[slot], true) {
                return Err(EngineError::Invalid(format!("slot {slot} appears twice")));
            }
            if logits.len() != self.vocab {
                return Err(EngineError::Invalid(format!(
                    "{} logits for a vocabulary of {}",
                    logits.len(),
                    self.vocab
                )));
            }
            let offset = (n * self.vocab * 4) as u64;
            self.ctx
                .queue
                .write_buffer(&self.logits, offset, bytemuck::cast_slice(logits));
        }
        let slots: Vec<u32> = rows.iter().map(|&(s, _)| s as u32).collect();
        self.load_rows(&slots);
        let n = rows.len() as u32;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.record(&mut pass, n);
        }
        self.copy_ids(&mut encoder, n, 0);
        let index = self.ctx.queue.submit([encoder.finish()]);
        self.read_ids(n, 0, index)
    }

    /// Writes which slot each logits row of the next launch belongs to (if that changed:
    /// each upload is a copy command on the GPU).
    pub(crate) fn load_rows(&self, slots: &[u32]) {
        let bytes = bytemuck::cast_slice(slots);
        write_changed(
            &self.ctx,
            &self.slots,
            bytes,
            &mut self.uploaded.borrow_mut(),
        );
    }

    /// Records the kernel over the first `rows` logits rows.
    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass<'_>, rows: u32) {
        self.launch.record(pass, rows, 1);
    }

    /// Copies the sampled ids of `rows` rows to read-back buffer `which` (0 or 1).
    pub(crate) fn copy_ids(&self, encoder: &mut wgpu::CommandEncoder, rows: u32, which: usize) {
        if rows > 0 {
            encoder.copy_buffer_to_buffer(&self.ids, 0, &self.readback[which], 0, rows as u64 * 4);
        }
    }

    /// Binds the dispatch that feeds the latest sampled ids into the rows of
    /// `tokens` marked [`SAMPLED_TOKEN`](crate::kernels::SAMPLED_TOKEN) `| k` (k: the kept
    /// row), over the rows `step` counts.
    pub(crate) fn bind_feed(&mut self, step: &wgpu::Buffer, tokens: &wgpu::Buffer) {
        let device = &self.ctx.device;
        let pipeline = pipeline(device, "feed sampled", &Kernels::feed_sampled_wgsl());
        let bind_group = bind(
            device,
            &pipeline,
            "feed sampled",
            &[step, tokens, &self.ids],
        );
        self.feed = Some(Launch {
            label: "feed sampled",
            pipeline,
            bind_group,
        });
    }

    /// Records the feed of the latest sampled ids (bound by [`GpuSampler::bind_feed`]).
    pub(crate) fn record_feed(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(feed) = &self.feed {
            feed.record(pass, 1, 1);
        }
    }

    /// Waits for submission `after` and returns the sampled ids of `rows` rows it copied to
    /// read-back buffer `which`.
    pub(crate) fn read_ids(
        &self,
        rows: u32,
        which: usize,
        after: wgpu::SubmissionIndex,
    ) -> Result<Vec<u32>> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let data = map_read(&self.ctx, &self.readback[which], rows as u64 * 4, after)?;
        Ok(bytemuck::pod_collect_to_vec(&data))
    }
}

/// Where an input's tokens come from in [`Engine::submit_sample_step`].
#[derive(Clone, Copy, Debug)]
pub enum StepTokens<'a> {
    /// Tokens known on the CPU (at least one).
    Known(&'a [u32]),
    /// One token: the one the GPU sampled for this slot in the step the submission follows,
    /// which the CPU has not read yet.
    Sampled,
}

/// What one slot feeds into a submitted sampling step ([`Engine::submit_sample_step`]).
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    pub slot: usize,
    pub tokens: StepTokens<'a>,
    /// [`Logits::Last`] samples a token after the input, [`Logits::None`] only feeds it.
    pub logits: Logits,
}

/// A sampling step submitted and not yet read ([`Engine::submit_sample_step`] and its
/// shorthands): read it with [`Engine::wait_sampled`].
pub struct SampleTicket {
    /// The slot of each sampled token, in input order.
    sampled: Vec<usize>,
    submitted: Submitted,
}

impl SampleTicket {
    /// The slots the step samples a token for, in input order (what
    /// [`Engine::wait_sampled`] returns one token for each of).
    pub fn sampled_slots(&self) -> &[usize] {
        &self.sampled
    }
}

impl Engine {
    /// The GPU sampler bound to this engine's logits, created on first use (every slot with
    /// the default [`SamplingParams`], zero counts and counters).
    pub fn sampler(&mut self) -> Result<&mut GpuSampler> {
        if self.sampler.is_none() {
            let mut sampler = GpuSampler::with_logits(
                self.ctx.clone(),
                self.config.vocab_size,
                self.options.max_slots,
                self.options.max_out,
                self.logits_buffer().clone(),
            )?;
            let (step, tokens) = self.step_and_tokens();
            sampler.bind_feed(step, tokens);
            // Its pipelines compile on worker threads: ready before the first sampled step
            // (whose time, as the load's, should not hold a compile).
            rwkv_gpu::wait_for_compiles()?;
            self.sampler = Some(sampler);
        }
        Ok(self.sampler.as_mut().expect("created above"))
    }

    /// Sets how [`Engine::step_sample`] picks a slot's tokens, from its next step on. A new
    /// sequence also wants [`Engine::reset_sampling`].
    pub fn set_sampling(&mut self, slot: usize, params: &SamplingParams) -> Result<()> {
        self.sampler()?.set_params(slot, params)
    }

    /// Zeroes a slot's penalty counts and step counter (the seed's draws start over).
    pub fn reset_sampling(&mut self, slot: usize) -> Result<()> {
        self.sampler()?.reset(slot)
    }

    /// Submits one step of the inputs like [`Engine::step_sample`] and returns without
    /// waiting: [`Engine::wait_sampled`] reads the sampled tokens. Every input wants
    /// [`Logits::Last`]. The general form is [`Engine::submit_sample_step`].
    pub fn submit_sample(&mut self, inputs: &[SlotInput]) -> Result<SampleTicket> {
        if inputs.iter().any(|i| i.logits != Logits::Last) {
            return Err(EngineError::Invalid(
                "a submitted sampling step wants the last logits of every input".into(),
            ));
        }
        let inputs: Vec<StepInput> = inputs
            .iter()
            .map(|i| StepInput {
                slot: i.slot,
                tokens: StepTokens::Known(i.tokens),
                logits: Logits::Last,
            })
            .collect();
        self.submit_sample_step(&inputs, None)
    }

    /// Submits the next decode step of the slots `after` sampled for (a ticket not yet
    /// read): each feeds the token the GPU sampled for it in that step and samples the next.
    /// Returns without waiting. See [`Engine::submit_sample_step`].
    pub fn submit_sample_chained(&mut self, after: &SampleTicket) -> Result<SampleTicket> {
        let inputs: Vec<StepInput> = after
            .sampled
            .iter()
            .map(|&slot| StepInput {
                slot,
                tokens: StepTokens::Sampled,
                logits: Logits::Last,
            })
            .collect();
        self.submit_sample_step(&inputs, Some(after))
    }

    /// Submits one step of the inputs and returns without waiting: [`Engine::wait_sampled`]
    /// reads the tokens sampled for the inputs that want [`Logits::Last`]. The inputs must
    /// fit one GPU step (at most `max_rows` tokens and `max_out` sampled tokens).
    ///
    /// Inputs with [`StepTokens::Sampled`] feed the token sampled for their slot in `after`,
    /// a step not read yet, which must be the latest submitted step that sampled anything:
    /// the next step is submitted before the previous one's tokens are read, so the GPU
    /// never waits for the CPU between tokens. A caller that then sees a stop in `after`'s
    /// tokens has fed one token more (and sampled one more, with its penalty counts) than
    /// it keeps.
    pub fn submit_sample_step(
        &mut self,
        inputs: &[StepInput],
        after: Option<&SampleTicket>,
    ) -> Result<SampleTicket> {
        self.sampler()?;
        let placeholder = [0u32];
        let mut sources = Vec::with_capacity(inputs.len());
        let mut slot_inputs = Vec::with_capacity(inputs.len());
        for input in inputs {
            if input.logits == Logits::All {
                return Err(EngineError::Invalid(
                    "a submitted sampling step samples after the last token only".into(),
                ));
            }
            let tokens = match input.tokens {
                StepTokens::Known([]) => {
                    return Err(EngineError::Invalid(format!(
                        "no tokens for slot {}",
                        input.slot
                    )))
                }
                StepTokens::Known(tokens) => {
                    sources.push(None);
                    tokens
                }
                StepTokens::Sampled => {
                    let after = after.ok_or_else(|| {
                        EngineError::Invalid(
                            "a sampled token needs the step that samples it".into(),
                        )
                    })?;
                    let row = after.sampled.iter().position(|&s| s == input.slot);
                    let row = row.ok_or_else(|| {
                        EngineError::Invalid(format!(
                            "slot {} samples nothing in the step this one follows",
                            input.slot
                        ))
                    })?;
                    sources.push(Some(row as u32));
                    &placeholder[..]
                }
            };
            slot_inputs.push(SlotInput {
                slot: input.slot,
                tokens,
                logits: input.logits,
            });
        }
        if sources.iter().any(Option::is_some) {
            let latest = after.and_then(|a| a.submitted.readback).map(|(_, seq)| seq);
            if latest != Some(self.sample_seq) {
                return Err(EngineError::Invalid(
                    "a chained step follows the latest sampling step".into(),
                ));
            }
        }
        self.check_inputs(&slot_inputs)?;
        let rows: usize = slot_inputs.iter().map(|i| i.tokens.len()).sum();
        let outs = inputs.iter().filter(|i| i.logits == Logits::Last).count();
        if rows > self.options.max_rows || outs > self.options.max_out {
            return Err(EngineError::Invalid(format!(
                "{rows} tokens sampling {outs} do not fit one step ({} rows, {} logits rows)",
                self.options.max_rows, self.options.max_out
            )));
        }
        let plan: Vec<(usize, usize, usize)> = slot_inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (i, 0, input.tokens.len()))
            .collect();
        let mut times = StageTimes::default();
        let submitted = self.submit_gpu_step(&slot_inputs, &plan, &mut times, true, &sources)?;
        self.last_times = times;
        Ok(SampleTicket {
            sampled: inputs
                .iter()
                .filter(|i| i.logits == Logits::Last)
                .map(|i| i.slot)
                .collect(),
            submitted,
        })
    }

    /// Waits for the step of `ticket` and returns its sampled tokens, one per input that
    /// wants [`Logits::Last`], in order. Errors if two later sampling steps were submitted
    /// before it was read (its read-back buffer was reused).
    pub fn wait_sampled(&mut self, ticket: SampleTicket) -> Result<Vec<u32>> {
        if let Some((which, seq)) = ticket.submitted.readback {
            if self.readback_seq[which] != seq {
                return Err(EngineError::Invalid(
                    "the step was read too late: two later sampling steps reused its buffer".into(),
                ));
            }
        }
        let mut times = StageTimes::default();
        let rows = self.finish_submitted(ticket.submitted, &mut times)?;
        // (The latest step's stages: the read of the last ticket follows its submission.)
        self.last_times.back = times.back;
        Ok(rows.iter().map(|r| r[0].to_bits()).collect())
    }

    /// Runs the inputs like [`Engine::step`] and, for each input with [`Logits::Last`],
    /// returns the token sampled on the GPU from its last logits (`None` for other inputs,
    /// whose logits are not computed). Only the token ids are read back.
    pub fn step_sample(&mut self, inputs: &[SlotInput]) -> Result<Vec<Option<u32>>> {
        self.sampler()?;
        let inputs: Vec<SlotInput> = inputs
            .iter()
            .map(|i| SlotInput {
                logits: if i.logits == Logits::Last {
                    Logits::Last
                } else {
                    Logits::None
                },
                ..i.clone()
            })
            .collect();
        let out = self.run_step(&inputs, true)?;
        Ok(out
            .iter()
            .map(|rows| rows.first().map(|r| r[0].to_bits()))
            .collect())
    }
}

/// Invocations per sampling workgroup (one per logits row): the most the device allows up to
/// 1024, as a power of two, with twice the reductions' 16 bytes per invocation of workgroup
/// memory to spare, and room beside them for the rest ([`FIXED_SHARED_BYTES`]). A row is
/// one workgroup's work, whose passes over the vocabulary (the maximum, the weights, each of
/// top-k's and top-p's 4 radix-select passes, the counts' decay) each take vocab / WG loads
/// per invocation in sequence: at batch 1 the sampler is latency-bound. `WEB_RWKV_SAMPLE_WG`
/// sets it (a power of two from 128), for measurements. (The sampler tests pass with 128 to
/// 1024 invocations on the H200 and on lavapipe. Fewer are not offered: with the bisection
/// that step 4 used before its radix select, lavapipe's workgroups of 32 and 64 picked other
/// tokens than the CPU for the World vocabulary, where the H200's did not.)
fn sample_workgroup(limits: &wgpu::Limits) -> u32 {
    let storage = limits.max_compute_workgroup_storage_size;
    let cap = limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x)
        .min(storage / 32)
        .min(storage.saturating_sub(FIXED_SHARED_BYTES) / 16);
    let wanted = rwkv_gpu::env_parse::<u32>(SAMPLE_WG_ENV)
        .filter(|w| w.is_power_of_two() && *w >= 128)
        .unwrap_or(1024);
    let mut wg = 32;
    while wg * 2 <= wanted.min(cap) {
        wg *= 2;
    }
    wg
}

/// The kernel's workgroup memory beside the reductions' 16 bytes per invocation: step 4's
/// radix select (256 bins of two words, as atomics and again as plain words; 16 group sums
/// of two words; the chosen byte as a vec4), step 5's `Draw` (24 bytes) and the broadcast
/// word.
const FIXED_SHARED_BYTES: u32 = 2 * 256 * 8 + 16 * 8 + 16 + 24 + 4;

/// Environment variable setting the sampler's workgroup size (`sample_workgroup`), for
/// measurements.
pub const SAMPLE_WG_ENV: &str = "WEB_RWKV_SAMPLE_WG";
