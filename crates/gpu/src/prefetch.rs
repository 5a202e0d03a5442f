//! L2 prefetch of weights (prefetch.wgsl): a dispatch that only reads a matrix, recorded
//! where the GPU is otherwise underused (a latency-bound kernel on a few SMs) and where wgpu
//! needs no barrier before it (it reads weights and writes its own sink), so it runs beside
//! that kernel and the matrix's product, a barrier later, reads from the L2.

use crate::context::GpuContext;
use crate::error::GpuError;
use crate::weights::GpuMatrix;

const PREFETCH_WGSL: &str = include_str!("prefetch.wgsl");

/// Workgroups of a prefetch dispatch (grid-stride over the matrix).
const PREFETCH_WGS: u32 = 256;

/// The prefetch kernel.
pub struct Prefetcher {
    pipeline: wgpu::ComputePipeline,
}

impl Prefetcher {
    pub fn new(ctx: &GpuContext) -> Result<Prefetcher, GpuError> {
        let pipeline =
            crate::shader::compute_pipeline(&ctx.device, "prefetch", PREFETCH_WGSL, None)?;
        Ok(Prefetcher { pipeline })
    }

    /// The prefetch of `w` (its own sink and parameters, so that the dispatch has no
    /// resource transition for wgpu to put a barrier before).
    pub fn call(&self, ctx: &GpuContext, w: &GpuMatrix) -> Result<PrefetchCall, GpuError> {
        let pipeline = &self.pipeline;
        let mut dispatches = Vec::new();
        for part in &w.parts {
            let words = (part.buffer.size() / 4).min(u32::MAX as u64) as u32;
            let params = ctx.create_buffer_checked(
                "prefetch params",
                16,
                wgpu::BufferUsages::UNIFORM,
                Some(bytemuck::cast_slice(&[words, 0, 0, 0])),
            )?;
            let sink = ctx.create_storage_buffer("prefetch sink", &[0u8; 16])?;
            let layout = pipeline.get_bind_group_layout(0);
            let entries = [&params, &part.buffer, &sink]
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: b.as_entire_binding(),
                })
                .collect::<Vec<_>>();
            let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("prefetch"),
                layout: &layout,
                entries: &entries,
            });
            dispatches.push((pipeline.clone(), bind));
        }
        Ok(PrefetchCall { dispatches })
    }
}

/// One prepared prefetch of a matrix: a dispatch per part.
pub struct PrefetchCall {
    dispatches: Vec<(wgpu::ComputePipeline, wgpu::BindGroup)>,
}

impl PrefetchCall {
    pub fn n_dispatches(&self) -> usize {
        self.dispatches.len()
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for (pipeline, bind) in &self.dispatches {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind, &[]);
            pass.dispatch_workgroups(PREFETCH_WGS, 1, 1);
        }
    }
}
