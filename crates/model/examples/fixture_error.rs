//! Prints the per-position relative error of the CPU reference against a fixture's logits.
//! `cargo run -p rwkv-model --release --example fixture_error -- mini-f16 [exact|llama]`
use rwkv_model::{CpuModel, Precision};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = &args[1];
    let precision = match args.get(2).map(String::as_str) {
        Some("exact") => Precision::Exact,
        _ => Precision::LlamaCpp,
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures");
    let file = gguf::GgufFile::open(format!("{dir}/{name}.gguf")).unwrap();
    let model = CpuModel::load_with(&file, precision).unwrap();
    let tokens: Vec<u32> = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/expected/{name}.tokens.json")).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(format!("{dir}/expected/{name}.logits.f32")).unwrap();
    let expected: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let vocab = model.config.vocab_size;
    let mut state = model.new_state();
    for (pos, &t) in tokens.iter().enumerate() {
        let ours = model.forward_token(t, &mut state).unwrap();
        let exp = &expected[pos * vocab..(pos + 1) * vocab];
        let diff: f64 = ours
            .iter()
            .zip(exp)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = exp.iter().map(|b| (*b as f64).powi(2)).sum();
        print!("{:.1e} ", (diff / norm).sqrt());
    }
    println!();
}
