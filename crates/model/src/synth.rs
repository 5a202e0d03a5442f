//! Synthetic RWKV-7 models in llama.cpp's `rwkv7` GGUF layout: random weights at sane scales,
//! for tests (any shape) and benchmarks (the real model sizes, [`PRESETS`]).
//!
//! A synthetic file has the names, shapes, metadata keys, tensor order and type mix of the
//! file llama.cpp would give for a real model of that shape: the converter's
//! (`convert_hf_to_gguf.py`, `Rwkv7Model`) for F32 and F16, `llama-quantize`'s for the
//! quantized [`FileType`]s. Quantized matrices are written directly as random valid blocks
//! (random f16 scales of the right magnitude, random quants), not by quantizing floats, so a
//! multi-GiB model is written at disk speed ([`write_gguf`] streams it, on all cores).
//!
//! Scales follow the test fixtures, which llama.cpp itself ran: each matrix row has standard
//! deviation `gain / sqrt(fan_in)` with gain 1 (0.5 for the projections that write into the
//! residual stream and the LoRA up-projections `w2/a2/v2`, 2 for the head) and the embedding
//! 1; norms near 1; decay, in-context-rate and value-mix biases near 0. Activations stay sane
//! through 32 layers (the tests run the CPU reference on every type).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use gguf::writer::{GgufStreamWriter, TensorHeader};
use gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue};
use half::f16;

/// What llama.cpp calls the file type (`general.file_type`, its `llama_ftype`): the type of
/// the large matrices, and through llama-quantize's rules the type of every tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    /// The converter's `--outtype bf16`.
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K_M,
    Q4_K_M,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    pub const ALL: [FileType; 13] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q2_K,
        FileType::Q3_K_M,
        FileType::Q4_K_M,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ];

    /// The name llama-quantize and file names use, lower case: `f16`, `q4_k_m`...
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::BF16 => "bf16",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_0 => "q4_0",
            FileType::Q4_1 => "q4_1",
            FileType::Q5_0 => "q5_0",
            FileType::Q5_1 => "q5_1",
            FileType::Q2_K => "q2_k",
            FileType::Q3_K_M => "q3_k_m",
            FileType::Q4_K_M => "q4_k_m",
            FileType::Q5_K_M => "q5_k_m",
            FileType::Q6_K => "q6_k",
        }
    }

    /// Parses [`name`](Self::name), in any case.
    pub fn from_name(name: &str) -> Option<FileType> {
        let lower = name.to_ascii_lowercase();
        FileType::ALL.into_iter().find(|t| t.name() == lower)
    }

    /// llama.cpp's `llama_ftype` number, written as `general.file_type`.
    pub fn id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::BF16 => 32,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_M => 12,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
        }
    }

    /// The type of the large matrices (llama-quantize's `default_type`).
    pub fn main_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q2_K => GgmlType::Q2_K,
            FileType::Q3_K_M => GgmlType::Q3_K,
            FileType::Q4_K_M => GgmlType::Q4_K,
            FileType::Q5_K_M => GgmlType::Q5_K,
            FileType::Q6_K => GgmlType::Q6_K,
        }
    }

    /// Whether files of this type are made by llama-quantize (else by the converter).
    pub fn is_quantized(self) -> bool {
        !matches!(self, FileType::F32 | FileType::F16 | FileType::BF16)
    }

    /// The type of a quantizable weight (2-D, not a LoRA matrix) named `name` whose rows hold
    /// `ncols` values, as `llama_tensor_get_type` in llama.cpp's `src/llama-quant.cpp` picks
    /// it. For rwkv7 only the head is special: Q6_K unless the main type is Q8_0 (Q8_0 if its
    /// rows don't fit the main type's blocks). The rules that give some layers more bits
    /// under Q4_K_M/Q5_K_M match `attn_v`, `ffn_down`, `attn_qkv`... and no rwkv7 name
    /// (`time_mix_value`, `channel_mix_value`), so every other matrix gets the main type.
    /// Rows that K-quant blocks (256) cannot hold fall back as llama-quantize does: Q4_K to
    /// Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, then F16; Q4_0 and Q8_0 need rows of 32.
    pub fn tensor_type(self, name: &str, ncols: u64) -> Result<GgmlType, String> {
        let main = self.main_type();
        if !self.is_quantized() {
            return Ok(main);
        }
        let mut ty = main;
        if name == "output.weight" {
            ty = if !ncols.is_multiple_of(main.block_elements() as u64) {
                GgmlType::Q8_0
            } else if main != GgmlType::Q8_0 {
                GgmlType::Q6_K
            } else {
                main
            };
        }
        if !ncols.is_multiple_of(ty.block_elements() as u64) {
            ty = match ty {
                GgmlType::Q4_K => GgmlType::Q5_0,
                GgmlType::Q5_K => GgmlType::Q5_1,
                GgmlType::Q6_K => GgmlType::Q8_0,
                _ => {
                    return Err(format!(
                        "{name}: rows of {ncols} values do not fit {ty} blocks of {}",
                        ty.block_elements()
                    ))
                }
            };
            if !ncols.is_multiple_of(ty.block_elements() as u64) {
                ty = GgmlType::F16;
            }
        }
        Ok(ty)
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The four LoRA ranks of an RWKV-7 time mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraRanks {
    /// `time_mix_w1/w2` (decay).
    pub decay: usize,
    /// `time_mix_a1/a2` (in-context learning rate).
    pub iclr: usize,
    /// `time_mix_v1/v2` (value residual mix).
    pub value: usize,
    /// `time_mix_g1/g2` (output gate).
    pub gate: usize,
}

impl LoraRanks {
    /// The ranks llama.cpp's converter (`convert_hf_to_gguf.py`, `Rwkv7Model.calc_lora_rank`)
    /// assumes when a config gives none, which is RWKV-LM's rule for its RWKV-7 models
    /// (`RWKV-v7/train_temp/src/model.py`: `D_DECAY_LORA`, `D_AAA_LORA`, `D_MV_LORA`,
    /// `D_GATE_LORA`): `max(1, round(C^e * m / 32)) * 32` with (e, m) = (0.5, 1.8) for decay
    /// and iclr, (0.5, 1.3) for value and (0.8, 0.6) for the gate; always multiples of 32.
    pub fn for_embd(n_embd: usize) -> LoraRanks {
        LoraRanks {
            decay: lora_rank(n_embd, 0.5, 1.8),
            iclr: lora_rank(n_embd, 0.5, 1.8),
            value: lora_rank(n_embd, 0.5, 1.3),
            gate: lora_rank(n_embd, 0.8, 0.6),
        }
    }
}

/// `max(1, round(n_embd^exponent * multiplier / 32)) * 32`, with Python's `round` (halves to
/// even), as the converter computes it.
fn lora_rank(n_embd: usize, exponent: f64, multiplier: f64) -> usize {
    let x = (n_embd as f64).powf(exponent) * multiplier / 32.0;
    (x.round_ties_even() as usize).max(1) * 32
}

/// A model size of the RWKV-7 family (head size 64, FFN 4 x n_embd, World vocabulary 65536).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub lora: LoraRanks,
}

const fn ranks(decay: usize, iclr: usize, value: usize, gate: usize) -> LoraRanks {
    LoraRanks {
        decay,
        iclr,
        value,
        gate,
    }
}

/// The released RWKV-7 sizes. Their LoRA ranks are the published ones (`fla-hub/rwkv7-*`
/// configs: 0.1B 64/64/32/128, 0.4B 64/64/32/128, 1.5B 96/96/64/256), which
/// [`LoraRanks::for_embd`] reproduces except for the 0.4B gate (its rule gives 160; the model
/// was trained with 128); 2.9B and 7.2B follow the rule.
pub const PRESETS: [Preset; 5] = [
    Preset {
        name: "0.1b",
        n_layer: 12,
        n_embd: 768,
        lora: ranks(64, 64, 32, 128),
    },
    Preset {
        name: "0.4b",
        n_layer: 24,
        n_embd: 1024,
        lora: ranks(64, 64, 32, 128),
    },
    Preset {
        name: "1.5b",
        n_layer: 24,
        n_embd: 2048,
        lora: ranks(96, 96, 64, 256),
    },
    Preset {
        name: "2.9b",
        n_layer: 32,
        n_embd: 2560,
        lora: ranks(96, 96, 64, 320),
    },
    Preset {
        name: "7.2b",
        n_layer: 32,
        n_embd: 4096,
        lora: ranks(128, 128, 96, 480),
    },
];

impl Preset {
    /// The preset called `name` (`"2.9b"`, in any case).
    pub fn find(name: &str) -> Option<&'static Preset> {
        let lower = name.to_ascii_lowercase();
        PRESETS.iter().find(|p| p.name == lower)
    }
}

/// The vocabulary size of the RWKV World tokenizer the released models use.
pub const WORLD_VOCAB: usize = 65536;

/// Shape and content of a synthetic model.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub n_layer: usize,
    pub n_embd: usize,
    pub vocab_size: usize,
    pub ffn_size: usize,
    pub head_size: usize,
    pub decay_lora: usize,
    pub iclr_lora: usize,
    pub value_lora: usize,
    pub gate_lora: usize,
    /// The file type: the type mix of the tensors.
    pub file_type: FileType,
    pub seed: u64,
    /// Tokenizer metadata (`tokenizer.*` keys, e.g. from [`tokenizer_metadata`]) to write;
    /// `None` writes no tokenizer (the model loads; generating text needs one).
    pub tokenizer: Option<Vec<(String, MetadataValue)>>,
}

impl SynthOptions {
    /// A model of the given depth and width: head size 64, FFN 4 x n_embd, the converter's
    /// LoRA ranks ([`LoraRanks::for_embd`]), F16, seed 1, no tokenizer.
    pub fn new(n_layer: usize, n_embd: usize, vocab_size: usize) -> SynthOptions {
        SynthOptions {
            n_layer,
            n_embd,
            vocab_size,
            ffn_size: 4 * n_embd,
            head_size: 64,
            decay_lora: 0,
            iclr_lora: 0,
            value_lora: 0,
            gate_lora: 0,
            file_type: FileType::F16,
            seed: 1,
            tokenizer: None,
        }
        .with_lora(LoraRanks::for_embd(n_embd))
    }

    /// A released size, with the World vocabulary size.
    pub fn preset(p: &Preset) -> SynthOptions {
        SynthOptions::new(p.n_layer, p.n_embd, WORLD_VOCAB).with_lora(p.lora)
    }

    pub fn with_lora(mut self, r: LoraRanks) -> SynthOptions {
        self.decay_lora = r.decay;
        self.iclr_lora = r.iclr;
        self.value_lora = r.value;
        self.gate_lora = r.gate;
        self
    }

    pub fn lora(&self) -> LoraRanks {
        ranks(
            self.decay_lora,
            self.iclr_lora,
            self.value_lora,
            self.gate_lora,
        )
    }

    /// Checks that the shape is one llama.cpp could load and quantize to this file type.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("layer count", self.n_layer),
            ("n_embd", self.n_embd),
            ("vocabulary size", self.vocab_size),
            ("FFN size", self.ffn_size),
            ("head size", self.head_size),
            ("decay LoRA rank", self.decay_lora),
            ("iclr LoRA rank", self.iclr_lora),
            ("value LoRA rank", self.value_lora),
            ("gate LoRA rank", self.gate_lora),
        ];
        if let Some((what, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("the {what} must not be 0"));
        }
        if !self.n_embd.is_multiple_of(self.head_size) {
            return Err(format!(
                "n_embd {} is not a multiple of head size {}",
                self.n_embd, self.head_size
            ));
        }
        if u32::try_from(self.vocab_size).is_err() {
            return Err(format!("vocabulary size {} is too large", self.vocab_size));
        }
        if let Some(tok) = &self.tokenizer {
            let tokens = tok
                .iter()
                .find(|(k, _)| k == "tokenizer.ggml.tokens")
                .and_then(|(_, v)| v.as_array())
                .map(|a| a.len());
            match tokens {
                None => return Err("the tokenizer has no tokenizer.ggml.tokens".into()),
                Some(n) if n != self.vocab_size => {
                    return Err(format!(
                        "the tokenizer has {n} tokens but the model's vocabulary is {}",
                        self.vocab_size
                    ))
                }
                Some(_) => {}
            }
        }
        self.plan().map(|_| ())
    }

    /// The file's metadata, in the order llama.cpp's converter (and llama-quantize, which
    /// moves `general.file_type` after `general.quantization_version`) writes it.
    pub fn metadata(&self) -> Vec<(String, MetadataValue)> {
        let u32v = |v: usize| MetadataValue::U32(v as u32);
        let mut m: Vec<(String, MetadataValue)> = vec![
            (
                "general.architecture".into(),
                MetadataValue::String("rwkv7".into()),
            ),
            (
                "general.name".into(),
                MetadataValue::String(format!(
                    "synthetic-rwkv7-L{}-D{}-seed{}",
                    self.n_layer, self.n_embd, self.seed
                )),
            ),
            ("rwkv7.context_length".into(), u32v(1 << 20)),
            ("rwkv7.embedding_length".into(), u32v(self.n_embd)),
            ("rwkv7.block_count".into(), u32v(self.n_layer)),
            (
                "rwkv7.attention.layer_norm_epsilon".into(),
                MetadataValue::F32(1e-5),
            ),
            ("rwkv7.wkv.head_size".into(), u32v(self.head_size)),
            (
                "rwkv7.attention.decay_lora_rank".into(),
                u32v(self.decay_lora),
            ),
            (
                "rwkv7.attention.iclr_lora_rank".into(),
                u32v(self.iclr_lora),
            ),
            (
                "rwkv7.attention.value_residual_mix_lora_rank".into(),
                u32v(self.value_lora),
            ),
            (
                "rwkv7.attention.gate_lora_rank".into(),
                u32v(self.gate_lora),
            ),
            ("rwkv7.feed_forward_length".into(), u32v(self.ffn_size)),
        ];
        let file_type = (
            "general.file_type".to_string(),
            MetadataValue::U32(self.file_type.id()),
        );
        let quantized = self.file_type.is_quantized();
        if !quantized {
            m.push(file_type.clone());
        }
        m.push(("rwkv7.attention.head_count".into(), u32v(0)));
        if let Some(tok) = &self.tokenizer {
            m.extend(tok.iter().cloned());
        }
        if quantized {
            m.push(("general.quantization_version".into(), MetadataValue::U32(2)));
            m.push(file_type);
        }
        m
    }

    /// Every tensor of the file, in file order: the converter's order for F32/F16 files,
    /// llama-quantize's (by layer, then by name) for quantized ones.
    pub fn tensors(&self) -> Result<Vec<SynthTensor>, String> {
        self.plan()
    }

    /// The number of weight values, computed from the shapes (nothing is generated).
    pub fn parameter_count(&self) -> Result<u64, String> {
        Ok(self.plan()?.iter().map(|t| t.n_elements()).sum())
    }

    fn plan(&self) -> Result<Vec<SynthTensor>, String> {
        let d = self.n_embd as u64;
        let ft = self.file_type;
        let mut out = Vec::new();
        // A quantizable weight: its type by llama-quantize's rules, F16 in an F16 file.
        let matrix = |out: &mut Vec<SynthTensor>, name: String, cols: u64, rows: u64, gain: f32| {
            let ty = ft.tensor_type(&name, cols)?;
            let std = gain / (cols as f32).sqrt();
            out.push(SynthTensor::new(
                name,
                &[cols, rows],
                ty,
                Init::Matrix { std },
            ));
            Ok::<(), String>(())
        };
        // LoRA matrices and lerps are never quantized: F16 (F32 in an F32 file; F16 in a BF16
        // one too, as the converter writes them: see the mini-bf16 fixture).
        let lora_type = if ft == FileType::F32 {
            GgmlType::F32
        } else {
            GgmlType::F16
        };
        let lora = |out: &mut Vec<SynthTensor>, name: String, cols: u64, rows: u64, gain: f32| {
            let std = gain / (cols as f32).sqrt();
            out.push(SynthTensor::new(
                name,
                &[cols, rows],
                lora_type,
                Init::Matrix { std },
            ));
        };
        let vector = |out: &mut Vec<SynthTensor>, name: String, init: Init| {
            out.push(SynthTensor::new(name, &[d], GgmlType::F32, init));
        };
        let norm = |out: &mut Vec<SynthTensor>, name: &str| {
            let weight = Init::Normal {
                mean: 1.0,
                std: 0.1,
            };
            let bias = Init::Normal {
                mean: 0.0,
                std: 0.05,
            };
            vector(out, format!("{name}.weight"), weight);
            vector(out, format!("{name}.bias"), bias);
        };
        let unit = Init::Normal {
            mean: 0.0,
            std: 1.0,
        };
        let (vocab, ffn) = (self.vocab_size as u64, self.ffn_size as u64);
        let r = self.lora();
        let (rw, ra, rv, rg) = (r.decay as u64, r.iclr as u64, r.value as u64, r.gate as u64);

        let embd_ty = ft.tensor_type("token_embd.weight", d)?;
        out.push(SynthTensor::new(
            "token_embd.weight".into(),
            &[d, vocab],
            embd_ty,
            Init::Matrix { std: 1.0 },
        ));
        norm(&mut out, "token_embd_norm");
        for i in 0..self.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            norm(&mut out, &format!("blk.{i}.attn_norm"));
            norm(&mut out, &format!("blk.{i}.attn_norm_2"));
            let w0 = Init::Normal {
                mean: 0.5,
                std: 1.0,
            };
            vector(&mut out, n("time_mix_w0"), w0);
            lora(&mut out, n("time_mix_w1"), d, rw, 1.0);
            lora(&mut out, n("time_mix_w2"), rw, d, 0.5);
            vector(&mut out, n("time_mix_a0"), unit);
            lora(&mut out, n("time_mix_a1"), d, ra, 1.0);
            lora(&mut out, n("time_mix_a2"), ra, d, 0.5);
            // Every layer carries value-residual tensors; layer 0's are unused.
            vector(&mut out, n("time_mix_v0"), unit);
            lora(&mut out, n("time_mix_v1"), d, rv, 1.0);
            lora(&mut out, n("time_mix_v2"), rv, d, 0.5);
            lora(&mut out, n("time_mix_g1"), d, rg, 1.0);
            lora(&mut out, n("time_mix_g2"), rg, d, 1.0);
            out.push(SynthTensor::new(
                n("time_mix_lerp_fused"),
                &[d, 1, 1, 6],
                GgmlType::F32,
                Init::Uniform { lo: 0.0, hi: 1.0 },
            ));
            let k_k = Init::Normal {
                mean: 0.85,
                std: 0.1,
            };
            let k_a = Init::Normal {
                mean: 1.0,
                std: 0.1,
            };
            let r_k = Init::Normal {
                mean: 0.0,
                std: 0.3,
            };
            vector(&mut out, n("time_mix_k_k"), k_k);
            vector(&mut out, n("time_mix_k_a"), k_a);
            vector(&mut out, n("time_mix_r_k"), r_k);
            matrix(&mut out, n("time_mix_key"), d, d, 1.0)?;
            matrix(&mut out, n("time_mix_value"), d, d, 1.0)?;
            matrix(&mut out, n("time_mix_receptance"), d, d, 1.0)?;
            norm(&mut out, &format!("blk.{i}.time_mix_ln"));
            matrix(&mut out, n("time_mix_output"), d, d, 0.5)?;
            // The converter writes {n_embd, 1, 1}; llama-quantize drops the trailing 1s.
            let lerp_k_dims: &[u64] = if ft.is_quantized() { &[d] } else { &[d, 1, 1] };
            out.push(SynthTensor::new(
                n("channel_mix_lerp_k"),
                lerp_k_dims,
                GgmlType::F32,
                Init::Uniform { lo: 0.0, hi: 1.0 },
            ));
            matrix(&mut out, n("channel_mix_key"), d, ffn, 1.0)?;
            matrix(&mut out, n("channel_mix_value"), ffn, d, 0.5)?;
        }
        norm(&mut out, "output_norm");
        matrix(&mut out, "output.weight".into(), d, vocab, 2.0)?;
        if ft.is_quantized() {
            out.sort_by(|a, b| (layer_of(&a.name), &a.name).cmp(&(layer_of(&b.name), &b.name)));
        }
        Ok(out)
    }
}

/// The layer of a `blk.N.` tensor, -1 for the others (llama.cpp's `weight_name_comparer`).
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// The `tokenizer.*` metadata of a GGUF file, to copy into a synthetic model.
pub fn tokenizer_metadata(file: &GgufFile) -> Vec<(String, MetadataValue)> {
    file.metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .cloned()
        .collect()
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    /// Zero-mean with this standard deviation per row (normal values, or random blocks).
    Matrix {
        std: f32,
    },
    Normal {
        mean: f32,
        std: f32,
    },
    Uniform {
        lo: f32,
        hi: f32,
    },
}

/// One tensor of a synthetic file: name, ggml dims, type and how its values are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    init: Init,
}

impl SynthTensor {
    fn new(name: String, dims: &[u64], ty: GgmlType, init: Init) -> SynthTensor {
        SynthTensor {
            name,
            dims: dims.to_vec(),
            ty,
            init,
        }
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }

    /// Bytes of data.
    pub fn n_bytes(&self) -> u64 {
        self.ty
            .bytes_for(self.n_elements())
            .expect("planned shapes fit their types")
    }

    /// The intended standard deviation of a matrix row's values (`None` for vectors).
    pub fn row_std(&self) -> Option<f32> {
        match self.init {
            Init::Matrix { std } => Some(std),
            _ => None,
        }
    }

    fn header(&self) -> TensorHeader {
        TensorHeader::new(self.name.clone(), &self.dims, self.ty)
    }
}

/// A small deterministic generator (xorshift64*), so models are reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
    /// Approximately normal (sum of uniforms), mean 0, standard deviation `std`.
    pub fn normal(&mut self, std: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
        s * std * 3.0f32.sqrt()
    }
    /// Like [`normal`](Self::normal) from one draw: the sum of its four 16-bit quarters.
    pub fn normal_fast(&mut self, std: f32) -> f32 {
        // Each quarter is uniform on 0..65536: mean 32767.5, variance (65536^2 - 1) / 12.
        const MEAN: f32 = 4.0 * 32767.5;
        const INV_STD: f32 = 1.0 / 37837.23;
        let r = self.next_u64();
        let s = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
        (s as f32 - MEAN) * INV_STD * std
    }
    /// Fills `out` with random bytes.
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// splitmix64's finalizer: decorrelates seeds built from small numbers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// FNV-1a of a tensor name: the tensor's own stream, whatever the file order.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF29CE484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001B3)
    })
}

/// Target size of one unit of work (a run of whole rows of one tensor).
const CHUNK_BYTES: u64 = 4 << 20;

/// A run of rows of one tensor, generated on its own seed (so the bytes don't depend on the
/// number of threads).
struct Job {
    tensor: usize,
    rows: Range<u64>,
    seed: u64,
}

fn jobs(tensors: &[SynthTensor], seed: u64) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (ti, t) in tensors.iter().enumerate() {
        let row_bytes = t.n_bytes() / t.n_rows().max(1);
        let per_chunk = (CHUNK_BYTES / row_bytes.max(1)).max(1);
        let base = mix(seed ^ mix(name_hash(&t.name)));
        let mut start = 0;
        let mut chunk = 0u64;
        while start < t.n_rows() {
            let end = (start + per_chunk).min(t.n_rows());
            jobs.push(Job {
                tensor: ti,
                rows: start..end,
                seed: mix(base ^ chunk),
            });
            start = end;
            chunk += 1;
        }
    }
    jobs
}

/// The bytes of rows `job.rows` of `t`.
fn generate(t: &SynthTensor, job: &Job) -> Vec<u8> {
    let mut rng = Rng::new(job.seed);
    let n = ((job.rows.end - job.rows.start) * t.row_len()) as usize;
    let mut out = vec![0u8; t.ty.bytes_for(n as u64).expect("whole blocks") as usize];
    match (t.init, t.ty) {
        (Init::Matrix { std }, GgmlType::F16 | GgmlType::BF16) => {
            let encode: fn(f32) -> [u8; 2] = if t.ty == GgmlType::F16 {
                |x| f16::from_f32(x).to_le_bytes()
            } else {
                |x| half::bf16::from_f32(x).to_le_bytes()
            };
            for v in out.chunks_exact_mut(2) {
                v.copy_from_slice(&encode(rng.normal_fast(std)));
            }
        }
        (Init::Matrix { std }, GgmlType::F32) => fill_f32(&mut out, || rng.normal_fast(std)),
        (Init::Matrix { std }, ty) => random_blocks(ty, std, &mut rng, &mut out),
        (Init::Normal { mean, std }, _) => fill_f32(&mut out, || mean + rng.normal(std)),
        (Init::Uniform { lo, hi }, _) => fill_f32(&mut out, || rng.range(lo, hi)),
    }
    out
}

fn fill_f32(out: &mut [u8], mut value: impl FnMut() -> f32) {
    for v in out.chunks_exact_mut(4) {
        v.copy_from_slice(&value().to_le_bytes());
    }
}

/// Random valid blocks of a quantized type whose decoded values have mean ~0 and standard
/// deviation ~`std`: the quants are uniformly random (random bytes), the f16 scales are set
/// from the quants' spread and vary by +-10% from block to block; the K-quants' sub-block
/// scales are random in the top quarter of their range (as ggml's, whose largest is the
/// maximum), with mins that center each sub-block.
fn random_blocks(ty: GgmlType, std: f32, rng: &mut Rng, out: &mut [u8]) {
    rng.fill_bytes(out);
    // Mean square of the jitter factor 0.9 + 0.2 u: 1 + 0.04 / 12.
    let std = std / (1.0f32 + 0.04 / 12.0).sqrt();
    // Mean squares: a uniform b-bit quant around its center, and K-quant sub-block scales.
    let ms = |bits: i32| ((1u32 << (2 * bits)) as f32 - 1.0) / 12.0;
    const MS_SCALE_6BIT: f32 = 3101.5; // uniform on 48..=63
    const MS_SCALE_Q6K: f32 = 12517.5; // uniform on 96..=127
    let h = |x: f32| f16::from_f32(x).to_le_bytes();
    let bb = ty.block_bytes();
    for b in out.chunks_exact_mut(bb) {
        let u = rng.next_u64();
        let jitter = 0.9 + 0.2 * ((u >> 40) as f32 / (1u64 << 24) as f32);
        // The symmetric types' quants are off-center by half a step (q - 8 in -8..=7...):
        // a random sign on d centers them, as ggml's own scales (max / -8) have either sign.
        let signed = if u & 1 == 0 { jitter } else { -jitter };
        match ty {
            GgmlType::Q8_0 => {
                // Quants are the raw bytes as i8: mean square 5461.5.
                b[0..2].copy_from_slice(&h(std / 5461.5f32.sqrt() * signed));
            }
            GgmlType::Q4_0 => {
                // (q - 8) for q in 0..16: mean square 21.5.
                b[0..2].copy_from_slice(&h(std / 21.5f32.sqrt() * signed));
            }
            GgmlType::Q5_0 => {
                // (q - 16) for q in 0..32: mean square 85.5.
                b[0..2].copy_from_slice(&h(std / 85.5f32.sqrt() * signed));
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                // q * d + m with m = -7.5 d (-15.5 d) centers q in 0..16 (0..32).
                let bits = if ty == GgmlType::Q4_1 { 4 } else { 5 };
                let center = ((1 << bits) as f32 - 1.0) / 2.0;
                let d = f16::from_f32(std / ms(bits).sqrt() * jitter);
                b[0..2].copy_from_slice(&d.to_le_bytes());
                b[2..4].copy_from_slice(&h(-center * d.to_f32()));
            }
            GgmlType::Q2_K => {
                // y = d * sc * q - dmin * m per 16 values, q in 0..4; sc in 12..=15 (the top
                // quarter of 4 bits), m = sc and dmin = 1.5 d center every sub-block.
                const MS_SCALE_4BIT: f32 = 183.5; // uniform on 12..=15
                let d = f16::from_f32(std / (ms(2) * MS_SCALE_4BIT).sqrt() * jitter);
                let r = rng.next_u64();
                for (j, s) in b[0..16].iter_mut().enumerate() {
                    let sc = 12 + ((r >> (2 * j)) & 3) as u8;
                    *s = sc | (sc << 4);
                }
                b[80..82].copy_from_slice(&d.to_le_bytes());
                b[82..84].copy_from_slice(&h(1.5 * d.to_f32()));
            }
            GgmlType::Q3_K => {
                // y = d * s * (q - 4) per 16 values, q in 0..8 (off-center like Q4_0's),
                // s in 24..=31 (the top quarter of the 6-bit scales' -32..=31), stored + 32:
                // the low 4 bits of scale k in nibble k / 8 of byte k % 8, the top 2 at bit
                // 2 (k / 4) of byte 8 + k % 4.
                const MS_SCALE_Q3K: f32 = 761.5; // uniform on 24..=31
                let d = std / (5.5 * MS_SCALE_Q3K).sqrt() * signed;
                let r = rng.next_u64();
                let sc = &mut b[96..108];
                sc.fill(0);
                for k in 0..16 {
                    let v = 32 + 24 + ((r >> (3 * k)) & 7) as u8;
                    sc[k % 8] |= (v & 15) << (4 * (k / 8));
                    sc[8 + k % 4] |= (v >> 4) << (2 * (k / 4));
                }
                b[108..110].copy_from_slice(&h(d));
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                // y = d * sc * q - dmin * m; dmin = center * d and m ~ sc center every
                // sub-block (m is off by up to 2 from sc, a small random offset).
                let bits = if ty == GgmlType::Q4_K { 4 } else { 5 };
                let center = ((1 << bits) as f32 - 1.0) / 2.0;
                let d = f16::from_f32(std / (ms(bits) * MS_SCALE_6BIT).sqrt() * jitter);
                let dmin = f16::from_f32(center * d.to_f32());
                b[0..2].copy_from_slice(&d.to_le_bytes());
                b[2..4].copy_from_slice(&dmin.to_le_bytes());
                let r = rng.next_u64();
                let mut sc = [0u8; 8];
                let mut m = [0u8; 8];
                for j in 0..8 {
                    let bits = r >> (8 * j);
                    sc[j] = 48 + (bits & 15) as u8;
                    m[j] = (sc[j] as i32 + ((bits >> 5) & 7) as i32 % 5 - 2).clamp(0, 63) as u8;
                }
                b[4..16].copy_from_slice(&pack_scales_k4(&sc, &m));
            }
            GgmlType::Q6_K => {
                // y = d * sc * (q - 32), sc in 96..=127 (i8), q in 0..64; q - 32 is
                // off-center like Q4_0's.
                let d = std / (ms(6) * MS_SCALE_Q6K).sqrt() * signed;
                let r = rng.next_u64().to_le_bytes();
                let r2 = rng.next_u64().to_le_bytes();
                for (j, s) in b[192..208].iter_mut().enumerate() {
                    let bits = if j < 8 { r[j] } else { r2[j - 8] };
                    *s = 96 + (bits & 31);
                }
                b[208..210].copy_from_slice(&h(d));
            }
            _ => unreachable!("no random blocks for {ty}"),
        }
    }
}

/// Packs 8 six-bit scales and mins the way ggml's Q4_K/Q5_K store them (the inverse of
/// `get_scale_min_k4`).
fn pack_scales_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
    q
}

/// Builds the GGUF of a synthetic model in memory (tests, small models). The bytes are the
/// same as [`write_gguf`] streams.
pub fn synth_gguf(o: &SynthOptions) -> Result<GgufWriter, String> {
    o.validate()?;
    let tensors = o.plan()?;
    let mut data: Vec<Vec<u8>> = tensors.iter().map(|_| Vec::new()).collect();
    for job in jobs(&tensors, o.seed) {
        data[job.tensor].extend_from_slice(&generate(&tensors[job.tensor], &job));
    }
    let mut w = GgufWriter::new();
    for (k, v) in o.metadata() {
        w.metadata(k, v);
    }
    for (t, bytes) in tensors.iter().zip(data) {
        w.tensor(t.name.clone(), &t.dims, t.ty, bytes);
    }
    Ok(w)
}

/// Writes the GGUF of a synthetic model to `out` as a stream, generating its data on
/// `threads` threads in bounded memory (a few MiB per thread). `progress(done, total)` is
/// called with the bytes written so far and the file size. Returns `out`, flushed.
pub fn write_gguf<W: Write>(
    o: &SynthOptions,
    out: W,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<W> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    o.validate().map_err(invalid)?;
    let tensors = o.plan().map_err(invalid)?;
    let headers: Vec<TensorHeader> = tensors.iter().map(SynthTensor::header).collect();
    let mut w = GgufStreamWriter::new(out, &o.metadata(), &headers)?;
    let total = w.file_size();
    progress(w.position(), total);
    let jobs = jobs(&tensors, o.seed);
    run_in_order(
        &jobs,
        threads,
        |job| generate(&tensors[job.tensor], job),
        |bytes| {
            w.write_data(&bytes)?;
            progress(w.position(), total);
            Ok(())
        },
    )?;
    let out = w.finish()?;
    progress(total, total);
    Ok(out)
}

/// Runs `work` on every job on `threads` threads and hands the results to `sink` in job
/// order. Workers run at most a window of jobs ahead of the sink, which bounds memory.
fn run_in_order<J: Sync, T: Send>(
    jobs: &[J],
    threads: usize,
    work: impl Fn(&J) -> T + Sync,
    mut sink: impl FnMut(T) -> io::Result<()>,
) -> io::Result<()> {
    if threads <= 1 {
        for j in jobs {
            sink(work(j))?;
        }
        return Ok(());
    }
    let window = 2 * threads;
    let next = AtomicUsize::new(0);
    // (jobs handed to the sink, stop) and its signal.
    let state = Mutex::new((0usize, false));
    let cv = Condvar::new();
    let (tx, rx) = mpsc::channel::<(usize, T)>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, state, cv, work) = (&next, &state, &cv, &work);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() {
                    break;
                }
                {
                    let mut g = state.lock().unwrap();
                    while !g.1 && i >= g.0 + window {
                        g = cv.wait(g).unwrap();
                    }
                    if g.1 {
                        break;
                    }
                }
                if tx.send((i, work(&jobs[i]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut want = 0usize;
        let mut result = Ok(());
        for (i, item) in rx.iter() {
            pending.insert(i, item);
            while let Some(item) = pending.remove(&want) {
                result = sink(item);
                want += 1;
                let mut g = state.lock().unwrap();
                g.0 = want;
                g.1 = result.is_err();
                cv.notify_all();
                if result.is_err() {
                    break;
                }
            }
            if result.is_err() {
                break;
            }
        }
        drop(rx);
        result
    })
}
