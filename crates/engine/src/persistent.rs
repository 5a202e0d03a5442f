//! Persistent kernels for one-token steps: the tail of a layer (the attention's output
//! projection and the channel mix) as one dispatch (kernels/layer_tail.wgsl) instead of six,
//! its workgroups meeting at grid barriers (rwkv-gpu's grid_sync.wgsl) between phases. A
//! dependent dispatch costs ~5-7 us of idle GPU on an H200, a grid barrier ~1.4 us.
//!
//! The grid is sized once per pipeline by [`GridSync::calibrate`] (the largest grid whose
//! barriers, and the kernel's plain cross-workgroup reads, check out, capped by
//! [`PERSISTENT_WGS_ENV`]); on a CPU adapter (lavapipe, whose workgroups do not all run at
//! once) it is one workgroup, which still tests the kernel's results. The path is off by
//! default ([`crate::EngineOptions::persistent`], [`PERSISTENT_ENV`]).

use std::collections::HashMap;

use gguf::GgmlType;
use rwkv_gpu::{GpuContext, GpuMatrix, GridSync, PhaseMatrix, Q8Format, XqRegion};

use crate::error::Result;
use crate::kernels::{self, uniform, Kernels};

/// Environment variable: `1` turns the persistent kernels on (the default of
/// [`crate::EngineOptions::persistent`]).
pub const PERSISTENT_ENV: &str = "WEB_RWKV_PERSISTENT";
/// Environment variable: the largest grid of a persistent kernel (default 528; for
/// measurements).
pub const PERSISTENT_WGS_ENV: &str = "WEB_RWKV_PERSISTENT_WGS";

const DEFAULT_MAX_WGS: u32 = 528;
/// Checked barriers per calibration run, and the spins after which a calibration barrier
/// gives up (a grid that is not resident then fails fast).
const PROBE_ROUNDS: u32 = 8;
const PROBE_SPINS: u32 = 20_000;

/// A phase's input in xq (mirrors PhaseInput in layer_tail.wgsl).
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

/// Mirrors Params in layer_tail.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct TailParams {
    pub output: PhaseMatrix,
    pub key: PhaseMatrix,
    pub value: PhaseMatrix,
    pub output_input: InputParams,
    pub key_input: InputParams,
    pub value_input: InputParams,
    pub dim: u32,
    pub ffn: u32,
    pub half_stride: u32,
    pub eps: f32,
    pub max_spins: u32,
    pub probe_rounds: u32,
    pub skip: u32,
    pub _pad: u32,
}

/// The matrices of a layer's tail.
#[derive(Clone, Copy)]
pub(crate) struct TailWeights<'a> {
    pub output: &'a GpuMatrix,
    pub key: &'a GpuMatrix,
    pub value: &'a GpuMatrix,
}

/// The layer-tail pipelines (one per combination of weight types), their grids, and the
/// buffers they share: the barrier's counters, the phases' quantized inputs, the output
/// projection's result.
pub(crate) struct PersistentTail {
    pub sync: GridSync,
    /// The phases' inputs quantized, where `regions` say (output, key, value).
    pub xq: wgpu::Buffer,
    /// The output projection's result (added to x with the value's).
    pub y: wgpu::Buffer,
    regions: [XqRegion; 3],
    pipelines: HashMap<[GgmlType; 3], (rwkv_gpu::Pipeline, u32)>,
    subgroups: bool,
    /// The device's subgroup size where it is fixed (the rows' sums by shuffles).
    subgroup: Option<u32>,
    max_wgs: u32,
    dim: u32,
    ffn: u32,
}

/// A layer's tail, ready to bind.
pub(crate) struct TailLaunch<'a> {
    pub pipeline: rwkv_gpu::Pipeline,
    pub workgroups: u32,
    pub params: TailParams,
    /// The weight buffers, in binding order (output, key, value).
    pub weights: [&'a wgpu::Buffer; 3],
}

impl PersistentTail {
    /// `None` where the model's shape does not suit the kernel.
    pub fn new(ctx: &GpuContext, dim: u32, ffn: u32) -> Result<Option<PersistentTail>> {
        if !dim.is_multiple_of(256) || !ffn.is_multiple_of(256) {
            return Ok(None);
        }
        let max_wgs = if ctx.info.device_type == wgpu::DeviceType::Cpu {
            1
        } else {
            rwkv_gpu::env_parse(PERSISTENT_WGS_ENV).unwrap_or(DEFAULT_MAX_WGS)
        };
        let info = &ctx.info;
        let subgroup = (ctx.has_subgroups()
            && info.subgroup_min_size == info.subgroup_max_size
            && info.subgroup_min_size >= 4)
            .then_some(info.subgroup_min_size);
        let regions = tail_regions(dim, ffn);
        let xq = ctx.create_storage_buffer("tail xq", &vec![0u8; 4 * regions[2].end as usize])?;
        Ok(Some(PersistentTail {
            sync: GridSync::new(ctx, "grid sync")?,
            xq,
            y: ctx.create_storage_buffer("tail y", &vec![0u8; 4 * dim as usize])?,
            regions,
            pipelines: HashMap::new(),
            subgroups: ctx.has_subgroups(),
            subgroup,
            max_wgs: max_wgs.clamp(1, rwkv_gpu::MAX_GRID),
            dim,
            ffn,
        }))
    }

    /// The launch of one layer's tail, if its weights suit the kernel (8-bit-input types in
    /// one part each, rounded as ggml rounds their inputs: `rounding`). `layer_buffers`:
    /// bindings 1.. up to the barrier's counters (see layer_tail.wgsl), for the calibration.
    #[allow(clippy::too_many_arguments)]
    pub fn launch<'a>(
        &mut self,
        ctx: &GpuContext,
        w: TailWeights<'a>,
        rounding: bool,
        half_stride: u32,
        eps: f32,
        layer_buffers: &[&wgpu::Buffer],
    ) -> Result<Option<TailLaunch<'a>>> {
        let mats = [w.output, w.key, w.value];
        let cols = [self.dim, self.dim, self.ffn];
        let mut phases = Vec::new();
        for (m, c) in mats.iter().zip(cols) {
            let (Some((pm, buf)), Some(format)) =
                (PhaseMatrix::of(m), rwkv_gpu::persistent_format(m.ty))
            else {
                return Ok(None);
            };
            if m.cols as u32 != c {
                return Ok(None);
            }
            phases.push((pm, buf, format));
        }
        if !rounding {
            return Ok(None);
        }
        let input = |k: usize| InputParams::new(phases[k].2, self.regions[k]);
        let params = TailParams {
            output: phases[0].0,
            key: phases[1].0,
            value: phases[2].0,
            output_input: input(0),
            key_input: input(1),
            value_input: input(2),
            dim: self.dim,
            ffn: self.ffn,
            half_stride,
            eps,
            max_spins: rwkv_gpu::SYNC_MAX_SPINS,
            probe_rounds: 0,
            skip: rwkv_gpu::env_parse("WEB_RWKV_PERSISTENT_SKIP").unwrap_or(0),
            _pad: 0,
        };
        let weights = [phases[0].1, phases[1].1, phases[2].1];
        let types = mats.map(|m| m.ty);
        if !self.pipelines.contains_key(&types) {
            let Some(pipeline) = self.pipeline(ctx, types) else {
                return Ok(None);
            };
            // Calibrate with this pipeline and the layer's buffers, in probe mode.
            let probe = TailParams {
                probe_rounds: PROBE_ROUNDS,
                max_spins: PROBE_SPINS,
                ..params
            };
            let probe_params = uniform(&ctx.device, "layer tail probe params", &probe);
            let mut buffers = vec![&probe_params];
            buffers.extend_from_slice(layer_buffers);
            buffers.extend(self.shared_buffers(weights));
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
        Ok(Some(TailLaunch {
            pipeline,
            workgroups,
            params,
            weights,
        }))
    }

    /// The bindings after the layer's own (see layer_tail.wgsl): the barrier's counters, the
    /// weights, xq, y.
    pub fn shared_buffers<'a>(&'a self, weights: [&'a wgpu::Buffer; 3]) -> Vec<&'a wgpu::Buffer> {
        let mut b = vec![&self.sync.buffer];
        b.extend(weights);
        b.extend([&self.xq, &self.y]);
        b
    }

    /// The workgroups of each pipeline's grid, for reports.
    pub fn grids(&self) -> Vec<u32> {
        self.pipelines.values().map(|(_, w)| *w).collect()
    }

    fn pipeline(&self, ctx: &GpuContext, types: [GgmlType; 3]) -> Option<rwkv_gpu::Pipeline> {
        let source = layer_tail_wgsl(types, self.dim, self.ffn, self.subgroups, self.subgroup)?;
        Some(kernels::pipeline(&ctx.device, "layer_tail", &source))
    }
}

/// The layer tail's WGSL for output, key and value weights of `types`, a model of width
/// `dim` and channel-mix width `ffn`, on a device with subgroups (`subgroups`) of a fixed
/// size (`subgroup`); `None` for weight types the persistent phases do not run. (Also for
/// tools that inspect the compiled kernels, e.g. the `pipeline_stats` example.)
pub fn layer_tail_wgsl(
    types: [GgmlType; 3],
    dim: u32,
    ffn: u32,
    subgroups: bool,
    subgroup: Option<u32>,
) -> Option<String> {
    let sg = subgroup;
    let [output, key, value] = tail_regions(dim, ffn);
    Some(
        [
            rwkv_gpu::persistent_prelude(sg),
            rwkv_gpu::GRID_SYNC_WGSL.to_string(),
            rwkv_gpu::persistent_phase(types[0], "output", 11, dim, sg, output)?,
            rwkv_gpu::persistent_phase(types[1], "key", 12, dim, sg, key)?,
            rwkv_gpu::persistent_phase(types[2], "value", 13, ffn, sg, value)?,
            Kernels::step_wgsl().to_string(),
            Kernels::reduce_wgsl(subgroups).to_string(),
            rwkv_gpu::Q8_PACK_WGSL.to_string(),
            include_str!("kernels/q8_blocks.wgsl").to_string(),
            include_str!("kernels/q8_store.wgsl").to_string(),
            include_str!("kernels/layer_tail.wgsl").to_string(),
        ]
        .join("\n"),
    )
}

/// Where the tail's three inputs sit in its xq buffer (output, key, value).
fn tail_regions(dim: u32, ffn: u32) -> [XqRegion; 3] {
    let output = XqRegion::new(0, dim);
    let key = XqRegion::new(output.end, dim);
    [output, key, XqRegion::new(key.end, ffn)]
}

/// A bind group of `buffers` at bindings 0, 1, ...
pub(crate) fn bind(
    ctx: &GpuContext,
    pipeline: &rwkv_gpu::Pipeline,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let at: Vec<(u32, &wgpu::Buffer)> = (0..).zip(buffers.iter().copied()).collect();
    kernels::bind_at(&ctx.device, pipeline, "layer_tail", &at)
}
