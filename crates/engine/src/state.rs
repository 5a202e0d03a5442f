//! State control: read a slot's state back, write it, reset it, copy one slot to another,
//! keep a checkpoint of it on the GPU and roll back to it.
//! States live on the GPU per layer as `[slots][n_embd]` shift vectors and
//! `[slots][heads][64][64]` WKV matrices; only these calls move them to or from the CPU.

use rwkv_model::{LayerState, State};

use crate::engine::Engine;
use crate::error::{EngineError, Result};

/// A copy of one slot's state kept on the GPU ([`Engine::checkpoint`]).
pub(crate) struct Checkpoint {
    /// A checkpoint asked for and not recorded yet: the next step records it.
    requested: Option<usize>,
    /// The slot, and the half of the shift states that held its state, of the latest
    /// checkpoint recorded into a step.
    taken: Option<(usize, u32)>,
    /// Per layer: the two shift vectors and the WKV state, each in its own buffer, so that
    /// the copies need no barriers between them.
    layers: Vec<[wgpu::Buffer; 3]>,
    /// The copy kernel (checkpoint_copy.wgsl) bound per layer, its parameters (where the
    /// slot's state is) and its grid. On an H200 a checkpoint of 2.9B by copy commands (3
    /// per layer) cost ~0.37 ms per decode token; by these dispatches, in the step's pass
    /// with no barrier between them, ~0.03.
    kernel: (Vec<crate::kernels::Launch>, wgpu::Buffer, u32),
}

/// What [`Engine::rollback`] puts back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollback {
    /// The slot's state and its sampling counters (penalty counts, step counter).
    All,
    /// Only the sampling counters: the state keeps what was fed since.
    Sampling,
}

impl Engine {
    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot >= self.options.max_slots {
            return Err(EngineError::Invalid(format!(
                "slot {slot} does not exist (the engine has {} slots)",
                self.options.max_slots
            )));
        }
        Ok(())
    }

    /// Byte ranges of one slot's current state: in the shift buffers (the half that holds it)
    /// and in the WKV buffer.
    fn slot_ranges(&self, slot: usize) -> ((u64, u64), (u64, u64)) {
        self.slot_ranges_in(slot, self.halves[slot])
    }

    /// [`Engine::slot_ranges`] with the state in shift half `half`.
    fn slot_ranges_in(&self, slot: usize, half: u32) -> ((u64, u64), (u64, u64)) {
        let d = self.config.n_embd as u64;
        let shift = d * 4;
        let half = half as u64 * self.options.max_slots as u64;
        let wkv = d * self.config.head_size as u64 * 4;
        (
            ((half + slot as u64) * shift, shift),
            (slot as u64 * wkv, wkv),
        )
    }

    /// Zeroes a slot's state: the start of a new sequence.
    pub fn reset(&mut self, slot: usize) -> Result<()> {
        self.check_slot(slot)?;
        let ((so, sl), (wo, wl)) = self.slot_ranges(slot);
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        for l in &self.states {
            encoder.clear_buffer(&l.att_shift, so, Some(sl));
            encoder.clear_buffer(&l.ffn_shift, so, Some(sl));
            encoder.clear_buffer(&l.wkv, wo, Some(wl));
        }
        self.ctx.queue.submit([encoder.finish()]);
        Ok(())
    }

    /// Copies the state of slot `from` into slot `to` (e.g. to fork a cached prefix).
    pub fn copy_slot(&mut self, from: usize, to: usize) -> Result<()> {
        self.check_slot(from)?;
        self.check_slot(to)?;
        if from == to {
            return Ok(());
        }
        let ((sf, sl), (wf, wl)) = self.slot_ranges(from);
        let ((st, _), (wt, _)) = self.slot_ranges(to);
        // wgpu cannot copy within one buffer, so the copy goes through a scratch buffer.
        let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let tmp = self
            .ctx
            .create_buffer_checked("slot copy", 2 * sl + wl, usage, None)?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        for l in &self.states {
            encoder.copy_buffer_to_buffer(&l.att_shift, sf, &tmp, 0, sl);
            encoder.copy_buffer_to_buffer(&l.ffn_shift, sf, &tmp, sl, sl);
            encoder.copy_buffer_to_buffer(&l.wkv, wf, &tmp, 2 * sl, wl);
            encoder.copy_buffer_to_buffer(&tmp, 0, &l.att_shift, st, sl);
            encoder.copy_buffer_to_buffer(&tmp, sl, &l.ffn_shift, st, sl);
            encoder.copy_buffer_to_buffer(&tmp, 2 * sl, &l.wkv, wt, wl);
        }
        self.ctx.queue.submit([encoder.finish()]);
        Ok(())
    }

    /// Reads a slot's state back to the CPU.
    pub fn read_state(&self, slot: usize) -> Result<State> {
        self.check_slot(slot)?;
        let ((so, sl), (wo, wl)) = self.slot_ranges(slot);
        let read = |buf: &wgpu::Buffer, offset: u64, len: u64| -> Result<Vec<f32>> {
            Ok(self.ctx.read_buffer_f32(buf, offset, (len / 4) as usize)?)
        };
        let layers = self
            .states
            .iter()
            .map(|l| {
                Ok(LayerState {
                    att_shift: read(&l.att_shift, so, sl)?,
                    ffn_shift: read(&l.ffn_shift, so, sl)?,
                    wkv: read(&l.wkv, wo, wl)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(State { layers })
    }

    /// Writes a state (read back earlier, loaded from a file, or built on the CPU) into a slot.
    pub fn write_state(&mut self, slot: usize, state: &State) -> Result<()> {
        self.check_slot(slot)?;
        state.check(&self.config)?;
        let ((so, _), (wo, _)) = self.slot_ranges(slot);
        for (l, s) in self.states.iter().zip(&state.layers) {
            self.ctx
                .queue
                .write_buffer(&l.att_shift, so, bytemuck::cast_slice(&s.att_shift));
            self.ctx
                .queue
                .write_buffer(&l.ffn_shift, so, bytemuck::cast_slice(&s.ffn_shift));
            self.ctx
                .queue
                .write_buffer(&l.wkv, wo, bytemuck::cast_slice(&s.wkv));
        }
        self.ctx.queue.submit([]);
        Ok(())
    }

    /// Keeps a copy of `slot`'s state and sampling counters on the GPU as they are before
    /// the next step: the next step submitted takes it at its start, inside its own commands
    /// (no submission or wait of its own). [`Engine::rollback`] puts it back. One checkpoint
    /// per engine; a new one replaces the last. Chained steps use it to undo a step that a
    /// stop seen late makes one too many (`chat` keeps its state between turns).
    pub fn checkpoint(&mut self, slot: usize) -> Result<()> {
        self.check_slot(slot)?;
        self.sampler()?.make_checkpoint()?;
        let ((_, sl), (_, wl)) = self.slot_ranges(slot);
        if self.checkpoint.is_none() {
            let usage = wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::STORAGE;
            let buffer =
                |label: &str, len: u64| self.ctx.create_buffer_checked(label, len, usage, None);
            let layers = (0..self.states.len())
                .map(|_| {
                    Ok([
                        buffer("checkpoint att shift", sl)?,
                        buffer("checkpoint ffn shift", sl)?,
                        buffer("checkpoint wkv", wl)?,
                    ])
                })
                .collect::<Result<Vec<_>>>()?;
            let kernel = self.checkpoint_kernel(&layers, wl)?;
            // (Compiled on a worker thread: ready before the step that first records it.)
            rwkv_gpu::wait_for_compiles()?;
            self.buffer_bytes += (2 * sl + wl) * layers.len() as u64;
            self.checkpoint = Some(Checkpoint {
                requested: None,
                taken: None,
                layers,
                kernel,
            });
        }
        self.checkpoint.as_mut().expect("made above").requested = Some(slot);
        Ok(())
    }

    /// The checkpoint's copy kernel bound to each layer's state and checkpoint buffers
    /// (`wl`: a slot's WKV bytes).
    fn checkpoint_kernel(
        &self,
        layers: &[[wgpu::Buffer; 3]],
        wl: u64,
    ) -> Result<(Vec<crate::kernels::Launch>, wgpu::Buffer, u32)> {
        let device = &self.ctx.device;
        let pipeline = crate::kernels::pipeline(
            device,
            "checkpoint copy",
            include_str!("kernels/checkpoint_copy.wgsl"),
        );
        let params = self.ctx.create_buffer_checked(
            "checkpoint copy params",
            16,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            None,
        )?;
        let launches = self
            .states
            .iter()
            .zip(layers)
            .map(|(l, [att, ffn, wkv])| crate::kernels::Launch {
                label: "checkpoint copy",
                bind_group: crate::kernels::bind(
                    device,
                    &pipeline,
                    "checkpoint copy",
                    &[&params, &l.att_shift, &l.ffn_shift, &l.wkv, att, ffn, wkv],
                ),
                pipeline: pipeline.clone(),
            })
            .collect();
        // About four vec4 words per thread.
        let grid = (wl / 16).div_ceil(1024).max(1) as u32;
        Ok((launches, params, grid))
    }

    /// The checkpoint the step being submitted takes at its start, if one was asked for: its
    /// slot (the shift half that holds the slot's state before the step is kept for the
    /// rollback).
    pub(crate) fn take_checkpoint_request(&mut self) -> Option<u32> {
        let slot = self.checkpoint.as_mut()?.requested.take()?;
        let half = self.halves[slot];
        let ((so, sl), (wo, wl)) = self.slot_ranges_in(slot, half);
        let checkpoint = self.checkpoint.as_mut()?;
        checkpoint.taken = Some((slot, half));
        // (Uploaded before the step's commands run; in vec4 words: n_embd is a multiple of
        // the head size, 64.)
        let words = [so / 16, wo / 16, sl / 16, wl / 16].map(|w| w as u32);
        let params = &checkpoint.kernel.1;
        self.ctx
            .queue
            .write_buffer(params, 0, bytemuck::cast_slice(&words));
        Some(slot as u32)
    }

    /// Records the copies of a checkpoint of `slot`'s sampling counters (two copy commands,
    /// before the step's pass).
    pub(crate) fn record_checkpoint_counters(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        slot: usize,
    ) {
        if let Some(sampler) = &self.sampler {
            sampler.record_checkpoint(encoder, slot);
        }
    }

    /// Records the copies of a checkpoint's state (the step's first dispatches; where the
    /// slot's state is was uploaded when the step took the checkpoint).
    pub(crate) fn record_checkpoint_state(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(checkpoint) = &self.checkpoint {
            let (launches, _, grid) = &checkpoint.kernel;
            for launch in launches {
                launch.record(pass, *grid, 1);
            }
        }
    }

    /// Goes back to the latest [`Engine::checkpoint`]: its slot's state and sampling
    /// counters, or only the counters, as the checkpoint kept them, after every step
    /// submitted so far (in queue order, without waiting). If no step was submitted since
    /// the checkpoint was asked for, there is nothing to undo.
    pub fn rollback(&mut self, what: Rollback) -> Result<()> {
        let Some(checkpoint) = &mut self.checkpoint else {
            return Err(EngineError::Invalid("no checkpoint to roll back to".into()));
        };
        if checkpoint.requested.take().is_some() {
            return Ok(());
        }
        let Some((slot, half)) = checkpoint.taken else {
            return Err(EngineError::Invalid("no checkpoint to roll back to".into()));
        };
        let ((so, sl), (wo, wl)) = self.slot_ranges_in(slot, half);
        let checkpoint = self.checkpoint.as_ref().expect("checked above");
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        if what == Rollback::All {
            for (l, [att, ffn, wkv]) in self.states.iter().zip(&checkpoint.layers) {
                encoder.copy_buffer_to_buffer(att, 0, &l.att_shift, so, sl);
                encoder.copy_buffer_to_buffer(ffn, 0, &l.ffn_shift, so, sl);
                encoder.copy_buffer_to_buffer(wkv, 0, &l.wkv, wo, wl);
            }
            // The state is back in the half it was in.
            self.halves[slot] = half;
        }
        let sampler = self
            .sampler
            .as_ref()
            .expect("a checkpoint makes the sampler");
        sampler.record_rollback(&mut encoder, slot)?;
        self.ctx.queue.submit([encoder.finish()]);
        Ok(())
    }
}
