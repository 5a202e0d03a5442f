//! Measures a model on the GPU: load time, prefill throughput, decode throughput and per-token
//! latency percentiles at batch 1, aggregate throughput of B sequences decoding together, GPU
//! memory, dispatches per step and (with --profile) GPU time per operation kind per token.
//!
//! cargo run --release --example bench -- --model MODEL --prompt "Hello" --tokens 100
//!     [--batch 64] [--prompt-tokens 2048] [--json] [--profile]
//!
//! `--prompt-tokens` and `--batch` also take lists (`--prompt-tokens 512,2048 --batch 8,64`):
//! every size is measured on the same loaded model. `--json` prints one object on one line
//! (`bench/run_h100.sh` collects them into a JSON-lines file; `bench/table.py` makes the
//! BENCHMARKS.md table).
//!
//! The bandwidth floor is the time the GPU needs just to read what a step must read at the
//! reference bandwidth ([`REFERENCE_BANDWIDTH`], measured on the H100): at batch 1 every
//! weight but the embedding table (of which one row), at batch B the weights once plus, per
//! sequence, an embedding row and its WKV state read and written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use gguf::GgufFile;
use rwkv_engine::{Engine, EngineOptions, Logits, SampleTicket, SlotInput};
use rwkv_gpu::{ContextOptions, GpuContext};
use rwkv_tokenizer::Tokenizer;
use serde::Serialize;

/// Streaming read bandwidth of the H100 (bytes/s) measured through wgpu (BENCHMARKS.md).
pub const REFERENCE_BANDWIDTH: f64 = 2.77e12;

/// Bumped when a field of the JSON output changes meaning.
pub const JSON_VERSION: u32 = 2;

#[derive(Parser, Clone, Debug)]
#[command(about = "Benchmark web-rwkv-gguf on a model")]
pub struct Args {
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text (ignored when --prompt-tokens is given).
    #[arg(long, default_value = "Hello")]
    pub prompt: String,
    /// Synthetic prompt of this many tokens for the prefill measurement; a list (512,2048)
    /// measures each size in turn, from a fresh state.
    #[arg(long, value_delimiter = ',')]
    pub prompt_tokens: Vec<usize>,
    /// Tokens to decode at batch 1.
    #[arg(long, default_value_t = 100)]
    pub tokens: usize,
    /// Also decode this many sequences together and report the aggregate rate; a list
    /// (8,64) measures each batch size in turn.
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Steps to time at each --batch size (default: --tokens).
    #[arg(long)]
    pub batch_steps: Option<usize>,
    /// Stop each measurement (each prompt, between chunks; batch-1 decode; each batch size)
    /// after this many seconds; what was done so far is what is reported.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Tokens per GPU step during prefill (larger chunks give the matrix kernels larger
    /// grids: 2.9B Q4_K_M on an H200 prefills 2,048 tokens at 9,078 tok/s in chunks of 512,
    /// 12,182 in one chunk, for more activation memory).
    #[arg(long, default_value_t = 2048)]
    pub chunk: usize,
    /// Round activations like llama.cpp (default) or keep them f32.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub llama_cpp_rounding: bool,
    /// Keep f16 copies of quantized weights for prompts and batches (tensor cores only;
    /// 2 bytes more GPU memory per weight; see the engine's `f16_weights`).
    #[arg(long)]
    pub f16_weights: bool,
    /// One-token steps run each layer's tail as one persistent dispatch (the engine's
    /// `persistent`; also on with WEB_RWKV_PERSISTENT=1).
    #[arg(long)]
    pub persistent: bool,
    /// GPU adapter: an index from `web-rwkv-gguf info --adapters` or part of its name.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Print one JSON object (on one line).
    #[arg(long)]
    pub json: bool,
    /// Add GPU time per operation kind for one decode token (timestamp queries).
    #[arg(long)]
    pub profile: bool,
    /// With --profile: also list the first N ops of each profiled step in the order they
    /// ran (e.g. a layer's ops, with the activation each rounding op rounds).
    #[arg(long, default_value_t = 0)]
    pub profile_sequence: usize,
    /// With --profile: tokens of the profiled prompt chunk (at most --chunk).
    #[arg(long, default_value_t = 512)]
    pub profile_chunk: usize,
}

#[derive(Serialize, Clone, Debug)]
pub struct ModelInfo {
    pub path: String,
    /// `general.name`.
    pub name: String,
    /// llama.cpp's name of `general.file_type` (`Q4_K_M`...).
    pub file_type: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub vocab: usize,
    /// Values in all tensors.
    pub params: u64,
    pub file_bytes: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// Whether timestamp queries (--profile) are available.
    pub timestamps: bool,
    /// Subgroup size of the tensor-core path when it is on (cooperative matrices offered and
    /// not turned off with `WEB_RWKV_COOPMAT=0`), else null.
    pub tensor_cores: Option<u32>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Prefill {
    /// Tokens prefilled (fewer than requested only when --max-seconds ran out).
    pub prompt_tokens: usize,
    pub requested_tokens: usize,
    pub s: f64,
    pub tok_s: f64,
    /// GPU steps (chunks of at most --chunk tokens) the prompt took.
    pub gpu_steps: u32,
}

#[derive(Serialize, Clone, Debug)]
pub struct StageMs {
    pub input: f64,
    pub load: f64,
    pub dispatch: f64,
    pub submit: f64,
    pub back: f64,
    /// Part of `back`: recording the next step's commands while the GPU runs this one.
    pub prerecord: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Decode {
    pub tokens: usize,
    pub s: f64,
    pub tok_s: f64,
    pub ms_mean: f64,
    pub ms_p50: f64,
    pub ms_p90: f64,
    pub ms_p99: f64,
    pub ms_max: f64,
    /// Wall time per stage of the last token.
    pub stage_ms: StageMs,
    /// Bytes the token must read (weights; one embedding row).
    pub bytes_per_token: u64,
    pub floor_tok_s: f64,
    /// decode tok/s / floor tok/s.
    pub floor_fraction: f64,
    /// One-token steps submitted back to back with nothing read back in between: the GPU's
    /// own rate, which the decode above (chained steps, each token read) should match.
    pub gpu_bound_tok_s: f64,
    /// Decode one step at a time (each submitted once the previous token is read).
    pub unchained_tok_s: f64,
    /// Chained decode with a checkpoint of the slot before each step, as `chat` does (it
    /// keeps the state, so a stop seen one step late is undone).
    pub checkpointed_tok_s: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Batch {
    pub batch: usize,
    pub steps: usize,
    pub s: f64,
    /// Tokens per second over all sequences.
    pub tok_s: f64,
    pub step_ms_p50: f64,
    pub step_ms_p99: f64,
    /// Bytes a step must read: the weights once, per sequence an embedding row and its WKV
    /// state (read and written).
    pub bytes_per_step: u64,
    pub floor_tok_s: f64,
    pub floor_fraction: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct ProfileOp {
    pub kind: String,
    pub dispatches: usize,
    /// GPU time per token, microseconds.
    pub us: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct ProfileReport {
    /// Tokens in the profiled step.
    pub tokens: usize,
    /// Sum over all ops, microseconds (how ops are timed: `rwkv_engine`'s profile module).
    pub total_us: f64,
    /// Largest first.
    pub ops: Vec<ProfileOp>,
    /// The first --profile-sequence ops in the order they ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sequence: Vec<ProfileOp>,
}

/// The shader modules and compute pipelines the load created (rwkv-gpu's `compile_times`):
/// on a GPU whose driver has not cached them yet, most of a first start's load.
#[derive(Serialize, Clone, Debug, Default)]
pub struct CompileReport {
    pub count: usize,
    pub seconds: f64,
    /// The five slowest, with their seconds.
    pub slowest: Vec<(String, f64)>,
    /// By kind (a label's first word: `module`, `matvec`, `matmul_coop_fused`, `wkv7`...):
    /// count and seconds, the slowest kind first.
    pub by_kind: Vec<(String, usize, f64)>,
}

impl CompileReport {
    fn of(times: &[(String, std::time::Duration)]) -> CompileReport {
        let mut sorted: Vec<(String, f64)> = times
            .iter()
            .map(|(l, d)| (l.clone(), d.as_secs_f64()))
            .collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut by_kind: Vec<(String, usize, f64)> = Vec::new();
        for (label, t) in &sorted {
            let kind = label.split_whitespace().next().unwrap_or("").to_string();
            match by_kind.iter_mut().find(|k| k.0 == kind) {
                Some(k) => {
                    k.1 += 1;
                    k.2 += t;
                }
                None => by_kind.push((kind, 1, *t)),
            }
        }
        by_kind.sort_by(|a, b| b.2.total_cmp(&a.2));
        CompileReport {
            count: times.len(),
            seconds: sorted.iter().map(|t| t.1).sum(),
            slowest: sorted.into_iter().take(5).collect(),
            by_kind,
        }
    }
}

/// Everything one run measures; `--json` prints it as one object.
#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub version: u32,
    pub model: ModelInfo,
    pub adapter: AdapterReport,
    /// Seconds from opening the file to the engine ready on the GPU (device creation apart).
    pub load_s: f64,
    pub context_s: f64,
    /// Of the load: shader modules and pipelines created, and the seconds they took (summed:
    /// pipelines compile on several threads at once).
    pub compile: CompileReport,
    /// Everything the engine holds on the GPU.
    pub gpu_bytes: u64,
    pub weight_bytes: u64,
    /// Bytes of one sequence's recurrent state (WKV f32 and token shifts).
    pub state_bytes_per_seq: u64,
    /// GPU dispatches ("ops") recorded per step.
    pub ops_per_step: usize,
    /// Workgroups of the persistent kernels' grids (one-token steps; empty: none).
    pub persistent_grids: Vec<u32>,
    pub bandwidth_bytes_s: f64,
    pub chunk: usize,
    pub llama_cpp_rounding: bool,
    /// Whether quantized weights had resident f16 copies (`--f16-weights`).
    pub f16_weights: bool,
    pub prefill: Vec<Prefill>,
    pub decode: Decode,
    pub batches: Vec<Batch>,
    pub profile: Option<ProfileReport>,
    /// With --profile and a prompt: one prefill chunk (GPU time for the whole chunk).
    pub prefill_profile: Option<ProfileReport>,
    /// With --profile and --batch: one step of the largest batch (GPU time for the step).
    pub batch_profile: Option<ProfileReport>,
    /// Why --profile gave nothing (e.g. no timestamp queries).
    pub profile_error: Option<String>,
}

/// Seconds of GPU work before the first measurement (see the warm-up in `run`).
const WARM_SECONDS: f64 = 0.5;

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

/// llama.cpp's name of a `llama_ftype`.
pub fn file_type_name(id: u64) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return format!("ftype {id}"),
    };
    name.to_string()
}

/// A synthetic prompt of `n` tokens (never token 0, the control token).
fn synthetic_prompt(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u64)
        .map(|i| 1 + ((i * 7919 + 13) % (vocab as u64 - 1)) as u32)
        .collect()
}

/// `tokens` one-token steps of slot 0 (feeding `token` again; no logits wanted, so the
/// engine does not wait for them), then one that reads its logits back: tok/s over all of
/// them. The steps are submitted back to back, so this is the rate the GPU decodes at when
/// it never waits for the CPU.
fn gpu_bound_decode(engine: &mut Engine, token: u32, tokens: usize) -> Result<f64> {
    let tokens = tokens.max(2);
    let t = Instant::now();
    for i in 0..tokens {
        let last = i + 1 == tokens;
        engine.step(&[SlotInput {
            slot: 0,
            tokens: &[token],
            logits: if last { Logits::Last } else { Logits::None },
        }])?;
    }
    Ok(tokens as f64 / t.elapsed().as_secs_f64())
}

/// Chained decode steps, as `generate` and the server run them: `first` is submitted and not
/// read; each later step (`steps` in all, fewer once `stop` says so) is submitted before the
/// one before it is read, after `before_each` (e.g. a checkpoint). `read` gets each step's
/// sampled tokens as they are read.
fn chained_steps(
    engine: &mut Engine,
    first: SampleTicket,
    steps: usize,
    mut stop: impl FnMut() -> bool,
    mut before_each: impl FnMut(&mut Engine) -> Result<()>,
    mut read: impl FnMut(&[u32]),
) -> Result<()> {
    let mut ticket = first;
    for n in 0..steps {
        let following = match n + 1 == steps || stop() {
            true => None,
            false => {
                before_each(engine)?;
                Some(engine.submit_sample_chained(&ticket)?)
            }
        };
        read(&engine.wait_sampled(ticket)?);
        match following {
            Some(f) => ticket = f,
            None => break,
        }
    }
    Ok(())
}

fn out_of_time(start: Instant, limit: Option<f64>) -> bool {
    limit.is_some_and(|s| start.elapsed().as_secs_f64() >= s)
}

/// Runs every measurement `args` asks for.
pub fn run(args: &Args) -> Result<Report> {
    anyhow::ensure!(args.tokens > 0, "--tokens must be at least 1");
    anyhow::ensure!(args.chunk > 0, "--chunk must be at least 1");
    anyhow::ensure!(
        args.batch.iter().all(|&b| b > 0),
        "--batch sizes must be at least 1"
    );
    anyhow::ensure!(
        args.prompt_tokens.iter().all(|&n| n > 0),
        "--prompt-tokens must be at least 1"
    );
    let max_batch = args.batch.iter().copied().max().unwrap_or(1).max(1);

    let t = Instant::now();
    let ctx = Arc::new(GpuContext::new(&ContextOptions {
        adapter: args.adapter.clone(),
    })?);
    let context_s = t.elapsed().as_secs_f64();
    let adapter = AdapterReport {
        name: ctx.info.name.clone(),
        backend: format!("{:?}", ctx.info.backend),
        device_type: format!("{:?}", ctx.info.device_type),
        driver: ctx.info.driver.clone(),
        driver_info: ctx.info.driver_info.clone(),
        timestamps: ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY),
        tensor_cores: ctx.coop_subgroup_size(),
    };

    let load_start = Instant::now();
    let compiled_before = rwkv_gpu::compile_times().len();
    let file = GgufFile::open(&args.model).with_context(|| args.model.display().to_string())?;
    let options = EngineOptions {
        max_slots: max_batch,
        max_rows: args.chunk.max(max_batch),
        max_out: max_batch,
        llama_cpp_rounding: args.llama_cpp_rounding,
        f16_weights: args.f16_weights,
        ..EngineOptions::default()
    };
    let options = EngineOptions {
        persistent: options.persistent || args.persistent,
        ..options
    };
    let mut engine = Engine::load(ctx.clone(), &file, options, &mut |_, _| {})?;
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let load_s = load_start.elapsed().as_secs_f64();
    let compile = CompileReport::of(&rwkv_gpu::compile_times()[compiled_before..]);
    let config = engine.config.clone();
    let vocab = config.vocab_size as u32;
    anyhow::ensure!(vocab > 1, "the model's vocabulary is empty");

    let model = ModelInfo {
        path: args.model.display().to_string(),
        name: file
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        file_type: file
            .get("general.file_type")
            .and_then(|v| v.as_u64())
            .map_or_else(|| "unknown".to_string(), file_type_name),
        n_layer: config.n_layer,
        n_embd: config.n_embd,
        vocab: config.vocab_size,
        params: file.tensors().iter().map(|t| t.n_elements).sum(),
        file_bytes: file.file_size(),
    };

    let prompts: Vec<Vec<u32>> = if args.prompt_tokens.is_empty() {
        let ids = Tokenizer::from_gguf(&file)
            .context("the model has no tokenizer: give --prompt-tokens N")?
            .encode(args.prompt.as_bytes());
        anyhow::ensure!(!ids.is_empty(), "the prompt is empty");
        vec![ids]
    } else {
        args.prompt_tokens
            .iter()
            .map(|&n| synthetic_prompt(n, vocab))
            .collect()
    };

    // Warm-up: the first dispatches compile pipelines in some drivers. A chunk long enough
    // for the matrix-matrix and chunked WKV kernels (the first 512-token prefill measured on
    // an H200 took twice as long as later ones without it), then a one-token step.
    let warm: Vec<u32> = prompts[0]
        .iter()
        .copied()
        .cycle()
        .take(args.chunk.min(512))
        .collect();
    let out = engine.step(&[SlotInput {
        slot: 0,
        tokens: &warm,
        logits: Logits::Last,
    }])?;
    engine.step(&[SlotInput {
        slot: 0,
        tokens: &[argmax(&out[0][0])],
        logits: Logits::Last,
    }])?;
    // Then GPU work for at least WARM_SECONDS: an idle GPU's clocks take a few hundred
    // milliseconds to come up (an H200 at 345 MHz after loading a model, 1980 MHz once busy;
    // the first timed prefill after a load read at half speed without this).
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < WARM_SECONDS {
        engine.reset(0)?;
        engine.step(&[SlotInput {
            slot: 0,
            tokens: &warm,
            logits: Logits::Last,
        }])?;
    }

    // Prefill, each prompt from a fresh state, one --chunk of tokens per step (as the engine
    // would split it; stepping chunk by chunk lets --max-seconds stop between chunks).
    let mut prefill = Vec::new();
    let mut next = 0;
    for prompt in &prompts {
        engine.reset(0)?;
        let (mut done, mut gpu_steps) = (0, 0);
        let t = Instant::now();
        for chunk in prompt.chunks(args.chunk) {
            done += chunk.len();
            let last = done == prompt.len() || out_of_time(t, args.max_seconds);
            let out = engine.step(&[SlotInput {
                slot: 0,
                tokens: chunk,
                logits: if last { Logits::Last } else { Logits::None },
            }])?;
            gpu_steps += engine.last_times().gpu_steps;
            if last {
                next = argmax(&out[0][0]);
                break;
            }
        }
        let s = t.elapsed().as_secs_f64();
        prefill.push(Prefill {
            prompt_tokens: done,
            requested_tokens: prompt.len(),
            s,
            tok_s: done as f64 / s,
            gpu_steps,
        });
    }

    // Bytes a step must read.
    let embedding = file.tensor("token_embd.weight").map_or(0, |t| t.n_bytes);
    let embedding_row = embedding / vocab as u64;
    let weights_once = engine.weight_bytes_read().saturating_sub(embedding);
    let bytes_per_token = weights_once + embedding_row;
    let wkv_bytes =
        (config.n_layer * config.n_head * config.head_size * config.head_size * 4) as u64;
    let state_bytes_per_seq = wkv_bytes + (config.n_layer * 2 * config.n_embd * 4) as u64;
    let floor_tok_s = REFERENCE_BANDWIDTH / bytes_per_token as f64;

    // Decode as `generate` does: greedy sampling on the GPU, only the token id read back.
    for slot in 0..max_batch {
        engine.set_sampling(slot, &rwkv_engine::SamplingParams::greedy())?;
    }
    let sampled = |out: Vec<Option<u32>>| -> Result<Vec<u32>> {
        out.into_iter()
            .map(|t| t.context("no token sampled"))
            .collect()
    };

    // Decode at batch 1, after the last prompt, as `generate` does: each step submitted
    // before the previous one's token is read, the token fed from the GPU; a token's latency
    // is the time between two read tokens.
    let mut latencies = Vec::with_capacity(args.tokens);
    let decode_start = Instant::now();
    let first = engine.submit_sample(&[SlotInput {
        slot: 0,
        tokens: &[next],
        logits: Logits::Last,
    }])?;
    let mut t = Instant::now();
    chained_steps(
        &mut engine,
        first,
        args.tokens,
        || out_of_time(decode_start, args.max_seconds),
        |_| Ok(()),
        |ids| {
            next = ids[0];
            latencies.push(t.elapsed());
            t = Instant::now();
        },
    )?;
    let decode_s = decode_start.elapsed().as_secs_f64();
    let times = engine.last_times();
    let gpu_bound_tok_s = gpu_bound_decode(&mut engine, next, latencies.len())?;
    let checkpointed_tok_s = {
        let n = latencies.len().max(2);
        let t = Instant::now();
        let first = engine.submit_sample(&[SlotInput {
            slot: 0,
            tokens: &[next],
            logits: Logits::Last,
        }])?;
        chained_steps(
            &mut engine,
            first,
            n,
            || false,
            |e| Ok(e.checkpoint(0)?),
            |ids| next = ids[0],
        )?;
        n as f64 / t.elapsed().as_secs_f64()
    };
    let unchained_tok_s = {
        let n = latencies.len().max(2);
        let t = Instant::now();
        for _ in 0..n {
            next = sampled(engine.step_sample(&[SlotInput {
                slot: 0,
                tokens: &[next],
                logits: Logits::Last,
            }])?)?[0];
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let n = latencies.len();
    let mean = latencies.iter().sum::<Duration>() / n as u32;
    latencies.sort();
    let decode_tok_s = n as f64 / decode_s;
    let decode = Decode {
        tokens: n,
        s: decode_s,
        tok_s: decode_tok_s,
        ms_mean: ms(mean),
        ms_p50: ms(percentile(&latencies, 0.5)),
        ms_p90: ms(percentile(&latencies, 0.9)),
        ms_p99: ms(percentile(&latencies, 0.99)),
        ms_max: ms(latencies[n - 1]),
        stage_ms: StageMs {
            input: ms(times.input),
            load: ms(times.load),
            dispatch: ms(times.dispatch),
            submit: ms(times.submit),
            prerecord: ms(times.prerecord),
            back: ms(times.back),
        },
        bytes_per_token,
        floor_tok_s,
        floor_fraction: decode_tok_s / floor_tok_s,
        gpu_bound_tok_s,
        unchained_tok_s,
        checkpointed_tok_s,
    };

    let profile_input = next;

    // Decode at batch B: every sequence advances one token per step, each step submitted
    // before the previous one's tokens are read, as the server's scheduler does; a step's
    // time is the time between two reads.
    let mut batches = Vec::new();
    for &b in &args.batch {
        let steps = args.batch_steps.unwrap_or(args.tokens).max(1);
        let tokens = batch_tokens(b, vocab);
        // One untimed step at this size first (its tokens are fed by the first timed one).
        let warm_up = engine.submit_sample(&one_token_each(&tokens))?;
        let first = engine.submit_sample_chained(&warm_up)?;
        engine.wait_sampled(warm_up)?;
        let mut step_times = Vec::with_capacity(steps);
        let start = Instant::now();
        let mut t = start;
        chained_steps(
            &mut engine,
            first,
            steps,
            || out_of_time(start, args.max_seconds),
            |_| Ok(()),
            |_| {
                step_times.push(t.elapsed());
                t = Instant::now();
            },
        )?;
        let s = start.elapsed().as_secs_f64();
        step_times.sort();
        let done = step_times.len();
        let tok_s = (b * done) as f64 / s;
        let bytes_per_step = weights_once + b as u64 * (embedding_row + 2 * state_bytes_per_seq);
        let floor = b as f64 * REFERENCE_BANDWIDTH / bytes_per_step as f64;
        batches.push(Batch {
            batch: b,
            steps: done,
            s,
            tok_s,
            step_ms_p50: ms(percentile(&step_times, 0.5)),
            step_ms_p99: ms(percentile(&step_times, 0.99)),
            bytes_per_step,
            floor_tok_s: floor,
            floor_fraction: tok_s / floor,
        });
    }

    let profile_ops = |ops: Vec<(String, usize, std::time::Duration)>| -> Vec<ProfileOp> {
        ops.into_iter()
            .map(|(kind, dispatches, d)| ProfileOp {
                kind,
                dispatches,
                us: d.as_secs_f64() * 1e6,
            })
            .collect()
    };
    let report = |p: rwkv_engine::Profile, tokens: usize| ProfileReport {
        tokens,
        total_us: p.total.as_secs_f64() * 1e6,
        ops: profile_ops(p.ops),
        sequence: profile_ops(p.sequence.into_iter().take(args.profile_sequence).collect()),
    };
    let (profile, profile_error) = if args.profile {
        match engine.profile_step(&[SlotInput {
            slot: 0,
            tokens: &[profile_input],
            logits: Logits::Last,
        }]) {
            Ok(p) => (Some(report(p, 1)), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    // One step of the largest batch (one token per sequence).
    let batch_profile = match args.batch.iter().copied().max() {
        Some(b) if args.profile && profile.is_some() && b > 1 => {
            let tokens = batch_tokens(b, vocab);
            engine
                .profile_step(&one_token_each(&tokens))
                .ok()
                .map(|p| report(p, b))
        }
        _ => None,
    };
    // One prefill chunk, profiled on a fresh state: where prompt time goes.
    let prefill_profile = if args.profile && profile.is_some() {
        let n = args.profile_chunk.clamp(1, args.chunk.max(1));
        let tokens = synthetic_prompt(n, vocab);
        engine.reset(0)?;
        engine
            .profile_step(&[SlotInput {
                slot: 0,
                tokens: &tokens,
                logits: Logits::Last,
            }])
            .ok()
            .map(|p| report(p, n))
    } else {
        None
    };

    Ok(Report {
        version: JSON_VERSION,
        model,
        adapter,
        load_s,
        context_s,
        compile,
        gpu_bytes: engine.gpu_bytes(),
        weight_bytes: engine.weight_bytes(),
        state_bytes_per_seq,
        ops_per_step: engine.ops_per_step(),
        persistent_grids: engine.persistent_grids().to_vec(),
        bandwidth_bytes_s: REFERENCE_BANDWIDTH,
        chunk: args.chunk,
        llama_cpp_rounding: args.llama_cpp_rounding,
        f16_weights: args.f16_weights,
        prefill,
        decode,
        batches,
        profile,
        prefill_profile,
        batch_profile,
        profile_error,
    })
}

/// The human-readable report.
pub fn text(r: &Report) -> String {
    use std::fmt::Write;
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut s = String::new();
    let a = &r.adapter;
    let m = &r.model;
    let _ = writeln!(
        s,
        "adapter:        {} ({}, {}; {} {}; tensor cores {})",
        a.name,
        a.backend,
        a.device_type,
        a.driver,
        a.driver_info,
        if a.tensor_cores.is_some() {
            "on"
        } else {
            "off"
        }
    );
    let _ = writeln!(
        s,
        "model:          {} ({}, {} layers x {}, vocab {}, {:.3} B parameters, {:.1} MiB)",
        m.path,
        m.file_type,
        m.n_layer,
        m.n_embd,
        m.vocab,
        m.params as f64 / 1e9,
        mib(m.file_bytes)
    );
    let _ = writeln!(
        s,
        "load:           {:.2} s (device {:.2} s; {} shader modules and pipelines, {:.2} s of compiling summed over threads)",
        r.load_s, r.context_s, r.compile.count, r.compile.seconds
    );
    if !r.compile.slowest.is_empty() {
        let slowest: Vec<String> = r
            .compile
            .slowest
            .iter()
            .map(|(l, t)| format!("{l} {:.0} ms", t * 1e3))
            .collect();
        let _ = writeln!(s, "  slowest:      {}", slowest.join(", "));
        let kinds: Vec<String> = r
            .compile
            .by_kind
            .iter()
            .map(|(k, n, t)| format!("{k} {n} {:.0} ms", t * 1e3))
            .collect();
        let _ = writeln!(s, "  by kind:      {}", kinds.join(", "));
    }
    let _ = writeln!(
        s,
        "gpu memory:     {:.1} MiB ({:.1} MiB weights)",
        mib(r.gpu_bytes),
        mib(r.weight_bytes)
    );
    let _ = writeln!(s, "ops per step:   {}", r.ops_per_step);
    if !r.persistent_grids.is_empty() {
        let _ = writeln!(
            s,
            "persistent:     grids of {:?} workgroups",
            r.persistent_grids
        );
    }
    for p in &r.prefill {
        let cut = if p.prompt_tokens < p.requested_tokens {
            format!(" (of {}: out of time)", p.requested_tokens)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "prefill:        {} tokens{cut} in {:.1} ms ({} GPU steps): {:.1} tok/s",
            p.prompt_tokens,
            p.s * 1e3,
            p.gpu_steps,
            p.tok_s
        );
    }
    let d = &r.decode;
    let _ = writeln!(
        s,
        "decode (b=1):   {} tokens: {:.1} tok/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        d.tokens, d.tok_s, d.ms_p50, d.ms_p90, d.ms_p99
    );
    let _ = writeln!(
        s,
        "  one step at a time (each submitted once the token before is read): {:.1} tok/s; no token read until the last: {:.1} tok/s; chained with a checkpoint per step (as chat): {:.1} tok/s",
        d.unchained_tok_s, d.gpu_bound_tok_s, d.checkpointed_tok_s
    );
    let st = &d.stage_ms;
    let _ = writeln!(
        s,
        "  stages (last token): input {:.3} ms, load {:.3} ms, dispatch {:.3} ms, submit {:.3} ms, back {:.3} ms (of which recording the next step ahead {:.3} ms)",
        st.input, st.load, st.dispatch, st.submit, st.back, st.prerecord
    );
    let _ = writeln!(
        s,
        "  floor:        {:.1} MB per token -> {:.0} tok/s at {:.2} TB/s ({:.1}% reached)",
        d.bytes_per_token as f64 / 1e6,
        d.floor_tok_s,
        r.bandwidth_bytes_s / 1e12,
        100.0 * d.floor_fraction
    );
    for b in &r.batches {
        let _ = writeln!(
            s,
            "decode (b={}):{:w$}{:.1} tok/s aggregate over {} steps (step p50 {:.2} ms, p99 {:.2} ms); floor {:.0} tok/s ({:.1}% reached)",
            b.batch,
            "",
            b.tok_s,
            b.steps,
            b.step_ms_p50,
            b.step_ms_p99,
            b.floor_tok_s,
            100.0 * b.floor_fraction,
            w = 3usize.saturating_sub(b.batch.to_string().len()) + 1,
        );
    }
    // (The decode token's profile, then one step's of a prompt chunk and of a batch.)
    let profiles = [
        (&r.profile, None),
        (&r.prefill_profile, Some("token prefill chunk")),
        (&r.batch_profile, Some("sequence decode step")),
    ];
    for (p, what) in profiles
        .iter()
        .filter_map(|(p, w)| p.as_ref().map(|p| (p, w)))
    {
        let what = match what {
            None => "per decode token".to_string(),
            Some(w) => format!("for one {}-{w}", p.tokens),
        };
        let _ = writeln!(
            s,
            "profile (us of GPU time {what}, {:.1} us in ops):",
            p.total_us
        );
        let line = |s: &mut String, op: &ProfileOp| {
            let _ = writeln!(
                s,
                "  {:<28} {:>4} ops {:>10.1} us {:>5.1}%",
                op.kind,
                op.dispatches,
                op.us,
                100.0 * op.us / p.total_us.max(1e-9)
            );
        };
        p.ops.iter().for_each(|op| line(&mut s, op));
        if !p.sequence.is_empty() {
            let _ = writeln!(s, "  in order, its first {} ops:", p.sequence.len());
            p.sequence.iter().for_each(|op| line(&mut s, op));
        }
    }
    if let Some(e) = &r.profile_error {
        let _ = writeln!(s, "profile:        unavailable: {e}");
    }
    s
}

#[allow(dead_code)] // the smoke test includes this file as a module and calls `run`
fn main() -> Result<()> {
    let args = Args::parse();
    let report = run(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

/// One decode input per slot: slot i feeds `tokens[i]` and wants its last logits.
fn one_token_each(tokens: &[u32]) -> Vec<SlotInput<'_>> {
    tokens
        .iter()
        .enumerate()
        .map(|(slot, tok)| SlotInput {
            slot,
            tokens: std::slice::from_ref(tok),
            logits: Logits::Last,
        })
        .collect()
}

/// The first token of each of `b` sequences decoded together (distinct while the
/// vocabulary allows, never id 0).
fn batch_tokens(b: usize, vocab: u32) -> Vec<u32> {
    (0..b as u32).map(|i| 1 + i % (vocab - 1)).collect()
}
