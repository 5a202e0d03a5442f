//! The driver's statistics of compiled kernels (register count, shared memory, spills):
//! what bounds how many workgroups of a kernel an SM holds at once. wgpu does not expose
//! them, so this compiles the kernels' WGSL to SPIR-V with naga and builds the pipelines
//! directly on Vulkan with VK_KHR_pipeline_executable_properties.
//!
//! `cargo run --release -p rwkv-engine --example pipeline_stats` (on the GPU machine: the
//! Vulkan loader and a driver with that extension; lavapipe has none and says so).
//! The kernels: the one-token and few-token direct matvecs of a 2.9B model's matrices, and
//! the persistent layer tail.

use std::ffi::CStr;

use anyhow::{anyhow, bail, Context, Result};
use ash::vk;
use gguf::GgmlType;

/// (label, WGSL) of each kernel to inspect.
fn kernels() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mats = [
        (GgmlType::Q4_K, 2560, 2560),
        (GgmlType::Q4_K, 10240, 2560),
        (GgmlType::Q6_K, 2560, 10240),
        (GgmlType::Q8_0, 2560, 10240),
        (GgmlType::F16, 576, 2560),
    ];
    for (ty, rows, cols) in mats {
        for tokens in [1, 4, 16] {
            if let Some(src) = rwkv_gpu::direct_kernel_wgsl(ty, rows, cols, tokens, 1) {
                out.push((format!("direct {ty} {rows}x{cols} tokens {tokens}"), src));
            }
        }
    }
    let q4 = [GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K];
    if let Some(src) = rwkv_engine::layer_tail_wgsl(q4, 2560, 10240, true, Some(32)) {
        out.push(("layer tail Q4_K/Q4_K/Q6_K".into(), src));
    }
    out
}

/// A kernel's bindings of group 0: (binding, whether a uniform buffer).
type Bindings = Vec<(u32, bool)>;

/// SPIR-V words of `wgsl` (naga, SPIR-V 1.6) and its bindings.
fn spirv(wgsl: &str) -> Result<(Vec<u32>, Bindings)> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| anyhow!("{e}"))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| anyhow!("{e:?}"))?;
    // As wgpu builds our kernels (rwkv-gpu's shader.rs): buffer bounds checks, no loop
    // counters, workgroup memory zeroed.
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    let options = naga::back::spv::Options {
        lang_version: (1, 6),
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: restrict,
            buffer: restrict,
            ..Default::default()
        },
        force_loop_bounding: false,
        ..Default::default()
    };
    let words =
        naga::back::spv::write_vec(&module, &info, &options, None).map_err(|e| anyhow!("{e}"))?;
    let mut bindings: Bindings = module
        .global_variables
        .iter()
        .filter_map(|(_, g)| {
            let b = g.binding.as_ref()?;
            Some((b.binding, g.space == naga::AddressSpace::Uniform))
        })
        .collect();
    bindings.sort_unstable();
    Ok((words, bindings))
}

fn main() -> Result<()> {
    // SAFETY: plain Vulkan calls on objects this function creates and destroys in order.
    unsafe { run() }
}

unsafe fn run() -> Result<()> {
    let entry = ash::Entry::load().context("no Vulkan loader")?;
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    let instance = entry.create_instance(
        &vk::InstanceCreateInfo::default().application_info(&app),
        None,
    )?;
    let physical = instance
        .enumerate_physical_devices()?
        .into_iter()
        .max_by_key(|&p| {
            (instance.get_physical_device_properties(p).device_type
                == vk::PhysicalDeviceType::DISCRETE_GPU) as u8
        })
        .ok_or_else(|| anyhow!("no Vulkan device"))?;
    let props = instance.get_physical_device_properties(physical);
    let name = CStr::from_ptr(props.device_name.as_ptr()).to_string_lossy();
    println!("device: {name}");
    let ext = ash::khr::pipeline_executable_properties::NAME;
    let has = instance
        .enumerate_device_extension_properties(physical)?
        .iter()
        .any(|e| CStr::from_ptr(e.extension_name.as_ptr()) == ext);
    if !has {
        // Still check that every kernel compiles to SPIR-V.
        for (label, wgsl) in kernels() {
            let (words, _) = spirv(&wgsl).with_context(|| label.clone())?;
            println!("{label}: SPIR-V {} words", words.len());
        }
        bail!("{name} has no {}", ext.to_string_lossy());
    }
    let queue_family = instance
        .get_physical_device_queue_family_properties(physical)
        .iter()
        .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
        .ok_or_else(|| anyhow!("no compute queue"))? as u32;
    let priorities = [1.0];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(queue_family)
        .queue_priorities(&priorities)];
    let mut exec_props = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default()
        .pipeline_executable_info(true);
    let mut v13 = vk::PhysicalDeviceVulkan13Features::default().shader_integer_dot_product(true);
    let mut v12 = vk::PhysicalDeviceVulkan12Features::default()
        .shader_float16(true)
        .shader_int8(true)
        .storage_buffer8_bit_access(true);
    let mut v11 = vk::PhysicalDeviceVulkan11Features::default().storage_buffer16_bit_access(true);
    let exts = [ext.as_ptr()];
    let info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_extension_names(&exts)
        .push_next(&mut exec_props)
        .push_next(&mut v13)
        .push_next(&mut v12)
        .push_next(&mut v11);
    let device = instance.create_device(physical, &info, None)?;
    let exec = ash::khr::pipeline_executable_properties::Device::new(&instance, &device);
    for (label, wgsl) in kernels() {
        let (words, bindings) = match spirv(&wgsl) {
            Ok(s) => s,
            Err(e) => {
                println!("{label}: {e}");
                continue;
            }
        };
        let layout_bindings: Vec<vk::DescriptorSetLayoutBinding> = bindings
            .iter()
            .map(|&(b, uniform)| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(if uniform {
                        vk::DescriptorType::UNIFORM_BUFFER
                    } else {
                        vk::DescriptorType::STORAGE_BUFFER
                    })
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let set_layout = device.create_descriptor_set_layout(
            &vk::DescriptorSetLayoutCreateInfo::default().bindings(&layout_bindings),
            None,
        )?;
        let set_layouts = [set_layout];
        let layout = device.create_pipeline_layout(
            &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
            None,
        )?;
        let module = device
            .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main");
        let create = [vk::ComputePipelineCreateInfo::default()
            .stage(stage)
            .layout(layout)
            .flags(vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR)];
        let pipeline = device
            .create_compute_pipelines(vk::PipelineCache::null(), &create, None)
            .map_err(|(_, e)| anyhow!("{label}: {e}"))?[0];
        let pinfo = vk::PipelineInfoKHR::default().pipeline(pipeline);
        let executables = exec.get_pipeline_executable_properties(&pinfo)?;
        let mut line = format!("{label}:");
        for index in 0..executables.len() as u32 {
            let einfo = vk::PipelineExecutableInfoKHR::default()
                .pipeline(pipeline)
                .executable_index(index);
            for s in exec.get_pipeline_executable_statistics(&einfo)? {
                let name = CStr::from_ptr(s.name.as_ptr()).to_string_lossy();
                let value = match s.format {
                    vk::PipelineExecutableStatisticFormatKHR::BOOL32 => s.value.b32.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
                    _ => format!("{:.1}", s.value.f64),
                };
                line += &format!(" {name}={value};");
            }
        }
        println!("{line}");
        device.destroy_pipeline(pipeline, None);
        device.destroy_shader_module(module, None);
        device.destroy_pipeline_layout(layout, None);
        device.destroy_descriptor_set_layout(set_layout, None);
    }
    device.destroy_device(None);
    instance.destroy_instance(None);
    Ok(())
}
