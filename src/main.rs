//! `web-rwkv-gguf`: the command-line tool. Every error is one line on stderr and exit code 1.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gguf::GgufFile;
use indicatif::{ProgressBar, ProgressStyle};
use rwkv_engine::{Engine, EngineError, EngineOptions, Logits, SlotInput};
use rwkv_gpu::{ContextOptions, GpuContext, GpuError};
use rwkv_model::{spec, CpuModel, Precision, Rwkv7Config};
use rwkv_sampler::SamplingParams;
use rwkv_tokenizer::Tokenizer;

mod chat;
mod synth_cmd;
mod textgen;

#[derive(Parser)]
#[command(
    name = "web-rwkv-gguf",
    version,
    about = "RWKV-7 inference from llama.cpp GGUF files"
)]
struct Cli {
    /// GPU adapter to use: an index from `info --adapters` or part of its name (default: the
    /// WEB_RWKV_ADAPTER variable, else the best GPU found).
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt on the GPU, streaming it to stdout.
    Generate {
        /// The GGUF model file.
        #[arg(long)]
        model: PathBuf,
        /// The prompt text.
        #[arg(
            long,
            conflicts_with = "prompt_file",
            required_unless_present = "prompt_file"
        )]
        prompt: Option<String>,
        /// Read the prompt from a file (`-`: standard input).
        #[arg(long)]
        prompt_file: Option<PathBuf>,
        /// Stop after this many generated tokens.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Stop when the output contains this text, which is not printed (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// Also write the prompt's and the generated token ids to this file as JSON
        /// (`{"prompt": [...], "generated": [...]}`).
        #[arg(long)]
        ids_out: Option<PathBuf>,
    },
    /// Chat in RWKV's format (`User: …` / `Assistant: …`), keeping the state between turns.
    /// Commands: /reset, /save FILE, /load FILE, /quit. Ctrl-C stops the current reply.
    Chat {
        /// The GGUF model file.
        #[arg(long)]
        model: PathBuf,
        /// Text fed before the conversation (e.g. a description of the assistant).
        #[arg(long)]
        system: Option<String>,
        /// The longest reply, in tokens.
        #[arg(long, default_value_t = 1024)]
        max_tokens: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Show a model's architecture, dimensions, parameter count and tensor types.
    Info {
        /// The GGUF model file.
        #[arg(required_unless_present = "adapters")]
        model: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// List the GPU adapters instead.
        #[arg(long)]
        adapters: bool,
    },
    /// Encode text into token ids (printed as a JSON array).
    Tokenize {
        #[arg(long)]
        model: PathBuf,
        /// Print each token with its text as JSON objects.
        #[arg(long)]
        json: bool,
        /// The text to encode.
        text: String,
    },
    /// Decode token ids (`1,2,3` or `[1, 2, 3]`) back into text.
    Detokenize {
        #[arg(long)]
        model: PathBuf,
        ids: String,
    },
    /// Write the logits after every position as little-endian f32, one row of n_vocab values per position.
    Logits {
        #[arg(long)]
        model: PathBuf,
        /// Token ids, comma-separated.
        #[arg(long, conflicts_with = "text", required_unless_present = "text")]
        tokens: Option<String>,
        /// Text to tokenize and run.
        #[arg(long)]
        text: Option<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Backend::Gpu)]
        backend: Backend,
        /// CPU backend: `exact` f32 products, or `llama-cpp` to round activations as
        /// llama.cpp's CPU backend does (reproduces its logits within ~1e-4).
        #[arg(long, value_enum, default_value_t = CpuPrecision::Exact)]
        cpu_precision: CpuPrecision,
    },
    /// Write a synthetic RWKV-7 model (random weights, llama.cpp's layout and quantization
    /// mix) at a real model size, for benchmarks.
    Synth(synth_cmd::SynthArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (completions and chat, streaming),
    /// batching every request in flight on the GPU.
    Serve(rwkv_server::ServeArgs),
}

/// Sampling settings of `generate` and `chat`, computed on the GPU.
#[derive(clap::Args, Clone, Debug)]
struct SamplingArgs {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Keep the most likely tokens whose probabilities add up to P (1: off).
    #[arg(long, default_value_t = 0.85, allow_negative_numbers = true)]
    top_p: f32,
    /// Drop tokens less likely than M times the most likely one (0: off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_p: f32,
    /// Subtracted from the logit of every token already generated.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Subtracted once per (decayed) occurrence of a generated token.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// The occurrence counts of the penalties are multiplied by this after every token.
    #[arg(long, default_value_t = 0.996, allow_negative_numbers = true)]
    penalty_decay: f32,
    /// Random seed (default: from the clock); the same seed gives the same text.
    #[arg(long)]
    seed: Option<u64>,
}

impl SamplingArgs {
    fn params(&self) -> Result<SamplingParams> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_decay: self.penalty_decay,
            seed,
        };
        if let Err(e) = p.validate() {
            bail!(
                "--{} {}: expected {}",
                e.name.replace('_', "-"),
                e.value,
                e.expected
            );
        }
        Ok(p)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CpuPrecision {
    Exact,
    LlamaCpp,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The GPU engine (wgpu).
    Gpu,
    /// The f32 CPU reference (exact, slow).
    Cpu,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output went away (e.g. `| head`): not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let adapter = cli.adapter;
    match cli.command {
        Command::Info {
            adapters: true,
            json,
            ..
        } => list_adapters(json),
        Command::Info { model, json, .. } => info(&model.context("give a model file")?, json),
        Command::Tokenize { model, json, text } => tokenize(&model, json, &text),
        Command::Detokenize { model, ids } => detokenize(&model, &ids),
        Command::Logits {
            model,
            tokens,
            text,
            out,
            backend,
            cpu_precision,
        } => {
            let backend = match (backend, cpu_precision) {
                (Backend::Gpu, _) => LogitsBackend::Gpu(adapter),
                (Backend::Cpu, CpuPrecision::Exact) => LogitsBackend::Cpu(Precision::Exact),
                (Backend::Cpu, CpuPrecision::LlamaCpp) => LogitsBackend::Cpu(Precision::LlamaCpp),
            };
            logits(&model, tokens.as_deref(), text.as_deref(), &out, backend)
        }
        Command::Synth(args) => synth_cmd::run(args),
        Command::Serve(args) => rwkv_server::run(args, adapter),
        Command::Generate {
            model,
            prompt,
            prompt_file,
            max_tokens,
            sampling,
            stop,
            ids_out,
        } => {
            let params = sampling.params()?;
            let prompt = match (prompt, prompt_file) {
                (Some(p), _) => p,
                (None, Some(path)) if path.as_os_str() == "-" => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading the prompt from standard input")?;
                    s
                }
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the prompt from {}", path.display()))?,
                (None, None) => bail!("give --prompt or --prompt-file"),
            };
            let g = GenerateArgs {
                max_tokens,
                stop,
                ids_out,
            };
            generate_cmd(&model, adapter, &prompt, &params, g)
        }
        Command::Chat {
            model,
            system,
            max_tokens,
            sampling,
        } => {
            let params = sampling.params()?;
            let (mut engine, tokenizer) = load_for_generation(&model, adapter)?;
            engine.set_sampling(0, &params)?;
            let ctrl_c = chat::CtrlC::install()?;
            let options = chat::ChatOptions { system, max_tokens };
            let stdin = std::io::stdin();
            chat::run(
                &mut engine,
                &tokenizer,
                &options,
                &mut stdin.lock(),
                &mut std::io::stdout(),
                &ctrl_c,
            )
        }
    }
}

/// Loads a model for generation on the GPU, with a progress bar on stderr (when it is a
/// terminal) and the load time after.
fn load_for_generation(path: &Path, adapter: Option<String>) -> Result<(Engine, Tokenizer)> {
    let started = Instant::now();
    let file = open(path)?;
    // Architecture and shapes first, so that a GGUF of another model says so.
    Rwkv7Config::from_gguf(&file).with_context(|| format!("{}", path.display()))?;
    let tokenizer = tokenizer(&file)?;
    let ctx = gpu_context(adapter)?;
    let bar = ProgressBar::new(file.file_size()).with_style(
        ProgressStyle::with_template("loading {bar:30} {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Prompts are prefilled 1024 tokens per step: larger steps keep the matrix kernels'
    // grids full (for 2.9B it costs ~360 MiB of activations more than 256-token steps).
    let options = EngineOptions {
        max_slots: 1,
        max_rows: 1024,
        max_out: 1,
        ..EngineOptions::default()
    };
    let engine = Engine::load(ctx, &file, options, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let engine = engine.map_err(|e| match e {
        EngineError::Gpu(e @ (GpuError::OutOfMemory { .. } | GpuError::TooLarge { .. })) => {
            anyhow::anyhow!(
                "the model does not fit in GPU memory: {e} (try a smaller model or a \
                 smaller quantization, or another GPU with --adapter)"
            )
        }
        e => anyhow::Error::new(e).context("loading the model on the GPU"),
    })?;
    eprintln!(
        "loaded {} in {:.2} s on {} ({:.0} MiB on the GPU)",
        path.display(),
        started.elapsed().as_secs_f64(),
        engine.context().info.name,
        engine.gpu_bytes() as f64 / 1048576.0
    );
    Ok((engine, tokenizer))
}

struct GenerateArgs {
    max_tokens: usize,
    stop: Vec<String>,
    ids_out: Option<PathBuf>,
}

fn generate_cmd(
    path: &Path,
    adapter: Option<String>,
    prompt: &str,
    params: &SamplingParams,
    args: GenerateArgs,
) -> Result<()> {
    if prompt.is_empty() {
        bail!("the prompt is empty: give some text to continue");
    }
    let (mut engine, tokenizer) = load_for_generation(path, adapter)?;
    let tokens = tokenizer.encode(prompt.as_bytes());
    engine.set_sampling(0, params)?;
    let started = Instant::now();
    let first = textgen::feed(&mut engine, 0, &tokens)?;
    let prefill = started.elapsed();
    let never = std::sync::atomic::AtomicBool::new(false);
    let g = textgen::Generation {
        max_tokens: args.max_tokens,
        stop: args.stop,
        feed_last: false,
        interrupt: &never,
    };
    let mut stdout = std::io::stdout().lock();
    let generated = textgen::generate(&mut engine, &tokenizer, 0, first, &g, &mut |t| {
        stdout.write_all(t.as_bytes())?;
        stdout.flush()?;
        Ok(())
    })?;
    if stdout.is_terminal() {
        writeln!(stdout)?;
    }
    drop(stdout);
    if let Some(out) = &args.ids_out {
        let json = serde_json::json!({"prompt": tokens, "generated": generated.tokens});
        std::fs::write(out, json.to_string())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    let stats = textgen::GenerationStats {
        prompt_tokens: tokens.len(),
        prefill,
        generated: generated.tokens.len(),
        decode: generated.decode,
        stop: generated.stop,
    };
    eprintln!("{}", stats.summary());
    Ok(())
}

enum LogitsBackend {
    Gpu(Option<String>),
    Cpu(Precision),
}

fn gpu_context(adapter: Option<String>) -> Result<Arc<GpuContext>> {
    let ctx = GpuContext::new(&ContextOptions { adapter })?;
    Ok(Arc::new(ctx))
}

fn list_adapters(json: bool) -> Result<()> {
    let adapters = GpuContext::list_adapters();
    if json {
        let list: Vec<_> = adapters
            .iter()
            .map(|a| {
                serde_json::json!({"index": a.index, "name": a.name, "backend": a.backend,
                    "device_type": a.device_type, "driver": a.driver, "features": a.features,
                    "cooperative_matrix": a.cooperative_matrix})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if adapters.is_empty() {
        println!("no GPU adapters found (install a Vulkan driver, e.g. mesa-vulkan-drivers)");
    } else {
        for a in adapters {
            println!(
                "{}: {} ({}, {}, {})",
                a.index, a.name, a.backend, a.device_type, a.driver
            );
            println!("   features: {}", a.features.join(", "));
            if !a.cooperative_matrix.is_empty() {
                println!(
                    "   cooperative matrices: {}",
                    a.cooperative_matrix.join(", ")
                );
            }
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<GgufFile> {
    // The I/O error names the path and its cause already.
    GgufFile::open(path).map_err(|e| match e {
        e @ gguf::GgufError::Io { .. } => anyhow::anyhow!("{e}"),
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

fn tokenizer(file: &GgufFile) -> Result<Tokenizer> {
    Tokenizer::from_gguf(file).context("loading the tokenizer")
}

fn info(path: &Path, json: bool) -> Result<()> {
    let file = open(path)?;
    let arch = file.get_str("general.architecture").unwrap_or("(none)");
    let config = Rwkv7Config::from_gguf(&file);
    let types = spec::tensor_type_counts(&file);
    let params = spec::parameter_count(&file);
    let vocab = file
        .get_str_array("tokenizer.ggml.tokens")
        .map(|t| t.len())
        .ok();
    if json {
        let mut obj = serde_json::json!({
            "file": path.display().to_string(),
            "file_size": file.file_size(),
            "gguf_version": file.version(),
            "architecture": arch,
            "name": file.get_str("general.name").ok(),
            "parameters": params,
            "tensor_count": file.tensors().len(),
            "tensor_types": types.iter().map(|(t, n)| (t.name().to_string(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            "vocab_size": vocab,
        });
        match &config {
            Ok(c) => {
                obj["config"] = serde_json::json!({
                    "n_layer": c.n_layer, "n_embd": c.n_embd, "head_size": c.head_size,
                    "n_head": c.n_head, "ffn_size": c.ffn_size, "decay_lora": c.decay_lora,
                    "iclr_lora": c.iclr_lora, "value_lora": c.value_lora, "gate_lora": c.gate_lora,
                    "layer_norm_eps": c.layer_norm_eps, "vocab_size": c.vocab_size,
                })
            }
            Err(e) => obj["unsupported"] = serde_json::Value::String(e.to_string()),
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(());
    }
    println!("file:          {}", path.display());
    println!(
        "file size:     {} bytes ({:.2} MiB)",
        file.file_size(),
        file.file_size() as f64 / 1048576.0
    );
    println!("gguf version:  {}", file.version());
    println!("architecture:  {arch}");
    if let Ok(name) = file.get_str("general.name") {
        println!("name:          {name}");
    }
    match &config {
        Ok(c) => {
            println!("layers:        {}", c.n_layer);
            println!("embedding:     {}", c.n_embd);
            println!("heads:         {} x {}", c.n_head, c.head_size);
            println!("ffn:           {}", c.ffn_size);
            println!(
                "lora ranks:    decay {}, iclr {}, value {}, gate {}",
                c.decay_lora, c.iclr_lora, c.value_lora, c.gate_lora
            );
            println!("norm epsilon:  {:e}", c.layer_norm_eps);
        }
        Err(e) => println!("not runnable:  {e}"),
    }
    println!("parameters:    {params} ({:.3} B)", params as f64 / 1e9);
    if let Some(v) = vocab {
        println!("vocabulary:    {v}");
    }
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "tensors:       {} ({})",
        file.tensors().len(),
        types.join(", ")
    );
    Ok(())
}

fn tokenize(path: &Path, json: bool, text: &str) -> Result<()> {
    let file = open(path)?;
    let tok = tokenizer(&file)?;
    let ids = tok.encode(text.as_bytes());
    if json {
        let items: Vec<_> = ids
            .iter()
            .map(|&id| {
                let bytes = tok.token_bytes(id).unwrap_or_default();
                serde_json::json!({"id": id, "text": String::from_utf8_lossy(bytes)})
            })
            .collect();
        println!("{}", serde_json::to_string(&items)?);
    } else {
        println!("{}", serde_json::to_string(&ids)?);
    }
    Ok(())
}

/// Parses `1,2,3`, `1 2 3` or `[1, 2, 3]`.
fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids: Vec<u32> = s
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .with_context(|| format!("{p:?} is not a token id"))
        })
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("no token ids given");
    }
    Ok(ids)
}

fn detokenize(path: &Path, ids: &str) -> Result<()> {
    let file = open(path)?;
    let tok = tokenizer(&file)?;
    let bytes = tok.decode(&parse_ids(ids)?)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn logits(
    path: &Path,
    tokens: Option<&str>,
    text: Option<&str>,
    out: &Path,
    backend: LogitsBackend,
) -> Result<()> {
    let file = open(path)?;
    let ids = match (tokens, text) {
        (Some(t), _) => parse_ids(t)?,
        (None, Some(text)) => {
            if text.is_empty() {
                bail!("the text is empty: nothing to run");
            }
            tokenizer(&file)?.encode(text.as_bytes())
        }
        (None, None) => bail!("give --tokens or --text"),
    };
    let (rows, vocab) = match backend {
        LogitsBackend::Cpu(precision) => {
            let model = CpuModel::load_with(&file, precision).context("loading the model")?;
            let mut state = model.new_state();
            let rows = model.forward_sequence(&ids, &mut state)?;
            (rows, model.config.vocab_size)
        }
        LogitsBackend::Gpu(adapter) => {
            let options = EngineOptions {
                max_slots: 1,
                max_rows: 128,
                max_out: 64,
                ..EngineOptions::default()
            };
            let mut engine = Engine::load(gpu_context(adapter)?, &file, options, &mut |_, _| {})
                .context("loading the model on the GPU")?;
            let input = SlotInput {
                slot: 0,
                tokens: &ids,
                logits: Logits::All,
            };
            let rows = engine.step(&[input])?.remove(0);
            (rows, engine.config.vocab_size)
        }
    };
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote logits of {} positions x {} vocab to {}",
        ids.len(),
        vocab,
        out.display()
    );
    Ok(())
}
