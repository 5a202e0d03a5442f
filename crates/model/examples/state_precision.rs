//! What storing the WKV state in 16 bits would cost in accuracy, measured with the CPU
//! reference (llama.cpp's arithmetic): every fixture's prompt decoded token by token with the
//! state kept in f32, then with every layer's WKV state rounded to f16 (or bf16) after each
//! token, as a GPU that stored it so would read it back (or to 16-bit integers with one f32
//! scale per state row of 64 values, `i16 row`; and, as the control, f32 moved by one unit
//! in the last place, which is how much a different summation order changes it). Prints per fixture the worst
//! relative L2 error per position against llama.cpp's logits and the bound the engine's
//! fixture test allows (5e-3, or twice llama.cpp's own decode-versus-batch spread), then how
//! far the 16-bit runs drift from the f32 one over `EXTRA` (default 256) greedy tokens more.
//!
//! `cargo run -p rwkv-model --release --example state_precision [-- mini-f16 ...]`
use rwkv_model::{relative_error, CpuModel, Precision, State};

const FIXTURES: [&str; 6] = [
    "mini-f16",
    "mini-q8_0",
    "mini-q4_0",
    "mini-q4_k_m",
    "mini-q5_k_m",
    "mini-q6_k",
];

#[derive(Clone, Copy, PartialEq)]
enum Storage {
    F32,
    F16,
    Bf16,
    /// Each row of 64 values as i16 codes times one f32 scale (its largest magnitude / 32767).
    I16Row,
    /// The control: f32 with every value moved by one unit in the last place, up or down
    /// (pseudo-randomly), the size of a different summation order's rounding.
    F32Ulp,
}

impl Storage {
    fn round(self, state: &mut State) {
        if self == Storage::F32Ulp {
            let mut seed = 0x9E37_79B9u32;
            for v in state.layers.iter_mut().flat_map(|l| l.wkv.iter_mut()) {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let bits = v.to_bits();
                if *v != 0.0 && v.is_finite() {
                    *v = f32::from_bits(if seed >> 31 == 1 { bits + 1 } else { bits - 1 });
                }
            }
            return;
        }
        if self == Storage::I16Row {
            for row in state.layers.iter_mut().flat_map(|l| l.wkv.chunks_mut(64)) {
                let scale = row.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 32767.0;
                if scale > 0.0 {
                    row.iter_mut()
                        .for_each(|v| *v = (*v / scale).round().clamp(-32767.0, 32767.0) * scale);
                }
            }
            return;
        }
        for layer in &mut state.layers {
            for v in &mut layer.wkv {
                *v = match self {
                    Storage::F32 => *v,
                    Storage::F16 => half::f16::from_f32(*v).to_f32(),
                    Storage::Bf16 => half::bf16::from_f32(*v).to_f32(),
                    Storage::I16Row | Storage::F32Ulp => unreachable!("handled above"),
                };
            }
        }
    }
}

fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b }) as u32
}

/// Logits of `tokens` decoded one at a time from a fresh state stored as `storage`, then of
/// `extra` greedy tokens more (fed from `feed` where given, so that runs compare on the same
/// tokens), with the greedy choices.
fn decode(
    model: &CpuModel,
    tokens: &[u32],
    extra: usize,
    feed: Option<&[u32]>,
    storage: Storage,
) -> (Vec<Vec<f32>>, Vec<u32>) {
    let mut state = model.new_state();
    let mut logits = Vec::new();
    for &t in tokens {
        logits.push(model.forward_token(t, &mut state).expect("forward"));
        storage.round(&mut state);
    }
    let mut chosen = Vec::new();
    for i in 0..extra {
        let greedy = argmax(logits.last().expect("a prompt"));
        chosen.push(greedy);
        let t = feed.map_or(greedy, |f| f[i]);
        logits.push(model.forward_token(t, &mut state).expect("forward"));
        storage.round(&mut state);
    }
    (logits, chosen)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = if args.is_empty() {
        FIXTURES.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    let extra: usize = std::env::var("EXTRA")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures");
    println!(
        "fixture: worst error against llama.cpp's logits over the prompt (f32 / f16 / bf16 / \
         i16 row / f32 +-1 ulp state; bound); then over {extra} greedy tokens more, worst error of the 16-bit \
         runs against the f32 run (fed the f32 run's tokens) and how many greedy tokens match"
    );
    for name in names {
        let file = gguf::GgufFile::open(format!("{dir}/{name}.gguf")).expect("fixture");
        let model = CpuModel::load_with(&file, Precision::LlamaCpp).expect("model");
        let path = format!("{dir}/expected/{name}.tokens.json");
        let tokens: Vec<u32> =
            serde_json::from_str(&std::fs::read_to_string(path).expect("tokens")).expect("ids");
        let bytes = std::fs::read(format!("{dir}/expected/{name}.logits.f32")).expect("logits");
        let expected: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let vocab = model.config.vocab_size;
        let against_llama = |logits: &[Vec<f32>]| {
            logits
                .iter()
                .take(tokens.len())
                .enumerate()
                .map(|(pos, row)| relative_error(row, &expected[pos * vocab..(pos + 1) * vocab]))
                .fold(0.0f64, f64::max)
        };
        let (base, base_tokens) = decode(&model, &tokens, extra, None, Storage::F32);
        let spread = against_llama(&base);
        let bound = (2.0 * spread).max(5e-3);
        let mut line = format!("{name}: prompt {spread:.2e}");
        let mut drift = String::new();
        for storage in [
            Storage::F16,
            Storage::Bf16,
            Storage::I16Row,
            Storage::F32Ulp,
        ] {
            let (logits, _) = decode(&model, &tokens, extra, Some(&base_tokens), storage);
            line += &format!(" / {:.2e}", against_llama(&logits));
            let worst = logits
                .iter()
                .zip(&base)
                .skip(tokens.len())
                .map(|(a, b)| relative_error(a, b))
                .fold(0.0f64, f64::max);
            let (_, own) = decode(&model, &tokens, extra, None, storage);
            let same = own
                .iter()
                .zip(&base_tokens)
                .take_while(|(a, b)| a == b)
                .count();
            let label = match storage {
                Storage::F16 => "f16",
                Storage::Bf16 => "bf16",
                Storage::I16Row => "i16 row",
                _ => "f32 +-1 ulp",
            };
            drift += &format!("; {label} {worst:.2e}, greedy {same}/{extra}");
        }
        println!("{line} (bound {bound:.2e}){drift}");
    }
}
