//! Property tests: decoding an encoding gives back the input, with the full World vocabulary.

use std::sync::OnceLock;

use proptest::prelude::*;
use rwkv_tokenizer::Tokenizer;

fn world() -> &'static Tokenizer {
    static W: OnceLock<Tokenizer> = OnceLock::new();
    W.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/vocab-q4_k_m.gguf"
        );
        let file = gguf::GgufFile::open(path)
            .unwrap_or_else(|e| panic!("missing or bad test fixture {path}: {e}"));
        Tokenizer::from_gguf(&file).expect("World tokenizer")
    })
}

/// The greedy reference, written the slow and obvious way.
fn naive_encode(t: &Tokenizer, text: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let mut best: Option<(usize, u32)> = None;
        for id in 0..t.vocab_size() as u32 {
            let b = t.token_bytes(id).unwrap();
            if t.is_special(id) || b.is_empty() || !text[pos..].starts_with(b) {
                continue;
            }
            if best.is_none_or(|(len, _)| b.len() > len) {
                best = Some((b.len(), id));
            }
        }
        let (len, id) = best.expect("the World vocab has every byte");
        out.push(id);
        pos += len;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let t = world();
        let ids = t.encode(&bytes);
        prop_assert!(ids.iter().all(|&id| !t.is_special(id)));
        prop_assert_eq!(t.decode(&ids).unwrap(), bytes);
    }

    #[test]
    fn strings_round_trip(s in "\\PC{0,200}") {
        let t = world();
        let ids = t.encode_str(&s);
        prop_assert_eq!(t.decode(&ids).unwrap(), s.as_bytes());
        // Streaming gives the same text, in pieces of whole characters.
        let mut d = t.stream_decoder();
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&d.push(id).unwrap());
        }
        out.push_str(&d.finish());
        prop_assert_eq!(out, s);
    }

    #[test]
    fn stream_equals_lossy_decode(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let t = world();
        let ids = t.encode(&bytes);
        let mut d = t.stream_decoder();
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&d.push(id).unwrap());
        }
        out.push_str(&d.finish());
        prop_assert_eq!(out, String::from_utf8_lossy(&bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matches_naive_greedy(s in "[ a-zA-Z0-9.,'\\n你好世界🙂]{0,40}") {
        let t = world();
        prop_assert_eq!(t.encode_str(&s), naive_encode(t, s.as_bytes()));
    }
}
