//! Shader modules with the runtime checks wgpu adds to generated code chosen on purpose.
//!
//! By default naga guards every loop with an iteration counter (`force_loop_bounding`) and
//! every integer division with a zero test (`int_div_checks`). Our kernels' loops end by
//! construction and their divisors are constants or model dimensions validated on the host,
//! so those two guards only cost instructions in the hottest loops; the bounds checks on
//! buffer accesses, which keep a wrong index from reaching memory outside a binding, stay
//! on. [`SHADER_CHECKS_ENV`] overrides this for measurements: `all` (wgpu's default), `bounds`
//! (ours), `none`.
//!
//! Two kernels go further: the tensor-core product (matmul_coop.wgsl) and its weight decode
//! for the block formats (matmul_coop_dequant.wgsl) are built without bounds checks on
//! Vulkan ([`Checks::Unchecked`]), where the checks cost prompts 13-15% and batches of 32-256
//! sequences 11-14% on an H200 (BENCHMARKS.md, 2026-11-30 session 5). That is sound because
//! (1) every index into their workgroup and private arrays is in range by construction (each
//! shader's header says why, from its tile constants and what the host guarantees), and (2)
//! on Vulkan wgpu enables the driver's robust buffer access, so even a wrong storage-buffer
//! index cannot reach outside a binding (with robustBufferAccess2, which wgpu prefers, naga
//! emits no buffer checks there in any case). Other backends and kernels keep the checks.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::GpuError;
use crate::pipeline::Pipeline;

/// Every shader module and compute pipeline created in this process, in creation order, with
/// what creating it took (see [`compile_times`]).
static COMPILE_TIMES: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());

/// Records that creating `label` (a shader module or a compute pipeline) took `elapsed`.
pub(crate) fn record_compile_time(label: &str, elapsed: Duration) {
    if let Ok(mut times) = COMPILE_TIMES.lock() {
        times.push((label.to_string(), elapsed));
    }
}

/// The shader modules and compute pipelines created so far in this process (labels, and
/// `module ` before a module's), with the time each creation took: WGSL parsing and
/// validation for a module; translation and the driver's compile for a pipeline, which is
/// most of a first start's load on a GPU whose driver has not cached the kernels yet.
pub fn compile_times() -> Vec<(String, Duration)> {
    COMPILE_TIMES.lock().map(|t| t.clone()).unwrap_or_default()
}

/// Environment variable choosing the shader runtime checks (`all`, `bounds`, `none`).
pub const SHADER_CHECKS_ENV: &str = "WEB_RWKV_SHADER_CHECKS";

/// Measurement knob: pipelines whose label starts with one of these comma-separated
/// prefixes get no runtime checks at all (to find which kernels the checks slow), unless
/// [`SHADER_CHECKS_ENV`] is `all`.
pub const SHADER_UNCHECKED_ENV: &str = "WEB_RWKV_SHADER_UNCHECKED";

/// The runtime checks a kernel asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checks {
    /// Bounds checks on, loop and division guards off (see the module comment).
    Bounds,
    /// No checks, for a kernel whose indices are in range by construction, on a backend
    /// that guards buffer accesses itself ([`Checks::unchecked_on`]).
    Unchecked,
}

impl Checks {
    /// [`Checks::Unchecked`] where the backend guards storage-buffer accesses itself
    /// (Vulkan: wgpu enables robust buffer access), else [`Checks::Bounds`].
    pub(crate) fn unchecked_on(backend: wgpu::Backend) -> Checks {
        if backend == wgpu::Backend::Vulkan {
            Checks::Unchecked
        } else {
            Checks::Bounds
        }
    }
}

fn runtime_checks(label: &str, wanted: Checks) -> wgpu::ShaderRuntimeChecks {
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    let unchecked = std::env::var(SHADER_UNCHECKED_ENV).is_ok_and(|list| {
        list.split(',')
            .any(|prefix| !prefix.is_empty() && label.starts_with(prefix))
    });
    match std::env::var(SHADER_CHECKS_ENV).as_deref() {
        Ok("all") => {}
        _ if unchecked || wanted == Checks::Unchecked => {
            checks = wgpu::ShaderRuntimeChecks::unchecked()
        }
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
    shader_module_with(device, label, source, Checks::Bounds)
}

fn shader_module_with(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    checks: Checks,
) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    let start = Instant::now();
    // SAFETY: the relaxed checks are sound for this crate's and the engine's kernels: every
    // loop has a bound fixed by constants or validated dimensions, and no divisor is zero
    // (see the module comment). Buffer bounds checks stay on unless a developer asks for
    // `none` when measuring. `Checks::Unchecked` comes only from `Checks::unchecked_on`, for
    // kernels whose indices are in range by construction, on a backend that bounds buffer
    // accesses itself (see the module comment).
    let module =
        unsafe { device.create_shader_module_trusted(desc, runtime_checks(label, checks)) };
    record_compile_time(&format!("module {label}"), start.elapsed());
    module
}

/// Compiles `source` and builds its compute pipeline (entry point `main`; `layout` `None`
/// works it out from the shader), turning a WGSL error into [`GpuError::Shader`]; the
/// driver's compile runs on a worker thread ([`Pipeline::compile`]).
pub(crate) fn compute_pipeline(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    layout: Option<&wgpu::PipelineLayout>,
) -> Result<Pipeline, GpuError> {
    compute_pipeline_with(device, label, source, layout, Checks::Bounds)
}

/// [`compute_pipeline`] with the runtime checks `checks`.
pub(crate) fn compute_pipeline_with(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    layout: Option<&wgpu::PipelineLayout>,
    checks: Checks,
) -> Result<Pipeline, GpuError> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = shader_module_with(device, label, source, checks);
    if let Some(err) = pollster::block_on(scope.pop()) {
        return Err(GpuError::Shader {
            label: label.to_string(),
            message: err.to_string(),
        });
    }
    Ok(Pipeline::compile(
        device, label, &module, source, "main", layout,
    ))
}
