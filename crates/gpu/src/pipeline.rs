//! Compute pipelines compiled on worker threads.
//!
//! A driver compiles a pipeline in tens to hundreds of milliseconds (on an H200, the first
//! load of 2.9B Q4_K_M created 163 modules and pipelines in 6.3 s of a 7.5 s load, against
//! 0.14 s once the driver had cached them: BENCHMARKS.md, 2026-11-30 session 11), and the
//! engine asks for its pipelines one after another while it builds its step. So
//! [`Pipeline::compile`] returns at once: it creates the shader module (WGSL errors are
//! reported there, synchronously), works out the bind group layout from the WGSL (naga's
//! reflection of what the entry point uses, as wgpu derives it), and leaves the driver's
//! compile to a worker thread, at most one per CPU core at a time. Bind groups are made
//! against the layout meanwhile; the first use of the pipeline itself (recording a
//! dispatch) waits for its compile. [`wait_for_compiles`] waits for every compile started
//! and reports their errors; the engine calls it at the end of its load.

use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::GpuError;
use crate::shader::record_compile_time;

/// A compute pipeline, compiled or being compiled (see the module comment). Cheap to clone;
/// dereferences to the `wgpu::ComputePipeline`, waiting for its compile the first time.
#[derive(Clone, Debug)]
pub struct Pipeline(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Group 0's layout where it was worked out from the WGSL (else the pipeline's own).
    layout: Option<wgpu::BindGroupLayout>,
    compiled: OnceLock<wgpu::ComputePipeline>,
    pending: Mutex<Option<JoinHandle<wgpu::ComputePipeline>>>,
}

impl Pipeline {
    /// A pipeline compiled on the caller's thread, its layouts the pipeline's own.
    fn ready(pipeline: wgpu::ComputePipeline) -> Self {
        let compiled = OnceLock::new();
        let _ = compiled.set(pipeline);
        Pipeline(Arc::new(Inner {
            layout: None,
            compiled,
            pending: Mutex::new(None),
        }))
    }

    /// Compiles entry point `entry` of `module` (made from `source`) with `layout`, or with
    /// the layout of what the entry point uses (bind group 0 only) when `layout` is `None`.
    /// Creation errors come from [`wait_for_compiles`] (or the device's error handler).
    pub fn compile(
        device: &wgpu::Device,
        label: &str,
        module: &wgpu::ShaderModule,
        source: &str,
        entry: &str,
        layout: Option<&wgpu::PipelineLayout>,
    ) -> Pipeline {
        let (pipeline_layout, group0) = match layout {
            Some(l) => (Some(l.clone()), None),
            None => match bind_group0_entries(source, entry) {
                Some(entries) => {
                    let group0 =
                        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: Some(label),
                            entries: &entries,
                        });
                    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(label),
                        bind_group_layouts: &[Some(&group0)],
                        immediate_size: 0,
                    });
                    (Some(pl), Some(group0))
                }
                // Not understood here: the driver derives it, on this thread.
                None => {
                    let p = create(device, label, module, entry, None);
                    return Pipeline::ready(p);
                }
            },
        };
        let job = {
            let (device, module) = (device.clone(), module.clone());
            let (label, entry) = (label.to_string(), entry.to_string());
            move || {
                let _slot = Slot::take();
                create(&device, &label, &module, &entry, pipeline_layout.as_ref())
            }
        };
        PENDING.add();
        match std::thread::Builder::new()
            .name("pipeline compile".into())
            .spawn(move || {
                // Counted done even if the driver panics, so that no wait hangs.
                let _done = PendingDone;
                job()
            }) {
            Ok(handle) => Pipeline(Arc::new(Inner {
                layout: group0,
                compiled: OnceLock::new(),
                pending: Mutex::new(Some(handle)),
            })),
            Err(_) => {
                // No thread to be had: compile here (the job was dropped unrun).
                PENDING.done();
                let p = create(device, label, module, entry, layout);
                Pipeline::ready(p)
            }
        }
    }

    /// The layout of bind group `index` (only 0 is ever used here) without waiting for the
    /// compile where the layout was worked out from the WGSL.
    pub fn get_bind_group_layout(&self, index: u32) -> wgpu::BindGroupLayout {
        match (&self.0.layout, index) {
            (Some(l), 0) => l.clone(),
            _ => self.get().get_bind_group_layout(index),
        }
    }

    /// The compiled pipeline, waiting for its compile if it is still running.
    pub fn get(&self) -> &wgpu::ComputePipeline {
        self.0.compiled.get_or_init(|| {
            let handle = self
                .0
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("a pipeline is either compiled or being compiled");
            // A worker only panics if the driver does; pass that on.
            handle
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Deref for Pipeline {
    type Target = wgpu::ComputePipeline;

    fn deref(&self) -> &wgpu::ComputePipeline {
        self.get()
    }
}

/// Creates the pipeline, recording its time and any validation error.
fn create(
    device: &wgpu::Device,
    label: &str,
    module: &wgpu::ShaderModule,
    entry: &str,
    layout: Option<&wgpu::PipelineLayout>,
) -> wgpu::ComputePipeline {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let start = Instant::now();
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout,
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    record_compile_time(label, start.elapsed());
    if let Some(err) = pollster::block_on(scope.pop()) {
        if let Ok(mut errors) = ERRORS.lock() {
            errors.push((label.to_string(), err.to_string()));
        }
    }
    pipeline
}

/// Bind group 0's entries for what entry point `entry` of the WGSL `source` uses, as wgpu
/// derives them (uniform and storage buffers, read-only where declared so; every binding
/// visible to compute). `None` where the source uses anything else or does not validate:
/// [`Pipeline::compile`] then compiles on the caller's thread with wgpu's derived layout.
pub fn bind_group0_entries(source: &str, entry: &str) -> Option<Vec<wgpu::BindGroupLayoutEntry>> {
    use naga::valid::{
        Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator,
    };
    let module = naga::front::wgsl::parse_str(source).ok()?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .subgroup_stages(ShaderStages::all())
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .ok()?;
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry && e.stage == naga::ShaderStage::Compute)?;
    let uses = info.get_entry_point(index);
    let mut entries = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        if uses[handle].is_empty() {
            continue;
        }
        let Some(binding) = &var.binding else {
            continue;
        };
        if binding.group != 0 {
            return None;
        }
        let ty = match var.space {
            naga::AddressSpace::Uniform => wgpu::BufferBindingType::Uniform,
            naga::AddressSpace::Storage { access } => wgpu::BufferBindingType::Storage {
                read_only: !access.contains(naga::StorageAccess::STORE),
            },
            _ => return None,
        };
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: binding.binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    entries.sort_by_key(|e| e.binding);
    Some(entries)
}

/// Compiles started and not finished, process-wide.
struct Pending {
    count: Mutex<usize>,
    done: Condvar,
}

impl Pending {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn done(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        self.done.notify_all();
    }
}

/// Marks a compile finished when dropped.
struct PendingDone;

impl Drop for PendingDone {
    fn drop(&mut self) {
        PENDING.done();
    }
}

static PENDING: Pending = Pending {
    count: Mutex::new(0),
    done: Condvar::new(),
};

/// Validation errors of compiles on worker threads: (label, message).
static ERRORS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Waits until every pipeline compile started in this process has finished, then returns
/// the first validation error any of them met (all of them are taken).
pub fn wait_for_compiles() -> Result<(), GpuError> {
    let mut n = PENDING.count.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        n = PENDING.done.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    drop(n);
    let first = {
        let mut errors = ERRORS.lock().unwrap_or_else(|e| e.into_inner());
        let first = errors.first().cloned();
        errors.clear();
        first
    };
    match first {
        Some((label, message)) => Err(GpuError::Shader { label, message }),
        None => Ok(()),
    }
}

/// One of the compile slots (as many as the CPU has cores), held while a worker compiles.
struct Slot;

static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl Slot {
    fn take() -> Slot {
        let cap = std::thread::available_parallelism().map_or(4, |n| n.get());
        let (lock, freed) = &SLOTS;
        let mut busy = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *busy >= cap {
            busy = freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (lock, freed) = &SLOTS;
        let mut busy = lock.lock().unwrap_or_else(|e| e.into_inner());
        *busy = busy.saturating_sub(1);
        freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_what_the_entry_point_uses() {
        let source = "
            @group(0) @binding(0) var<uniform> u: vec4<u32>;
            @group(0) @binding(1) var<storage, read> a: array<f32>;
            @group(0) @binding(2) var<storage, read_write> b: array<f32>;
            @group(0) @binding(3) var<storage, read_write> c: array<atomic<u32>>;
            @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
                b[id.x] = a[id.x] + f32(u.x);
            }
            @compute @workgroup_size(64) fn other(@builtin(global_invocation_id) id: vec3<u32>) {
                atomicAdd(&c[0], u32(a[id.x]));
            }";
        let kinds = |entry| {
            bind_group0_entries(source, entry).map(|e| {
                e.iter()
                    .map(|e| match e.ty {
                        wgpu::BindingType::Buffer { ty, .. } => (e.binding, ty),
                        _ => panic!("only buffers"),
                    })
                    .collect::<Vec<_>>()
            })
        };
        use wgpu::BufferBindingType::{Storage, Uniform};
        assert_eq!(
            kinds("main"),
            Some(vec![
                (0, Uniform),
                (1, Storage { read_only: true }),
                (2, Storage { read_only: false }),
            ])
        );
        assert_eq!(
            kinds("other"),
            Some(vec![
                (1, Storage { read_only: true }),
                (3, Storage { read_only: false })
            ])
        );
        assert_eq!(kinds("missing"), None);
        assert_eq!(bind_group0_entries("not wgsl", "main"), None);
    }
}
