//! A grid-wide barrier for persistent kernels (grid_sync.wgsl): one dispatch whose
//! workgroups wait for each other between phases, instead of one dispatch per phase.
//! Measured on an H200 (`tests/grid_sync.rs`): a barrier over 132 workgroups costs ~1.2-2.2
//! us, a dependent dispatch ~7.3 us (the pipeline barrier drains the GPU, then the next
//! kernel ramps up).
//!
//! The barrier only works when every workgroup of the grid is resident at once, which
//! nothing in WebGPU promises: [`GridSync::calibrate`] finds, with the kernel itself, the
//! largest grid whose barriers check out, and the spin is bounded, so a grid that is not
//! resident finishes with wrong results (counted) instead of hanging.

use crate::context::GpuContext;
use crate::error::GpuError;

/// The barrier's WGSL: `grid_sync(tid, workgroups, max_spins)` and the
/// calibration's `grid_sync_probe`; the kernel declares `SYNC` as `array<atomic<u32>>`
/// (read_write storage) bound to [`GridSync::buffer`].
pub const GRID_SYNC_WGSL: &str = include_str!("grid_sync.wgsl");

/// The largest grid [`GridSync::calibrate`] checks (and the barrier's count holds).
pub const MAX_GRID: u32 = 4096;

/// Spins of a barrier's wait before it gives up in normal runs: seconds, so only a grid that
/// cannot all be resident (a bug the calibration should have caught) reaches it.
pub const SYNC_MAX_SPINS: u32 = 1 << 26;

/// The barrier's counters: word 0 its state (zero between barriers but for the generation),
/// word 1 the waits given up, word 2 the calibration's wrong words, then its probe words.
pub struct GridSync {
    pub buffer: wgpu::Buffer,
}

impl GridSync {
    pub fn new(ctx: &GpuContext, label: &str) -> Result<GridSync, GpuError> {
        let buffer = ctx.create_storage_buffer(label, &vec![0u8; 16 + 8 * MAX_GRID as usize])?;
        Ok(GridSync { buffer })
    }

    /// The waits given up since the last call (blocking read), zeroing the count.
    pub fn take_timeouts(&self, ctx: &GpuContext) -> Result<u32, GpuError> {
        let words = ctx.read_buffer_bytes(&self.buffer, 0, 8)?;
        let timeouts = u32::from_le_bytes([words[4], words[5], words[6], words[7]]);
        if timeouts != 0 {
            ctx.queue.write_buffer(&self.buffer, 4, &[0u8; 4]);
        }
        Ok(timeouts)
    }

    /// The largest of `candidates` (each at most [`MAX_GRID`]) whose grid passes the
    /// kernel's own barrier check: `record(pass, workgroups)` records one dispatch of the
    /// kernel in its calibration mode (`grid_sync_probe`). 1 if none does; an error if
    /// even one workgroup fails (the kernel is broken).
    pub fn calibrate(
        &self,
        ctx: &GpuContext,
        candidates: &[u32],
        mut record: impl FnMut(&mut wgpu::ComputePass<'_>, u32),
    ) -> Result<u32, GpuError> {
        let mut sizes: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|&w| (1..=MAX_GRID).contains(&w))
            .chain([1])
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        sizes.dedup();
        for wgs in sizes {
            ctx.queue.write_buffer(&self.buffer, 0, &[0u8; 16]);
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                record(&mut pass, wgs);
            }
            ctx.queue.submit([encoder.finish()]);
            let words = ctx.read_buffer_bytes(&self.buffer, 0, 12)?;
            let word = |i: usize| u32::from_le_bytes(words[4 * i..4 * i + 4].try_into().unwrap());
            if word(1) == 0 && word(2) == 0 {
                ctx.queue.write_buffer(&self.buffer, 0, &[0u8; 16]);
                return Ok(wgs);
            }
        }
        Err(GpuError::InvalidArgument(
            "grid barrier: one workgroup failed its own barrier check".into(),
        ))
    }
}
