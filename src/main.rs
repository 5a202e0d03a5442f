//! `web-rwkv-gguf`: the command-line tool. Every error is one line on stderr and exit code 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gguf::GgufFile;
use rwkv_model::{spec, CpuModel, Precision, Rwkv7Config};
use rwkv_tokenizer::Tokenizer;

#[derive(Parser)]
#[command(
    name = "web-rwkv-gguf",
    version,
    about = "RWKV-7 inference from llama.cpp GGUF files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, dimensions, parameter count and tensor types.
    Info {
        /// The GGUF model file.
        model: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
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
    /// Write the logits after every position as little-endian f32 [n_tokens][n_vocab].
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
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// CPU backend: `exact` f32 products, or `llama-cpp` to round activations as
        /// llama.cpp's CPU backend does (reproduces its logits within ~1e-4).
        #[arg(long, value_enum, default_value_t = CpuPrecision::Exact)]
        cpu_precision: CpuPrecision,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CpuPrecision {
    Exact,
    LlamaCpp,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The f32 CPU reference (exact, slow).
    Cpu,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { model, json } => info(&model, json),
        Command::Tokenize { model, json, text } => tokenize(&model, json, &text),
        Command::Detokenize { model, ids } => detokenize(&model, &ids),
        Command::Logits {
            model,
            tokens,
            text,
            out,
            backend: Backend::Cpu,
            cpu_precision,
        } => {
            let precision = match cpu_precision {
                CpuPrecision::Exact => Precision::Exact,
                CpuPrecision::LlamaCpp => Precision::LlamaCpp,
            };
            logits(&model, tokens.as_deref(), text.as_deref(), &out, precision)
        }
    }
}

fn open(path: &Path) -> Result<GgufFile> {
    GgufFile::open(path).with_context(|| format!("{}", path.display()))
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
    precision: Precision,
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
    let model = CpuModel::load_with(&file, precision).context("loading the model")?;
    let mut state = model.new_state();
    let mut bytes = Vec::with_capacity(ids.len() * model.config.vocab_size * 4);
    for &id in &ids {
        let logits = model.forward_token(id, &mut state)?;
        bytes.extend(logits.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote logits of {} positions x {} vocab to {}",
        ids.len(),
        model.config.vocab_size,
        out.display()
    );
    Ok(())
}
