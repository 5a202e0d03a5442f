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
use rwkv_gpu::{GpuContext, GpuMatrix, GridSync, PhaseMatrix, Q8Format, XqRegion};

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
    pub key_input: InputParams,
    pub value_input: InputParams,
    pub max_spins: u32,
    pub probe_rounds: u32,
    pub skip: u32,
    pub _pad: u32,
}

/// A phase's input in xq (mirrors four fields of Params in ffn_persistent.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct InputParams {
    pub q8k: u32,
    pub codes: u32,
    pub d: u32,
    pub bs: u32,
}

impl InputParams {
    fn new(format: Q8Format, r: XqRegion) -> InputParams {
        InputParams {
            q8k: (format == Q8Format::K) as u32,
            codes: r.codes,
            d: r.d,
            bs: r.bs,
        }
    }
}

/// The persistent channel-mix pipelines (one per pair of key and value weight types), their
/// grids, and the barrier's counters.
pub(crate) struct PersistentFfn {
    pub sync: GridSync,
    /// The key's and value's inputs quantized, where `regions` say.
    pub xq: wgpu::Buffer,
    regions: [XqRegion; 2],
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
        if !rwkv_gpu::env_on(PERSISTENT_ENV) || !dim.is_multiple_of(256) || !ffn.is_multiple_of(256)
        {
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
        let key_region = XqRegion::new(0, dim);
        let regions = [key_region, XqRegion::new(key_region.end, ffn)];
        let xq = ctx.create_storage_buffer("ffn xq", &vec![0u8; 4 * regions[1].end as usize])?;
        Ok(Some(PersistentFfn {
            sync: GridSync::new(ctx, "grid sync")?,
            xq,
            regions,
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
            key_input: InputParams::new(kf, self.regions[0]),
            value_input: InputParams::new(vf, self.regions[1]),
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
            buffers.extend([&self.sync.buffer, kb, vb, &self.xq]);
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
        let [kr, vr] = self.regions;
        let source = [
            rwkv_gpu::persistent_prelude(sg),
            rwkv_gpu::GRID_SYNC_WGSL.to_string(),
            rwkv_gpu::persistent_phase(key, "key", 10, self.dim, sg, kr)?,
            rwkv_gpu::persistent_phase(value, "value", 11, self.ffn, sg, vr)?,
            Kernels::step_wgsl().to_string(),
            Kernels::reduce_wgsl(self.subgroups).to_string(),
            rwkv_gpu::Q8_PACK_WGSL.to_string(),
            include_str!("kernels/q8_blocks.wgsl").to_string(),
            include_str!("kernels/q8_store.wgsl").to_string(),
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
