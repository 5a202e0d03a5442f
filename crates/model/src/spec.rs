//! What an RWKV-7 GGUF file describes: its hyper-parameters ([`Rwkv7Config`]) and where each
//! weight lives, by role ([`Rwkv7Tensors`]), with every name, shape and type checked.

use gguf::{GgmlType, GgufFile, TensorInfo};

use crate::error::{ModelError, Result};

/// The only architecture this engine runs today.
pub const ARCHITECTURE: &str = "rwkv7";

/// RWKV-7 hyper-parameters, read from the `rwkv7.*` metadata keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Rwkv7Config {
    pub n_layer: usize,
    pub n_embd: usize,
    pub head_size: usize,
    pub n_head: usize,
    pub ffn_size: usize,
    /// LoRA ranks: decay (w), in-context learning rate (a), value residual (v), gate (g).
    pub decay_lora: usize,
    pub iclr_lora: usize,
    pub value_lora: usize,
    pub gate_lora: usize,
    pub layer_norm_eps: f32,
    pub vocab_size: usize,
}

impl Rwkv7Config {
    /// Epsilon of the per-head group norm after WKV (llama.cpp and RWKV-LM use 64e-5).
    pub const GROUP_NORM_EPS: f32 = 64e-5;

    /// Reads the configuration from metadata; an architecture other than `rwkv7` is an error.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?;
        if arch != ARCHITECTURE {
            return Err(ModelError::UnsupportedArchitecture(arch.to_string()));
        }
        let get = |key: &str| -> Result<usize> {
            let full = format!("{ARCHITECTURE}.{key}");
            let v = file.get_u64(&full)?;
            usize::try_from(v).map_err(|_| ModelError::BadMetadata {
                key: full,
                reason: format!("{v} does not fit in memory"),
            })
        };
        let n_embd = get("embedding_length")?;
        let head_size = get("wkv.head_size")?;
        let n_layer = get("block_count")?;
        if head_size == 0 || n_embd == 0 || n_embd % head_size != 0 {
            return Err(ModelError::BadMetadata {
                key: format!("{ARCHITECTURE}.wkv.head_size"),
                reason: format!(
                    "embedding length {n_embd} is not a non-zero multiple of head size {head_size}"
                ),
            });
        }
        if n_layer == 0 {
            return Err(ModelError::BadMetadata {
                key: format!("{ARCHITECTURE}.block_count"),
                reason: "a model needs at least one layer".into(),
            });
        }
        let eps_key = format!("{ARCHITECTURE}.attention.layer_norm_epsilon");
        let layer_norm_eps = file.get_f64(&eps_key)? as f32;
        // The vocabulary size comes from the embedding table, which every model has.
        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        let vocab_size = embd.n_rows() as usize;
        Ok(Rwkv7Config {
            n_layer,
            n_embd,
            head_size,
            n_head: n_embd / head_size,
            ffn_size: get("feed_forward_length")?,
            decay_lora: get("attention.decay_lora_rank")?,
            iclr_lora: get("attention.iclr_lora_rank")?,
            value_lora: get("attention.value_residual_mix_lora_rank")?,
            gate_lora: get("attention.gate_lora_rank")?,
            layer_norm_eps,
            vocab_size,
        })
    }
}

/// One layer's weights by role. The names in comments are llama.cpp's GGUF names under `blk.N.`.
#[derive(Clone, Debug)]
pub struct LayerTensors {
    /// `attn_norm` (weight, bias): layer norm before time mix.
    pub att_norm: (TensorInfo, TensorInfo),
    /// `attn_norm_2`: layer norm before channel mix.
    pub ffn_norm: (TensorInfo, TensorInfo),
    /// `time_mix_lerp_fused` {n_embd,1,1,6}: token-shift mix for r, w, k, v, a, g.
    pub lerp_fused: TensorInfo,
    /// Decay LoRA: `time_mix_w0`, `w1` {n_embd, Dw}, `w2` {Dw, n_embd}.
    pub w0: TensorInfo,
    pub w1: TensorInfo,
    pub w2: TensorInfo,
    /// In-context learning rate LoRA: `time_mix_a0/a1/a2`.
    pub a0: TensorInfo,
    pub a1: TensorInfo,
    pub a2: TensorInfo,
    /// Value residual LoRA `time_mix_v0/v1/v2`; unused (and optional) in layer 0.
    pub v: Option<(TensorInfo, TensorInfo, TensorInfo)>,
    /// Gate LoRA `time_mix_g1/g2`.
    pub g1: TensorInfo,
    pub g2: TensorInfo,
    /// `time_mix_k_k`, `time_mix_k_a`, `time_mix_r_k` {n_embd}.
    pub k_k: TensorInfo,
    pub k_a: TensorInfo,
    pub r_k: TensorInfo,
    /// Square projections `time_mix_receptance/key/value/output`.
    pub receptance: TensorInfo,
    pub key: TensorInfo,
    pub value: TensorInfo,
    pub output: TensorInfo,
    /// `time_mix_ln` (weight, bias): per-head group norm after WKV.
    pub group_norm: (TensorInfo, TensorInfo),
    /// Channel mix: `channel_mix_lerp_k` {n_embd}, `channel_mix_key` {n_embd, ffn},
    /// `channel_mix_value` {ffn, n_embd}.
    pub ffn_lerp_k: TensorInfo,
    pub ffn_key: TensorInfo,
    pub ffn_value: TensorInfo,
}

/// All weights of an RWKV-7 model by role.
#[derive(Clone, Debug)]
pub struct Rwkv7Tensors {
    /// `token_embd` {n_embd, vocab}.
    pub embedding: TensorInfo,
    /// `token_embd_norm` (ln0).
    pub embedding_norm: (TensorInfo, TensorInfo),
    pub layers: Vec<LayerTensors>,
    /// `output_norm`.
    pub output_norm: (TensorInfo, TensorInfo),
    /// `output` {n_embd, vocab}: the head.
    pub head: TensorInfo,
}

/// Looks tensors up, checking shapes (trailing 1s ignored) and that their type can be decoded.
struct Lookup<'a> {
    file: &'a GgufFile,
}

impl Lookup<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<TensorInfo> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let mut found: Vec<u64> = t.dims.clone();
        while found.len() > 1 && found.last() == Some(&1) {
            found.pop();
        }
        let expected: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if found != expected {
            return Err(ModelError::WrongShape {
                name: name.to_string(),
                expected,
                found: t.dims.clone(),
            });
        }
        if !t.ty.is_supported() {
            return Err(ModelError::UnsupportedTensorType {
                name: name.to_string(),
                ty: t.ty,
            });
        }
        Ok(t.clone())
    }

    fn norm(&self, prefix: &str, n: usize) -> Result<(TensorInfo, TensorInfo)> {
        Ok((
            self.get(&format!("{prefix}.weight"), &[n])?,
            self.get(&format!("{prefix}.bias"), &[n])?,
        ))
    }
}

impl Rwkv7Tensors {
    /// Finds and checks every tensor the model needs.
    pub fn from_gguf(file: &GgufFile, c: &Rwkv7Config) -> Result<Self> {
        let l = Lookup { file };
        let d = c.n_embd;
        let layers = (0..c.n_layer)
            .map(|i| {
                let p = |s: &str| format!("blk.{i}.{s}.weight");
                let v = if i == 0 {
                    None
                } else {
                    Some((
                        l.get(&p("time_mix_v0"), &[d])?,
                        l.get(&p("time_mix_v1"), &[d, c.value_lora])?,
                        l.get(&p("time_mix_v2"), &[c.value_lora, d])?,
                    ))
                };
                Ok(LayerTensors {
                    att_norm: l.norm(&format!("blk.{i}.attn_norm"), d)?,
                    ffn_norm: l.norm(&format!("blk.{i}.attn_norm_2"), d)?,
                    lerp_fused: l.get(&p("time_mix_lerp_fused"), &[d, 1, 1, 6])?,
                    w0: l.get(&p("time_mix_w0"), &[d])?,
                    w1: l.get(&p("time_mix_w1"), &[d, c.decay_lora])?,
                    w2: l.get(&p("time_mix_w2"), &[c.decay_lora, d])?,
                    a0: l.get(&p("time_mix_a0"), &[d])?,
                    a1: l.get(&p("time_mix_a1"), &[d, c.iclr_lora])?,
                    a2: l.get(&p("time_mix_a2"), &[c.iclr_lora, d])?,
                    v,
                    g1: l.get(&p("time_mix_g1"), &[d, c.gate_lora])?,
                    g2: l.get(&p("time_mix_g2"), &[c.gate_lora, d])?,
                    k_k: l.get(&p("time_mix_k_k"), &[d])?,
                    k_a: l.get(&p("time_mix_k_a"), &[d])?,
                    r_k: l.get(&p("time_mix_r_k"), &[d])?,
                    receptance: l.get(&p("time_mix_receptance"), &[d, d])?,
                    key: l.get(&p("time_mix_key"), &[d, d])?,
                    value: l.get(&p("time_mix_value"), &[d, d])?,
                    output: l.get(&p("time_mix_output"), &[d, d])?,
                    group_norm: l.norm(&format!("blk.{i}.time_mix_ln"), d)?,
                    ffn_lerp_k: l.get(&p("channel_mix_lerp_k"), &[d])?,
                    ffn_key: l.get(&p("channel_mix_key"), &[d, c.ffn_size])?,
                    ffn_value: l.get(&p("channel_mix_value"), &[c.ffn_size, d])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Rwkv7Tensors {
            embedding: l.get("token_embd.weight", &[d, c.vocab_size])?,
            embedding_norm: l.norm("token_embd_norm", d)?,
            layers,
            output_norm: l.norm("output_norm", d)?,
            head: l.get("output.weight", &[d, c.vocab_size])?,
        })
    }
}

/// A model file opened and checked: configuration plus weights by role.
pub struct Rwkv7Spec {
    pub config: Rwkv7Config,
    pub tensors: Rwkv7Tensors,
}

impl Rwkv7Spec {
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let config = Rwkv7Config::from_gguf(file)?;
        let tensors = Rwkv7Tensors::from_gguf(file, &config)?;
        Ok(Rwkv7Spec { config, tensors })
    }
}

/// Counts of tensors by type, and the parameter count, of a whole file.
pub fn tensor_type_counts(file: &GgufFile) -> Vec<(GgmlType, usize)> {
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for t in file.tensors() {
        match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some((_, n)) => *n += 1,
            None => counts.push((t.ty, 1)),
        }
    }
    counts.sort();
    counts
}

/// Total number of weight values in the file.
pub fn parameter_count(file: &GgufFile) -> u64 {
    file.tensors().iter().map(|t| t.n_elements).sum()
}
