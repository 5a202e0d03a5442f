//! Encoding throughput on ~10 MB of English-like text with the full World vocabulary.
//! Run with `cargo bench -p rwkv-tokenizer`. Plain `std::time`, no harness.

use std::hint::black_box;
use std::time::Instant;

use rwkv_tokenizer::Tokenizer;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/vocab-q4_k_m.gguf"
);

const PARAGRAPH: &str = "The history of computing is a story of ideas that took decades to \
mature. Early machines filled whole rooms, consumed enormous amounts of power, and could only \
be programmed by rewiring panels of cables. Engineers worked through the night to keep vacuum \
tubes from failing, while mathematicians argued about what a computer should even be able to \
do. Over time, transistors replaced tubes, integrated circuits replaced transistors, and the \
price of a single operation fell by many orders of magnitude. Today a phone in your pocket is \
millions of times faster than those first machines, yet the basic questions remain: how do we \
describe a problem precisely, how do we make the solution fast, and how do we know that it is \
correct? Students who learn to program still discover, often with surprise, that the computer \
does exactly what it is told, and nothing more. \"Why doesn't it work?\" they ask, and the \
answer, as always, is hidden somewhere in the details (line 42, perhaps, or a missing comma).";

/// ~`target` bytes of text: the paragraph's sentences in pseudo-random order, with occasional
/// newlines and paragraph breaks.
fn english_text(target: usize) -> String {
    let sentences: Vec<&str> = PARAGRAPH
        .split_inclusive(['.', '?', ':'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut out = String::with_capacity(target + 1024);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < target {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (state >> 33) as usize;
        out.push_str(sentences[r % sentences.len()]);
        out.push_str(match r % 17 {
            0 => "\n\n",
            1 => "\n",
            _ => " ",
        });
    }
    out
}

fn main() {
    let t0 = Instant::now();
    let file = gguf::GgufFile::open(FIXTURE).expect("fixture vocab-q4_k_m.gguf is required");
    let tok = Tokenizer::from_gguf(&file).expect("load tokenizer");
    println!(
        "load: {:.1} ms ({} tokens)",
        t0.elapsed().as_secs_f64() * 1e3,
        tok.vocab_size()
    );

    let text = english_text(10 * 1000 * 1000);
    let mb = text.len() as f64 / 1e6;

    // Warm up, and check the result round-trips.
    let ids = tok.encode_str(&text);
    assert_eq!(tok.decode(&ids).unwrap(), text.as_bytes());

    let mut best = f64::INFINITY;
    let mut n_ids = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let ids = tok.encode(black_box(text.as_bytes()));
        let dt = t.elapsed().as_secs_f64();
        n_ids = black_box(ids).len();
        best = best.min(dt);
    }
    println!(
        "encode: {mb:.1} MB -> {n_ids} ids ({:.2} bytes/token) in {:.1} ms: {:.1} MB/s",
        text.len() as f64 / n_ids as f64,
        best * 1e3,
        mb / best
    );

    let t = Instant::now();
    let out = tok.decode(black_box(&ids)).unwrap();
    let dt = t.elapsed().as_secs_f64();
    println!(
        "decode: {} ids in {:.1} ms: {:.1} MB/s",
        ids.len(),
        dt * 1e3,
        out.len() as f64 / 1e6 / dt
    );
}
