//! Synthetic models: the same layout as llama.cpp's files (checked against the fixtures, which
//! llama.cpp's converter and llama-quantize wrote), sane values, streamed = in-memory bytes,
//! and the preset table.

use std::path::PathBuf;

use gguf::{dequant, GgmlType, GgufFile};
use rwkv_model::synth::{
    synth_gguf, tokenizer_metadata, write_gguf, FileType, LoraRanks, Preset, SynthOptions, PRESETS,
    WORLD_VOCAB,
};
use rwkv_model::{CpuModel, Rwkv7Spec};
use rwkv_tokenizer::Tokenizer;

fn fixture(name: &str) -> GgufFile {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
    .join(format!("{name}.gguf"));
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn build(o: &SynthOptions) -> GgufFile {
    GgufFile::from_bytes(synth_gguf(o).unwrap().to_bytes()).unwrap()
}

/// A synthetic model shaped like the `mini-*` fixtures: 2 layers x 256, vocab 4096.
fn mini(ty: FileType, seed: u64) -> SynthOptions {
    let mut o = SynthOptions::new(2, 256, 4096);
    o.file_type = ty;
    o.seed = seed;
    o
}

fn layout(file: &GgufFile) -> Vec<(String, Vec<u64>, GgmlType)> {
    file.tensors()
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone(), t.ty))
        .collect()
}

fn keys(file: &GgufFile) -> Vec<String> {
    file.metadata().iter().map(|(k, _)| k.clone()).collect()
}

fn assert_same_layout(ours: &GgufFile, theirs: &GgufFile, what: &str) {
    assert_eq!(keys(ours), keys(theirs), "{what}: metadata keys");
    for key in keys(theirs) {
        if key.starts_with("rwkv7.") || key.starts_with("general.file_type") {
            assert_eq!(ours.get(&key), theirs.get(&key), "{what}: {key}");
        }
    }
    assert_eq!(layout(ours), layout(theirs), "{what}: tensors");
}

#[test]
fn layout_matches_every_fixture_of_the_same_type() {
    // The converter's rule gives the fixtures' ranks at n_embd 256.
    assert_eq!(
        LoraRanks::for_embd(256),
        LoraRanks {
            decay: 32,
            iclr: 32,
            value: 32,
            gate: 64
        }
    );
    for (ty, name) in [
        (FileType::F16, "mini-f16"),
        (FileType::Q8_0, "mini-q8_0"),
        (FileType::Q4_0, "mini-q4_0"),
        (FileType::Q4_1, "mini-q4_1"),
        (FileType::Q5_1, "mini-q5_1"),
        (FileType::Q2_K, "mini-q2_k"),
        (FileType::Q3_K_M, "mini-q3_k_m"),
        (FileType::Q4_K_M, "mini-q4_k_m"),
        (FileType::Q5_K_M, "mini-q5_k_m"),
        (FileType::Q6_K, "mini-q6_k"),
    ] {
        let theirs = fixture(name);
        let mut o = mini(ty, 2);
        o.tokenizer = Some(tokenizer_metadata(&theirs));
        let ours = build(&o);
        assert_same_layout(&ours, &theirs, name);
        // Down to the byte offsets: same header, same data layout.
        let offsets = |f: &GgufFile| f.tensors().iter().map(|t| t.offset).collect::<Vec<_>>();
        assert_eq!(offsets(&ours), offsets(&theirs), "{name}: offsets");
        assert_eq!(
            ours.data_offset(),
            theirs.data_offset(),
            "{name}: header size"
        );
        assert_eq!(ours.file_size(), theirs.file_size(), "{name}: file size");
    }
}

#[test]
fn rows_llama_quantize_cannot_block_fall_back_like_the_vocab_fixture() {
    // 1 layer x 64: rows of 64 values cannot hold K-quant blocks of 256.
    let theirs = fixture("vocab-q4_k_m");
    let mut o = SynthOptions::new(1, 64, WORLD_VOCAB);
    o.file_type = FileType::Q4_K_M;
    o.seed = 3;
    o.tokenizer = Some(tokenizer_metadata(&theirs));
    let ours = build(&o);
    assert_same_layout(&ours, &theirs, "vocab-q4_k_m");
    // The copied tokenizer works, and is the fixture's.
    let a = Tokenizer::from_gguf(&ours).unwrap();
    let b = Tokenizer::from_gguf(&theirs).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. 12345 你好";
    assert_eq!(a.encode_str(text), b.encode_str(text));
    assert!(a.encode_str(text).len() > 5);
    assert_eq!(a.vocab_size(), WORLD_VOCAB);
}

#[test]
fn without_a_tokenizer_the_model_still_loads() {
    let file = build(&mini(FileType::Q4_0, 1));
    assert!(file.get("tokenizer.ggml.model").is_none());
    assert!(Tokenizer::from_gguf(&file).is_err());
    Rwkv7Spec::from_gguf(&file).unwrap();
}

#[test]
fn a_tokenizer_of_another_size_is_refused() {
    let mut o = mini(FileType::F16, 1);
    o.tokenizer = Some(tokenizer_metadata(&fixture("vocab-q4_k_m")));
    let err = synth_gguf(&o).unwrap_err();
    assert!(err.contains("65536 tokens"), "{err}");
}

/// Runs the CPU reference over a few tokens; every logit is finite, they spread sanely, and the
/// model is not degenerate: the next-token distribution is neither one-hot nor flat, and it
/// changes with the input (different tokens win at different positions).
fn check_logits(file: &GgufFile, what: &str) {
    let model = CpuModel::load(file).unwrap_or_else(|e| panic!("{what}: {e}"));
    let vocab = model.config.vocab_size as u32;
    let tokens: Vec<u32> = (0..6u32)
        .map(|i| i.wrapping_mul(2654435761) % vocab)
        .collect();
    let mut state = model.new_state();
    let mut winners = Vec::new();
    for (pos, row) in model
        .forward_sequence(&tokens, &mut state)
        .unwrap()
        .iter()
        .enumerate()
    {
        assert!(row.iter().all(|v| v.is_finite()), "{what}: position {pos}");
        let mean = row.iter().sum::<f32>() / row.len() as f32;
        let std = (row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / row.len() as f32).sqrt();
        assert!(
            (0.3..20.0).contains(&std),
            "{what}: position {pos}: logit spread {std}"
        );
        // Softmax: the top token takes neither (almost) everything nor (almost) nothing, and
        // the entropy is between a few tokens' worth and the uniform distribution's.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        let top = 1.0 / z;
        let entropy: f64 = row
            .iter()
            .map(|&v| {
                let p = ((v - max) as f64).exp() / z;
                if p > 0.0 {
                    -p * p.ln()
                } else {
                    0.0
                }
            })
            .sum();
        let uniform = (row.len() as f64).ln();
        eprintln!("{what}: position {pos}: logit std {std:.2}, top p {top:.3}, entropy {entropy:.2} of {uniform:.2}");
        assert!(
            top < 0.9 && top > 2.0 / row.len() as f64,
            "{what}: position {pos}: top probability {top}"
        );
        assert!(
            entropy > 1.0 && entropy < 0.99 * uniform,
            "{what}: position {pos}: entropy {entropy} (uniform {uniform})"
        );
        winners.push(
            row.iter()
                .enumerate()
                .fold(0, |b, (i, &v)| if v > row[b] { i } else { b }),
        );
    }
    winners.sort_unstable();
    winners.dedup();
    assert!(winners.len() > 1, "{what}: the same token wins everywhere");
    for (l, s) in state.layers.iter().enumerate() {
        assert!(
            s.wkv.iter().all(|v| v.is_finite() && v.abs() < 1e4),
            "{what}: layer {l} state"
        );
    }
}

#[test]
fn every_type_loads_and_gives_sane_logits() {
    for ty in FileType::ALL {
        let file = build(&mini(ty, 5));
        Rwkv7Spec::from_gguf(&file).unwrap();
        check_logits(&file, ty.name());
    }
}

#[test]
fn activations_stay_sane_through_32_layers() {
    for ty in [FileType::Q4_K_M, FileType::Q8_0, FileType::F16] {
        let mut o = SynthOptions::new(32, 256, 512);
        o.file_type = ty;
        o.seed = 9;
        check_logits(&build(&o), &format!("32 layers {ty}"));
    }
}

#[test]
fn activations_stay_sane_at_the_presets_widths() {
    // The 0.4B and 2.9B widths with their LoRA ranks (a few layers and a small vocabulary,
    // to keep the CPU reference quick): the scales are set per fan-in, so width changes
    // nothing.
    for (preset, layers, ty) in [("0.4b", 4, FileType::Q4_K_M), ("2.9b", 2, FileType::F16)] {
        let p = Preset::find(preset).unwrap();
        let mut o = SynthOptions::new(layers, p.n_embd, 1024).with_lora(p.lora);
        o.file_type = ty;
        o.seed = 13;
        check_logits(&build(&o), &format!("{preset} width {ty}"));
    }
}

#[test]
fn decoded_matrices_have_the_planned_scale() {
    for ty in FileType::ALL {
        let o = mini(ty, 7);
        let file = build(&o);
        for t in o.tensors().unwrap() {
            let Some(std) = t.row_std() else { continue };
            let info = file.tensor(&t.name).unwrap();
            let values = dequant::dequantize_to_vec(
                info.ty,
                file.tensor_bytes(info),
                t.n_elements() as usize,
            )
            .unwrap();
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let ms = values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n;
            let got = (ms - mean * mean).sqrt();
            let what = format!("{ty} {} ({})", t.name, info.ty);
            assert!(
                (got / std as f64 - 1.0).abs() < 0.1,
                "{what}: std {got} vs {std}"
            );
            assert!(mean.abs() < 0.1 * std as f64, "{what}: mean {mean}");
            // Rows too: every row has about the planned spread.
            let row = t.row_len() as usize;
            for (r, chunk) in values.chunks(row).enumerate().step_by(97) {
                let m = chunk.iter().sum::<f32>() / row as f32;
                let s = (chunk.iter().map(|v| (v - m).powi(2)).sum::<f32>() / row as f32).sqrt();
                assert!(
                    (s / std - 1.0).abs() < 0.25,
                    "{what}: row {r} std {s} vs {std}"
                );
            }
        }
    }
}

#[test]
fn streaming_on_threads_writes_the_same_bytes() {
    for ty in [FileType::Q4_K_M, FileType::F16, FileType::Q6_K] {
        let mut o = mini(ty, 11);
        o.tokenizer = Some(tokenizer_metadata(&fixture("mini-f16")));
        let expected = synth_gguf(&o).unwrap().to_bytes();
        for threads in [1, 3] {
            let mut calls = 0;
            let mut last = (0, 0);
            let bytes = write_gguf(&o, Vec::new(), threads, &mut |done, total| {
                calls += 1;
                assert!(done >= last.0 && done <= total);
                last = (done, total);
            })
            .unwrap();
            assert!(bytes == expected, "{ty} on {threads} threads");
            assert_eq!(last, (bytes.len() as u64, bytes.len() as u64));
            assert!(calls > 2);
        }
    }
    // Another seed, another model.
    let a = synth_gguf(&mini(FileType::Q4_0, 1)).unwrap().to_bytes();
    let b = synth_gguf(&mini(FileType::Q4_0, 2)).unwrap().to_bytes();
    assert_eq!(a.len(), b.len());
    assert!(a != b);
}

#[test]
fn presets_have_the_documented_shapes() {
    let expect = [
        ("0.1b", 12, 768, 0.19e9),
        ("0.4b", 24, 1024, 0.45e9),
        ("1.5b", 24, 2048, 1.5e9),
        ("2.9b", 32, 2560, 2.9e9),
        ("7.2b", 32, 4096, 7.2e9),
    ];
    assert_eq!(PRESETS.len(), expect.len());
    for (name, layers, embd, params) in expect {
        let p = Preset::find(name).unwrap();
        assert_eq!((p.n_layer, p.n_embd), (layers, embd), "{name}");
        let o = SynthOptions::preset(p);
        assert_eq!(
            (o.vocab_size, o.head_size, o.ffn_size),
            (65536, 64, 4 * embd)
        );
        let count = o.parameter_count().unwrap() as f64;
        assert!(
            (count / params - 1.0).abs() < 0.04,
            "{name}: {count:e} parameters"
        );
        // Ranks are multiples of 32; the converter's rule gives them, except the 0.4B gate.
        let r = p.lora;
        for rank in [r.decay, r.iclr, r.value, r.gate] {
            assert_eq!(rank % 32, 0, "{name}");
        }
        let mut rule = LoraRanks::for_embd(embd);
        if name == "0.4b" {
            assert_eq!(rule.gate, 160);
            rule.gate = 128;
        }
        assert_eq!(r, rule, "{name}");
    }
    assert_eq!(Preset::find("2.9B").unwrap().n_embd, 2560);
    assert!(Preset::find("3b").is_none());
    // A 2.9B Q4_K_M is about 1.7 GiB: every matrix Q4_K but the Q6_K head.
    let mut o = SynthOptions::preset(Preset::find("2.9b").unwrap());
    o.file_type = FileType::Q4_K_M;
    let bytes: u64 = o.tensors().unwrap().iter().map(|t| t.n_bytes()).sum();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    assert!((1.6..1.8).contains(&gib), "{gib} GiB");
}

#[test]
fn file_types_parse_and_number_as_llama_cpp() {
    for ty in FileType::ALL {
        assert_eq!(FileType::from_name(ty.name()), Some(ty));
        assert_eq!(FileType::from_name(&ty.name().to_uppercase()), Some(ty));
    }
    assert_eq!(FileType::from_name("q4_k_s"), None);
    let ids: Vec<u32> = FileType::ALL.iter().map(|t| t.id()).collect();
    assert_eq!(ids, [0, 1, 32, 7, 2, 3, 8, 9, 10, 12, 15, 17, 18]);
}
