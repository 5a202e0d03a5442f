//! Throughput of the matmul kernels on model-sized matrices (ignored by default; run with
//! `cargo test -p rwkv-gpu --release --test bench -- --ignored --nocapture`).
//!
//! Weights are synthetic (random quants, sane f16 scales). Enough copies of each matrix
//! are cycled through to exceed the GPU's caches, and many dispatches are recorded into
//! one pass, so the wall-clock time per matmul approximates the kernel time.

use std::time::Instant;

mod support;

use gguf::GgmlType;
use rwkv_gpu::{ContextOptions, Epilogue, GpuContext, GpuMatrix, MatmulCall, MatmulKernels};
use support::{synthetic_bytes, Rng};

/// A product's input (`max_tokens` rows of `cols` values), output and step buffers.
fn io_buffers(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    max_tokens: u32,
) -> (wgpu::Buffer, wgpu::Buffer, wgpu::Buffer) {
    let x: Vec<f32> = (0..cols * max_tokens as usize)
        .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
        .collect();
    let x_buf = ctx
        .create_storage_buffer("x", bytemuck::cast_slice(&x))
        .unwrap();
    let y_buf = ctx
        .create_storage_buffer("y", &vec![0u8; rows * max_tokens as usize * 4])
        .unwrap();
    let step = ctx.create_storage_buffer("step", &[0u8; 16]).unwrap();
    (x_buf, y_buf, step)
}

/// `w` times the tokens' inputs in `x` into `y` (both packed: `w.cols` and `w.rows` values
/// per token), stored, for up to `max_tokens` tokens (the count in `step`).
fn prepare_plain(
    kernels: &MatmulKernels,
    ctx: &GpuContext,
    w: &GpuMatrix,
    (x, y, step): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    max_tokens: u32,
) -> MatmulCall {
    let (rows, cols) = (w.rows as u32, w.cols as u32);
    kernels
        .prepare(
            ctx,
            w,
            x,
            0,
            cols,
            y,
            0,
            rows,
            // `WEB_RWKV_BENCH_EPILOGUE=add` or `relu` (measurements of the epilogues).
            match std::env::var("WEB_RWKV_BENCH_EPILOGUE").as_deref() {
                Ok("add") => Epilogue::Add,
                Ok("relu") => Epilogue::ReluSquare,
                _ => Epilogue::Store,
            },
            step,
            max_tokens,
        )
        .unwrap()
}

/// Records `record(pass, i)` for i in 0..k into one compute pass, submits it and waits (the
/// callers time it with the encoding included).
fn run_in_one_pass(ctx: &GpuContext, k: usize, record: impl Fn(&mut wgpu::ComputePass<'_>, usize)) {
    support::time_pass(ctx, |pass| (0..k).for_each(|i| record(pass, i)));
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture on a real GPU"]
fn matmul_throughput() {
    let ctx = GpuContext::new(&ContextOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let kernels = MatmulKernels::new(&ctx).unwrap();
    println!(
        "adapter: {} ({:?}), subgroups {}, max binding {} MiB",
        ctx.info.name,
        ctx.info.backend,
        ctx.has_subgroups(),
        ctx.max_binding_bytes() >> 20
    );
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let cache_bytes: u64 = if quick { 8 << 20 } else { 512 << 20 };
    let iters = if quick { 4 } else { 200 };
    let shapes: &[(usize, usize)] = &[(2560, 2560), (10240, 2560), (2560, 10240), (65536, 2560)];
    let types = [
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q4_K,
        GgmlType::Q4_0,
        GgmlType::Q3_K,
        GgmlType::Q2_K,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let max_tokens = 64u32;
    for &(rows, cols) in shapes {
        if quick && (rows, cols) != (2560, 2560) {
            continue;
        }
        let (x_buf, y_buf, step) = io_buffers(&ctx, rows, cols, max_tokens);
        for ty in types {
            let bytes = synthetic_bytes(ty, rows * cols, &mut rng);
            let first = GpuMatrix::upload(&ctx, "w", ty, rows, cols, &bytes).unwrap();
            let copies = (cache_bytes / first.gpu_bytes()).clamp(1, 64) as usize;
            let mut mats = vec![first];
            for _ in 1..copies {
                mats.push(GpuMatrix::upload(&ctx, "w", ty, rows, cols, &bytes).unwrap());
            }
            let calls: Vec<_> = mats
                .iter()
                .map(|w| prepare_plain(&kernels, &ctx, w, (&x_buf, &y_buf, &step), max_tokens))
                .collect();
            let mut line = format!(
                "{ty:>5} {rows:>6}x{cols:<6} {:>8.1} MiB x{copies:<3}",
                mats[0].gpu_bytes() as f64 / (1 << 20) as f64
            );
            for n in [1u32, 8, 64] {
                ctx.queue.write_buffer(&step, 0, &n.to_le_bytes());
                let run = |k: usize| {
                    run_in_one_pass(&ctx, k, |pass, i| calls[i % calls.len()].record(pass, n))
                };
                run(calls.len().max(4)); // warm-up (pipelines, caches, clocks)
                let t = Instant::now();
                run(iters);
                let per = t.elapsed().as_secs_f64() / iters as f64;
                let gbs = mats[0].gpu_bytes() as f64 / per / 1e9;
                line += &format!(" | n={n:<2} {:>8.1} us {gbs:>7.1} GB/s", per * 1e6);
            }
            println!("{line}");
        }
    }
}

/// The tensor-core product alone on F16 and Q4_K weights (with their decode) of the 2.9B
/// model's shapes at a 64-sequence step and prompt-sized steps, in TFLOPS (ignored by
/// default; run with `--ignored --nocapture` on a GPU with cooperative matrices; the shape,
/// probe, direct-store and fused-decode knobs of `matmul/coop.rs` apply, and
/// `WEB_RWKV_BENCH_EPILOGUE=add` or `relu` gives the product that epilogue instead of a
/// plain store).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture on a real GPU"]
fn coop_product_throughput() {
    let ctx = GpuContext::new(&ContextOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    if ctx.coop_subgroup_size().is_none() {
        println!("{}: no cooperative matrices", ctx.info.name);
        return;
    }
    let kernels = MatmulKernels::new(&ctx).unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let max_tokens = 2048u32;
    let types = [GgmlType::F16, GgmlType::Q4_K];
    for ((rows, cols), ty) in [(2560usize, 10240usize), (10240, 2560), (2560, 2560)]
        .into_iter()
        .flat_map(|s| types.map(|t| (s, t)))
    {
        let (x_buf, y_buf, step) = io_buffers(&ctx, rows, cols, max_tokens);
        let bytes = synthetic_bytes(ty, rows * cols, &mut rng);
        let w = GpuMatrix::upload(&ctx, "w", ty, rows, cols, &bytes).unwrap();
        let call = prepare_plain(&kernels, &ctx, &w, (&x_buf, &y_buf, &step), max_tokens);
        let mut line = format!("{ty:>4} {rows:>6}x{cols:<6}");
        for n in [64u32, 512, 2048] {
            ctx.queue.write_buffer(&step, 0, &n.to_le_bytes());
            let run = |k: usize| run_in_one_pass(&ctx, k, |pass, _| call.record(pass, n));
            run(4);
            let iters = 50;
            let t = Instant::now();
            run(iters);
            let per = t.elapsed().as_secs_f64() / iters as f64;
            let tflops = 2.0 * (rows * cols) as f64 * n as f64 / per / 1e12;
            line += &format!(" | n={n:<4} {:>8.1} us {tflops:>6.1} TFLOPS", per * 1e6);
        }
        println!("{line}");
    }
}
