//! Measures load time, prefill and decode throughput, decode latency percentiles, batched
//! throughput, GPU memory and (with --profile) GPU time per operation kind.
//!
//! cargo run --release --example bench -- --model MODEL --prompt "Hello" --tokens 100
//!     [--batch 64] [--prompt-tokens 2048] [--json] [--profile]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use gguf::GgufFile;
use rwkv_engine::{Engine, EngineOptions, Logits, SlotInput};
use rwkv_gpu::{ContextOptions, GpuContext};
use rwkv_tokenizer::Tokenizer;

/// Streaming read bandwidth of the H100 measured through wgpu (BENCHMARKS.md), for the floor.
const REFERENCE_BANDWIDTH: f64 = 2.77e12;

#[derive(Parser)]
#[command(about = "Benchmark web-rwkv-gguf on a model")]
struct Args {
    #[arg(long)]
    model: PathBuf,
    /// Prompt text (ignored when --prompt-tokens is given).
    #[arg(long, default_value = "Hello")]
    prompt: String,
    /// Synthetic prompt of this many tokens for the prefill measurement.
    #[arg(long)]
    prompt_tokens: Option<usize>,
    /// Tokens to decode at batch 1 (and steps at --batch).
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    /// Also decode this many sequences together and report the aggregate rate.
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per GPU step during prefill.
    #[arg(long, default_value_t = 512)]
    chunk: usize,
    /// Round activations like llama.cpp (default) or keep them f32.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    llama_cpp_rounding: bool,
    #[arg(long)]
    adapter: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Add GPU time per operation kind for one decode token.
    #[arg(long)]
    profile: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let args = Args::parse();
    let file = GgufFile::open(&args.model).with_context(|| args.model.display().to_string())?;
    let batch = args.batch.unwrap_or(0);
    let ctx = Arc::new(GpuContext::new(&ContextOptions {
        adapter: args.adapter.clone(),
    })?);
    let adapter = format!(
        "{} ({:?}, {:?})",
        ctx.info.name, ctx.info.backend, ctx.info.device_type
    );

    let load_start = Instant::now();
    let options = EngineOptions {
        max_slots: batch.max(1),
        max_rows: args.chunk.max(batch).max(1),
        max_out: batch.max(1),
        llama_cpp_rounding: args.llama_cpp_rounding,
    };
    let mut engine = Engine::load(ctx.clone(), &file, options, &mut |_, _| {})?;
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let load = load_start.elapsed();
    let vocab = engine.config.vocab_size as u32;

    let prompt: Vec<u32> = match args.prompt_tokens {
        Some(n) => (0..n as u32)
            .map(|i| 1 + (i * 7919 + 13) % (vocab - 1))
            .collect(),
        None => {
            let ids = Tokenizer::from_gguf(&file)?.encode(args.prompt.as_bytes());
            anyhow::ensure!(!ids.is_empty(), "the prompt is empty");
            ids
        }
    };

    // Warm-up: first dispatches compile pipelines in some drivers.
    let warm: Vec<u32> = prompt.iter().copied().take(8).collect();
    engine.step(&[SlotInput {
        slot: 0,
        tokens: &warm,
        logits: Logits::Last,
    }])?;
    engine.reset(0)?;

    // Prefill.
    let t = Instant::now();
    let out = engine.step(&[SlotInput {
        slot: 0,
        tokens: &prompt,
        logits: Logits::Last,
    }])?;
    let prefill = t.elapsed();
    let prefill_times = engine.last_times();
    let mut next = argmax(&out[0][0]);

    // Decode at batch 1.
    let mut latencies = Vec::with_capacity(args.tokens);
    let decode_start = Instant::now();
    for _ in 0..args.tokens {
        let t = Instant::now();
        let out = engine.step(&[SlotInput {
            slot: 0,
            tokens: &[next],
            logits: Logits::Last,
        }])?;
        next = argmax(&out[0][0]);
        latencies.push(t.elapsed());
    }
    let decode = decode_start.elapsed();
    let decode_times = engine.last_times();
    latencies.sort();

    // Decode at batch B: every slot advances one token per step.
    let batched = if batch > 1 {
        let start: Vec<u32> = (0..batch as u32).map(|i| 1 + i % (vocab - 1)).collect();
        for s in 0..batch {
            engine.reset(s)?;
        }
        let mut tokens = start.clone();
        let inputs =
            |tokens: &[u32]| -> Vec<(usize, u32)> { tokens.iter().copied().enumerate().collect() };
        let steps = args.tokens.max(1);
        let t = Instant::now();
        for _ in 0..steps {
            let pairs = inputs(&tokens);
            let slot_inputs: Vec<SlotInput> = pairs
                .iter()
                .map(|(s, tok)| SlotInput {
                    slot: *s,
                    tokens: std::slice::from_ref(tok),
                    logits: Logits::Last,
                })
                .collect();
            let out = engine.step(&slot_inputs)?;
            tokens = out.iter().map(|rows| argmax(&rows[0])).collect();
        }
        let elapsed = t.elapsed();
        Some((batch, steps, elapsed))
    } else {
        None
    };

    let profile = if args.profile {
        Some(engine.profile_step(&[SlotInput {
            slot: 0,
            tokens: &[next],
            logits: Logits::Last,
        }])?)
    } else {
        None
    };

    // Bytes a batch-1 decode token must read: every weight except the embedding table (one
    // row of it is read).
    let embedding = file.tensor("token_embd.weight").map_or(0, |t| t.n_bytes);
    let bytes_per_token =
        engine.weight_bytes().saturating_sub(embedding) + embedding / vocab as u64;
    let floor_tps = REFERENCE_BANDWIDTH / bytes_per_token as f64;
    let decode_tps = args.tokens as f64 / decode.as_secs_f64();
    let prefill_tps = prompt.len() as f64 / prefill.as_secs_f64();

    if args.json {
        let mut obj = serde_json::json!({
            "model": args.model.display().to_string(),
            "adapter": adapter,
            "load_s": load.as_secs_f64(),
            "gpu_bytes": engine.gpu_bytes(),
            "weight_bytes": engine.weight_bytes(),
            "ops_per_step": engine.ops_per_step(),
            "prompt_tokens": prompt.len(),
            "prefill_s": prefill.as_secs_f64(),
            "prefill_tok_s": prefill_tps,
            "prefill_gpu_steps": prefill_times.gpu_steps,
            "decode_tokens": args.tokens,
            "decode_tok_s": decode_tps,
            "decode_ms_p50": ms(percentile(&latencies, 0.5)),
            "decode_ms_p90": ms(percentile(&latencies, 0.9)),
            "decode_ms_p99": ms(percentile(&latencies, 0.99)),
            "decode_stage_ms": {
                "input": ms(decode_times.input), "load": ms(decode_times.load),
                "dispatch": ms(decode_times.dispatch), "submit": ms(decode_times.submit),
                "back": ms(decode_times.back),
            },
            "bytes_per_token": bytes_per_token,
            "floor_tok_s": floor_tps,
            "floor_fraction": decode_tps / floor_tps,
        });
        if let Some((b, steps, t)) = batched {
            obj["batch"] = serde_json::json!({"batch": b, "steps": steps, "tok_s": (b * steps) as f64 / t.as_secs_f64()});
        }
        if let Some(p) = &profile {
            obj["profile_us"] = p
                .ops
                .iter()
                .map(|(k, n, d)| {
                    (
                        k.clone(),
                        serde_json::json!({"dispatches": n, "us": d.as_secs_f64() * 1e6}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
            obj["profile_total_us"] = (p.total.as_secs_f64() * 1e6).into();
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(());
    }

    println!("adapter:        {adapter}");
    println!(
        "model:          {} ({} layers x {})",
        args.model.display(),
        engine.config.n_layer,
        engine.config.n_embd
    );
    println!("load:           {:.2} s", load.as_secs_f64());
    println!(
        "gpu memory:     {:.1} MiB ({:.1} MiB weights)",
        engine.gpu_bytes() as f64 / 1048576.0,
        engine.weight_bytes() as f64 / 1048576.0
    );
    println!("ops per step:   {}", engine.ops_per_step());
    println!(
        "prefill:        {} tokens in {:.1} ms: {:.1} tok/s",
        prompt.len(),
        ms(prefill),
        prefill_tps
    );
    println!(
        "decode (b=1):   {} tokens: {:.1} tok/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        args.tokens,
        decode_tps,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "  stages (last token): input {:.3} ms, load {:.3} ms, dispatch {:.3} ms, submit {:.3} ms, back {:.3} ms",
        ms(decode_times.input),
        ms(decode_times.load),
        ms(decode_times.dispatch),
        ms(decode_times.submit),
        ms(decode_times.back)
    );
    println!(
        "  floor:        {:.1} MB per token -> {:.0} tok/s at 2.77 TB/s ({:.1}% reached)",
        bytes_per_token as f64 / 1e6,
        floor_tps,
        100.0 * decode_tps / floor_tps
    );
    if let Some((b, steps, t)) = batched {
        println!(
            "decode (b={b}):  {:.1} tok/s aggregate over {steps} steps",
            (b * steps) as f64 / t.as_secs_f64()
        );
    }
    if let Some(p) = profile {
        println!(
            "profile (one decode token, {:.1} us of GPU time in ops):",
            p.total.as_secs_f64() * 1e6
        );
        for (kind, n, d) in p.ops {
            println!("  {kind:<28} {n:>4} ops {:>10.1} us", d.as_secs_f64() * 1e6);
        }
    }
    Ok(())
}
