//! Prints the per-position relative error of the CPU reference against a fixture's logits
//! (the prompt run as one batch, like llama.cpp did) and checks the greedy continuation.
//! `cargo run -p rwkv-model --release --example fixture_error -- mini-f16 [exact|llama|decode]`
//! (`decode`: llama.cpp's arithmetic, but one token at a time as llama.cpp decodes, which
//! shows how far llama.cpp's own batch and single-token paths are apart.)
use rwkv_model::{relative_error, CpuModel, Precision};

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
    let read_ids = |what: &str| -> Vec<u32> {
        let path = format!("{dir}/expected/{name}.{what}.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let tokens = read_ids("tokens");
    let bytes = std::fs::read(format!("{dir}/expected/{name}.logits.f32")).unwrap();
    let expected: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let vocab = model.config.vocab_size;
    let mut state = model.new_state();
    let logits = if args.get(2).map(String::as_str) == Some("decode") {
        let step = |t: &u32| model.forward_token(*t, &mut state).unwrap();
        tokens.iter().map(step).collect::<Vec<_>>()
    } else {
        model.forward_sequence(&tokens, &mut state).unwrap()
    };
    let mut worst = 0.0f64;
    for (pos, ours) in logits.iter().enumerate() {
        let err = relative_error(ours, &expected[pos * vocab..(pos + 1) * vocab]);
        worst = worst.max(err);
        print!("{err:.1e} ");
    }
    println!();
    let argmax = |v: &[f32]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b }) as u32;
    let greedy = read_ids("greedy");
    let mut next = argmax(logits.last().unwrap());
    let mut ours = Vec::new();
    for _ in 0..greedy.len() {
        ours.push(next);
        next = argmax(&model.forward_token(next, &mut state).unwrap());
    }
    let same = ours.iter().zip(&greedy).take_while(|(a, b)| a == b).count();
    println!(
        "{name}: worst {worst:.2e} over {} positions; greedy {same}/{} match",
        tokens.len(),
        greedy.len()
    );
}
