//! The one-token matvec (`MatvecKernels`) against the CPU decoders (`gguf::dequant`) on real
//! fixture tensors of every supported type, with and without the activation rounding ggml
//! applies for the type (computed here on the CPU), and with several matrices (of several
//! types, split into parts) in one call. Needs the fixtures in `shared/fixtures` and a wgpu
//! adapter (lavapipe is enough).

use std::sync::OnceLock;

mod support;

use gguf::GgmlType;
use half::{bf16, f16};
use rwkv_gpu::{
    ContextOptions, Epilogue, GpuContext, GpuMatrix, MatvecInput, MatvecJob, MatvecKernels,
    Q8Format, Q8Input,
};
use support::{open_fixture, Rng, TestMatrix};

/// The type of a fixture tensor (these tests take every tensor as the fixture has it).
fn fixture_type(file: &str, tensor: &str) -> GgmlType {
    open_fixture(file)
        .tensor(tensor)
        .unwrap_or_else(|| panic!("{file} has no tensor {tensor}"))
        .ty
}

struct Gpu {
    ctx: GpuContext,
    kernels: MatvecKernels,
}

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let ctx = GpuContext::new(&ContextOptions::default())
            .unwrap_or_else(|e| panic!("cannot create a GPU context: {e}"));
        Gpu {
            ctx,
            kernels: MatvecKernels::new(),
        }
    })
}

/// ggml's activation rounding for `mode` (1 f16, 2 bf16, 3 Q8_0, 4 Q8_K), as the kernels do it.
fn round(x: &[f32], mode: u32) -> Vec<f32> {
    match mode {
        1 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
        2 => x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
        3 => x
            .chunks(32)
            .flat_map(|c| {
                let amax = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let d16 = f16::from_f32(d).to_f32();
                c.iter()
                    .map(move |&v| (v * id).round_ties_even() * d16)
                    .collect::<Vec<_>>()
            })
            .collect(),
        4 => x
            .chunks(256)
            .flat_map(|c| {
                let (mut amax, mut m) = (0.0f32, 0.0f32);
                for &v in c {
                    if v.abs() > amax {
                        amax = v.abs();
                        m = v;
                    }
                }
                let iscale = if m != 0.0 { -127.0 / m } else { 0.0 };
                let d = if m != 0.0 { 1.0 / iscale } else { 0.0 };
                c.iter()
                    .map(move |&v| (iscale * v).round_ties_even().min(127.0) * d)
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => x.to_vec(),
    }
}

fn apply(e: Epilogue, r: f64, y0: f64) -> f64 {
    match e {
        Epilogue::Store => r,
        Epilogue::Add => y0 + r,
        Epilogue::ReluSquare => r.max(0.0).powi(2),
        Epilogue::Tanh => r.tanh(),
        Epilogue::ReluSquareF16 => f16::from_f64(r.max(0.0).powi(2)).to_f64(),
        Epilogue::ReluSquareBf16 => bf16::from_f64(r.max(0.0).powi(2)).to_f64(),
        Epilogue::Sigmoid => 1.0 / (1.0 + (-r).exp()),
    }
}

/// Runs `jobs` (matrix, x offset, y offset, epilogue) as one matvec call with rounding
/// `mode` and checks every output against the CPU, and that nothing else in y changed.
fn check(jobs: &[(&TestMatrix, &GpuMatrix, usize, usize, Epilogue)], mode: u32, seed: u64) {
    check_with(&gpu().kernels, jobs, mode, seed);
}

/// [`check`] with the given kernels.
fn check_with(
    kernels: &MatvecKernels,
    jobs: &[(&TestMatrix, &GpuMatrix, usize, usize, Epilogue)],
    mode: u32,
    seed: u64,
) {
    check_input(kernels, jobs, mode, false, seed);
}

/// [`check`] with the input quantized to Q8_K by its own dispatch first
/// (`prepare_quantize`, `prepare_q8`).
fn check_q8k(jobs: &[(&TestMatrix, &GpuMatrix, usize, usize, Epilogue)], seed: u64) {
    check_input(&gpu().kernels, jobs, 4, true, seed);
}

/// The same with the input quantized to Q8_0.
fn check_q8_0(jobs: &[(&TestMatrix, &GpuMatrix, usize, usize, Epilogue)], seed: u64) {
    check_input(&gpu().kernels, jobs, 3, true, seed);
}

fn check_input(
    kernels: &MatvecKernels,
    jobs: &[(&TestMatrix, &GpuMatrix, usize, usize, Epilogue)],
    mode: u32,
    q8k: bool,
    seed: u64,
) {
    let g = gpu();
    let mut rng = Rng(seed | 1);
    let mut x_len = jobs.iter().map(|j| j.2 + j.0.cols).max().unwrap() + 3;
    if q8k {
        x_len = x_len.next_multiple_of(256);
    }
    let y_len = jobs.iter().map(|j| j.3 + j.0.rows).max().unwrap() + 3;
    let x: Vec<f32> = (0..x_len).map(|_| rng.uniform()).collect();
    let y0: Vec<f32> = (0..y_len).map(|_| rng.uniform()).collect();
    let x_buf = g
        .ctx
        .create_storage_buffer("x", bytemuck::cast_slice(&x))
        .unwrap();
    let y_buf = g
        .ctx
        .create_storage_buffer("y", bytemuck::cast_slice(&y0))
        .unwrap();
    let specs: Vec<MatvecJob> = jobs
        .iter()
        .map(|&(_, w, xo, yo, e)| MatvecJob::new(w, xo as u32, yo as u32, e))
        .collect();
    let format = rwkv_gpu::q8_format_of_mode(mode).unwrap_or(Q8Format::K);
    let xq = q8k.then(|| Q8Input::with_format(&g.ctx, "xq", format, x_len as u32).unwrap());
    let quantize = xq
        .as_ref()
        .map(|xq| kernels.prepare_quantize(&g.ctx, &x_buf, xq).unwrap());
    let call = if let Some(xq) = &xq {
        kernels.prepare_q8(&g.ctx, xq, &y_buf, &specs, None)
    } else {
        kernels.prepare(&g.ctx, &x_buf, &y_buf, mode, &specs, None)
    }
    .unwrap_or_else(|e| panic!("prepare: {e}"));
    let mut enc = g.ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        if let Some(q) = &quantize {
            q.record(&mut pass, 1);
        }
        call.record(&mut pass);
    }
    g.ctx.queue.submit([enc.finish()]);
    let y = g.ctx.read_buffer_f32(&y_buf, 0, y_len).unwrap();

    let mut written = vec![false; y_len];
    for &(m, _, xo, yo, e) in jobs {
        let xr = round(&x[xo..xo + m.cols], mode);
        let what = format!(
            "{} ({}x{}) mode {mode}{} {e:?}",
            m.name,
            m.rows,
            m.cols,
            if q8k { " (pre-quantized)" } else { "" }
        );
        let (mut err2, mut ref2) = (0f64, 0f64);
        for r in 0..m.rows {
            let wr = &m.values[r * m.cols..][..m.cols];
            let (mut s, mut a) = (0f64, 0f64);
            for (&wv, &xv) in wr.iter().zip(&xr) {
                s += wv as f64 * xv as f64;
                a += (wv as f64 * xv as f64).abs();
            }
            let want = apply(e, s, y0[yo + r] as f64);
            let got = y[yo + r] as f64;
            // f32 sums (1e-5 of the magnitudes); with 8-bit rounding, a rounding step that
            // the GPU's division puts on the other side moves a term by 1/127 of itself.
            let tol = if mode >= 3 { 2e-4 } else { 1e-5 };
            let slope = if e == Epilogue::ReluSquare {
                2.0 * s.abs()
            } else {
                1.0
            };
            assert!(
                (got - want).abs() <= tol * (slope * a + want.abs()) + 1e-30,
                "{what}: row {r}: got {got}, want {want}"
            );
            err2 += (got - want).powi(2);
            ref2 += want * want;
            written[yo + r] = true;
        }
        let rel = (err2 / ref2.max(1e-30)).sqrt();
        assert!(rel < 1e-4, "{what}: relative error {rel:e}");
        eprintln!("{what}: relative error {rel:.1e}");
    }
    for i in 0..y_len {
        if !written[i] {
            assert_eq!(
                y[i].to_bits(),
                y0[i].to_bits(),
                "y[{i}] outside the outputs changed"
            );
        }
    }
}

/// The activation rounding ggml applies for a weight type.
fn mode_of(ty: GgmlType) -> u32 {
    use GgmlType::*;
    match ty {
        F32 => 0,
        F16 => 1,
        BF16 => 2,
        Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 => 3,
        _ => 4,
    }
}

const FFN_VALUE: &str = "blk.1.channel_mix_value.weight"; // 256 rows x 1024 cols

fn check_type(file: &str, tensor: &str, e: Epilogue, seed: u64) {
    let m = TestMatrix::from_fixture(file, tensor, fixture_type(file, tensor));
    let w = m.upload(&gpu().ctx, u64::MAX);
    check(&[(&m, &w, 5, 3, e)], 0, seed);
    check(&[(&m, &w, 7, 1, e)], mode_of(m.ty), seed + 1);
}

#[test]
fn f16() {
    check_type("mini-f16.gguf", FFN_VALUE, Epilogue::Add, 1);
    check_type(
        "mini-f16.gguf",
        "blk.0.time_mix_w1.weight",
        Epilogue::Tanh,
        2,
    );
}

#[test]
fn bf16() {
    check_type("mini-bf16.gguf", FFN_VALUE, Epilogue::Sigmoid, 3);
}

#[test]
fn q8_0() {
    check_type("mini-q8_0.gguf", FFN_VALUE, Epilogue::ReluSquare, 4);
    // The float path, which the integer one replaces by default for Q8_0 activations.
    let float = MatvecKernels::new().with_int_q8_0(false);
    let m = TestMatrix::from_fixture("mini-q8_0.gguf", FFN_VALUE, GgmlType::Q8_0);
    let w = m.upload(&gpu().ctx, u64::MAX);
    check_with(&float, &[(&m, &w, 7, 1, Epilogue::ReluSquare)], 3, 45);
}

#[test]
fn q8_0_and_q4_0_integer_path() {
    let g = gpu();
    let kernels = MatvecKernels::new().with_int_q8_0(true);
    let m = TestMatrix::from_fixture("mini-q8_0.gguf", FFN_VALUE, GgmlType::Q8_0);
    let w = m.upload(&g.ctx, u64::MAX);
    check_with(&kernels, &[(&m, &w, 7, 1, Epilogue::ReluSquare)], 3, 40);
    // Two matrices in one call, one split into parts; rows longer than a staged tile of x
    // (12544 = 392 blocks of 32: two tiles of 10240 columns).
    let r = TestMatrix::from_fixture(
        "mini-q8_0.gguf",
        "blk.0.time_mix_key.weight",
        GgmlType::Q8_0,
    );
    let wr = r.upload(&g.ctx, r.bytes.len() as u64 / 3);
    assert!(wr.n_parts() > 1);
    check_with(
        &kernels,
        &[
            (&m, &w, 0, 0, Epilogue::Store),
            (&r, &wr, 3, m.rows + 2, Epilogue::Add),
        ],
        3,
        41,
    );
    let big = TestMatrix::synthetic(GgmlType::Q8_0, 40, 12544, 42);
    let wb = big.upload(&g.ctx, u64::MAX);
    check_with(&kernels, &[(&big, &wb, 8, 5, Epilogue::Tanh)], 3, 43);
    // Q4_0 (read with Q8_0 activations too), alone and beside Q8_0 in one call.
    let q4 = TestMatrix::from_fixture("mini-q4_0.gguf", FFN_VALUE, GgmlType::Q4_0);
    let w4 = q4.upload(&g.ctx, u64::MAX);
    check_with(&kernels, &[(&q4, &w4, 3, 2, Epilogue::Add)], 3, 44);
    check_with(
        &kernels,
        &[
            (&q4, &w4, 0, 0, Epilogue::Store),
            (&m, &w, 0, q4.rows + 1, Epilogue::Sigmoid),
        ],
        3,
        45,
    );
    let big4 = TestMatrix::synthetic(GgmlType::Q4_0, 24, 12544, 46);
    let wb4 = big4.upload(&g.ctx, u64::MAX);
    check_with(&kernels, &[(&big4, &wb4, 1, 0, Epilogue::Store)], 3, 47);
}

#[test]
fn q4_0() {
    check_type("mini-q4_0.gguf", FFN_VALUE, Epilogue::Tanh, 5);
}

#[test]
fn q4_1() {
    check_type("mini-q4_1.gguf", FFN_VALUE, Epilogue::Add, 6);
}

#[test]
fn q5_0() {
    check_type(
        "vocab-q4_k_m.gguf",
        "blk.0.channel_mix_key.weight",
        Epilogue::Store,
        14,
    );
}

#[test]
fn q5_1() {
    check_type("mini-q5_1.gguf", FFN_VALUE, Epilogue::Sigmoid, 7);
}

#[test]
fn q2_k() {
    check_type("mini-q2_k.gguf", FFN_VALUE, Epilogue::Add, 8);
}

#[test]
fn q3_k() {
    check_type("mini-q3_k_m.gguf", FFN_VALUE, Epilogue::ReluSquare, 9);
}

#[test]
fn q4_k() {
    check_type("mini-q4_k_m.gguf", FFN_VALUE, Epilogue::Tanh, 10);
    check_type(
        "mini-q4_k_m.gguf",
        "blk.0.channel_mix_key.weight",
        Epilogue::ReluSquare,
        11,
    );
}

#[test]
fn q5_k() {
    check_type("mini-q5_k_m.gguf", FFN_VALUE, Epilogue::Sigmoid, 12);
}

#[test]
fn q6_k() {
    check_type("mini-q6_k.gguf", FFN_VALUE, Epilogue::Store, 13);
}

#[test]
fn several_matrices_and_parts_in_one_call() {
    // Three Q4_K matrices of 256-wide rows (r, k, v of a layer), one split into parts, and
    // a matrix of another type, each with its own input, output and epilogue.
    let f = "mini-q4_k_m.gguf";
    let r = TestMatrix::from_fixture(
        f,
        "blk.0.time_mix_receptance.weight",
        fixture_type(f, "blk.0.time_mix_receptance.weight"),
    );
    let k = TestMatrix::from_fixture(
        f,
        "blk.0.time_mix_key.weight",
        fixture_type(f, "blk.0.time_mix_key.weight"),
    );
    let v = TestMatrix::from_fixture(
        f,
        "blk.1.time_mix_value.weight",
        fixture_type(f, "blk.1.time_mix_value.weight"),
    );
    let o = TestMatrix::from_fixture(f, FFN_VALUE, fixture_type(f, FFN_VALUE));
    let (wr, wk, wo) = (
        r.upload(&gpu().ctx, u64::MAX),
        k.upload(&gpu().ctx, u64::MAX),
        o.upload(&gpu().ctx, u64::MAX),
    );
    let wv = v.upload(&gpu().ctx, v.bytes.len() as u64 / 3);
    assert!(wv.n_parts() > 1);
    let n = r.cols;
    let jobs = [
        (&r, &wr, 0, 0, Epilogue::Store),
        (&k, &wk, n + 3, 300, Epilogue::Sigmoid),
        (&v, &wv, 2 * n + 5, 700, Epilogue::Add),
        (&o, &wo, 4 * n, 1000, Epilogue::Tanh),
    ];
    for mode in [0, 4] {
        check(&jobs, mode, 20 + mode as u64);
    }
}

#[test]
fn rows_longer_than_a_staged_tile() {
    // 12544 = 49 blocks of 256: two tiles of x for the integer path (10240 columns each)
    // and five for the float path (3072).
    for (ty, seed) in [
        (GgmlType::Q4_K, 31),
        (GgmlType::Q6_K, 32),
        (GgmlType::F16, 33),
    ] {
        let m = TestMatrix::synthetic(ty, 40, 12544, seed);
        let w = m.upload(&gpu().ctx, u64::MAX);
        check(&[(&m, &w, 4, 2, Epilogue::Add)], 0, seed);
        check(&[(&m, &w, 8, 5, Epilogue::Store)], mode_of(ty), seed + 1);
    }
}

#[test]
fn q8k_input_quantized_once() {
    // K-quant matrices (Q2_K to Q6_K) reading an input quantized to Q8_K by its own dispatch:
    // fixture tensors (256- and 1024-wide rows), several in one call with a split one, and
    // long synthetic rows, against the same reference as the in-kernel rounding.
    let f = "mini-q4_k_m.gguf";
    let key = "blk.0.channel_mix_key.weight";
    let k = TestMatrix::from_fixture(f, key, fixture_type(f, key));
    let v = TestMatrix::from_fixture(f, FFN_VALUE, fixture_type(f, FFN_VALUE));
    let q6 = TestMatrix::from_fixture("mini-q6_k.gguf", FFN_VALUE, GgmlType::Q6_K);
    let q5 = TestMatrix::from_fixture("mini-q5_k_m.gguf", FFN_VALUE, GgmlType::Q5_K);
    let q3 = TestMatrix::from_fixture("mini-q3_k_m.gguf", FFN_VALUE, GgmlType::Q3_K);
    let q2 = TestMatrix::from_fixture("mini-q2_k.gguf", FFN_VALUE, GgmlType::Q2_K);
    let ctx = &gpu().ctx;
    let (wk, wv, wq6, wq5) = (
        k.upload(ctx, u64::MAX),
        v.upload(ctx, v.bytes.len() as u64 / 3),
        q6.upload(ctx, u64::MAX),
        q5.upload(ctx, q5.bytes.len() as u64 / 2),
    );
    let (wq3, wq2) = (
        q3.upload(ctx, q3.bytes.len() as u64 / 2),
        q2.upload(ctx, u64::MAX),
    );
    assert!(wv.n_parts() > 1);
    assert!(wq5.n_parts() > 1);
    assert!(wq3.n_parts() > 1);
    check_q8k(&[(&k, &wk, 0, 0, Epilogue::ReluSquare)], 40);
    check_q8k(&[(&q5, &wq5, 0, 0, Epilogue::Tanh)], 48);
    check_q8k(&[(&q3, &wq3, 0, 0, Epilogue::Add)], 49);
    check_q8k(&[(&q2, &wq2, 0, 0, Epilogue::Sigmoid)], 50);
    check_q8k(
        &[
            (&v, &wv, 256, 3, Epilogue::Add),
            (&q6, &wq6, 1280, 400, Epilogue::Tanh),
            (&k, &wk, 2304, 700, Epilogue::Sigmoid),
            (&q5, &wq5, 3328, 1800, Epilogue::Store),
            (&q3, &wq3, 4352, 2100, Epilogue::Tanh),
            (&q2, &wq2, 5376, 2400, Epilogue::Add),
        ],
        41,
    );
    // Seed 42's input has a value whose code an inexact GPU division flipped (relative
    // error 1.4e-4 on an H200 before div_rn).
    for (ty, seed) in [
        (GgmlType::Q4_K, 42),
        (GgmlType::Q6_K, 43),
        (GgmlType::Q4_K, 44),
        (GgmlType::Q5_K, 45),
        (GgmlType::Q3_K, 46),
        (GgmlType::Q2_K, 47),
    ] {
        let m = TestMatrix::synthetic(ty, 37, 12544, seed);
        let w = m.upload(ctx, u64::MAX);
        check_q8k(&[(&m, &w, 512, 2, Epilogue::Store)], seed);
    }
}

#[test]
fn q8k_input_rejects_what_it_cannot_read() {
    let ctx = &gpu().ctx;
    let kernels = &gpu().kernels;
    let xq = Q8Input::new(ctx, "xq", 2048).unwrap();
    let y = ctx.create_storage_buffer("y", &[0u8; 4096]).unwrap();
    let f16 = TestMatrix::synthetic(GgmlType::F16, 4, 256, 1);
    let q4 = TestMatrix::synthetic(GgmlType::Q4_K, 4, 256, 2);
    let (wf, wq) = (f16.upload(ctx, u64::MAX), q4.upload(ctx, u64::MAX));
    let job = |w, x_offset| MatvecJob::new(w, x_offset, 0, Epilogue::Store);
    let err = |jobs: &[MatvecJob]| match kernels.prepare_q8(ctx, &xq, &y, jobs, None) {
        Ok(_) => panic!("prepared"),
        Err(e) => e.to_string(),
    };
    assert!(err(&[job(&wf, 0)]).contains("cannot read a Q8_K input"));
    let q8 = TestMatrix::synthetic(GgmlType::Q8_0, 4, 256, 3);
    let w8 = q8.upload(ctx, u64::MAX);
    assert!(err(&[job(&w8, 0)]).contains("cannot read a Q8_K input"));
    assert!(err(&[job(&wq, 100)]).contains("cannot read a Q8_K input"));
    assert!(err(&[job(&wq, 2048)]).contains("past the end"));
    assert!(Q8Input::new(ctx, "bad", 100).is_err());
    assert!(kernels
        .prepare_q8(ctx, &xq, &y, &[job(&wq, 1792)], None)
        .is_ok());
}

#[test]
fn direct_dispatches_bind_the_also_buffer() {
    // The direct kernel binds an extra read-only buffer it never reads (so that wgpu moves
    // that buffer to the read-only state at its barrier); the staging kernels do not, and say
    // so. Results are those without it.
    let ctx = &gpu().ctx;
    let kernels = &gpu().kernels;
    let xq = Q8Input::new(ctx, "xq", 256).unwrap();
    let x = ctx.create_storage_buffer("x", &[0u8; 1024]).unwrap();
    let also = ctx.create_storage_buffer("also", &[0u8; 64]).unwrap();
    let y = ctx.create_storage_buffer("y", &[0u8; 1024]).unwrap();
    let q4 = TestMatrix::synthetic(GgmlType::Q4_K, 4, 256, 2);
    let wq = q4.upload(ctx, u64::MAX);
    let job = |w| MatvecJob::new(w, 0, 0, Epilogue::Store);
    let direct = kernels
        .prepare_q8(ctx, &xq, &y, &[job(&wq)], Some(&also))
        .unwrap();
    assert!(direct.binds_also());
    assert!(!kernels
        .prepare_q8(ctx, &xq, &y, &[job(&wq)], None)
        .unwrap()
        .binds_also());
    let tokens = kernels
        .prepare_tokens(
            ctx,
            MatvecInput::Q8(&xq),
            &y,
            4,
            &[job(&wq)],
            4,
            Some(&also),
        )
        .unwrap();
    assert!(tokens.binds_also());
    // Unrounded f32 inputs take the staging kernel for Q4_K, which cannot bind it.
    let staged = kernels
        .prepare(ctx, &x, &y, 0, &[job(&wq)], Some(&also))
        .unwrap();
    assert!(!staged.binds_also());
}

#[test]
fn f16_direct_kernel() {
    // F16 weights whose rows are whole vec4s of x, at input offsets of whole vec4s, take the
    // direct kernel (x read and rounded to f16 by every thread); other offsets the staging
    // one. Both against the CPU, with and without the f16 rounding.
    let f = "mini-f16.gguf";
    let w1 = "blk.0.time_mix_w1.weight";
    let a = TestMatrix::from_fixture(f, w1, fixture_type(f, w1));
    let b = TestMatrix::from_fixture(f, FFN_VALUE, fixture_type(f, FFN_VALUE));
    let ctx = &gpu().ctx;
    let (wa, wb) = (
        a.upload(ctx, u64::MAX),
        b.upload(ctx, b.bytes.len() as u64 / 3),
    );
    assert!(wb.n_parts() > 1);
    let long = TestMatrix::synthetic(GgmlType::F16, 37, 12544, 50);
    let wl = long.upload(ctx, u64::MAX);
    for mode in [0, 1] {
        check(
            &[
                (&a, &wa, 0, 0, Epilogue::Tanh),
                (&a, &wa, 260, 40, Epilogue::Sigmoid),
                (&b, &wb, 512, 100, Epilogue::Add),
            ],
            mode,
            51 + mode as u64,
        );
        check(&[(&long, &wl, 4, 2, Epilogue::Store)], mode, 53);
    }
}

/// Asserts that `w` (of at most 1024 columns and 512 rows) with rounding `mode` takes the
/// direct kernel: only it binds a buffer to be moved to the read-only state.
fn assert_direct(w: &GpuMatrix, mode: u32) {
    let ctx = &gpu().ctx;
    let (x, y) = (
        ctx.create_storage_buffer("x", &[0u8; 8192]).unwrap(),
        ctx.create_storage_buffer("y", &[0u8; 2048]).unwrap(),
    );
    let also = ctx.create_storage_buffer("also", &[0u8; 64]).unwrap();
    let job = MatvecJob::new(w, 0, 0, Epilogue::Store);
    let call = gpu()
        .kernels
        .prepare(ctx, &x, &y, mode, &[job], Some(&also));
    assert!(call.unwrap().binds_also(), "{} {mode}", w.name);
}

#[test]
fn bf16_direct_kernel() {
    // BF16 weights take the direct kernel as F16 ones do (x read and rounded to bf16 by every
    // thread, ggml's rounding of activations for them): a fixture tensor, one split into
    // parts, long synthetic rows, with and without the rounding, against the CPU.
    let f = "mini-bf16.gguf";
    let a = TestMatrix::from_fixture(f, FFN_VALUE, fixture_type(f, FFN_VALUE));
    assert_eq!(a.ty, GgmlType::BF16);
    let ctx = &gpu().ctx;
    let (wa, wp) = (
        a.upload(ctx, u64::MAX),
        a.upload(ctx, a.bytes.len() as u64 / 3),
    );
    assert!(wp.n_parts() > 1);
    let long = TestMatrix::synthetic(GgmlType::BF16, 37, 12544, 54);
    let wl = long.upload(ctx, u64::MAX);
    assert_direct(&wa, 2);
    for mode in [0, 2] {
        check(
            &[
                (&a, &wa, 0, 0, Epilogue::Tanh),
                (&a, &wp, 1028, 300, Epilogue::Add),
            ],
            mode,
            55 + mode as u64,
        );
        check(&[(&long, &wl, 4, 2, Epilogue::Store)], mode, 58);
    }
}

#[test]
fn f32_direct_kernel() {
    // F32 weights (the converter's `--outtype f32`) take the direct kernel too, reading x as
    // it is: a matrix, the same split into parts, long rows, against the CPU.
    let a = TestMatrix::synthetic(GgmlType::F32, 256, 1024, 63);
    let ctx = &gpu().ctx;
    let (wa, wp) = (
        a.upload(ctx, u64::MAX),
        a.upload(ctx, a.bytes.len() as u64 / 3),
    );
    assert!(wp.n_parts() > 1);
    let long = TestMatrix::synthetic(GgmlType::F32, 37, 12544, 64);
    let wl = long.upload(ctx, u64::MAX);
    assert_direct(&wa, 0);
    check(
        &[
            (&a, &wa, 0, 0, Epilogue::Tanh),
            (&a, &wp, 1028, 300, Epilogue::Add),
        ],
        0,
        65,
    );
    check(&[(&long, &wl, 4, 2, Epilogue::Store)], 0, 66);
}

#[test]
fn several_tokens_in_one_call() {
    // prepare_tokens: each weight read once for n tokens (x rows x_stride apart, y rows
    // y_stride apart), the K-quants from a Q8_K copy of every row, Q5_1 from a Q8_0 one, F32,
    // F16 and BF16 from f32 rows (rounded to f16 or bf16 as read); every token against the CPU with its own rounded
    // row.
    let g = gpu();
    let ctx = &g.ctx;
    let f = "mini-q4_k_m.gguf";
    let k = TestMatrix::from_fixture(f, FFN_VALUE, fixture_type(f, FFN_VALUE));
    let q6 = TestMatrix::from_fixture("mini-q6_k.gguf", FFN_VALUE, GgmlType::Q6_K);
    let q5 = TestMatrix::from_fixture("mini-q5_k_m.gguf", FFN_VALUE, GgmlType::Q5_K);
    let h = TestMatrix::synthetic(GgmlType::F16, 40, 512, 60);
    let hb = TestMatrix::synthetic(GgmlType::BF16, 40, 512, 62);
    let q3 = TestMatrix::from_fixture("mini-q3_k_m.gguf", FFN_VALUE, GgmlType::Q3_K);
    let q51 = TestMatrix::from_fixture("mini-q5_1.gguf", FFN_VALUE, GgmlType::Q5_1);
    let f32m = TestMatrix::synthetic(GgmlType::F32, 40, 512, 67);
    let max = 16u32;
    for (m, mode) in [
        (&k, 4),
        (&q6, 4),
        (&q5, 4),
        (&q3, 4),
        (&q51, 3),
        (&f32m, 0),
        (&h, 1),
        (&hb, 2),
    ] {
        let w = m.upload(ctx, m.bytes.len() as u64 / 2);
        let q8k = mode >= 3;
        let (x_stride, y_stride) = (m.cols as u32 + 256, m.rows as u32 + 3);
        let mut rng = Rng(61);
        let x: Vec<f32> = (0..(x_stride * max) as usize)
            .map(|_| rng.uniform())
            .collect();
        let y0: Vec<f32> = (0..(y_stride * max) as usize)
            .map(|_| rng.uniform())
            .collect();
        let x_buf = ctx
            .create_storage_buffer("x", bytemuck::cast_slice(&x))
            .unwrap();
        let format = rwkv_gpu::q8_format_of_mode(mode).unwrap_or(Q8Format::K);
        let xq = Q8Input::with_format(ctx, "xq", format, max * m.cols as u32).unwrap();
        let job = MatvecJob {
            x_stride: if q8k { m.cols as u32 } else { x_stride },
            y_stride,
            ..MatvecJob::new(&w, 0, 1, Epilogue::Add)
        };
        let quantize = g
            .kernels
            .prepare_quantize_segments(
                ctx,
                &x_buf,
                &xq,
                m.cols as u32,
                x_stride * max,
                x_stride,
                max,
            )
            .unwrap();
        let input = if q8k {
            MatvecInput::Q8(&xq)
        } else {
            MatvecInput::F32(&x_buf)
        };
        for n in [2u32, 7, 16] {
            let y_buf = ctx
                .create_storage_buffer("y", bytemuck::cast_slice(&y0))
                .unwrap();
            let call = g
                .kernels
                .prepare_tokens(
                    ctx,
                    input,
                    &y_buf,
                    mode,
                    std::slice::from_ref(&job),
                    max,
                    None,
                )
                .unwrap();
            assert_eq!(call.max_tokens(), max);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                if q8k {
                    quantize.record(&mut pass, n);
                }
                call.record(&mut pass, n);
            }
            ctx.queue.submit([enc.finish()]);
            let y = ctx.read_buffer_f32(&y_buf, 0, y0.len()).unwrap();
            for t in 0..max as usize {
                let at = t * y_stride as usize + 1;
                if t >= n as usize {
                    assert_eq!(
                        &y[at..at + m.rows],
                        &y0[at..at + m.rows],
                        "token {t} of {n}"
                    );
                    continue;
                }
                let xs = t * x_stride as usize;
                let xr = round(&x[xs..xs + m.cols], mode);
                let (mut err2, mut ref2) = (0f64, 0f64);
                for r in 0..m.rows {
                    let s: f64 = m.values[r * m.cols..][..m.cols]
                        .iter()
                        .zip(&xr)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    let want = apply(Epilogue::Add, s, y0[at + r] as f64);
                    err2 += (y[at + r] as f64 - want).powi(2);
                    ref2 += want * want;
                }
                let rel = (err2 / ref2).sqrt();
                assert!(
                    rel < 1e-5,
                    "{} token {t} of {n}: relative error {rel:e}",
                    m.name
                );
            }
        }
    }
}

#[test]
fn q8_0_input_quantized_once() {
    // Q8_0, Q4_0, Q5_0, Q4_1 and Q5_1 matrices reading an input quantized to Q8_0 by its own
    // dispatch (ggml's activation rounding for them; for Q4_1 and Q5_1 its Q8_1, the same codes
    // with their sum), several in one call with split ones, and long rows.
    let ctx = &gpu().ctx;
    let q8 = TestMatrix::from_fixture("mini-q8_0.gguf", FFN_VALUE, GgmlType::Q8_0);
    let q4 = TestMatrix::from_fixture(
        "mini-q4_0.gguf",
        FFN_VALUE,
        fixture_type("mini-q4_0.gguf", FFN_VALUE),
    );
    let q41 = TestMatrix::from_fixture("mini-q4_1.gguf", FFN_VALUE, GgmlType::Q4_1);
    let q51 = TestMatrix::from_fixture("mini-q5_1.gguf", FFN_VALUE, GgmlType::Q5_1);
    let (w8, w4) = (
        q8.upload(ctx, q8.bytes.len() as u64 / 3),
        q4.upload(ctx, u64::MAX),
    );
    let (w41, w51) = (
        q41.upload(ctx, q41.bytes.len() as u64 / 2),
        q51.upload(ctx, u64::MAX),
    );
    assert!(w8.n_parts() > 1);
    assert!(w41.n_parts() > 1);
    check_q8_0(&[(&q41, &w41, 0, 0, Epilogue::Sigmoid)], 73);
    check_q8_0(&[(&q51, &w51, 0, 0, Epilogue::ReluSquare)], 74);
    check_q8_0(
        &[
            (&q8, &w8, 256, 3, Epilogue::Add),
            (&q4, &w4, 1280, 400, Epilogue::Tanh),
            (&q41, &w41, 2304, 700, Epilogue::Store),
            (&q51, &w51, 3328, 1000, Epilogue::Add),
        ],
        70,
    );
    for (ty, seed) in [
        (GgmlType::Q8_0, 71),
        (GgmlType::Q4_0, 72),
        (GgmlType::Q5_0, 75),
        (GgmlType::Q4_1, 76),
        (GgmlType::Q5_1, 77),
    ] {
        let m = TestMatrix::synthetic(ty, 37, 12544, seed);
        let w = m.upload(ctx, u64::MAX);
        check_q8_0(&[(&m, &w, 512, 2, Epilogue::Store)], seed);
    }
}
