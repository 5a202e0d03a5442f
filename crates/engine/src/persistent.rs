//! Persistent kernels for one-token steps: the channel mix as one dispatch
//! (kernels/ffn_persistent.wgsl) instead of four, its workgroups meeting at a grid barrier
//! (rwkv-gpu's grid_sync.wgsl) between the key and value products. A dependent dispatch
//! costs ~7 us of idle GPU on an H200, a grid barrier ~1-2 us.
//!
//! The grid is sized once per pipeline by [`GridSync::calibrate`] (the largest grid whose
//! barriers check out, capped by [`PERSISTENT_WGS_ENV`]); on a CPU adapter (lavapipe, whose
//! workgroups do not all run at once) it is one workgroup, which still tests the kernel's
//! results. [`PERSISTENT_ENV`] = 0 turns the path off.

use std::collections::HashMap;

use gguf::GgmlType;
use rwkv_gpu::{GpuContext, GpuMatrix, GridSync, PhaseMatrix};

use crate::error::Result;
use crate::kernels::{self, uniform, Kernels};

/// Environment variable: `0` turns the persistent kernels off.
pub const PERSISTENT_ENV: &str = "WEB_RWKV_PERSISTENT";
/// Environment variable: the largest grid of a persistent kernel (default 264; for
/// measurements).
pub const PERSISTENT_WGS_ENV: &str = "WEB_RWKV_PERSISTENT_WGS";

const DEFAULT_MAX_WGS: u32 = 264;
/// Checked barriers per calibration run, and the spins after which a calibration barrier
/// gives up (a grid that is not resident then fails fast).
const PROBE_ROUNDS: u32 = 8;
const PROBE_SPINS: u32 = 20_000;

/// Mirrors Params in ffn_persistent.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct FfnParams {
    pub key: PhaseMatrix,
    pub value: PhaseMatrix,
    pub dim: u32,
    pub ffn: u32,
    pub half_stride: u32,
    pub eps: f32,
    pub key_block: u32,
    pub value_block: u32,
    pub max_spins: u32,
    pub probe_rounds: u32,
    pub skip: u32,
    pub _pad: u32,
}

/// The persistent channel-mix pipelines (one per pair of key and value weight types), their
/// grids, and the barrier's counters.
pub(crate) struct PersistentFfn {
    pub sync: GridSync,
    pipelines: HashMap<(GgmlType, GgmlType), (wgpu::ComputePipeline, u32)>,
    subgroups: bool,
    /// The device's subgroup size where it is fixed (the rows' sums by shuffles).
    subgroup: Option<u32>,
    max_wgs: u32,
    dim: u32,
    ffn: u32,
}

/// A layer's persistent channel mix, ready to bind.
pub(crate) struct FfnLaunch<'a> {
    pub pipeline: wgpu::ComputePipeline,
    pub workgroups: u32,
    pub params: FfnParams,
    pub key: &'a wgpu::Buffer,
    pub value: &'a wgpu::Buffer,
}

impl PersistentFfn {
    /// `None` where the path is off ([`PERSISTENT_ENV`]).
    pub fn new(ctx: &GpuContext, dim: u32, ffn: u32) -> Result<Option<PersistentFfn>> {
        if !rwkv_gpu::env_on(PERSISTENT_ENV) || !dim.is_multiple_of(256) || !ffn.is_multiple_of(256) {
            return Ok(None);
        }
        // Workgroup memory: the quantized input, x, and the reductions' 2 KB.
        let bytes = rwkv_gpu::persistent_prelude_bytes(dim.max(ffn)) + 4 * dim + 2048;
        if bytes > ctx.limits.max_compute_workgroup_storage_size {
            return Ok(None);
        }
        let info = &ctx.info;
        let subgroup = (ctx.has_subgroups()
            && info.subgroup_min_size == info.subgroup_max_size
            && info.subgroup_min_size >= 4)
            .then_some(info.subgroup_min_size);
        let max_wgs = if ctx.info.device_type == wgpu::DeviceType::Cpu {
            1
        } else {
            rwkv_gpu::env_parse(PERSISTENT_WGS_ENV).unwrap_or(DEFAULT_MAX_WGS)
        };
        Ok(Some(PersistentFfn {
            sync: GridSync::new(ctx, "grid sync")?,
            pipelines: HashMap::new(),
            subgroups: ctx.has_subgroups(),
            subgroup,
            max_wgs: max_wgs.clamp(1, rwkv_gpu::MAX_GRID),
            dim,
            ffn,
        }))
    }

    /// The launch of one layer's channel mix, if its weights suit the kernel (8-bit-input
    /// types in one part each, both rounded as ggml rounds their inputs: `rounding`).
    #[allow(clippy::too_many_arguments)]
    pub fn launch<'a>(
        &mut self,
        ctx: &GpuContext,
        key: &'a GpuMatrix,
        value: &'a GpuMatrix,
        rounding: bool,
        half_stride: u32,
        eps: f32,
        probe_buffers: &[&wgpu::Buffer],
    ) -> Result<Option<FfnLaunch<'a>>> {
        let (Some((km, kb)), Some((vm, vb))) = (PhaseMatrix::of(key), PhaseMatrix::of(value))
        else {
            return Ok(None);
        };
        let (Some(kf), Some(vf)) = (
            rwkv_gpu::persistent_format(key.ty),
            rwkv_gpu::persistent_format(value.ty),
        ) else {
            return Ok(None);
        };
        if !rounding || key.cols as u32 != self.dim || value.cols as u32 != self.ffn {
            return Ok(None);
        }
        let params = FfnParams {
            key: km,
            value: vm,
            dim: self.dim,
            ffn: self.ffn,
            half_stride,
            eps,
            key_block: kf.block(),
            value_block: vf.block(),
            max_spins: rwkv_gpu::SYNC_MAX_SPINS,
            probe_rounds: 0,
            skip: rwkv_gpu::env_parse("WEB_RWKV_PERSISTENT_SKIP").unwrap_or(0),
            _pad: 0,
        };
        let types = (key.ty, value.ty);
        if !self.pipelines.contains_key(&types) {
            let Some(pipeline) = self.pipeline(ctx, types) else {
                return Ok(None);
            };
            // Calibrate with this pipeline and the layer's buffers, in probe mode.
            let probe = FfnParams {
                probe_rounds: PROBE_ROUNDS,
                max_spins: PROBE_SPINS,
                ..params
            };
            let probe_params = uniform(&ctx.device, "ffn probe params", &probe);
            let mut buffers = vec![&probe_params];
            buffers.extend_from_slice(probe_buffers);
            buffers.extend([&self.sync.buffer, kb, vb]);
            let bind = bind(ctx, &pipeline, &buffers);
            let candidates: Vec<u32> = [4096, 2048, 1056, 1024, 528, 512, 264, 256, 132, 128]
                .into_iter()
                .chain((0..7).map(|k| 64 >> k))
                .filter(|&w| w <= self.max_wgs)
                .chain([self.max_wgs])
                .collect();
            let wgs = self.sync.calibrate(ctx, &candidates, |pass, wgs| {
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind, &[]);
                pass.dispatch_workgroups(wgs, 1, 1);
            })?;
            self.pipelines.insert(types, (pipeline, wgs));
        }
        let (pipeline, workgroups) = self.pipelines[&types].clone();
        Ok(Some(FfnLaunch {
            pipeline,
            workgroups,
            params,
            key: kb,
            value: vb,
        }))
    }

    /// The workgroups of each pipeline's grid, for reports.
    pub fn grids(&self) -> Vec<u32> {
        self.pipelines.values().map(|(_, w)| *w).collect()
    }

    fn pipeline(
        &self,
        ctx: &GpuContext,
        (key, value): (GgmlType, GgmlType),
    ) -> Option<wgpu::ComputePipeline> {
        let sg = self.subgroup;
        let source = [
            format!("const X_MAX: u32 = {}u;", self.dim),
            rwkv_gpu::persistent_prelude(self.dim.max(self.ffn), sg),
            rwkv_gpu::GRID_SYNC_WGSL.to_string(),
            rwkv_gpu::persistent_phase(key, "key", 10, self.dim, sg)?,
            rwkv_gpu::persistent_phase(value, "value", 11, self.ffn, sg)?,
            Kernels::step_wgsl().to_string(),
            Kernels::reduce_wgsl(self.subgroups).to_string(),
            include_str!("kernels/ffn_persistent.wgsl").to_string(),
        ]
        .join("\n");
        Some(kernels::pipeline(&ctx.device, "ffn_persistent", &source))
    }
}

/// A bind group of `buffers` at bindings 0, 1, ...
pub(crate) fn bind(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let at: Vec<(u32, &wgpu::Buffer)> = (0..).zip(buffers.iter().copied()).collect();
    kernels::bind_at(&ctx.device, pipeline, "ffn_persistent", &at)
}
