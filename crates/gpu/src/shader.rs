//! Shader modules with the runtime checks wgpu adds to generated code chosen on purpose.
//!
//! By default naga guards every loop with an iteration counter (`force_loop_bounding`) and
//! every integer division with a zero test (`int_div_checks`). Our kernels' loops end by
//! construction and their divisors are constants or model dimensions validated on the host,
//! so those two guards only cost instructions in the hottest loops; the bounds checks on
//! buffer accesses, which keep a wrong index from reaching memory outside a binding, stay
//! on. [`SHADER_CHECKS_ENV`] overrides this for measurements: `all` (wgpu's default), `bounds`
//! (ours), `none`.

use crate::error::GpuError;

/// Environment variable choosing the shader runtime checks (`all`, `bounds`, `none`).
pub const SHADER_CHECKS_ENV: &str = "WEB_RWKV_SHADER_CHECKS";

fn runtime_checks() -> wgpu::ShaderRuntimeChecks {
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    match std::env::var(SHADER_CHECKS_ENV).as_deref() {
        Ok("all") => {}
        Ok("none") => checks = wgpu::ShaderRuntimeChecks::unchecked(),
        _ => {
            checks.force_loop_bounding = false;
            checks.int_div_checks = false;
        }
    }
    checks
}

/// Compiles WGSL `source`. Validation errors surface through the device's error scopes as
/// with `wgpu::Device::create_shader_module`.
pub fn shader_module(device: &wgpu::Device, label: &str, source: &str) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    // SAFETY: the relaxed checks are sound for this crate's and the engine's kernels: every
    // loop has a bound fixed by constants or validated dimensions, and no divisor is zero
    // (see the module comment). Buffer bounds checks stay on unless a developer asks for
    // `none` when measuring.
    unsafe { device.create_shader_module_trusted(desc, runtime_checks()) }
}

/// Compiles `source` and builds its compute pipeline (entry point `main`; `layout` `None`
/// derives it from the shader), turning a validation error into [`GpuError::Shader`].
pub(crate) fn compute_pipeline(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    layout: Option<&wgpu::PipelineLayout>,
) -> Result<wgpu::ComputePipeline, GpuError> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = shader_module(device, label, source);
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    match pollster::block_on(scope.pop()) {
        Some(err) => Err(GpuError::Shader {
            label: label.to_string(),
            message: err.to_string(),
        }),
        None => Ok(pipeline),
    }
}
