//! Times the sampling kernel alone: one row of a 65,536-token vocabulary (roughly normal
//! logits, two spreads) sampled N times in one compute pass, for each setting and each kernel
//! source given (default: the built-in one), so that kernels can be compared on the same
//! rows. The dispatches run in turn (each writes the counts the next reads); a row's time
//! includes its dispatch's launch and the barrier after it.
//!
//! `cargo run --release -p rwkv-engine --example sampler_time -- [FILE.wgsl ...]`
//! (`WEB_RWKV_SAMPLE_WG`: the workgroup size, default 1024 or the device's most).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use rwkv_engine::kernels::{bind, pipeline};
use rwkv_engine::{SamplingParams, SAMPLE_WG_ENV};
use rwkv_gpu::{ContextOptions, GpuContext};

const VOCAB: usize = 65536;
const N: u32 = 200;

#[path = "../tests/support/rng.rs"]
mod rng;
use rng::Rng;

fn main() -> Result<()> {
    let ctx = Arc::new(GpuContext::new(&ContextOptions::default())?);
    let mut sources = Vec::new();
    for file in std::env::args().skip(1) {
        let source = std::fs::read_to_string(&file).with_context(|| file.clone())?;
        sources.push((file, source));
    }
    if sources.is_empty() {
        sources.push((
            "built-in".into(),
            include_str!("../src/kernels/sample.wgsl").into(),
        ));
    }
    let wg = std::env::var(SAMPLE_WG_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024u32)
        .min(ctx.limits.max_compute_invocations_per_workgroup);
    let storage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let buf = |label: &str, bytes: &[u8]| {
        ctx.create_buffer_checked(label, bytes.len().max(16) as u64, storage, Some(bytes))
            .unwrap()
    };
    let info = ctx.create_buffer_checked(
        "info",
        16,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        Some(bytemuck::cast_slice(&[VOCAB as u32, 0, 0, 0])),
    )?;
    let logits = buf("logits", &vec![0u8; VOCAB * 4]);
    let params = buf("params", &[0u8; 48]);
    let table = buf("table", bytemuck::cast_slice(rwkv_sampler::exp_table()));
    let counts = buf("counts", &vec![0u8; VOCAB * 4]);
    let counters = buf("counters", &[0u8; 16]);
    let slots = buf("slots", &[0u8; 16]);
    let weights = buf("weights", &vec![0u8; VOCAB * 4]);
    let ids = buf("ids", &[0u8; 16]);
    println!("adapter: {:?}, WG {wg}", ctx.info.name);
    let d = SamplingParams::default;
    let settings = [
        ("greedy", SamplingParams::greedy()),
        ("T 1, no cut", d()),
        ("top-p 0.85", SamplingParams { top_p: 0.85, ..d() }),
        ("top-k 40", SamplingParams { top_k: 40, ..d() }),
        (
            "top-k 40, top-p 0.85",
            SamplingParams {
                top_k: 40,
                top_p: 0.85,
                ..d()
            },
        ),
    ];
    for scale in [3.0f32, 1.0] {
        let mut rng = Rng(7);
        let l: Vec<f32> = (0..VOCAB)
            .map(|_| ((0..4).map(|_| rng.unit()).sum::<f32>() - 2.0) * scale * 1.7)
            .collect();
        ctx.queue.write_buffer(&logits, 0, bytemuck::cast_slice(&l));
        for (name, source) in &sources {
            let source = format!("const WG: u32 = {wg}u;\n{source}");
            let p = pipeline(&ctx.device, "sample", &source);
            let group = bind(
                &ctx.device,
                &p,
                "sample",
                &[
                    &info, &logits, &params, &table, &counts, &counters, &slots, &weights, &ids,
                ],
            );
            for (setting, sp) in &settings {
                let words = sp.prepare().words();
                ctx.queue
                    .write_buffer(&params, 0, bytemuck::cast_slice(&words));
                let mut times = Vec::new();
                for _ in 0..4 {
                    let mut encoder = ctx.device.create_command_encoder(&Default::default());
                    {
                        let mut pass = encoder.begin_compute_pass(&Default::default());
                        pass.set_pipeline(&p);
                        pass.set_bind_group(0, &group, &[]);
                        for _ in 0..N {
                            pass.dispatch_workgroups(1, 1, 1);
                        }
                    }
                    let start = Instant::now();
                    ctx.queue.submit([encoder.finish()]);
                    ctx.read_buffer_bytes(&ids, 0, 4)?;
                    times.push(start.elapsed().as_secs_f64() / N as f64 * 1e6);
                }
                times.sort_by(|a, b| a.partial_cmp(b).unwrap());
                println!(
                    "scale {scale} {name:>24} {setting:>22}: {:7.1} us/row (best of 4: {:7.1})",
                    times[1], times[0]
                );
            }
        }
    }
    Ok(())
}
