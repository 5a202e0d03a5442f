//! What a dependent dispatch costs on Vulkan itself, below wgpu: a tiny kernel (132
//! workgroups adding 1 to a buffer) recorded many times in one command buffer with (a) no
//! barrier, (b) one global memory barrier, (c) a buffer memory barrier, (d) the buffer
//! barrier wgpu-hal records (stages: top/bottom of pipe and the vertex, fragment and compute
//! shaders) between dispatches; and with the global barrier, (e) a different descriptor set
//! bound before each dispatch, with its own uniform block (as wgpu's dispatches of our ops
//! have), (g) the same with one uniform block for all, (f) two pipelines of the same shader
//! taking turns. The kernel reads a uniform. wgpu's own figure: `rwkv-gpu`'s `grid_sync` test ("dependent
//! dispatch").
//!
//! `cargo run --release -p rwkv-engine --example barrier_cost` (any Vulkan driver).

use std::time::Instant;

use anyhow::{anyhow, Result};
use ash::vk;

// (Each example uses part of it.)
#[allow(dead_code)]
#[path = "support/vk.rs"]
mod raw;

const SHADER: &str = "
@group(0) @binding(0) var<storage, read_write> buf: array<u32>;
@group(0) @binding(1) var<uniform> u: vec4<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    buf[g.x] = buf[g.x] + 1u + u.x;
}
";
/// Bytes between the uniform blocks of successive descriptor sets.
const UNIFORM_STRIDE: u64 = 256;
const WORKGROUPS: u32 = 132;
const DISPATCHES: u32 = 2000;

fn main() -> Result<()> {
    // SAFETY: plain Vulkan calls on objects this function creates, used in order.
    unsafe { run() }
}

unsafe fn run() -> Result<()> {
    let raw::Gpu {
        // (Bound: the loader must outlive every Vulkan call.)
        _entry: _loader,
        instance,
        physical,
        family,
        ..
    } = raw::gpu(vk::API_VERSION_1_2)?;
    let priorities = [1.0];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(family)
        .queue_priorities(&priorities)];
    let device = instance.create_device(
        physical,
        &vk::DeviceCreateInfo::default().queue_create_infos(&queues),
        None,
    )?;
    let queue = device.get_device_queue(family, 0);

    // The buffer and the uniform blocks (one per dispatch), in device-local memory.
    let mem_props = instance.get_physical_device_memory_properties(physical);
    let device_buffer = |size: u64, usage: vk::BufferUsageFlags| -> Result<_> {
        let buffer = device.create_buffer(
            &vk::BufferCreateInfo::default().size(size).usage(usage),
            None,
        )?;
        let req = device.get_buffer_memory_requirements(buffer);
        let memory_type = (0..mem_props.memory_type_count)
            .find(|&i| {
                req.memory_type_bits & (1 << i) != 0
                    && mem_props.memory_types[i as usize]
                        .property_flags
                        .contains(vk::MemoryPropertyFlags::DEVICE_LOCAL)
            })
            .ok_or_else(|| anyhow!("no device-local memory"))?;
        let memory = device.allocate_memory(
            &vk::MemoryAllocateInfo::default()
                .allocation_size(req.size)
                .memory_type_index(memory_type),
            None,
        )?;
        device.bind_buffer_memory(buffer, memory, 0)?;
        Ok((buffer, memory))
    };
    let (buffer, memory) = device_buffer(
        (WORKGROUPS * 256 * 4) as u64,
        vk::BufferUsageFlags::STORAGE_BUFFER,
    )?;
    let (uniforms, uniform_memory) = device_buffer(
        DISPATCHES as u64 * UNIFORM_STRIDE,
        vk::BufferUsageFlags::UNIFORM_BUFFER,
    )?;

    // The kernel and its one binding.
    let (words, bindings) = raw::spirv(SHADER)?;
    let set_layout = raw::set_layout(&device, &bindings)?;
    let set_layouts = [set_layout];
    let layout = device.create_pipeline_layout(
        &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
        None,
    )?;
    let module =
        device.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)?;
    let flags = vk::PipelineCreateFlags::empty();
    let pipeline = raw::compute_pipeline(&device, module, layout, flags)?;
    let pipeline2 = raw::compute_pipeline(&device, module, layout, flags)?;
    // Two descriptor sets per dispatch, all of the same storage buffer: the first
    // DISPATCHES with a uniform block each (variant e), the others all with the first block
    // (variant g).
    let n_sets = 2 * DISPATCHES;
    let pool_sizes = [
        vk::DescriptorPoolSize::default()
            .ty(vk::DescriptorType::STORAGE_BUFFER)
            .descriptor_count(n_sets),
        vk::DescriptorPoolSize::default()
            .ty(vk::DescriptorType::UNIFORM_BUFFER)
            .descriptor_count(n_sets),
    ];
    let pool = device.create_descriptor_pool(
        &vk::DescriptorPoolCreateInfo::default()
            .max_sets(n_sets)
            .pool_sizes(&pool_sizes),
        None,
    )?;
    let all_layouts = vec![set_layout; n_sets as usize];
    let sets = device.allocate_descriptor_sets(
        &vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(pool)
            .set_layouts(&all_layouts),
    )?;
    let set = sets[0];
    let buffer_info = [vk::DescriptorBufferInfo::default()
        .buffer(buffer)
        .range(vk::WHOLE_SIZE)];
    for (k, &s) in sets.iter().enumerate() {
        let block = if k < DISPATCHES as usize { k as u64 } else { 0 };
        let uniform_info = [vk::DescriptorBufferInfo::default()
            .buffer(uniforms)
            .offset(block * UNIFORM_STRIDE)
            .range(16)];
        device.update_descriptor_sets(
            &[
                vk::WriteDescriptorSet::default()
                    .dst_set(s)
                    .dst_binding(0)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(&buffer_info),
                vk::WriteDescriptorSet::default()
                    .dst_set(s)
                    .dst_binding(1)
                    .descriptor_type(vk::DescriptorType::UNIFORM_BUFFER)
                    .buffer_info(&uniform_info),
            ],
            &[],
        );
    }
    let command_pool = device.create_command_pool(
        &vk::CommandPoolCreateInfo::default()
            .queue_family_index(family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
        None,
    )?;
    let cmd = device.allocate_command_buffers(
        &vk::CommandBufferAllocateInfo::default()
            .command_pool(command_pool)
            .command_buffer_count(1),
    )?[0];
    let fence = device.create_fence(&vk::FenceCreateInfo::default(), None)?;

    // Records `n` dispatches with `barrier` between them, submits and waits: seconds.
    let time = |n: u32, barrier: u32| -> Result<f64> {
        device.reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty())?;
        device.begin_command_buffer(
            cmd,
            &vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
        )?;
        device.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipeline);
        device.cmd_bind_descriptor_sets(
            cmd,
            vk::PipelineBindPoint::COMPUTE,
            layout,
            0,
            &[set],
            &[],
        );
        let access = vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE;
        // wgpu-hal's stages for a storage buffer (vulkan/conv.rs, command.rs).
        let shaders = vk::PipelineStageFlags::VERTEX_SHADER
            | vk::PipelineStageFlags::FRAGMENT_SHADER
            | vk::PipelineStageFlags::COMPUTE_SHADER;
        let wgpu_src = vk::PipelineStageFlags::TOP_OF_PIPE | shaders;
        let wgpu_dst = vk::PipelineStageFlags::BOTTOM_OF_PIPE | shaders;
        for k in 0..n {
            if barrier == 4 || barrier == 6 {
                let at = if barrier == 4 { k } else { DISPATCHES + k };
                device.cmd_bind_descriptor_sets(
                    cmd,
                    vk::PipelineBindPoint::COMPUTE,
                    layout,
                    0,
                    &[sets[at as usize]],
                    &[],
                );
            }
            if barrier == 5 {
                let p = if k % 2 == 0 { pipeline } else { pipeline2 };
                device.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, p);
            }
            if k > 0 {
                let stage = vk::PipelineStageFlags::COMPUTE_SHADER;
                match barrier {
                    1 | 4 | 5 | 6 => device.cmd_pipeline_barrier(
                        cmd,
                        stage,
                        stage,
                        vk::DependencyFlags::empty(),
                        &[vk::MemoryBarrier::default()
                            .src_access_mask(access)
                            .dst_access_mask(access)],
                        &[],
                        &[],
                    ),
                    2 | 3 => device.cmd_pipeline_barrier(
                        cmd,
                        if barrier == 3 { wgpu_src } else { stage },
                        if barrier == 3 { wgpu_dst } else { stage },
                        vk::DependencyFlags::empty(),
                        &[],
                        &[vk::BufferMemoryBarrier::default()
                            .src_access_mask(access)
                            .dst_access_mask(access)
                            .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                            .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                            .buffer(buffer)
                            .size(vk::WHOLE_SIZE)],
                        &[],
                    ),
                    _ => {}
                }
            }
            device.cmd_dispatch(cmd, WORKGROUPS, 1, 1);
        }
        device.end_command_buffer(cmd)?;
        let cmds = [cmd];
        let t = Instant::now();
        device.queue_submit(
            queue,
            &[vk::SubmitInfo::default().command_buffers(&cmds)],
            fence,
        )?;
        device.wait_for_fences(&[fence], true, u64::MAX)?;
        let secs = t.elapsed().as_secs_f64();
        device.reset_fences(&[fence])?;
        Ok(secs)
    };
    // Warm-up (clocks up), then each variant: the time per dispatch beyond a one-dispatch
    // submission.
    for _ in 0..20 {
        time(DISPATCHES, 1)?;
    }
    let base = time(1, 0)?;
    for (barrier, label) in [
        (0, "no barrier"),
        (1, "global memory barrier"),
        (2, "buffer memory barrier"),
        (3, "wgpu-hal's barrier"),
        (4, "barrier + new set, new uniforms"),
        (6, "barrier + new set, same uniforms"),
        (5, "barrier + pipeline swap"),
    ] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            best = best.min(time(DISPATCHES, barrier)?);
        }
        println!(
            "{label:>22}: {:6.2} us per dispatch ({} dispatches of {WORKGROUPS} workgroups)",
            (best - base) / (DISPATCHES - 1) as f64 * 1e6,
            DISPATCHES
        );
    }
    device.device_wait_idle()?;
    device.destroy_fence(fence, None);
    device.destroy_command_pool(command_pool, None);
    device.destroy_descriptor_pool(pool, None);
    device.destroy_pipeline(pipeline, None);
    device.destroy_pipeline(pipeline2, None);
    device.destroy_shader_module(module, None);
    device.destroy_pipeline_layout(layout, None);
    device.destroy_descriptor_set_layout(set_layout, None);
    device.free_memory(memory, None);
    device.destroy_buffer(buffer, None);
    device.free_memory(uniform_memory, None);
    device.destroy_buffer(uniforms, None);
    device.destroy_device(None);
    instance.destroy_instance(None);
    Ok(())
}
