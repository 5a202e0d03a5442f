//! The CPU reference against llama.cpp's own logits and greedy continuations for every fixture.

use std::path::PathBuf;

use gguf::GgufFile;
use rwkv_model::{relative_error, CpuModel, Precision};

const FIXTURES: [&str; 12] = [
    "mini-f16",
    "mini-bf16",
    "mini-q8_0",
    "mini-q4_0",
    "mini-q4_1",
    "mini-q5_1",
    "mini-q2_k",
    "mini-q3_k_m",
    "mini-q4_k_m",
    "mini-q5_k_m",
    "mini-q6_k",
    "vocab-q4_k_m",
];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

fn read_ids(path: PathBuf) -> Vec<u32> {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn read_logits(path: PathBuf) -> Vec<f32> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
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

fn check_fixture(name: &str) {
    let dir = fixtures_dir();
    let file = GgufFile::open(dir.join(format!("{name}.gguf"))).unwrap();
    let model = CpuModel::load_with(&file, Precision::LlamaCpp).unwrap();
    let vocab = model.config.vocab_size;
    let tokens = read_ids(dir.join(format!("expected/{name}.tokens.json")));
    let expected = read_logits(dir.join(format!("expected/{name}.logits.f32")));
    assert_eq!(
        expected.len(),
        tokens.len() * vocab,
        "{name}: logits file size"
    );

    let mut state = model.new_state();
    let logits = model.forward_sequence(&tokens, &mut state).unwrap();
    let mut worst = 0.0f64;
    for (pos, row) in logits.iter().enumerate() {
        let err = relative_error(row, &expected[pos * vocab..(pos + 1) * vocab]);
        worst = worst.max(err);
        assert!(
            err <= 1e-4,
            "{name}: position {pos}: relative error {err:e} > 1e-4"
        );
    }
    eprintln!(
        "{name}: worst relative error {worst:e} over {} positions",
        tokens.len()
    );

    let greedy = read_ids(dir.join(format!("expected/{name}.greedy.json")));
    let mut next = argmax(logits.last().unwrap());
    let mut ours = Vec::new();
    for _ in 0..greedy.len() {
        ours.push(next);
        next = argmax(&model.forward_token(next, &mut state).unwrap());
    }
    assert_eq!(ours, greedy, "{name}: greedy continuation");
}

#[test]
fn every_fixture_matches_llama_cpp() {
    for name in FIXTURES {
        check_fixture(name);
    }
}

#[test]
fn rwkv6_is_rejected_clearly() {
    let mut w = gguf::GgufWriter::new();
    w.metadata(
        "general.architecture",
        gguf::MetadataValue::String("rwkv6".into()),
    );
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let err = CpuModel::load(&file).err().expect("rwkv6 must be rejected");
    assert!(
        err.to_string().contains("\"rwkv6\" is not supported yet"),
        "{err}"
    );
}
