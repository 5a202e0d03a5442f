//! State control: read a slot's state back, write it, reset it, copy one slot to another,
//! keep a checkpoint of it on the GPU and roll back to it.
//! States live on the GPU per layer as `[slots][n_embd]` shift vectors and
//! `[slots][heads][64][64]` WKV matrices; only these calls move them to or from the CPU.

use rwkv_model::{LayerState, State};

use crate::engine::Engine;
use crate::error::{EngineError, Result};

/// A copy of one slot's state kept on the GPU ([`Engine::checkpoint`]).
pub(crate) struct Checkpoint {
    slot: usize,
    /// Per layer: the two shift vectors and the WKV state, each in its own buffer so that
    /// the copies to and from them need no barriers between them.
    layers: Vec<[wgpu::Buffer; 3]>,
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
        let d = self.config.n_embd as u64;
        let shift = d * 4;
        let half = self.halves[slot] as u64 * self.options.max_slots as u64;
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

    /// Keeps a copy of `slot`'s state and sampling counters on the GPU, as they are after
    /// every step submitted so far: the copy runs in queue order, without waiting for the
    /// GPU. [`Engine::rollback`] puts it back. One checkpoint per engine; a new one replaces
    /// the last. Chained steps use it to undo a step that a stop seen late makes one too
    /// many (`chat` keeps its state between turns).
    pub fn checkpoint(&mut self, slot: usize) -> Result<()> {
        self.check_slot(slot)?;
        self.sampler()?;
        let ((so, sl), (wo, wl)) = self.slot_ranges(slot);
        if self.checkpoint.is_none() {
            let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
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
            self.checkpoint = Some(Checkpoint { slot, layers });
        }
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        let checkpoint = self.checkpoint.as_mut().expect("made above");
        checkpoint.slot = slot;
        for (l, [att, ffn, wkv]) in self.states.iter().zip(&checkpoint.layers) {
            encoder.copy_buffer_to_buffer(&l.att_shift, so, att, 0, sl);
            encoder.copy_buffer_to_buffer(&l.ffn_shift, so, ffn, 0, sl);
            encoder.copy_buffer_to_buffer(&l.wkv, wo, wkv, 0, wl);
        }
        let sampler = self.sampler.as_mut().expect("made above");
        sampler.record_checkpoint(&mut encoder, slot)?;
        self.ctx.queue.submit([encoder.finish()]);
        Ok(())
    }

    /// Puts the latest [`Engine::checkpoint`] back into its slot, after every step submitted
    /// so far (in queue order, without waiting): the state and the sampling counters, or
    /// only the counters.
    pub fn rollback(&mut self, what: Rollback) -> Result<()> {
        let Some(checkpoint) = &self.checkpoint else {
            return Err(EngineError::Invalid("no checkpoint to roll back to".into()));
        };
        let slot = checkpoint.slot;
        let ((so, sl), (wo, wl)) = self.slot_ranges(slot);
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        if what == Rollback::All {
            for (l, [att, ffn, wkv]) in self.states.iter().zip(&checkpoint.layers) {
                encoder.copy_buffer_to_buffer(att, 0, &l.att_shift, so, sl);
                encoder.copy_buffer_to_buffer(ffn, 0, &l.ffn_shift, so, sl);
                encoder.copy_buffer_to_buffer(wkv, 0, &l.wkv, wo, wl);
            }
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
