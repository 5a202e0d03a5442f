//! GPU matmul and row lookup against the CPU decoders (`gguf::dequant`) on real fixture
//! tensors of every supported type. Needs the fixtures in `shared/fixtures` (missing
//! fixtures fail the tests) and a wgpu adapter (lavapipe is enough; none fails the tests
//! with the NoAdapter hint).

use std::sync::OnceLock;

mod support;

use gguf::GgmlType;
use rwkv_gpu::{
    ContextOptions, CoopSplit, Epilogue, GpuContext, GpuError, GpuMatrix, MatmulCall,
    MatmulKernels, StackItem, StackedF16, TileShape, X16Input, STEP_N_TOKENS_OFFSET,
    TILED_FROM_TOKENS,
};
use support::{Rng, TestMatrix};

struct Gpu {
    ctx: GpuContext,
    kernels: MatmulKernels,
}

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let ctx = GpuContext::new(&ContextOptions::default())
            .unwrap_or_else(|e| panic!("cannot create a GPU context: {e}"));
        eprintln!(
            "adapter: {} ({:?}, {:?}), max binding {} bytes",
            ctx.info.name,
            ctx.info.backend,
            ctx.info.device_type,
            ctx.max_binding_bytes()
        );
        // On a device with tensor cores (the H100 run) the cooperative-matrix kernel must
        // be the one under test.
        if std::env::var_os("RWKV_REQUIRE_COOPMAT").is_some() {
            assert!(
                ctx.coop_subgroup_size().is_some(),
                "RWKV_REQUIRE_COOPMAT is set but the device has no usable cooperative matrices"
            );
        }
        eprintln!("tensor-core kernel: {:?}", ctx.coop_subgroup_size());
        // The tile kernels on every matrix, however short, so that every format runs them;
        // the tensor-core path from as few tokens as the tiled kernel and in slices of 64
        // rows, so that both the path and its slicing are tested.
        let kernels = MatmulKernels::new(&ctx)
            .expect("kernels")
            .with_tiled_min_rows(0)
            .with_coop_from(16)
            .with_coop_scratch_bytes(4096);
        Gpu { ctx, kernels }
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn step_buffer(n: u32) -> wgpu::Buffer {
    let mut bytes = vec![0u8; 16];
    let at = STEP_N_TOKENS_OFFSET as usize;
    bytes[at..at + 4].copy_from_slice(&n.to_le_bytes());
    gpu().ctx.create_storage_buffer("step", &bytes).unwrap()
}

fn set_tokens(step: &wgpu::Buffer, n: u32) {
    gpu()
        .ctx
        .queue
        .write_buffer(step, STEP_N_TOKENS_OFFSET, &n.to_le_bytes());
}

/// Run `record` in one compute pass and wait.
fn run(record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let ctx = &gpu().ctx;
    let mut enc = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
}

/// The epilogue in f64, and a bound on its slope at `r` (for the error allowance).
fn apply(e: Epilogue, r: f64, y0: f64) -> (f64, f64) {
    match e {
        Epilogue::Store => (r, 1.0),
        Epilogue::Add => (y0 + r, 1.0),
        Epilogue::ReluSquare => (r.max(0.0).powi(2), 2.0 * r.max(0.0)),
        Epilogue::Tanh => (r.tanh(), 1.0 - r.tanh().powi(2)),
        Epilogue::ReluSquareF16 => (
            half::f16::from_f64(r.max(0.0).powi(2)).to_f64(),
            2.0 * r.max(0.0),
        ),
        Epilogue::ReluSquareBf16 => (
            half::bf16::from_f64(r.max(0.0).powi(2)).to_f64(),
            2.0 * r.max(0.0),
        ),
        Epilogue::Sigmoid => {
            let s = 1.0 / (1.0 + (-r).exp());
            (s, s * (1.0 - s))
        }
    }
}

const MAX_TOKENS: u32 = 70;
// 1: the one-token kernel; 3: the row kernel for batches; 5 and 12: the row kernel here and
// the tensor cores where the device has them (from 5 tokens); 37 and 70: the tiled kernel
// (or the tensor cores), with one partial and two token groups.
const TOKEN_COUNTS: [u32; 6] = [1, 3, 5, 12, 37, 70];

/// Compare the GPU matmul with the CPU reference for every n in TOKEN_COUNTS and the given
/// epilogues, with offsets and strides on both sides and poisoned outputs. `aligned`: x
/// offset and stride are multiples of 4 (the kernel then loads x as vec4s).
fn check_matmul(m: &TestMatrix, w: &GpuMatrix, epilogues: &[Epilogue], aligned: bool, seed: u64) {
    check_matmul_with(&gpu().kernels, m, w, epilogues, aligned, seed);
}

/// [`check_matmul`] with the given kernels.
fn check_matmul_with(
    kernels: &MatmulKernels,
    m: &TestMatrix,
    w: &GpuMatrix,
    epilogues: &[Epilogue],
    aligned: bool,
    seed: u64,
) {
    let g = gpu();
    let (rows, cols) = (m.rows, m.cols);
    let mut rng = Rng(seed | 1);
    let (x_off, x_stride) = if aligned {
        (8usize, cols.next_multiple_of(4) + 4)
    } else {
        (5usize, cols + 3)
    };
    let (y_off, y_stride) = (7usize, rows + 2);
    let nt = MAX_TOKENS as usize;
    let x: Vec<f32> = (0..x_off + nt * x_stride).map(|_| rng.nonzero()).collect();
    let y_len = y_off + nt * y_stride + 1;
    let x_buf = g.ctx.create_storage_buffer("x", &f32_bytes(&x)).unwrap();
    let y_buf = g
        .ctx
        .create_storage_buffer("y", &vec![0u8; y_len * 4])
        .unwrap();
    let step = step_buffer(0);

    // Reference dot products (f64) and sums of |terms| for every token.
    let mut dots = vec![0f64; nt * rows];
    let mut mags = vec![0f64; nt * rows];
    for t in 0..nt {
        let xt = &x[x_off + t * x_stride..][..cols];
        for r in 0..rows {
            let wr = &m.values[r * cols..][..cols];
            let (mut s, mut a) = (0f64, 0f64);
            for (&wv, &xv) in wr.iter().zip(xt) {
                let p = wv as f64 * xv as f64;
                s += p;
                a += p.abs();
            }
            dots[t * rows + r] = s;
            mags[t * rows + r] = a;
        }
    }

    for &e in epilogues {
        let call = kernels
            .prepare(
                &g.ctx,
                w,
                &x_buf,
                x_off as u32,
                x_stride as u32,
                &y_buf,
                y_off as u32,
                y_stride as u32,
                e,
                &step,
                MAX_TOKENS,
            )
            .unwrap_or_else(|err| panic!("prepare {} {e:?}: {err}", m.name));
        assert_eq!(call.n_dispatches(1), w.n_parts());
        for n in TOKEN_COUNTS {
            // Poison (NaN), or known values for Add.
            let y0: Vec<f32> = if e == Epilogue::Add {
                (0..y_len).map(|_| rng.nonzero()).collect()
            } else {
                vec![f32::NAN; y_len]
            };
            g.ctx.queue.write_buffer(&y_buf, 0, &f32_bytes(&y0));
            set_tokens(&step, n);
            run(|pass| call.record(pass, n));
            let y = g.ctx.read_buffer_f32(&y_buf, 0, y_len).unwrap();

            let what = format!("{} ({}x{}) {e:?} n={n}", m.name, rows, cols);
            for (i, (&got, &before)) in y.iter().zip(&y0).enumerate() {
                let t = i.checked_sub(y_off).map(|j| (j / y_stride, j % y_stride));
                let written = matches!(t, Some((t, r)) if t < n as usize && r < rows);
                if !written {
                    assert!(
                        got.to_bits() == before.to_bits(),
                        "{what}: element {i} outside the outputs changed: {before} -> {got}"
                    );
                }
            }
            // The tensor-core kernel multiplies f16 roundings of weights and inputs (2^-11
            // relative each) with f32 sums; every other kernel works in f32.
            let tol = if n >= TILED_FROM_TOKENS && g.ctx.coop_subgroup_size().is_some() {
                2e-3
            } else {
                1e-5
            };
            for t in 0..n as usize {
                let (mut err2, mut ref2) = (0f64, 0f64);
                for r in 0..rows {
                    let i = y_off + t * y_stride + r;
                    let k = t * rows + r;
                    let (want, slope) = apply(e, dots[k], y0[i] as f64);
                    let got = y[i] as f64;
                    let diff = (got - want).abs();
                    let allowed = tol * (slope * mags[k] + want.abs()) + (tol * mags[k]).powi(2);
                    assert!(
                        diff <= allowed,
                        "{what}: token {t} row {r}: got {got}, want {want} (diff {diff:e}, \
                         allowed {allowed:e})"
                    );
                    err2 += diff * diff;
                    ref2 += want * want;
                }
                let rel = if ref2 > 0.0 {
                    (err2 / ref2).sqrt()
                } else {
                    err2.sqrt()
                };
                assert!(rel <= tol, "{what}: token {t}: relative error {rel:e}");
            }
        }
    }
}

/// Decode rows on the GPU with get_rows and compare bit for bit with the CPU decoder.
fn check_get_rows(m: &TestMatrix, w: &GpuMatrix) {
    let g = gpu();
    let (rows, cols) = (m.rows, m.cols);
    let mut ids: Vec<u32> = vec![0, rows as u32 - 1, rows as u32 / 2];
    ids.extend((0..rows as u32).step_by((rows / 20).max(1)).skip(1));
    ids.push(rows as u32 + 5); // out of range: writes nothing
    let n = ids.len();
    let out_off = 3usize;
    let out_stride = cols + 1;
    let out_len = out_off + n * out_stride;
    let ids_buf = g
        .ctx
        .create_storage_buffer("ids", bytemuck::cast_slice(&ids))
        .unwrap();
    let out_buf = g
        .ctx
        .create_storage_buffer("rows", &f32_bytes(&vec![f32::NAN; out_len]))
        .unwrap();
    let step = step_buffer(n as u32);
    let call = g
        .kernels
        .prepare_get_rows(
            &g.ctx,
            w,
            &ids_buf,
            0,
            &out_buf,
            out_off as u32,
            out_stride as u32,
            &step,
            n as u32,
        )
        .unwrap();
    run(|pass| call.record(pass, n as u32));
    let out = g.ctx.read_buffer_f32(&out_buf, 0, out_len).unwrap();
    let mut mismatches = 0;
    for (t, &id) in ids.iter().enumerate() {
        let got = &out[out_off + t * out_stride..][..cols];
        if id as usize >= rows {
            assert!(got.iter().all(|v| v.is_nan()), "{}: id {id} wrote", m.name);
            continue;
        }
        let want = &m.values[id as usize * cols..][..cols];
        for (c, (a, b)) in got.iter().zip(want).enumerate() {
            if a.to_bits() != b.to_bits() {
                if mismatches < 5 {
                    eprintln!("{}: row {id} col {c}: gpu {a:e} cpu {b:e}", m.name);
                }
                mismatches += 1;
            }
        }
        assert!(
            out[out_off + t * out_stride + cols].is_nan(),
            "{}: gap written",
            m.name
        );
    }
    assert_eq!(
        mismatches, 0,
        "{}: {mismatches} values differ from ggml's decoding",
        m.name
    );
}

fn check_fixture(file: &str, tensor: &str, ty: GgmlType, epilogue: Epilogue, seed: u64) {
    let m = TestMatrix::from_fixture(file, tensor, ty);
    let w = m.upload(&gpu().ctx, u64::MAX);
    assert_eq!(w.n_parts(), 1);
    assert!(w.gpu_bytes() >= m.bytes.len() as u64);
    check_get_rows(&m, &w);
    check_matmul(&m, &w, &[Epilogue::Store], true, seed);
    check_matmul(&m, &w, &[epilogue], false, seed + 100);
}

const FFN_VALUE: &str = "blk.1.channel_mix_value.weight"; // 256 rows x 1024 cols

#[test]
fn f16() {
    check_fixture("mini-f16.gguf", FFN_VALUE, GgmlType::F16, Epilogue::Add, 1);
    // A LoRA matrix: 32 rows of 256.
    check_fixture(
        "mini-f16.gguf",
        "blk.0.time_mix_w1.weight",
        GgmlType::F16,
        Epilogue::Tanh,
        2,
    );
}

#[test]
fn bf16() {
    check_fixture(
        "mini-bf16.gguf",
        FFN_VALUE,
        GgmlType::BF16,
        Epilogue::Sigmoid,
        3,
    );
}

#[test]
fn q8_0() {
    check_fixture(
        "mini-q8_0.gguf",
        FFN_VALUE,
        GgmlType::Q8_0,
        Epilogue::ReluSquare,
        4,
    );
}

#[test]
fn q8_0_head_of_64_wide_rows() {
    // 65536 rows of 64: the full-vocabulary head.
    check_fixture(
        "vocab-q4_k_m.gguf",
        "output.weight",
        GgmlType::Q8_0,
        Epilogue::Store,
        5,
    );
}

#[test]
fn q4_0() {
    check_fixture(
        "mini-q4_0.gguf",
        FFN_VALUE,
        GgmlType::Q4_0,
        Epilogue::Tanh,
        6,
    );
}

#[test]
fn q4_1() {
    check_fixture(
        "mini-q4_1.gguf",
        FFN_VALUE,
        GgmlType::Q4_1,
        Epilogue::Add,
        7,
    );
}

#[test]
fn q5_0() {
    let f = "vocab-q4_k_m.gguf";
    check_fixture(
        f,
        "blk.0.channel_mix_key.weight",
        GgmlType::Q5_0,
        Epilogue::ReluSquare,
        8,
    );
    // The embedding table: row lookups as for token embedding.
    let m = TestMatrix::from_fixture(f, "token_embd.weight", GgmlType::Q5_0);
    check_get_rows(&m, &m.upload(&gpu().ctx, u64::MAX));
}

#[test]
fn q5_1() {
    check_fixture(
        "mini-q5_1.gguf",
        FFN_VALUE,
        GgmlType::Q5_1,
        Epilogue::Sigmoid,
        9,
    );
}

#[test]
fn q2_k() {
    check_fixture(
        "mini-q2_k.gguf",
        FFN_VALUE,
        GgmlType::Q2_K,
        Epilogue::Add,
        10,
    );
}

#[test]
fn q3_k() {
    check_fixture(
        "mini-q3_k_m.gguf",
        FFN_VALUE,
        GgmlType::Q3_K,
        Epilogue::ReluSquare,
        11,
    );
}

#[test]
fn q4_k() {
    check_fixture(
        "mini-q4_k_m.gguf",
        FFN_VALUE,
        GgmlType::Q4_K,
        Epilogue::Tanh,
        12,
    );
    // 1024 rows of 256.
    let key = "blk.0.channel_mix_key.weight";
    check_fixture(
        "mini-q4_k_m.gguf",
        key,
        GgmlType::Q4_K,
        Epilogue::ReluSquare,
        13,
    );
}

#[test]
fn other_tile_shapes_give_the_same_products() {
    let g = gpu();
    if g.ctx.coop_subgroup_size().is_some() {
        // The tensor-core kernel replaces the tiled one on this device.
        return;
    }
    // More rows or tokens per thread, fewer threads, shorter x chunks, a single thread per
    // output, 512 threads (as the 32x64 default of large GPUs, which lavapipe's 32 KB of
    // workgroup memory cannot hold), x chunks prefetched into registers (`xp`, with one and
    // two chunk elements per thread): the kernel must be right for every shape it accepts.
    let shapes = [
        "32x64x4x2x16",
        "16x128x2x4x16",
        "8x32x1x1x32",
        "16x128x2x2x16",
        "16x64x2x2x32xp",
        "16x128x2x2x16xp",
        "8x32x1x1x32xp",
        "32x32x4x4x64",
    ];
    let q4k = TestMatrix::from_fixture(
        "mini-q4_k_m.gguf",
        "blk.0.channel_mix_key.weight",
        GgmlType::Q4_K,
    );
    let f16 = TestMatrix::from_fixture("mini-f16.gguf", FFN_VALUE, GgmlType::F16);
    let mut ran = 0;
    for (k, text) in shapes.into_iter().enumerate() {
        let shape = TileShape::parse(text).unwrap_or_else(|| panic!("shape {text}"));
        if !shape.fits(&g.ctx.limits) {
            eprintln!("tile {text}: needs more workgroup memory than the adapter offers");
            continue;
        }
        ran += 1;
        let kernels = MatmulKernels::new(&g.ctx)
            .expect("kernels")
            .with_tiled_min_rows(0)
            .with_tile_shape(shape);
        for (i, m) in [&q4k, &f16].into_iter().enumerate() {
            let w = m.upload(&gpu().ctx, u64::MAX);
            // The tile kernel must be the one under test.
            let n = MAX_TOKENS as usize;
            let x = g.ctx.create_storage_buffer("x", &vec![0u8; m.cols * n * 4]);
            let y = g.ctx.create_storage_buffer("y", &vec![0u8; m.rows * n * 4]);
            let (x, y, step) = (x.unwrap(), y.unwrap(), step_buffer(0));
            let (xs, ys) = (m.cols as u32, m.rows as u32);
            let call = kernels
                .prepare(
                    &g.ctx,
                    &w,
                    &x,
                    0,
                    xs,
                    &y,
                    0,
                    ys,
                    Epilogue::Add,
                    &step,
                    MAX_TOKENS,
                )
                .unwrap();
            assert!(call.is_tiled(), "tile {text}: the row kernel was chosen");
            let seed = 60 + 2 * k as u64 + i as u64;
            check_matmul_with(&kernels, m, &w, &[Epilogue::Add], i == 0, seed);
        }
    }
    assert!(ran >= 2, "only {ran} tile shapes fit this adapter");
    assert!(TileShape::parse("16x64x2x2x32xp").is_some_and(|s| s.prefetch));
    for bad in [
        "16x64x3x2x32",
        "16x64x2x2x32xq",
        "16x64x2x2x12",
        "16x64x2x2",
        "0x64x2x2x32",
        "64x64x1x1x32",
    ] {
        assert_eq!(TileShape::parse(bad), None, "{bad}");
    }
}

/// The test GPU where it has cooperative matrices; else None, saying that `what` cannot
/// run here (CI's lavapipe has none; the device runs require them).
fn with_tensor_cores(what: &str) -> Option<&'static Gpu> {
    let g = gpu();
    if g.ctx.coop_subgroup_size().is_none() {
        eprintln!("no cooperative matrices: {what}");
        return None;
    }
    Some(g)
}

/// A call of `kernels` on `w` (`m`'s matrix) over packed inputs `x` (`m.cols` values per
/// token, MAX_TOKENS tokens) and outputs (`m.rows` per token), with `e`, for steps of `n`
/// tokens: the call, its output buffer and its step buffer.
fn packed_call(
    kernels: &MatmulKernels,
    (m, w): (&TestMatrix, &GpuMatrix),
    x: &[f32],
    e: Epilogue,
    n: u32,
) -> (MatmulCall, wgpu::Buffer, wgpu::Buffer) {
    let g = gpu();
    let x = g.ctx.create_storage_buffer("x", &f32_bytes(x)).unwrap();
    let y_bytes = vec![0u8; m.rows * MAX_TOKENS as usize * 4];
    let y = g.ctx.create_storage_buffer("y", &y_bytes).unwrap();
    let step = step_buffer(n);
    let (xs, ys) = (m.cols as u32, m.rows as u32);
    let call = kernels
        .prepare(&g.ctx, w, &x, 0, xs, &y, 0, ys, e, &step, MAX_TOKENS)
        .unwrap();
    (call, y, step)
}

/// Dispatches a call of `kernels` on `w` (inputs and outputs of MAX_TOKENS tokens) records
/// for `n` tokens.
fn dispatches_at(
    kernels: &MatmulKernels,
    m: &TestMatrix,
    w: &GpuMatrix,
    e: Epilogue,
    n: u32,
) -> usize {
    let x = vec![0f32; m.cols * MAX_TOKENS as usize];
    packed_call(kernels, (m, w), &x, e, n).0.n_dispatches(n)
}

#[test]
fn tensor_core_products_split_over_columns() {
    let Some(g) = with_tensor_cores("the split product cannot run here") else {
        return;
    };
    // Every call split as far as its columns allow (down to one 64-column chunk per part),
    // in 64-row slices; and the same kernels unsplit, to check that the split path ran.
    let kernels = |max_parts| {
        MatmulKernels::new(&g.ctx)
            .expect("kernels")
            .with_tiled_min_rows(0)
            .with_coop_from(16)
            .with_coop_scratch_bytes(4096)
            .with_coop_split(CoopSplit {
                max_parts,
                min_chunks: 1,
                target_groups: 1 << 20,
            })
    };
    let (split, whole) = (kernels(16), kernels(1));
    let cases = [
        (
            "mini-q4_k_m.gguf",
            "blk.0.channel_mix_key.weight",
            GgmlType::Q4_K,
            Epilogue::ReluSquare,
        ),
        ("mini-f16.gguf", FFN_VALUE, GgmlType::F16, Epilogue::Add),
        ("mini-q6_k.gguf", FFN_VALUE, GgmlType::Q6_K, Epilogue::Store),
    ];
    for (i, (file, tensor, ty, e)) in cases.into_iter().enumerate() {
        let m = TestMatrix::from_fixture(file, tensor, ty);
        let w = m.upload(&g.ctx, u64::MAX);
        let dispatches = |k: &MatmulKernels| dispatches_at(k, &m, &w, e, 37);
        assert!(
            dispatches(&split) > dispatches(&whole),
            "{tensor}: the product was not split"
        );
        check_matmul_with(&split, &m, &w, &[e], i == 0, 70 + i as u64);
    }
}

/// Runs `kernels`' product of `w` (`m`'s matrix) for `n` tokens of the inputs `x` (`m.cols`
/// values per token) and returns the outputs (`m.rows` per token), with the dispatch count.
fn product_at(
    kernels: &MatmulKernels,
    m: &TestMatrix,
    w: &GpuMatrix,
    x: &[f32],
    n: u32,
) -> (Vec<f32>, usize) {
    product_with(kernels, m, w, x, Epilogue::Store, n)
}

/// [`product_at`] with epilogue `e`; the outputs hold the same nonzero values before
/// every call, which Add adds to.
fn product_with(
    kernels: &MatmulKernels,
    m: &TestMatrix,
    w: &GpuMatrix,
    x: &[f32],
    e: Epilogue,
    n: u32,
) -> (Vec<f32>, usize) {
    let (call, y, _step) = packed_call(kernels, (m, w), x, e, n);
    let mut rng = Rng(0x0A0D_DED5);
    let y0: Vec<f32> = (0..m.rows * MAX_TOKENS as usize)
        .map(|_| rng.nonzero())
        .collect();
    gpu().ctx.queue.write_buffer(&y, 0, &f32_bytes(&y0));
    run(|pass| call.record(pass, n));
    let out = gpu()
        .ctx
        .read_buffer_f32(&y, 0, m.rows * n as usize)
        .unwrap();
    (out, call.n_dispatches(n))
}

#[test]
fn tensor_core_products_decoding_as_they_stage_match_the_f16_copy() {
    let Some(g) = with_tensor_cores("no tensor-core products here") else {
        return;
    };
    // Weights decoded inside the product (steps of up to 64 tokens here) against the same
    // product reading the f16 copy decoded before it: the same f16 values and the same
    // products, so the same bits; whole and in slices of 64 rows, split over columns or not.
    // 70 tokens (two token groups) take the copy either way. Every type that has the fused
    // decode.
    let kernels = |fused: u32, scratch: u64, max_parts: u32| {
        MatmulKernels::new(&g.ctx)
            .expect("kernels")
            .with_tiled_min_rows(0)
            .with_coop_from(16)
            .with_coop_scratch_bytes(scratch)
            .with_coop_fused(fused)
            .with_coop_split(CoopSplit {
                max_parts,
                min_chunks: 1,
                target_groups: 1 << 20,
            })
    };
    let key = "blk.0.channel_mix_key.weight";
    let cases = [
        ("mini-q4_k_m.gguf", key, GgmlType::Q4_K),
        ("mini-q4_k_m.gguf", FFN_VALUE, GgmlType::Q4_K),
        ("mini-q5_k_m.gguf", key, GgmlType::Q5_K),
        ("mini-q6_k.gguf", key, GgmlType::Q6_K),
        ("mini-q8_0.gguf", FFN_VALUE, GgmlType::Q8_0),
        ("mini-q4_0.gguf", key, GgmlType::Q4_0),
        ("mini-bf16.gguf", key, GgmlType::BF16),
        // Blocks that are not whole 16-byte units, read by word: rows of 21 (Q2_K) and 27
        // (Q3_K) words in the 256-wide key.
        ("mini-q4_1.gguf", key, GgmlType::Q4_1),
        ("mini-q5_1.gguf", FFN_VALUE, GgmlType::Q5_1),
        ("mini-q2_k.gguf", key, GgmlType::Q2_K),
        ("mini-q3_k_m.gguf", key, GgmlType::Q3_K),
        ("mini-q3_k_m.gguf", FFN_VALUE, GgmlType::Q3_K),
    ];
    let mut mats: Vec<TestMatrix> = cases
        .into_iter()
        .map(|(file, tensor, ty)| TestMatrix::from_fixture(file, tensor, ty))
        .collect();
    // No fixture has Q5_0 matrices of whole 64-value groups: rows of 24 blocks of 5 words.
    mats.push(TestMatrix::synthetic(GgmlType::Q5_0, 200, 768, 77));
    let mut rng = Rng(0x5EED_F00D);
    for (i, m) in mats.iter().enumerate() {
        let (tensor, ty) = (&m.name, m.ty);
        let w = m.upload(&g.ctx, u64::MAX);
        let x: Vec<f32> = (0..m.cols * MAX_TOKENS as usize)
            .map(|_| rng.nonzero())
            .collect();
        for (scratch, max_parts) in [(64 << 20, 1), (4096, 1), (4096, 16)] {
            let fused = kernels(64, scratch, max_parts);
            let copy = kernels(0, scratch, max_parts);
            for n in [16, 37, 64, 70] {
                let what = format!("{ty} {tensor} n={n} scratch={scratch} parts={max_parts}");
                let (a, da) = product_at(&fused, m, &w, &x, n);
                let (b, db) = product_at(&copy, m, &w, &x, n);
                // The fused product records no weight decodes.
                match n <= 64 {
                    true => assert!(da < db, "{what}: {da} dispatches, {db} with the copy"),
                    false => assert_eq!(da, db, "{what}"),
                }
                let differ = a.iter().zip(&b).filter(|(p, q)| p.to_bits() != q.to_bits());
                assert_eq!(differ.count(), 0, "{what}: outputs differ");
            }
        }
        // And against the CPU, as every product is.
        check_matmul_with(
            &kernels(64, 4096, 16),
            m,
            &w,
            &[Epilogue::Add],
            i == 0,
            90 + i as u64,
        );
    }
}

#[test]
fn tensor_core_products_store_whole_tiles_from_the_accumulators() {
    let Some(g) = with_tensor_cores("no tensor-core products here") else {
        return;
    };
    // Whole 64 x 64 tiles of plain sums (and every part's raw sums in a split product)
    // stored straight from the accumulators, against the same products written through
    // workgroup memory: the same sums, so the same bits. The outputs are packed (offset 0,
    // a row count a multiple of 4 apart), so the direct stores are aligned. 160 and 192
    // rows: whole row tiles and a partial one (160); 64 tokens: one whole token group; 70:
    // a whole one and a partial one; 37: none whole. Q4_K decodes as it stages up to 64
    // tokens and reads the f16 copy at 70; Add goes through workgroup memory unsplit (the
    // outputs hold values to add to), and straight out split (the parts' sum adds).
    let kernels = |direct: bool, max_parts: u32| {
        MatmulKernels::new(&g.ctx)
            .expect("kernels")
            .with_tiled_min_rows(0)
            .with_coop_from(16)
            .with_coop_direct_store(direct)
            .with_coop_split(CoopSplit {
                max_parts,
                min_chunks: 1,
                target_groups: 1 << 20,
            })
    };
    let mats = [
        TestMatrix::synthetic(GgmlType::F16, 160, 256, 5),
        TestMatrix::synthetic(GgmlType::Q4_K, 192, 512, 6),
    ];
    let mut rng = Rng(0xD1EC_7570);
    for (i, m) in mats.iter().enumerate() {
        let w = m.upload(&g.ctx, u64::MAX);
        let x: Vec<f32> = (0..m.cols * MAX_TOKENS as usize)
            .map(|_| rng.nonzero())
            .collect();
        for max_parts in [1, 16] {
            let (direct, staged) = (kernels(true, max_parts), kernels(false, max_parts));
            for e in [Epilogue::Store, Epilogue::Add] {
                for n in [37, 64, 70] {
                    let what = format!("{} {e:?} n={n} parts={max_parts}", m.name);
                    let (a, _) = product_with(&direct, m, &w, &x, e, n);
                    let (b, _) = product_with(&staged, m, &w, &x, e, n);
                    let differ = a.iter().zip(&b).filter(|(p, q)| p.to_bits() != q.to_bits());
                    assert_eq!(differ.count(), 0, "{what}: outputs differ");
                }
            }
        }
        // And against the CPU, with outputs that are not aligned (i == 1) or are.
        let e = [Epilogue::Store, Epilogue::Add];
        check_matmul_with(&kernels(true, 16), m, &w, &e, i == 0, 110 + i as u64);
        check_matmul_with(&kernels(true, 1), m, &w, &e, i == 0, 112 + i as u64);
    }
}

#[test]
fn tensor_core_products_from_resident_f16_weights() {
    let Some(g) = with_tensor_cores("resident f16 weights are not used here") else {
        return;
    };
    // (Against the products that decode into the f16 copy every call.)
    let kernels = |resident| {
        MatmulKernels::new(&g.ctx)
            .expect("kernels")
            .with_tiled_min_rows(0)
            .with_coop_from(16)
            .with_coop_f16_weights(resident)
            .with_coop_fused(0)
    };
    let (resident, decoded) = (kernels(true), kernels(false));
    let cases = [
        (
            "mini-q4_k_m.gguf",
            "blk.0.channel_mix_key.weight",
            GgmlType::Q4_K,
        ),
        ("mini-q6_k.gguf", FFN_VALUE, GgmlType::Q6_K),
        ("mini-q8_0.gguf", FFN_VALUE, GgmlType::Q8_0),
    ];
    for (i, (file, tensor, ty)) in cases.into_iter().enumerate() {
        let m = TestMatrix::from_fixture(file, tensor, ty);
        let w = m.upload(&g.ctx, u64::MAX);
        let e = Epilogue::Add;
        let dispatches = |k: &MatmulKernels| dispatches_at(k, &m, &w, e, 70);
        // No weight decode per call once the copy is resident.
        assert!(
            dispatches(&resident) < dispatches(&decoded),
            "{tensor}: the weights are still decoded per call"
        );
        let before = resident.coop_bytes();
        check_matmul_with(&resident, &m, &w, &[e], i == 1, 80 + i as u64);
        // Later calls share the copy.
        assert_eq!(resident.coop_bytes(), before, "{tensor}: a second f16 copy");
        assert!(before >= (m.rows * m.cols * 2) as u64);
    }
}

#[test]
fn tensor_core_products_from_a_shared_f16_copy() {
    // An activation of 2 blocks of [70 tokens][cols + 64]; the product reads block 1 from
    // column 64 (as the second LoRA products read the hidden vectors), once converting its
    // own input and once from the activation's shared f16 copy: the same bits.
    let g = gpu();
    let m = TestMatrix::from_fixture(
        "mini-q4_k_m.gguf",
        "blk.0.channel_mix_key.weight",
        GgmlType::Q4_K,
    );
    let w = m.upload(&g.ctx, u64::MAX);
    let (rows, cols) = (MAX_TOKENS, m.cols as u32 + 64);
    let mut rng = Rng(90);
    let x: Vec<f32> = (0..2 * rows * cols).map(|_| rng.nonzero()).collect();
    let x_buf = g.ctx.create_storage_buffer("x", &f32_bytes(&x)).unwrap();
    let x16_bytes = g.kernels.shared_x16_bytes(2, rows, cols) as usize;
    let x16 = g
        .ctx
        .create_storage_buffer("x16", &vec![0u8; x16_bytes])
        .unwrap();
    let step = step_buffer(0);
    let convert = g
        .kernels
        .prepare_convert(&g.ctx, &x_buf, &x16, 2, rows, cols, &step)
        .unwrap();
    let Some(convert) = convert else {
        assert!(g.ctx.coop_subgroup_size().is_none());
        eprintln!("no cooperative matrices: no shared f16 copies");
        return;
    };
    let (x_offset, y_len) = (rows * cols + 64, m.rows * rows as usize);
    let mut outs = Vec::new();
    for shared in [false, true] {
        let y = g
            .ctx
            .create_storage_buffer("y", &vec![0u8; y_len * 4])
            .unwrap();
        let x16_in = X16Input {
            buf: &x16,
            offset: x_offset,
            stride: cols,
        };
        let call = g
            .kernels
            .prepare_shared(
                &g.ctx,
                &w,
                &x_buf,
                x_offset,
                cols,
                &y,
                0,
                m.rows as u32,
                Epilogue::Store,
                &step,
                rows,
                shared.then_some(x16_in),
            )
            .unwrap();
        assert_eq!(call.coop_from(), Some(16));
        for n in [37, 70] {
            set_tokens(&step, n);
            run(|pass| {
                if shared {
                    convert.record(pass, n);
                }
                call.record(pass, n);
            });
            outs.push(g.ctx.read_buffer_f32(&y, 0, y_len).unwrap());
        }
    }
    assert!(outs[1].iter().any(|v| *v != 0.0));
    for (a, b) in outs[..2].iter().zip(&outs[2..]) {
        let same = a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "the shared f16 copy gives other products");
    }
}

/// Kernels for the stacked-product tests (not the shared test kernels: their f16 scratch
/// holds 64 rows, too few for a stack), splitting products as `split` says.
/// The kernels of the stack tests: products split by `split`, none decoding its weights as
/// it stages them (so that the decoded stack runs in steps of one token group too).
fn stack_kernels(split: CoopSplit) -> MatmulKernels {
    MatmulKernels::new(&gpu().ctx)
        .expect("kernels")
        .with_tiled_min_rows(0)
        .with_coop_from(16)
        .with_coop_split(split)
        .with_coop_fused(0)
}

/// Every product split over its columns as far as it goes.
fn split_all(max_parts: u32) -> CoopSplit {
    CoopSplit {
        max_parts,
        min_chunks: 1,
        target_groups: 1 << 20,
    }
}

#[test]
fn stacked_tensor_core_products_match_separate_ones() {
    // The r/k/v products of a layer: three Q4_K matrices reading blocks 0, 2 and 3 of a
    // 4-block activation's shared f16 copy and writing blocks 0, 1, 2 of the output, once as
    // three products and once stacked (one decode each, one product, one sum): the same bits;
    // with the default kernels and with every product split over its columns (the sum
    // kernel). 16 and 37 tokens: one token group (the few-token chunks; 16 split over
    // columns), 70: two. Q4_K, and the other types whose blocks the product can decode as
    // it stages them.
    let types = [
        ("mini-q4_k_m.gguf", GgmlType::Q4_K),
        ("mini-q6_k.gguf", GgmlType::Q6_K),
        ("mini-q8_0.gguf", GgmlType::Q8_0),
    ];
    for (file, ty) in types {
        check_stacked_rkv(file, ty);
    }
}

fn check_stacked_rkv(file: &str, ty: GgmlType) {
    let names = ["receptance", "key", "value"].map(|n| format!("blk.0.time_mix_{n}.weight"));
    let ms: Vec<TestMatrix> = names
        .iter()
        .map(|n| TestMatrix::from_fixture(file, n, ty))
        .collect();
    let cols = ms[0].cols as u32;
    assert_eq!(ms[0].rows as u32, cols);
    let block = MAX_TOKENS * cols;
    let case = StackCase {
        ms,
        layout: (0..3)
            .zip([0, 2, 3])
            .map(|(k, xb)| (xb, k * block, Epilogue::Store))
            .collect(),
        block,
        x_cols: cols,
        blocks: 4,
        y_stride: cols,
        y_len: 3 * block,
        source: false,
    };
    for kernels in [
        stack_kernels(CoopSplit::DEFAULT),
        stack_kernels(split_all(16)),
    ] {
        for n in [16, 37, 70] {
            assert_ne!(case.check(&kernels, n, true), Some(0), "{ty} {n} tokens");
        }
    }
    // In steps of up to 64 tokens the stack decodes its weights as it stages them (each
    // matrix's blocks in their own binding): no decode dispatches, the same bits.
    for split in [CoopSplit::DEFAULT, split_all(16)] {
        let copy = stack_kernels(split);
        let fused = stack_kernels(split).with_coop_fused(64);
        for n in [16, 37, 70] {
            let (a, b) = (case.check(&copy, n, true), case.check(&fused, n, true));
            if let (Some(a), Some(b)) = (a, b) {
                assert!(b > 0, "{ty} {n} tokens: not stacked");
                match n <= 64 {
                    true => assert_eq!(b + 3, a, "{ty} {n} tokens: {b} dispatches, {a} decoded"),
                    false => assert_eq!(b, a, "{ty} {n} tokens"),
                }
            }
        }
    }
}

#[test]
fn stacked_f16_rows_match_separate_products() {
    // The first LoRA products of a layer: four F16 matrices of 24, 40, 64 and 8 rows of 256
    // values reading blocks 1, 4, 5 and 3 of a 6-block activation, each with its own
    // epilogue (Add reads the output), writing their rows of one output whose rows pad each
    // to 64; once as four products and once as one over their stacked copy.
    let synthetic = |shapes: &[(usize, usize)]| -> Vec<TestMatrix> {
        shapes
            .iter()
            .enumerate()
            .map(|(k, &(r, c))| TestMatrix::synthetic(GgmlType::F16, r, c, 40 + k as u64))
            .collect()
    };
    let first = StackCase {
        ms: synthetic(&[(24, 256), (40, 256), (64, 256), (8, 256)]),
        layout: vec![
            (1, 0, Epilogue::Tanh),
            (4, 64, Epilogue::Add),
            (5, 128, Epilogue::Sigmoid),
            (3, 192, Epilogue::Store),
        ],
        block: MAX_TOKENS * 256,
        x_cols: 256,
        blocks: 6,
        y_stride: 256,
        y_len: MAX_TOKENS * 256,
        source: true,
    };
    // The second ones: four matrices of 128 rows of 32, 96, 64 and 160 values (padded to
    // 64, 128, 64, 192 in the stack), reading their parts of one 448-value row per token
    // (the product reads past each part: those values meet zero weights), writing blocks 0
    // to 3 of the output.
    let rows = 128;
    let block = MAX_TOKENS * rows;
    let second = StackCase {
        ms: synthetic(&[(128, 32), (128, 96), (128, 64), (128, 160)]),
        layout: vec![
            (0, 0, Epilogue::Store),
            (1, block, Epilogue::Store),
            (3, 2 * block, Epilogue::Store),
            (4, 3 * block, Epilogue::Store),
        ],
        block: 64,
        x_cols: 448,
        blocks: 1,
        y_stride: rows,
        y_len: 4 * block,
        source: true,
    };
    for max_parts in [1, 16] {
        let kernels = stack_kernels(split_all(max_parts));
        assert_ne!(first.check(&kernels, 37, true), Some(0));
        // Split, the second case's products split their narrower columns differently.
        assert_ne!(second.check(&kernels, 37, max_parts == 1), Some(0));
    }
}

#[test]
fn stacked_f16_copies_pad_and_check_their_input() {
    // Rows and widths padded to the alignment with zeros, matrix after matrix; a byte count
    // that does not match the shape, or an empty matrix, is an error, not a panic.
    let g = gpu();
    let a: Vec<u8> = (1..=2 * 3 * 2).map(|b| b as u8).collect(); // 2 rows x 3 values
    let b: Vec<u8> = vec![7; 5 * 2 * 2]; // 5 rows x 2 values
    let s = StackedF16::upload(&g.ctx, "stack", &[(&a, 2, 3), (&b, 5, 2)], 4).unwrap();
    assert_eq!((s.starts.clone(), s.rows.clone()), (vec![0, 4], vec![2, 5]));
    assert_eq!((s.cols.clone(), s.bases.clone()), (vec![4, 4], vec![0, 16]));
    assert_eq!(s.product_rows(), 9);
    let bytes = g.ctx.read_buffer_bytes(&s.buffer, 0, 48 * 2).unwrap();
    let halves: Vec<u16> = bytemuck::pod_collect_to_vec(&bytes);
    // Matrix 0: its rows padded to 4 values, then two zero rows.
    assert_eq!(
        &halves[..8],
        &[0x0201, 0x0403, 0x0605, 0, 0x0807, 0x0a09, 0x0c0b, 0]
    );
    assert!(halves[8..16].iter().all(|&h| h == 0));
    // Matrix 1 from value 16: rows of two values, padded to 4; 8 rows (5, padded).
    assert_eq!(&halves[16..20], &[0x0707, 0x0707, 0, 0]);
    assert!(halves[16 + 5 * 4..].iter().all(|&h| h == 0));
    for bad in [[(&a[..10], 2, 3)], [(&a[..0], 0, 3)]] {
        let err = StackedF16::upload(&g.ctx, "stack", &bad, 4).unwrap_err();
        assert!(err.to_string().contains("stack"), "{err}");
    }
}

/// A stacked product over `ms` (matrix k: input block `layout[k].0`, its outputs from
/// `layout[k].1`, epilogue `layout[k].2`) reading a `blocks x [MAX_TOKENS][x_cols]`
/// activation in blocks of `block` values and writing `y_len` values with `y_stride`,
/// against one product per matrix: from a stacked F16 copy of the matrices (`source`) or
/// decoding each.
struct StackCase {
    ms: Vec<TestMatrix>,
    layout: Vec<(u32, u32, Epilogue)>,
    block: u32,
    x_cols: u32,
    blocks: u32,
    y_stride: u32,
    y_len: u32,
    source: bool,
}

impl StackCase {
    /// Runs both for a step of `n` tokens; the outputs must agree bit for bit
    /// (`bit_exact`) or within 1e-5, and each must write exactly the matrices' rows of the
    /// step's tokens. Returns the stacked product's dispatches if the step took it, else 0
    /// (it recorded the separate products); None without cooperative matrices (nothing ran).
    fn check(&self, kernels: &MatmulKernels, n: u32, bit_exact: bool) -> Option<usize> {
        let g = gpu();
        let ws: Vec<_> = self.ms.iter().map(|m| m.upload(&g.ctx, u64::MAX)).collect();
        let source = self.source.then(|| {
            let mats: Vec<(&[u8], usize, usize)> = self
                .ms
                .iter()
                .map(|m| (&m.bytes[..], m.rows, m.cols))
                .collect();
            let source = StackedF16::upload(&g.ctx, "stack", &mats, 64).unwrap();
            let mut row = 0;
            for (k, m) in self.ms.iter().enumerate() {
                assert_eq!(source.starts[k], row);
                assert_eq!(source.cols[k] as usize, m.cols.next_multiple_of(64));
                row += m.rows.next_multiple_of(64) as u32;
            }
            source
        });
        let (rows, x_cols) = (MAX_TOKENS, self.x_cols);
        let mut rng = Rng(17);
        let x: Vec<f32> = (0..self.blocks * rows * x_cols)
            .map(|_| rng.nonzero())
            .collect();
        let x_buf = g.ctx.create_storage_buffer("x", &f32_bytes(&x)).unwrap();
        let y0: Vec<f32> = (0..self.y_len).map(|_| rng.nonzero()).collect();
        let x16_bytes = kernels.shared_x16_bytes(self.blocks, rows, x_cols) as usize;
        let x16 = g
            .ctx
            .create_storage_buffer("x16", &vec![0u8; x16_bytes])
            .unwrap();
        let step = step_buffer(0);
        let Some(convert) = kernels
            .prepare_convert(&g.ctx, &x_buf, &x16, self.blocks, rows, x_cols, &step)
            .unwrap()
        else {
            assert!(g.ctx.coop_subgroup_size().is_none());
            eprintln!("no cooperative matrices: nothing to stack");
            return None;
        };
        let items: Vec<StackItem> = ws
            .iter()
            .zip(&self.layout)
            .map(|(w, &(xb, y_offset, epilogue))| StackItem {
                w,
                x_offset: xb * self.block,
                y_offset,
                epilogue,
            })
            .collect();
        let mut outs = Vec::new();
        let mut took = 0;
        for stacked in [false, true] {
            let y = g.ctx.create_storage_buffer("y", &f32_bytes(&y0)).unwrap();
            let calls: Vec<_> = items
                .iter()
                .map(|it| {
                    let x16_in = X16Input {
                        buf: &x16,
                        offset: it.x_offset,
                        stride: x_cols,
                    };
                    kernels
                        .prepare_shared(
                            &g.ctx,
                            it.w,
                            &x_buf,
                            it.x_offset,
                            x_cols,
                            &y,
                            it.y_offset,
                            self.y_stride,
                            it.epilogue,
                            &step,
                            rows,
                            Some(x16_in),
                        )
                        .unwrap()
                })
                .collect();
            let stack = stacked.then(|| {
                let refs: Vec<_> = calls.iter().collect();
                let x16_in = X16Input {
                    buf: &x16,
                    offset: 0,
                    stride: x_cols,
                };
                kernels
                    .prepare_stacked(
                        &g.ctx,
                        &refs,
                        &items,
                        self.block,
                        x16_in,
                        &x_buf,
                        &y,
                        self.y_stride,
                        &step,
                        source.as_ref(),
                    )
                    .unwrap()
                    .expect("the matrices stack")
            });
            set_tokens(&step, n);
            run(|pass| {
                convert.record(pass, n);
                match &stack {
                    Some(s) if s.takes(n) => {
                        took = s.n_dispatches(n);
                        s.record(pass, n);
                    }
                    _ => calls.iter().for_each(|c| c.record(pass, n)),
                }
            });
            outs.push(g.ctx.read_buffer_f32(&y, 0, y0.len()).unwrap());
        }
        let (a, b) = (&outs[0], &outs[1]);
        // Every value either both wrote or neither (padding rows are not written).
        let mut written = 0;
        for (i, ((&a, &b), &y)) in a.iter().zip(b).zip(&y0).enumerate() {
            let same = if bit_exact {
                a.to_bits() == b.to_bits()
            } else {
                (a - b).abs() <= 1e-5 * (1.0 + a.abs())
            };
            assert!(same, "{n} tokens: value {i}: {a} against {b}");
            assert!(b.is_finite(), "{n} tokens: value {i} is {b}");
            written += (a != y) as u32;
        }
        let rows_written: u32 = self.ms.iter().map(|m| m.rows as u32).sum();
        assert_eq!(written, n * rows_written, "{n} tokens");
        Some(took)
    }
}

#[test]
fn q5_k() {
    check_fixture(
        "mini-q5_k_m.gguf",
        FFN_VALUE,
        GgmlType::Q5_K,
        Epilogue::Sigmoid,
        14,
    );
}

#[test]
fn q6_k() {
    check_fixture(
        "mini-q6_k.gguf",
        FFN_VALUE,
        GgmlType::Q6_K,
        Epilogue::Add,
        15,
    );
}

#[test]
fn f32_with_padded_rows() {
    // 70 rows of 130 values: rows are padded to whole GPU blocks of 4.
    let mut rng = Rng(99);
    let (rows, cols) = (70, 130);
    let v: Vec<f32> = (0..rows * cols).map(|_| rng.nonzero()).collect();
    let m = TestMatrix::from_bytes("f32 70x130", GgmlType::F32, rows, cols, f32_bytes(&v));
    let w = m.upload(&gpu().ctx, u64::MAX);
    check_get_rows(&m, &w);
    check_matmul(&m, &w, &[Epilogue::Store], true, 16);
    check_matmul(&m, &w, &[Epilogue::Sigmoid], false, 16);
}

#[test]
fn rows_of_96_values() {
    // The rank-96 LoRA shape: the tensor-core path walks it in chunks of 32 columns.
    let mut rng = Rng(96);
    let (rows, cols) = (200, 96);
    let v: Vec<f32> = (0..rows * cols).map(|_| rng.nonzero()).collect();
    let m = TestMatrix::from_bytes("f32 200x96", GgmlType::F32, rows, cols, f32_bytes(&v));
    let w = m.upload(&gpu().ctx, u64::MAX);
    check_matmul(&m, &w, &[Epilogue::Store, Epilogue::Add], true, 96);
}

#[test]
fn odd_length_f16_and_bf16_rows() {
    let mut rng = Rng(7);
    let (rows, cols) = (21, 131);
    let v: Vec<f32> = (0..rows * cols).map(|_| rng.nonzero()).collect();
    let f16: Vec<u8> = v
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = v
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    for (ty, bytes) in [(GgmlType::F16, f16), (GgmlType::BF16, bf16)] {
        let m = TestMatrix::from_bytes(&format!("{ty} 21x131"), ty, rows, cols, bytes);
        let w = m.upload(&gpu().ctx, u64::MAX);
        check_get_rows(&m, &w);
        check_matmul(&m, &w, &[Epilogue::Store], true, 17);
        check_matmul(&m, &w, &[Epilogue::ReluSquare], false, 17);
    }
}

#[test]
fn split_by_rows_gives_identical_results() {
    let m = TestMatrix::from_fixture("mini-q6_k.gguf", "output.weight", GgmlType::Q6_K);
    assert_eq!((m.rows, m.cols), (4096, 256));
    let whole = m.upload(&gpu().ctx, u64::MAX);
    let split = m.upload(&gpu().ctx, 300_000);
    assert_eq!(whole.n_parts(), 1);
    assert!(split.n_parts() >= 3, "{} parts", split.n_parts());
    check_get_rows(&m, &split);

    let g = gpu();
    let mut rng = Rng(21);
    let n = 5u32;
    let x: Vec<f32> = (0..n as usize * m.cols).map(|_| rng.nonzero()).collect();
    let x_buf = g.ctx.create_storage_buffer("x", &f32_bytes(&x)).unwrap();
    let step = step_buffer(n);
    let mut outs = Vec::new();
    for w in [&whole, &split] {
        let y_len = n as usize * m.rows;
        let y = g
            .ctx
            .create_storage_buffer("y", &f32_bytes(&vec![f32::NAN; y_len]))
            .unwrap();
        let call = g
            .kernels
            .prepare(
                &g.ctx,
                w,
                &x_buf,
                0,
                m.cols as u32,
                &y,
                0,
                m.rows as u32,
                Epilogue::Store,
                &step,
                n,
            )
            .unwrap();
        assert_eq!(call.n_dispatches(1), w.n_parts());
        run(|pass| call.record(pass, n));
        outs.push(g.ctx.read_buffer_f32(&y, 0, y_len).unwrap());
    }
    assert!(outs[0].iter().all(|v| v.is_finite()));
    let same = outs[0]
        .iter()
        .zip(&outs[1])
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "split and whole uploads disagree");
}

#[test]
fn mid_height_matrix() {
    // 12288 rows (three copies of the Q6_K head): the kernel shares each row among 16
    // threads at this height (32 below, 8 above).
    let head = TestMatrix::from_fixture("mini-q6_k.gguf", "output.weight", GgmlType::Q6_K);
    let bytes = head.bytes.repeat(3);
    let m = TestMatrix::from_bytes("Q6_K x3", GgmlType::Q6_K, 3 * head.rows, head.cols, bytes);
    let w = m.upload(&gpu().ctx, u64::MAX);
    check_matmul(&m, &w, &[Epilogue::Store], true, 18);
    check_matmul(&m, &w, &[Epilogue::Add], false, 19);
}

#[test]
fn more_row_groups_than_one_grid_dimension() {
    // 300000 rows of 4: 75000 workgroups of 4 rows, more than 65535 along x.
    let (rows, cols) = (300_000usize, 4usize);
    let mut rng = Rng(5);
    let v: Vec<f32> = (0..rows * cols).map(|_| rng.nonzero()).collect();
    let m = TestMatrix::from_bytes("f32 tall", GgmlType::F32, rows, cols, f32_bytes(&v));
    let w = m.upload(&gpu().ctx, u64::MAX);
    let g = gpu();
    let x = [0.5f32, -0.25, 2.0, 1.0];
    let x_buf = g.ctx.create_storage_buffer("x", &f32_bytes(&x)).unwrap();
    let y_buf = g
        .ctx
        .create_storage_buffer("y", &f32_bytes(&vec![f32::NAN; rows]))
        .unwrap();
    let step = step_buffer(1);
    let call = g
        .kernels
        .prepare(
            &g.ctx,
            &w,
            &x_buf,
            0,
            4,
            &y_buf,
            0,
            rows as u32,
            Epilogue::Store,
            &step,
            1,
        )
        .unwrap();
    run(|pass| call.record(pass, 1));
    let y = g.ctx.read_buffer_f32(&y_buf, 0, rows).unwrap();
    for (r, &got) in y.iter().enumerate() {
        let want: f64 = (0..4).map(|c| v[r * 4 + c] as f64 * x[c] as f64).sum();
        assert!(
            (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "row {r}: {got} vs {want}"
        );
    }
}

#[test]
fn unsupported_type_is_an_error() {
    let ty = GgmlType::IQ2_XXS;
    let bytes = vec![0u8; ty.block_bytes() * 2];
    let err = GpuMatrix::upload(&gpu().ctx, "blk.0.ffn.weight", ty, 2, 256, &bytes).unwrap_err();
    match &err {
        GpuError::UnsupportedType { name, ty: t } => {
            assert_eq!((name.as_str(), *t), ("blk.0.ffn.weight", ty));
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("blk.0.ffn.weight") && msg.contains("IQ2_XXS"),
        "{msg}"
    );
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = &gpu().ctx;
    // Wrong byte count, rows that are not whole blocks, an empty matrix.
    let q = GgmlType::Q4_K;
    assert!(matches!(
        GpuMatrix::upload(ctx, "a", q, 2, 256, &[0u8; 100]),
        Err(GpuError::BadTensor { .. })
    ));
    assert!(matches!(
        GpuMatrix::upload(ctx, "b", GgmlType::Q8_0, 1, 48, &[0u8; 51]),
        Err(GpuError::BadTensor { .. })
    ));
    assert!(matches!(
        GpuMatrix::upload(ctx, "c", GgmlType::F32, 0, 4, &[]),
        Err(GpuError::BadTensor { .. })
    ));
    // A row bigger than the part limit.
    assert!(matches!(
        GpuMatrix::upload_with_max_part_bytes(ctx, "d", q, 1, 256, &[0u8; 144], 64),
        Err(GpuError::TooLarge { .. })
    ));
}

#[test]
fn adapters_are_listed() {
    let ctx = &gpu().ctx;
    let list = GpuContext::list_adapters();
    assert!(!list.is_empty());
    assert!(list.iter().any(|a| a.name == ctx.info.name), "{list:?}");
    for (i, a) in list.iter().enumerate() {
        assert_eq!(a.index, i);
    }
    // Selecting by a name substring and by index.
    let by_name = GpuContext::new(&ContextOptions {
        adapter: Some(ctx.info.name.to_uppercase()),
    })
    .unwrap();
    assert_eq!(by_name.info.name, ctx.info.name);
    let err = GpuContext::new(&ContextOptions {
        adapter: Some("no such adapter name".into()),
    })
    .err()
    .expect("a missing adapter is an error");
    assert!(matches!(err, GpuError::NoAdapter(_)), "{err}");
    assert!(ctx.max_binding_bytes() >= 128 << 20);
}
