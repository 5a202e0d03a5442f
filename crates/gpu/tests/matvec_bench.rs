//! Time of the one-token matvec on model-sized matrices (ignored by default; run with
//! `cargo test -p rwkv-gpu --release --test matvec_bench -- --ignored --nocapture`).
//!
//! Weights are synthetic (random quants, sane f16 scales), with enough copies cycled through
//! to exceed the GPU's caches. Many calls are recorded into one pass, either all writing the
//! same output ("chain": each waits for the one before, as in a forward pass) or each its
//! own ("free": they may overlap), so the wall-clock time per call approximates the kernel
//! time (chain: plus the barrier). The clock starts at the submit: wgpu encodes a pass's
//! commands when it is finished, which is CPU time, not the GPU's. `MATVEC_UNITS` (comma-separated numbers, or `auto` for
//! the kernels' own choice) sweeps the units of work per thread.

mod support;

use gguf::GgmlType;
use rwkv_gpu::{
    ContextOptions, Epilogue, GpuContext, GpuMatrix, MatvecJob, MatvecKernels, Q8Input,
};
use support::{synthetic_bytes, Rng};

/// The device and the kernels, with the adapter printed.
fn setup() -> (GpuContext, MatvecKernels) {
    let ctx = GpuContext::new(&ContextOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    println!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
    (ctx, MatvecKernels::new())
}

/// Enough copies of one synthetic matrix to exceed the GPU's caches when cycled through, each
/// with an output buffer of `out_len` f32.
fn weight_copies(
    ctx: &GpuContext,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    out_len: usize,
    rng: &mut Rng,
) -> (Vec<GpuMatrix>, Vec<wgpu::Buffer>) {
    let bytes = synthetic_bytes(ty, rows * cols, rng);
    let first = GpuMatrix::upload(ctx, "w", ty, rows, cols, &bytes).unwrap();
    let copies = ((256u64 << 20) / first.gpu_bytes()).clamp(2, 64) as usize;
    let mut mats = vec![first];
    for _ in 1..copies {
        mats.push(GpuMatrix::upload(ctx, "w", ty, rows, cols, &bytes).unwrap());
    }
    let outs = (0..copies)
        .map(|_| {
            ctx.create_storage_buffer("y", &vec![0u8; out_len * 4])
                .unwrap()
        })
        .collect();
    (mats, outs)
}

/// The comma-separated list an environment variable holds, or `default`.
fn list_env(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture on a real GPU"]
fn matvec_time() {
    let (ctx, kernels) = setup();
    let iters = 256;
    let units = list_env("MATVEC_UNITS", "auto");
    // `MATVEC_PROBES` (comma-separated: whole, nostage, noacc) times parts of the kernel;
    // `q8k` times the kernel reading an input quantized beforehand (Q4_K, Q6_K; `prepare_q8`).
    let probes = list_env("MATVEC_PROBES", "whole");
    let cases: &[(GgmlType, usize, usize, u32)] = &[
        (GgmlType::Q4_K, 2560, 2560, 4),
        (GgmlType::Q4_K, 10240, 2560, 4),
        (GgmlType::Q4_K, 2560, 10240, 4),
        (GgmlType::Q6_K, 2560, 10240, 4),
        (GgmlType::Q4_K, 10240, 2560, 0),
        (GgmlType::F16, 576, 2560, 1),
        (GgmlType::Q6_K, 65536, 2560, 4),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for &(ty, rows, cols, mode) in cases {
        let x: Vec<f32> = (0..cols).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let x_buf = ctx
            .create_storage_buffer("x", bytemuck::cast_slice(&x))
            .unwrap();
        let xq = Q8Input::new(&ctx, "xq", cols.next_multiple_of(256) as u32).unwrap();
        {
            let quantize = kernels.prepare_quantize(&ctx, &x_buf, &xq).unwrap();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            quantize.record(&mut enc.begin_compute_pass(&Default::default()), 1);
            ctx.queue.submit([enc.finish()]);
        }
        let (mats, outs) = weight_copies(&ctx, ty, rows, cols, rows, &mut rng);
        let mb = mats[0].gpu_bytes() as f64 / 1e6;
        for (u, probe) in units
            .iter()
            .flat_map(|u| probes.iter().map(move |p| (u, p)))
        {
            match u.as_str() {
                "auto" => std::env::remove_var("WEB_RWKV_MATVEC_UNITS"),
                u => std::env::set_var("WEB_RWKV_MATVEC_UNITS", u),
            }
            let q8k = probe == "q8k";
            if q8k
                && (mode != 4 || MatvecKernels::q8_format(&mats[0]) != Some(rwkv_gpu::Q8Format::K))
            {
                continue;
            }
            std::env::set_var(
                "WEB_RWKV_MATVEC_PROBE",
                if q8k { "" } else { probe.as_str() },
            );
            let mut line = format!(
                "{ty:>5} {rows:>6}x{cols:<6} mode {mode} units {u:>4} {probe:>7} {mb:>6.1} MB"
            );
            for chain in [true, false] {
                let calls: Vec<_> = mats
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let y = if chain { &outs[0] } else { &outs[i] };
                        let job = MatvecJob::new(w, 0, 0, Epilogue::Store);
                        if q8k {
                            kernels.prepare_q8(&ctx, &xq, y, &[job], None).unwrap()
                        } else {
                            kernels
                                .prepare(&ctx, &x_buf, y, mode, &[job], None)
                                .unwrap()
                        }
                    })
                    .collect();
                let run = |k: usize| {
                    support::time_pass(&ctx, |pass| {
                        for i in 0..k {
                            calls[i % calls.len()].record(pass);
                        }
                    })
                };
                run(calls.len().max(8));
                let per = run(iters) / iters as f64;
                line += &format!(
                    " | {} {:>7.1} us {:>6.0} GB/s",
                    if chain { "chain" } else { "free" },
                    per * 1e6,
                    mb * 1e6 / per / 1e9
                );
            }
            println!("{line}");
        }
    }
    // Empty-ish dispatches: the cost of a dependent dispatch by itself.
    let tiny = synthetic_bytes(GgmlType::F16, 64 * 256, &mut rng);
    let w = GpuMatrix::upload(&ctx, "w", GgmlType::F16, 64, 256, &tiny).unwrap();
    let x_buf = ctx.create_storage_buffer("x", &[0u8; 1024]).unwrap();
    let y_buf = ctx.create_storage_buffer("y", &[0u8; 256]).unwrap();
    let call = kernels
        .prepare(
            &ctx,
            &x_buf,
            &y_buf,
            0,
            &[MatvecJob::new(&w, 0, 0, Epilogue::Store)],
            None,
        )
        .unwrap();
    let run = |k: usize| {
        support::time_pass(&ctx, |pass| {
            for _ in 0..k {
                call.record(pass);
            }
        })
    };
    run(16);
    println!(
        "tiny dependent dispatch: {:.2} us each",
        run(1000) / 1000.0 * 1e6
    );
}

/// One prepared call, recorded into a pass.
type Record = Box<dyn Fn(&mut wgpu::ComputePass<'_>)>;

/// Time of the direct matvec per call for steps of 1 to 16 tokens (ignored by default; run
/// with `cargo test -p rwkv-gpu --release --test matvec_bench matvec_tokens_time --
/// --ignored --nocapture`): each call reads its own copy of the weights and writes its own
/// output ("free"), so the time per call approximates the kernel time. `MATVEC_PROBES`
/// (comma-separated: whole, noinput, onetoken, stream) times parts of the kernel.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture on a real GPU"]
fn matvec_tokens_time() {
    let (ctx, kernels) = setup();
    let iters = 256;
    let probes = list_env("MATVEC_PROBES", "whole");
    let max = 16u32;
    let cases: &[(GgmlType, usize, usize)] = &[
        (GgmlType::Q4_K, 2560, 10240),
        (GgmlType::Q4_K, 10240, 2560),
        (GgmlType::Q6_K, 2560, 10240),
        (GgmlType::Q8_0, 2560, 10240),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for &(ty, rows, cols) in cases {
        let format = MatvecKernels::q8_format(
            &GpuMatrix::upload(
                &ctx,
                "probe",
                ty,
                rows,
                cols,
                &synthetic_bytes(ty, rows * cols, &mut rng),
            )
            .unwrap(),
        )
        .expect("an 8-bit input");
        let x: Vec<f32> = (0..cols * max as usize)
            .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
            .collect();
        let x_buf = ctx
            .create_storage_buffer("x", bytemuck::cast_slice(&x))
            .unwrap();
        let xq = Q8Input::with_format(&ctx, "xq", format, cols as u32 * max).unwrap();
        {
            let c = cols as u32;
            let quantize = kernels
                .prepare_quantize_segments(&ctx, &x_buf, &xq, c, c * max, c, max)
                .unwrap();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            quantize.record(&mut enc.begin_compute_pass(&Default::default()), max);
            ctx.queue.submit([enc.finish()]);
        }
        let (mats, outs) = weight_copies(&ctx, ty, rows, cols, rows * max as usize, &mut rng);
        let mb = mats[0].gpu_bytes() as f64 / 1e6;
        for probe in &probes {
            std::env::set_var(
                "WEB_RWKV_MATVEC_PROBE",
                if probe == "whole" { "" } else { probe.as_str() },
            );
            let mut line = format!("{ty:>5} {rows:>6}x{cols:<6} {probe:>8} {mb:>6.1} MB |");
            let mut one = 0.0;
            for n in [1u32, 2, 4, 8, 16] {
                let record: Vec<Record> = mats
                    .iter()
                    .zip(&outs)
                    .map(|(w, y)| {
                        let job = MatvecJob {
                            x_stride: cols as u32,
                            y_stride: rows as u32,
                            ..MatvecJob::new(w, 0, 0, Epilogue::Store)
                        };
                        let f: Record = if n == 1 {
                            let call = kernels.prepare_q8(&ctx, &xq, y, &[job], None).unwrap();
                            Box::new(move |p| call.record(p))
                        } else {
                            let input = rwkv_gpu::MatvecInput::Q8(&xq);
                            let mode = format.rounding_mode();
                            let call = kernels
                                .prepare_tokens(&ctx, input, y, mode, &[job], max, None)
                                .unwrap();
                            Box::new(move |p| call.record(p, n))
                        };
                        f
                    })
                    .collect();
                let run = |k: usize| {
                    support::time_pass(&ctx, |pass| {
                        for i in 0..k {
                            record[i % record.len()](pass);
                        }
                    })
                };
                run(record.len().max(8));
                let per = run(iters) / iters as f64 * 1e6;
                if n == 1 {
                    one = per;
                }
                line += &format!(
                    " n={n} {per:>6.1} us (+{:>5.1}/token)",
                    (per - one) / (n - 1).max(1) as f64
                );
            }
            println!("{line}");
        }
    }
}
