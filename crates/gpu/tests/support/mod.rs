//! Helpers shared by the GPU crate's tests and benchmarks: a deterministic generator, test
//! matrices from the fixtures or made up, and their upload.
#![allow(dead_code)] // each test file uses part of it

use gguf::{GgmlType, GgufFile};
use rwkv_gpu::{GpuContext, GpuMatrix};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/");

/// The fixtures directory (`RWKV_FIXTURES` overrides it, for runs away from the checkout).
pub fn fixtures() -> String {
    std::env::var("RWKV_FIXTURES").map_or(FIXTURES.to_string(), |d| format!("{d}/"))
}

/// A fixture file; a missing one fails the test (CI always has them).
pub fn open_fixture(name: &str) -> GgufFile {
    let path = format!("{}{name}", fixtures());
    GgufFile::open(&path).unwrap_or_else(|e| panic!("fixture {path} is required: {e}"))
}

/// A tiny deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in [-1, 1], never within 1e-3 of zero.
    pub fn nonzero(&mut self) -> f32 {
        loop {
            let v = self.uniform();
            if v.abs() > 1e-3 {
                return v;
            }
        }
    }
}

/// Random bytes for `n` values of `ty`, with every f16 scale field a small positive value
/// (random bytes would give infinities and NaNs in scales) and F16 and BF16 values in
/// [-0.5, 0.5).
pub fn synthetic_bytes(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..ty.bytes_for(n as u64).unwrap())
        .map(|_| rng.next_u64() as u8)
        .collect();
    let d = half::f16::from_f32(0.01).to_le_bytes();
    let scale_fields: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    let half_values: Option<fn(f32) -> [u8; 2]> = match ty {
        GgmlType::F16 => Some(|x| half::f16::from_f32(x).to_le_bytes()),
        GgmlType::BF16 => Some(|x| half::bf16::from_f32(x).to_le_bytes()),
        _ => None,
    };
    if ty == GgmlType::F32 {
        for v in bytes.chunks_exact_mut(4) {
            v.copy_from_slice(&(rng.uniform() / 2.0).to_le_bytes());
        }
    }
    if let Some(encode) = half_values {
        for v in bytes.chunks_exact_mut(2) {
            v.copy_from_slice(&encode(rng.uniform() / 2.0));
        }
    }
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &at in scale_fields {
            block[at..at + 2].copy_from_slice(&d);
        }
    }
    bytes
}

/// A matrix under test: its raw bytes and the CPU decoding of them.
pub struct TestMatrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
    pub values: Vec<f32>,
}

impl TestMatrix {
    /// Tensor `tensor` of fixture `file`, which must be of type `want`.
    pub fn from_fixture(file: &str, tensor: &str, want: GgmlType) -> TestMatrix {
        let f = open_fixture(file);
        let info = f
            .tensor(tensor)
            .unwrap_or_else(|| panic!("{file} has no tensor {tensor}"))
            .clone();
        assert_eq!(info.ty, want, "{file}:{tensor}");
        let bytes = f.tensor_bytes(&info).to_vec();
        Self::from_bytes(
            &format!("{file}:{tensor}"),
            info.ty,
            info.n_rows() as usize,
            info.row_len() as usize,
            bytes,
        )
    }

    /// A made-up `rows` x `cols` matrix of `ty` (see [`synthetic_bytes`]).
    pub fn synthetic(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> TestMatrix {
        let bytes = synthetic_bytes(ty, rows * cols, &mut Rng(seed | 1));
        Self::from_bytes(&format!("synthetic {ty}"), ty, rows, cols, bytes)
    }

    pub fn from_bytes(name: &str, ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Self {
        let values = gguf::dequant::dequantize_to_vec(ty, &bytes, rows * cols).expect("dequant");
        TestMatrix {
            name: name.to_string(),
            ty,
            rows,
            cols,
            bytes,
            values,
        }
    }

    /// Uploads the matrix, split into parts of at most `max_part_bytes`.
    pub fn upload(&self, ctx: &GpuContext, max_part_bytes: u64) -> GpuMatrix {
        GpuMatrix::upload_with_max_part_bytes(
            ctx,
            &self.name,
            self.ty,
            self.rows,
            self.cols,
            &self.bytes,
            max_part_bytes,
        )
        .unwrap_or_else(|e| panic!("upload {}: {e}", self.name))
    }
}

/// The compute pipeline of `entry` in `module`, its layout derived from the shader.
pub fn entry_pipeline(
    ctx: &GpuContext,
    module: &wgpu::ShaderModule,
    entry: &str,
) -> wgpu::ComputePipeline {
    ctx.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
}

/// Seconds from submitting one compute pass of what `record` records until the GPU is done:
/// the pass is recorded and finished before the clock starts (wgpu encodes a pass's
/// commands at `finish`, a few microseconds of CPU per dispatch that would otherwise count).
pub fn time_pass(ctx: &GpuContext, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) -> f64 {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        record(&mut pass);
    }
    let commands = enc.finish();
    let t = std::time::Instant::now();
    ctx.queue.submit([commands]);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    t.elapsed().as_secs_f64()
}
