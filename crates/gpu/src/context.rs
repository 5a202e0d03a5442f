//! The device: adapter choice, device creation with the adapter's own limits, and small
//! buffer helpers (checked creation, read-back).

use std::sync::mpsc;

use crate::error::GpuError;

/// Environment variable naming the adapter when [`ContextOptions::adapter`] is `None`.
pub const ADAPTER_ENV: &str = "WEB_RWKV_ADAPTER";

/// How to pick the adapter.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// An index into [`GpuContext::list_adapters`] (`"1"`) or a case-insensitive substring of
    /// the adapter's name. `None`: the [`ADAPTER_ENV`] variable, else the best adapter
    /// (discrete GPU, then integrated, then virtual/other, CPU implementations last).
    pub adapter: Option<String>,
}

/// One adapter as [`GpuContext::list_adapters`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// Optional features the kernels use where offered (`f16`, `subgroup`, `timestamp`,
    /// `cooperative-matrix`).
    pub features: Vec<String>,
    /// The cooperative matrix shapes the adapter offers, as `MxNxK ab->acc`.
    pub cooperative_matrix: Vec<String>,
}

/// A device and its queue, with what the adapter offered.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The features enabled on the device (a subset of the adapter's).
    pub features: wgpu::Features,
    /// The limits the device was created with (the adapter's own).
    pub limits: wgpu::Limits,
    /// Whether the tensor-core path can run: cooperative matrices enabled with 16x16x16
    /// f16 inputs and f32 accumulators, and one fixed subgroup size (see
    /// [`GpuContext::coop_subgroup_size`]).
    coop_f16: bool,
}

/// Environment variable that turns the cooperative-matrix (tensor core) kernels off
/// (`WEB_RWKV_COOPMAT=0`). On by default where the adapter offers them: on an H200 they
/// prefill a 2.9B Q4_K_M at 2,899 tok/s against 1,346 for the portable tiled kernel (see
/// BENCHMARKS.md).
pub const COOP_ENV: &str = "WEB_RWKV_COOPMAT";

/// Whether the adapter offers 16x16x16 f16 x f16 -> f32 cooperative matrices.
fn has_coop_f16_16(adapter: &wgpu::Adapter) -> bool {
    adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        && adapter.cooperative_matrix_properties().iter().any(|p| {
            (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
                && p.ab_type == wgpu::CooperativeScalarType::F16
                && p.cr_type == wgpu::CooperativeScalarType::F32
        })
}

/// Optional features requested when the adapter offers them. None is needed by the
/// portable kernels (f32 arithmetic, `unpack2x16float` for f16 data).
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    // WGPU_BACKEND (e.g. "vulkan", "gl") overrides; GL is left out by default because its
    // compute support is too limited for these kernels.
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    desc.flags = wgpu::InstanceFlags::from_env_or_default();
    wgpu::Instance::new(desc)
}

/// All adapters that can run compute shaders, in enumeration order.
fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .filter(|a| {
            a.get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .collect()
}

fn summary(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let offered = adapter.features();
    let features = [
        (wgpu::Features::SHADER_F16, "f16"),
        (wgpu::Features::SUBGROUP, "subgroup"),
        (wgpu::Features::TIMESTAMP_QUERY, "timestamp"),
        (
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            "cooperative-matrix",
        ),
    ]
    .into_iter()
    .filter(|(f, _)| offered.contains(*f))
    .map(|(_, name)| name.to_string())
    .collect();
    let cooperative_matrix = if offered.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        adapter
            .cooperative_matrix_properties()
            .iter()
            .map(|p| {
                format!(
                    "{}x{}x{} {:?}->{:?}",
                    p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    AdapterSummary {
        features,
        cooperative_matrix,
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: if info.driver_info.is_empty() {
            info.driver.clone()
        } else {
            format!("{} ({})", info.driver, info.driver_info)
        },
    }
}

/// Lower is better.
fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (ty, backend)
}

fn no_adapter_hint() -> String {
    "no adapter with compute shader support was found. Install a Vulkan driver (on Debian/Ubuntu \
     `apt-get install mesa-vulkan-drivers` provides lavapipe, a CPU implementation) or select \
     other backends with WGPU_BACKEND"
        .to_string()
}

/// Pick an adapter by the user's selector (index or name substring), or the best one.
fn choose(adapters: Vec<wgpu::Adapter>, selector: Option<&str>) -> Result<wgpu::Adapter, GpuError> {
    if adapters.is_empty() {
        return Err(GpuError::NoAdapter(no_adapter_hint()));
    }
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    let available = || {
        infos
            .iter()
            .enumerate()
            .map(|(i, info)| format!("{i}: {} ({:?})", info.name, info.backend))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let index = match selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(sel) => {
            if let Ok(i) = sel.parse::<usize>() {
                if i >= adapters.len() {
                    return Err(GpuError::NoAdapter(format!(
                        "adapter index {i} is out of range; available: {}",
                        available()
                    )));
                }
                i
            } else {
                let want = sel.to_lowercase();
                infos
                    .iter()
                    .position(|info| info.name.to_lowercase().contains(&want))
                    .ok_or_else(|| {
                        GpuError::NoAdapter(format!(
                            "no adapter name contains '{sel}'; available: {}",
                            available()
                        ))
                    })?
            }
        }
        None => (0..infos.len())
            .min_by_key(|&i| (preference(&infos[i]), i))
            .unwrap_or(0),
    };
    adapters
        .into_iter()
        .nth(index)
        .ok_or_else(|| GpuError::NoAdapter(no_adapter_hint()))
}

impl GpuContext {
    /// Create a device on the chosen adapter (blocking).
    pub fn new(opts: &ContextOptions) -> Result<GpuContext, GpuError> {
        let env = std::env::var(ADAPTER_ENV).ok();
        let selector = opts.adapter.as_deref().or(env.as_deref());
        let instance = instance();
        let adapter = choose(adapters(&instance), selector)?;
        let info = adapter.get_info();
        let mut features = adapter.features() & WANTED_FEATURES;
        // The adapter's own limits: big storage bindings and buffers, many storage buffers
        // per stage, the full workgroup grid.
        let limits = adapter.limits();
        // Tensor cores through wgpu's experimental cooperative matrices: only with f16
        // shaders, the 16x16x16 f16 -> f32 shape, and one subgroup size (the kernel runs
        // one subgroup per workgroup).
        let coop_f16 = crate::env::env_on(COOP_ENV)
            && features.contains(wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == info.subgroup_max_size
            && info.subgroup_min_size >= 8
            && has_coop_f16_16(&adapter);
        let experimental_features = if coop_f16 {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: wgpu asks callers of experimental features to accept that its
            // implementation may have bugs. We only use cooperative loads, stores and
            // multiply-adds of the advertised 16x16x16 f16/f32 shape on full subgroups with
            // uniform control flow (COOP_ENV turns them off).
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("rwkv-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            GpuError::DeviceCreation {
                adapter: format!("{} ({:?})", info.name, info.backend),
                message: e.to_string(),
            }
        })?;
        Ok(GpuContext {
            features: device.features(),
            limits: device.limits(),
            device,
            queue,
            info,
            coop_f16,
        })
    }

    /// Every adapter with compute support, in the order [`ContextOptions::adapter`] indexes.
    pub fn list_adapters() -> Vec<AdapterSummary> {
        adapters(&instance())
            .iter()
            .enumerate()
            .map(|(i, a)| summary(i, a))
            .collect()
    }

    /// Whether the device has `SHADER_F16` (f16 arithmetic in shaders).
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The subgroup size of the tensor-core kernels when they can run on this device
    /// (cooperative matrices of 16x16x16 f16 -> f32, see [`COOP_ENV`]), else `None`.
    pub fn coop_subgroup_size(&self) -> Option<u32> {
        self.coop_f16.then_some(self.info.subgroup_min_size)
    }

    /// Whether the device has `SUBGROUP` operations.
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// The largest buffer that can be bound as one storage binding.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Create a buffer, turning an over-limit size or an out-of-memory condition into an
    /// error. When `init` is given the buffer is created mapped and filled with it (`init`
    /// may be shorter than `size`; the rest stays zero).
    pub fn create_buffer_checked(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
        init: Option<&[u8]>,
    ) -> Result<wgpu::Buffer, GpuError> {
        let size = size.max(4).next_multiple_of(4);
        let mut limit = self.limits.max_buffer_size;
        if usage.contains(wgpu::BufferUsages::STORAGE) {
            limit = limit.min(self.limits.max_storage_buffer_binding_size);
        }
        if size > limit {
            return Err(GpuError::TooLarge {
                label: label.to_string(),
                bytes: size,
                limit,
            });
        }
        if init.is_some_and(|b| b.len() as u64 > size) {
            return Err(GpuError::InvalidArgument(format!(
                "buffer '{label}': {} init bytes for a {size}-byte buffer",
                init.map_or(0, <[u8]>::len)
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: init.is_some(),
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::OutOfMemory {
                label: label.to_string(),
                bytes: size,
                message: err.to_string(),
            });
        }
        if let Some(bytes) = init {
            {
                let mut view =
                    buffer
                        .get_mapped_range_mut(..)
                        .map_err(|e| GpuError::OutOfMemory {
                            label: label.to_string(),
                            bytes: size,
                            message: format!("mapping at creation failed: {e:?}"),
                        })?;
                view.slice(..bytes.len()).copy_from_slice(bytes);
            }
            buffer.unmap();
        }
        Ok(buffer)
    }

    /// A storage buffer (also COPY_SRC and COPY_DST) holding `bytes`, padded with zeros to a
    /// multiple of 4 bytes (at least 4).
    pub fn create_storage_buffer(
        &self,
        label: &str,
        bytes: &[u8],
    ) -> Result<wgpu::Buffer, GpuError> {
        self.create_buffer_checked(
            label,
            bytes.len() as u64,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            Some(bytes),
        )
    }

    /// Read `n` f32 values starting at byte `offset_bytes` of `buf` (which needs COPY_SRC)
    /// back to the CPU; waits for all submitted work.
    pub fn read_buffer_f32(
        &self,
        buf: &wgpu::Buffer,
        offset_bytes: u64,
        n: usize,
    ) -> Result<Vec<f32>, GpuError> {
        let bytes = self.read_buffer_bytes(buf, offset_bytes, n as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Read `len` bytes starting at `offset_bytes` (both multiples of 4) of `buf` (which
    /// needs COPY_SRC); waits for all submitted work.
    pub fn read_buffer_bytes(
        &self,
        buf: &wgpu::Buffer,
        offset_bytes: u64,
        len: u64,
    ) -> Result<Vec<u8>, GpuError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        if !buf.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(GpuError::InvalidArgument(
                "read-back needs a buffer with COPY_SRC usage".into(),
            ));
        }
        if !offset_bytes.is_multiple_of(4) || !len.is_multiple_of(4) {
            return Err(GpuError::InvalidArgument(format!(
                "read-back offset {offset_bytes} and length {len} must be multiples of 4"
            )));
        }
        if offset_bytes
            .checked_add(len)
            .is_none_or(|end| end > buf.size())
        {
            return Err(GpuError::InvalidArgument(format!(
                "read-back of {len} bytes at {offset_bytes} overruns a {}-byte buffer",
                buf.size()
            )));
        }
        let staging = self.create_buffer_checked(
            "rwkv-gpu readback",
            len,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            None,
        )?;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("rwkv-gpu readback"),
            });
        encoder.copy_buffer_to_buffer(buf, offset_bytes, &staging, 0, len);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::Readback(format!("{e:?}")))?;
            view.to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}
