//! The driver's statistics of compiled kernels (register count, shared memory, spills):
//! what bounds how many workgroups of a kernel an SM holds at once. wgpu does not expose
//! them, so this compiles the kernels' WGSL to SPIR-V with naga and builds the pipelines
//! directly on Vulkan with VK_KHR_pipeline_executable_properties.
//!
//! `cargo run --release -p rwkv-engine --example pipeline_stats` (on the GPU machine: the
//! Vulkan loader and a driver with that extension; lavapipe has none and says so).
//! The kernels: the one-token and few-token direct matvecs of a 2.9B model's matrices, and
//! the persistent layer tail, the one-token WKV-7 kernel, the WKV scan, the few-row token
//! mix and the tensor-core product in a few shapes.

use std::ffi::CStr;

use anyhow::{bail, Context, Result};
use ash::vk;
use gguf::GgmlType;

// (Each example uses part of it.)
#[allow(dead_code)]
#[path = "support/vk.rs"]
mod raw;

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
    // (Entry point `main` is what is compiled: the few-row token mix is renamed to it.)
    let ranks = [96, 96, 320, 64];
    out.push((
        "wkv7 one token (2.9B ranks)".into(),
        rwkv_engine::kernels::wkv7_wgsl(ranks, true),
    ));
    out.push((
        "wkv7 scan, 16 lanes".into(),
        rwkv_engine::kernels::wkv7_scan_wgsl(16, 64, 2, 1, 0),
    ));
    out.push((
        "wkv7 scan of one-token chunks, 16 lanes, 4 rows".into(),
        rwkv_engine::kernels::wkv7_scan_wgsl(16, 64, 1, 4, 0),
    ));
    // (Entry points renamed to `main`, one at a time.)
    let chunked = rwkv_engine::kernels::wkv7_chunked_wgsl(64);
    for entry in ["chunk_prep", "chunk_chain"] {
        out.push((
            format!("wkv7 matrix-form scan, {entry}"),
            chunked.replace(&format!("fn {entry}("), "fn main("),
        ));
    }
    let mix = rwkv_engine::kernels::token_mix_wgsl(true, None);
    out.push((
        "token mix few rows".into(),
        mix.replace("fn main(", "fn main_long(")
            .replace("fn main_few(", "fn main("),
    ));
    for (threads, per_thread) in [(640, 1), (320, 2), (128, 5), (64, 10)] {
        let shape = rwkv_engine::kernels::MixLongShape {
            threads,
            per_thread,
        };
        out.push((
            format!("token mix long steps (2.9B), {threads} threads"),
            rwkv_engine::kernels::token_mix_wgsl(true, Some(shape))
                .replace("fn main_long(", "fn main("),
        ));
    }
    // The tensor-core product (compiled only where the device has cooperative matrices).
    for shape in ["2x2x64", "2x2x32", "4x2x64", "4x4x32", "2x2x128"] {
        let shape = rwkv_gpu::CoopShape::parse(shape).expect("a valid shape");
        out.push((
            format!("coop product {shape:?}"),
            rwkv_gpu::coop_kernel_wgsl(shape, 32),
        ));
    }
    out
}

fn main() -> Result<()> {
    // SAFETY: plain Vulkan calls on objects this function creates and destroys in order.
    unsafe { run() }
}

unsafe fn run() -> Result<()> {
    let raw::Gpu {
        // (Bound: the loader must outlive every Vulkan call.)
        _entry: _loader,
        instance,
        physical,
        name,
        family: queue_family,
    } = raw::gpu(vk::API_VERSION_1_3)?;
    let ext = ash::khr::pipeline_executable_properties::NAME;
    let offered = instance.enumerate_device_extension_properties(physical)?;
    let offers = |name: &CStr| {
        offered
            .iter()
            .any(|e| CStr::from_ptr(e.extension_name.as_ptr()) == name)
    };
    let has = offers(ext);
    let coop_ext = ash::khr::cooperative_matrix::NAME;
    let coop = offers(coop_ext);
    if !has {
        // Still check that every kernel compiles to SPIR-V.
        for (label, wgsl) in kernels() {
            let (words, _) = raw::spirv(&wgsl).with_context(|| label.clone())?;
            println!("{label}: SPIR-V {} words", words.len());
        }
        bail!("{name} has no {}", ext.to_string_lossy());
    }
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
        .storage_buffer8_bit_access(true)
        // (Cooperative-matrix kernels declare the Vulkan memory model.)
        .vulkan_memory_model(coop)
        .vulkan_memory_model_device_scope(coop);
    let mut v11 = vk::PhysicalDeviceVulkan11Features::default().storage_buffer16_bit_access(true);
    let mut coop_features =
        vk::PhysicalDeviceCooperativeMatrixFeaturesKHR::default().cooperative_matrix(true);
    let mut exts = vec![ext.as_ptr()];
    if coop {
        exts.push(coop_ext.as_ptr());
    }
    let mut info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_extension_names(&exts)
        .push_next(&mut exec_props)
        .push_next(&mut v13)
        .push_next(&mut v12)
        .push_next(&mut v11);
    if coop {
        info = info.push_next(&mut coop_features);
    }
    let device = instance.create_device(physical, &info, None)?;
    let exec = ash::khr::pipeline_executable_properties::Device::new(&instance, &device);
    for (label, wgsl) in kernels() {
        if !coop && label.starts_with("coop") {
            println!("{label}: no {}", coop_ext.to_string_lossy());
            continue;
        }
        let (words, bindings) = match raw::spirv(&wgsl) {
            Ok(s) => s,
            Err(e) => {
                println!("{label}: {e}");
                continue;
            }
        };
        let set_layout = raw::set_layout(&device, &bindings)?;
        let set_layouts = [set_layout];
        let layout = device.create_pipeline_layout(
            &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
            None,
        )?;
        let module = device
            .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)?;
        let pipeline = raw::compute_pipeline(
            &device,
            module,
            layout,
            vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR,
        )
        .with_context(|| label.clone())?;
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
