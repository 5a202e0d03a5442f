//! Synthetic RWKV-7 models in llama.cpp's `rwkv7` GGUF layout: random weights at sane scales,
//! for tests (any shape) and benchmarks (real sizes). Same names, shapes and type mix as the
//! files llama.cpp's converter writes: LoRA matrices and lerps unquantized, 1-D tensors F32.

use gguf::{GgmlType, GgufWriter, MetadataValue};

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
    /// Type of the large matrices (projections, FFN, embedding, head).
    pub matrix_type: GgmlType,
    pub seed: u64,
    /// Tokens (as stored in GGUF: escaped text) and their types; `None` writes no tokenizer.
    pub tokenizer: Option<(Vec<String>, Vec<i32>)>,
}

impl SynthOptions {
    /// A model of the given depth and width with the converter's LoRA ranks and 4x FFN.
    pub fn new(n_layer: usize, n_embd: usize, vocab_size: usize) -> SynthOptions {
        // The converter's rule (RWKV-7 family): ranks grow with sqrt(n_embd), rounded to 32.
        let rank = |factor: f64, min: usize| -> usize {
            let r = (factor * (n_embd as f64).sqrt() / 32.0).round() as usize * 32;
            r.max(min)
        };
        SynthOptions {
            n_layer,
            n_embd,
            vocab_size,
            ffn_size: 4 * n_embd,
            head_size: 64,
            decay_lora: rank(1.8, 32),
            iclr_lora: rank(1.8, 32),
            value_lora: rank(1.3, 32),
            gate_lora: rank(0.6 * (n_embd as f64).powf(0.2), 32).max(32),
            matrix_type: GgmlType::F16,
            seed: 1,
            tokenizer: None,
        }
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
}

/// Builds the GGUF of a synthetic model. Only F32 and F16 matrices are supported here.
pub fn synth_gguf(o: &SynthOptions) -> Result<GgufWriter, String> {
    if !matches!(o.matrix_type, GgmlType::F32 | GgmlType::F16) {
        return Err(format!(
            "synthetic {} matrices are not supported yet (F32, F16)",
            o.matrix_type
        ));
    }
    if o.n_embd % o.head_size != 0 {
        return Err(format!(
            "n_embd {} is not a multiple of head size {}",
            o.n_embd, o.head_size
        ));
    }
    let mut rng = Rng::new(o.seed);
    let mut w = GgufWriter::new();
    let d = o.n_embd as u64;
    let u32v = |v: usize| MetadataValue::U32(v as u32);
    w.metadata(
        "general.architecture",
        MetadataValue::String("rwkv7".into()),
    )
    .metadata(
        "general.name",
        MetadataValue::String(format!(
            "synthetic-rwkv7-L{}-D{}-seed{}",
            o.n_layer, o.n_embd, o.seed
        )),
    )
    .metadata("rwkv7.context_length", u32v(1 << 20))
    .metadata("rwkv7.embedding_length", u32v(o.n_embd))
    .metadata("rwkv7.block_count", u32v(o.n_layer))
    .metadata(
        "rwkv7.attention.layer_norm_epsilon",
        MetadataValue::F32(1e-5),
    )
    .metadata("rwkv7.wkv.head_size", u32v(o.head_size))
    .metadata("rwkv7.attention.decay_lora_rank", u32v(o.decay_lora))
    .metadata("rwkv7.attention.iclr_lora_rank", u32v(o.iclr_lora))
    .metadata(
        "rwkv7.attention.value_residual_mix_lora_rank",
        u32v(o.value_lora),
    )
    .metadata("rwkv7.attention.gate_lora_rank", u32v(o.gate_lora))
    .metadata("rwkv7.feed_forward_length", u32v(o.ffn_size))
    .metadata("rwkv7.attention.head_count", u32v(0));
    if let Some((tokens, types)) = &o.tokenizer {
        w.metadata("tokenizer.ggml.model", MetadataValue::String("rwkv".into()))
            .metadata(
                "tokenizer.ggml.tokens",
                MetadataValue::Array(
                    tokens
                        .iter()
                        .map(|t| MetadataValue::String(t.clone()))
                        .collect(),
                ),
            )
            .metadata(
                "tokenizer.ggml.token_type",
                MetadataValue::Array(types.iter().map(|&t| MetadataValue::I32(t)).collect()),
            );
    }

    let matrix = |w: &mut GgufWriter,
                  rng: &mut Rng,
                  name: &str,
                  cols: usize,
                  rows: usize,
                  std: f32,
                  ty: GgmlType| {
        let values: Vec<f32> = (0..cols * rows).map(|_| rng.normal(std)).collect();
        let dims = [cols as u64, rows as u64];
        match ty {
            GgmlType::F32 => w.tensor_f32(name, &dims, &values),
            _ => w.tensor_f16(name, &dims, &values),
        };
    };
    let vector = |w: &mut GgufWriter, rng: &mut Rng, name: &str, lo: f32, hi: f32| {
        let values: Vec<f32> = (0..o.n_embd).map(|_| rng.range(lo, hi)).collect();
        w.tensor_f32(name, &[d], &values);
    };
    let mt = o.matrix_type;
    let std = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    matrix(
        &mut w,
        &mut rng,
        "token_embd.weight",
        o.n_embd,
        o.vocab_size,
        1.0,
        mt,
    );
    vector(&mut w, &mut rng, "token_embd_norm.weight", 0.8, 1.2);
    vector(&mut w, &mut rng, "token_embd_norm.bias", -0.1, 0.1);
    for i in 0..o.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        vector(&mut w, &mut rng, &n("attn_norm.weight"), 0.8, 1.2);
        vector(&mut w, &mut rng, &n("attn_norm.bias"), -0.1, 0.1);
        vector(&mut w, &mut rng, &n("attn_norm_2.weight"), 0.8, 1.2);
        vector(&mut w, &mut rng, &n("attn_norm_2.bias"), -0.1, 0.1);
        let lerp: Vec<f32> = (0..6 * o.n_embd).map(|_| rng.uniform()).collect();
        w.tensor_f32(n("time_mix_lerp_fused.weight"), &[d, 1, 1, 6], &lerp);
        vector(&mut w, &mut rng, &n("time_mix_w0.weight"), -6.0, -1.0);
        matrix(
            &mut w,
            &mut rng,
            &n("time_mix_w1.weight"),
            o.n_embd,
            o.decay_lora,
            std(o.n_embd),
            GgmlType::F16,
        );
        matrix(
            &mut w,
            &mut rng,
            &n("time_mix_w2.weight"),
            o.decay_lora,
            o.n_embd,
            std(o.decay_lora),
            GgmlType::F16,
        );
        vector(&mut w, &mut rng, &n("time_mix_a0.weight"), -1.0, 1.0);
        matrix(
            &mut w,
            &mut rng,
            &n("time_mix_a1.weight"),
            o.n_embd,
            o.iclr_lora,
            std(o.n_embd),
            GgmlType::F16,
        );
        matrix(
            &mut w,
            &mut rng,
            &n("time_mix_a2.weight"),
            o.iclr_lora,
            o.n_embd,
            std(o.iclr_lora),
            GgmlType::F16,
        );
        // Layer 0 carries unused value-residual tensors, as the converter writes them.
        vector(&mut w, &mut rng, &n("time_mix_v0.weight"), -1.0, 1.0);
        matrix(
            &mut w,
            &mut rng,
            &n("time_mix_v1.weight"),
            o.n_embd,
            o.value_lora,
            std(o.n_embd),
            GgmlType::F16,
        );
        matrix(
            &mut w,
            &mut rng,
            &n("time_mix_v2.weight"),
            o.value_lora,
            o.n_embd,
            std(o.value_lora),
            GgmlType::F16,
        );
        matrix(
            &mut w,
            &mut rng,
            &n("time_mix_g1.weight"),
            o.n_embd,
            o.gate_lora,
            std(o.n_embd),
            GgmlType::F16,
        );
        matrix(
            &mut w,
            &mut rng,
            &n("time_mix_g2.weight"),
            o.gate_lora,
            o.n_embd,
            std(o.gate_lora),
            GgmlType::F16,
        );
        vector(&mut w, &mut rng, &n("time_mix_k_k.weight"), 0.5, 1.0);
        vector(&mut w, &mut rng, &n("time_mix_k_a.weight"), 0.5, 1.5);
        vector(&mut w, &mut rng, &n("time_mix_r_k.weight"), -0.5, 0.5);
        for m in ["receptance", "key", "value", "output"] {
            matrix(
                &mut w,
                &mut rng,
                &n(&format!("time_mix_{m}.weight")),
                o.n_embd,
                o.n_embd,
                std(o.n_embd),
                mt,
            );
        }
        vector(&mut w, &mut rng, &n("time_mix_ln.weight"), 0.5, 1.5);
        vector(&mut w, &mut rng, &n("time_mix_ln.bias"), -0.1, 0.1);
        vector(&mut w, &mut rng, &n("channel_mix_lerp_k.weight"), 0.0, 1.0);
        matrix(
            &mut w,
            &mut rng,
            &n("channel_mix_key.weight"),
            o.n_embd,
            o.ffn_size,
            std(o.n_embd),
            mt,
        );
        matrix(
            &mut w,
            &mut rng,
            &n("channel_mix_value.weight"),
            o.ffn_size,
            o.n_embd,
            std(o.ffn_size),
            mt,
        );
    }
    vector(&mut w, &mut rng, "output_norm.weight", 0.8, 1.2);
    vector(&mut w, &mut rng, "output_norm.bias", -0.1, 0.1);
    matrix(
        &mut w,
        &mut rng,
        "output.weight",
        o.n_embd,
        o.vocab_size,
        std(o.n_embd),
        mt,
    );
    Ok(w)
}
