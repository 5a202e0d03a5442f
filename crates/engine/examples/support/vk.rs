//! Raw Vulkan helpers shared by the examples that look below wgpu (pipeline_stats,
//! barrier_cost): the instance and device, naga's SPIR-V of a WGSL kernel, a compute
//! pipeline.

use std::ffi::CStr;

use anyhow::{anyhow, Context, Result};
use ash::vk;

/// A kernel's bindings of group 0: (binding, whether a uniform buffer).
pub type Bindings = Vec<(u32, bool)>;

/// The Vulkan loader, an instance, the first discrete GPU (else the first device), its
/// name and a queue family with compute.
pub struct Gpu {
    pub _entry: ash::Entry,
    pub instance: ash::Instance,
    pub physical: vk::PhysicalDevice,
    pub name: String,
    pub family: u32,
}

/// # Safety
/// Plain Vulkan calls; the caller destroys the instance after what it creates from it.
pub unsafe fn gpu(api_version: u32) -> Result<Gpu> {
    let entry = ash::Entry::load().context("no Vulkan loader")?;
    let app = vk::ApplicationInfo::default().api_version(api_version);
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
    let name = CStr::from_ptr(props.device_name.as_ptr())
        .to_string_lossy()
        .into_owned();
    println!("device: {name}");
    let family = instance
        .get_physical_device_queue_family_properties(physical)
        .iter()
        .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
        .ok_or_else(|| anyhow!("no compute queue"))? as u32;
    Ok(Gpu {
        _entry: entry,
        instance,
        physical,
        name,
        family,
    })
}

/// SPIR-V 1.6 words of `wgsl` as wgpu builds our kernels (rwkv-gpu's shader.rs: buffer
/// bounds checks, no loop counters), and its bindings.
pub fn spirv(wgsl: &str) -> Result<(Vec<u32>, Bindings)> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| anyhow!("{e}"))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| anyhow!("{e:?}"))?;
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

/// A descriptor set layout of `bindings` (buffers, compute stage).
///
/// # Safety
/// The caller destroys it after the pipelines made with it.
pub unsafe fn set_layout(
    device: &ash::Device,
    bindings: &[(u32, bool)],
) -> Result<vk::DescriptorSetLayout> {
    let entries: Vec<vk::DescriptorSetLayoutBinding> = bindings
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
    Ok(device.create_descriptor_set_layout(
        &vk::DescriptorSetLayoutCreateInfo::default().bindings(&entries),
        None,
    )?)
}

/// The compute pipeline of `module`'s `main` with `layout` and `flags`.
///
/// # Safety
/// The caller destroys it before the module and layout.
pub unsafe fn compute_pipeline(
    device: &ash::Device,
    module: vk::ShaderModule,
    layout: vk::PipelineLayout,
    flags: vk::PipelineCreateFlags,
) -> Result<vk::Pipeline> {
    let stage = vk::PipelineShaderStageCreateInfo::default()
        .stage(vk::ShaderStageFlags::COMPUTE)
        .module(module)
        .name(c"main");
    let create = [vk::ComputePipelineCreateInfo::default()
        .stage(stage)
        .layout(layout)
        .flags(flags)];
    Ok(device
        .create_compute_pipelines(vk::PipelineCache::null(), &create, None)
        .map_err(|(_, e)| anyhow!("{e}"))?[0])
}
