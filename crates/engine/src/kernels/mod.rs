//! The RWKV-7-specific compute kernels (WGSL files beside this one) and small helpers to bind
//! them. The quantized matrix products live in `rwkv-gpu`.

use wgpu::util::DeviceExt;

/// Per-step values every kernel reads from one uniform buffer (see `Step` in the WGSL files).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepUniform {
    pub n_rows: u32,
    pub n_chunks: u32,
    pub n_out: u32,
    pub _pad: u32,
}

/// Per-row token-shift source: the row's slot, the previous token's row or [`NO_PREV`], the
/// half of the double-buffered shift state that holds the slot's state, and whether the row
/// is the last of its chunk (it then saves the new state into the other half).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RowInfo {
    pub slot: u32,
    pub prev: u32,
    pub half: u32,
    pub last: u32,
}

pub const NO_PREV: u32 = u32::MAX;

/// Consecutive rows of one sequence within a step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChunkInfo {
    pub slot: u32,
    pub first_row: u32,
    pub n_rows: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LayerNormParams {
    pub dim: u32,
    pub eps: f32,
    pub gather: u32,
    pub count_out: u32,
}

/// See `token_mix.wgsl`. Modes per mix: 0 f32, 1 f16, 2 bf16, 3 Q8_0, 4 Q8_K, 255 none.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TokenMixParams {
    pub dim: u32,
    pub n_mix: u32,
    pub mix_stride: u32,
    pub half_stride: u32,
    pub eps: f32,
    pub _pad: [u32; 3],
    pub mode_a: [[u32; 4]; 2],
    pub mode_b: [[u32; 4]; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RoundParams {
    pub cols: u32,
    pub block_stride: u32,
    pub mode: u32,
    pub count_out: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Wkv7Params {
    pub dim: u32,
    pub first_layer: u32,
    pub block_stride: u32,
    pub group_norm_eps: f32,
    pub ranks: [u32; 4],
    pub hidden_offsets: [u32; 4],
    pub weight_offsets: [u32; 4],
    pub lora_f16: u32,
    pub out_mode: u32,
    pub round_hidden: u32,
    pub _pad: u32,
}

/// Compiled pipelines of the model's own kernels.
pub struct Kernels {
    pub layer_norm: wgpu::ComputePipeline,
    pub token_mix: wgpu::ComputePipeline,
    pub wkv7: wgpu::ComputePipeline,
    pub round_activations: wgpu::ComputePipeline,
}

impl Kernels {
    /// `heads_per_group`: heads per WKV workgroup (1 or 4).
    pub fn new(device: &wgpu::Device, heads_per_group: u32) -> Kernels {
        let wkv = format!(
            "const HPW: u32 = {heads_per_group}u;\n{}{}",
            include_str!("rounding.wgsl"),
            include_str!("wkv7.wgsl")
        );
        Kernels {
            layer_norm: pipeline(device, "layer_norm", include_str!("layer_norm.wgsl")),
            token_mix: pipeline(
                device,
                "token_mix",
                &[
                    include_str!("rounding.wgsl"),
                    include_str!("token_mix.wgsl"),
                ]
                .concat(),
            ),
            wkv7: pipeline(device, "wkv7", &wkv),
            round_activations: pipeline(
                device,
                "round_activations",
                &[
                    include_str!("rounding.wgsl"),
                    include_str!("round_activations.wgsl"),
                ]
                .concat(),
            ),
        }
    }
}

/// A compute pipeline with the layout derived from the shader.
pub fn pipeline(device: &wgpu::Device, label: &str, source: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// Binds `buffers` to bindings 0, 1, 2... of group 0, whole buffers.
pub fn bind(
    device: &wgpu::Device,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// A small uniform buffer holding `value`.
pub fn uniform<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, value: &T) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

/// A kernel launch prepared once: pipeline, bind group, and how to size its grid.
pub struct Launch {
    pub label: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
}

impl Launch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, x: u32, y: u32) {
        if x == 0 || y == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}
