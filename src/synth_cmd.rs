//! `web-rwkv-gguf synth`: writes a synthetic RWKV-7 model (random weights at sane scales) in
//! llama.cpp's layout and quantization mix, at the real model sizes, for benchmarks.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::builder::PossibleValuesParser;
use clap::Args;
use gguf::GgufFile;
use rwkv_model::synth::{
    tokenizer_metadata, write_gguf, FileType, Preset, SynthOptions, PRESETS, WORLD_VOCAB,
};

#[derive(Args)]
pub struct SynthArgs {
    /// A released RWKV-7 size: 0.1b (12 x 768), 0.4b (24 x 1024), 1.5b (24 x 2048),
    /// 2.9b (32 x 2560) or 7.2b (32 x 4096); or give --layers and --embd.
    #[arg(long, value_parser = PossibleValuesParser::new(PRESETS.map(|p| p.name)),
          required_unless_present_all = ["layers", "embd"], conflicts_with_all = ["layers", "embd"])]
    preset: Option<String>,
    /// Number of layers (with --embd).
    #[arg(long, requires = "embd")]
    layers: Option<usize>,
    /// Embedding width, a multiple of the head size 64 (with --layers).
    #[arg(long, requires = "layers")]
    embd: Option<usize>,
    /// Vocabulary size (default: the tokenizer's, else 65536).
    #[arg(long)]
    vocab: Option<usize>,
    /// File type: the tensor type mix llama-quantize gives (f16 is the converter's).
    #[arg(long = "type", value_name = "TYPE",
          value_parser = PossibleValuesParser::new(FileType::ALL.map(|t| t.name())))]
    ty: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Copy the tokenizer (`tokenizer.*` keys) from this GGUF file; without it the model has
    /// no tokenizer (it loads and runs on token ids, but cannot take text).
    #[arg(long)]
    tokenizer_from: Option<PathBuf>,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Threads generating the weights (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let file_type = FileType::from_name(&args.ty).context("unknown --type")?;
    let (mut o, label) = match (&args.preset, args.layers, args.embd) {
        (Some(name), _, _) => {
            let p = Preset::find(name).with_context(|| format!("unknown preset {name}"))?;
            (SynthOptions::preset(p), p.name.to_string())
        }
        (None, Some(layers), Some(embd)) => (
            SynthOptions::new(layers, embd, WORLD_VOCAB),
            format!("{layers} x {embd}"),
        ),
        _ => bail!("give --preset, or --layers and --embd"),
    };
    o.file_type = file_type;
    o.seed = args.seed;
    if let Some(path) = &args.tokenizer_from {
        let file = GgufFile::open(path).with_context(|| format!("{}", path.display()))?;
        let tok = tokenizer_metadata(&file);
        let n = file
            .get_str_array("tokenizer.ggml.tokens")
            .with_context(|| format!("{}: no tokenizer to copy", path.display()))?
            .len();
        o.vocab_size = n;
        o.tokenizer = Some(tok);
    }
    if let Some(v) = args.vocab {
        o.vocab_size = v;
    }
    o.validate().map_err(anyhow::Error::msg)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);

    let params = o.parameter_count().map_err(anyhow::Error::msg)?;
    eprintln!(
        "synth {label} {file_type}: {} layers x {}, vocab {}, LoRA {}/{}/{}/{}, {:.3} B parameters, seed {}, {} -> {}",
        o.n_layer,
        o.n_embd,
        o.vocab_size,
        o.decay_lora,
        o.iclr_lora,
        o.value_lora,
        o.gate_lora,
        params as f64 / 1e9,
        o.seed,
        if o.tokenizer.is_some() { "tokenizer copied" } else { "no tokenizer" },
        args.out.display(),
    );

    // Written beside the target and renamed at the end: an interrupted run leaves no
    // truncated model under the real name.
    let partial = partial_path(&args.out);
    let out = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let start = Instant::now();
    let mut progress = Progress::new(start);
    let written = write_gguf(
        &o,
        BufWriter::with_capacity(8 << 20, out),
        threads,
        &mut |done, total| progress.update(done, total),
    )
    .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
    .and_then(|f| f.sync_all());
    progress.clear();
    if let Err(e) = written {
        std::fs::remove_file(&partial).ok();
        return Err(e).with_context(|| format!("writing {}", partial.display()));
    }
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("renaming {} to {}", partial.display(), args.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&args.out)?.len();
    eprintln!(
        "wrote {}: {:.1} MiB in {secs:.1} s ({:.0} MB/s, {threads} threads)",
        args.out.display(),
        bytes as f64 / 1048576.0,
        bytes as f64 / 1e6 / secs.max(1e-9),
    );
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// Progress on stderr: a line redrawn in place on a terminal, every 10% otherwise.
struct Progress {
    start: Instant,
    last_draw: Option<Instant>,
    last_tenth: u64,
    tty: bool,
}

impl Progress {
    fn new(start: Instant) -> Progress {
        Progress {
            start,
            last_draw: None,
            last_tenth: 0,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        let frac = done as f64 / total.max(1) as f64;
        let secs = (now - self.start).as_secs_f64();
        let rate = done as f64 / 1e6 / secs.max(1e-9);
        let eta = if done > 0 {
            secs * (total - done) as f64 / done as f64
        } else {
            0.0
        };
        let line = format!(
            "{:>5.1}% {:.0}/{:.0} MiB  {rate:.0} MB/s  ETA {eta:.0} s",
            100.0 * frac,
            done as f64 / 1048576.0,
            total as f64 / 1048576.0,
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            if self
                .last_draw
                .is_none_or(|t| now - t >= Duration::from_millis(100))
            {
                self.last_draw = Some(now);
                let _ = write!(err, "\r{line}\x1b[K");
                let _ = err.flush();
            }
        } else {
            let tenth = (frac * 10.0) as u64;
            if tenth > self.last_tenth && done < total {
                self.last_tenth = tenth;
                let _ = writeln!(err, "{line}");
            }
        }
    }

    fn clear(&mut self) {
        if self.tty && self.last_draw.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
