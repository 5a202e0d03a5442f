//! The tokenizer against the shared fixtures: the full World vocabulary, the 4096-token mini
//! vocabulary, and the ids of the RWKV reference tokenizer and llama.cpp. Missing fixtures fail.

use std::path::PathBuf;
use std::sync::OnceLock;

use gguf::{GgufFile, GgufWriter, MetadataValue};
use rwkv_tokenizer::{Tokenizer, TokenizerError, UnescapeError};

fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/"
    ))
    .join(name);
    assert!(p.exists(), "missing test fixture {}", p.display());
    p
}

fn load(name: &str) -> Tokenizer {
    let file = GgufFile::open(fixture(name)).unwrap_or_else(|e| panic!("open {name}: {e}"));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("tokenizer of {name}: {e}"))
}

fn world() -> &'static Tokenizer {
    static W: OnceLock<Tokenizer> = OnceLock::new();
    W.get_or_init(|| load("vocab-q4_k_m.gguf"))
}

fn json(name: &str) -> serde_json::Value {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("an id")).unwrap())
        .collect()
}

#[test]
fn world_vocab_shape() {
    let t = world();
    assert_eq!(t.vocab_size(), 65536);
    assert_eq!(t.token_bytes(0), Some(&b"<s>"[..]));
    assert!(t.is_special(0));
    for id in 65530..65536u32 {
        assert!(t.is_special(id), "padding token {id} must not be encodable");
        assert_eq!(t.token_bytes(id).unwrap(), format!("[PAD{id}]").as_bytes());
    }
    assert!(!t.is_special(1));
    assert!(t.covers_all_bytes());
    // The World vocab's single bytes are ids 1..=256 in byte order.
    for b in 0..=255u8 {
        assert_eq!(t.token_bytes(b as u32 + 1), Some(&[b][..]));
        assert_eq!(t.encode(&[b]), vec![b as u32 + 1]);
    }
    assert_eq!(t.token_bytes(65536), None);
}

#[test]
fn reference_ids_from_tokenizer_json() {
    let t = world();
    let cases = json("expected/tokenizer.json");
    let cases = cases.as_array().expect("a list of cases");
    assert!(cases.len() >= 15, "expected 15 cases, got {}", cases.len());
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let expected = ids(&case["ids"]);
        assert_eq!(t.encode_str(text), expected, "encoding {text:?}");
        assert_eq!(t.encode(text.as_bytes()), expected, "encoding {text:?}");
        assert_eq!(t.decode(&expected).unwrap(), text.as_bytes());
        if let Some(llama) = case.get("llama_cpp_ids") {
            // llama.cpp differs only by emitting the control token <s>, which we never produce.
            let llama = ids(llama);
            assert!(llama.contains(&0), "{text:?}");
            assert!(!expected.contains(&0), "{text:?}");
            assert_eq!(t.decode(&llama).unwrap(), text.as_bytes());
        }
    }
}

#[test]
fn vocab_fixture_prompt_ids() {
    let t = world();
    let expected = ids(&json("expected/vocab-q4_k_m.tokens.json"));
    let prompt = "The quick brown fox jumps over the lazy dog. 12345 你好";
    assert_eq!(expected.len(), 16);
    assert_eq!(t.encode_str(prompt), expected);
    assert_eq!(t.decode(&expected).unwrap(), prompt.as_bytes());
}

#[test]
fn mini_fixture_prompt_ids() {
    let t = load("mini-f16.gguf");
    assert_eq!(t.vocab_size(), 4096);
    assert!(t.covers_all_bytes());
    let expected = ids(&json("expected/mini-f16.tokens.json"));
    assert_eq!(expected.len(), 131);
    let bytes = t.decode(&expected).unwrap();
    let text = String::from_utf8(bytes).expect("the mini prompt is valid UTF-8");
    assert!(
        text.is_ascii(),
        "the mini prompt is an English paragraph: {text:?}"
    );
    assert!(text.split_whitespace().count() > 30, "{text:?}");
    assert!(
        text.starts_with("In a quiet village by the sea"),
        "{text:?}"
    );
    assert_eq!(t.encode_str(&text), expected, "re-encoding {text:?}");
    // The mini vocab is the World vocab's first 4096 tokens.
    let w = world();
    for id in 0..4096u32 {
        assert_eq!(t.token_bytes(id), w.token_bytes(id), "token {id}");
    }
    // Every mini model family member shares the prompt.
    for other in ["mini-q4_0", "mini-q8_0", "mini-bf16"] {
        let o = ids(&json(&format!("expected/{other}.tokens.json")));
        assert_eq!(o, expected, "{other}");
    }
}

#[test]
fn stream_decoder_over_world_vocab_matches_decode() {
    let t = world();
    let text = "emoji 🙂🚀 and 你好，世界！ café";
    let ids = t.encode_str(text);
    let mut d = t.stream_decoder();
    let mut out = String::new();
    for &id in &ids {
        let piece = d.push(id).unwrap();
        // Each piece is whole characters, never a replacement.
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        out.push_str(&piece);
        assert!(text.starts_with(&out));
    }
    out.push_str(&d.finish());
    assert_eq!(out, text);
}

fn gguf_with(meta: Vec<(&str, MetadataValue)>) -> GgufFile {
    let mut w = GgufWriter::new();
    w.metadata(
        "general.architecture",
        MetadataValue::String("rwkv7".into()),
    );
    for (k, v) in meta {
        w.metadata(k, v);
    }
    GgufFile::from_bytes(w.to_bytes()).expect("a valid GGUF")
}

fn strings(items: &[&str]) -> MetadataValue {
    MetadataValue::Array(
        items
            .iter()
            .map(|s| MetadataValue::String(s.to_string()))
            .collect(),
    )
}

fn model(name: &str) -> (&'static str, MetadataValue) {
    ("tokenizer.ggml.model", MetadataValue::String(name.into()))
}

#[test]
fn from_gguf_small_vocab() {
    let f = gguf_with(vec![
        model("rwkv"),
        (
            "tokenizer.ggml.tokens",
            strings(&["<s>", "a", r"\n", "ab", r"\xff", r"it\'s", "[PAD6]"]),
        ),
        (
            "tokenizer.ggml.token_type",
            MetadataValue::Array([3, 1, 1, 1, 1, 1, 5].map(MetadataValue::I32).to_vec()),
        ),
    ]);
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.vocab_size(), 7);
    assert_eq!(t.token_bytes(2), Some(&b"\n"[..]));
    assert_eq!(t.token_bytes(4), Some(&[0xffu8][..]));
    assert_eq!(t.encode(b"aab\n\xffit's"), vec![1, 3, 2, 4, 5]);
    assert!(t.is_special(0) && t.is_special(6));
}

#[test]
fn from_gguf_without_token_types_reserves_id_0_and_padding() {
    let f = gguf_with(vec![
        model("rwkv"),
        (
            "tokenizer.ggml.tokens",
            strings(&["<s>", "<s>x", "<", "s", ">", "[PAD5]", "[PAD9]"]),
        ),
    ]);
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert!(t.is_special(0) && t.is_special(5) && !t.is_special(6));
    assert_eq!(t.encode(b"<s>"), vec![2, 3, 4]);
    assert_eq!(t.encode(b"<s>x"), vec![1]);
    assert_eq!(t.encode(b"[PAD9]"), vec![6]);
}

#[test]
fn from_gguf_errors() {
    let err = Tokenizer::from_gguf(&gguf_with(vec![])).unwrap_err();
    assert!(matches!(err, TokenizerError::MissingModel), "{err}");
    assert!(err.to_string().contains("tokenizer.ggml.model"), "{err}");

    let err = Tokenizer::from_gguf(&gguf_with(vec![
        model("llama"),
        ("tokenizer.ggml.tokens", strings(&["a"])),
    ]))
    .unwrap_err();
    assert!(matches!(err, TokenizerError::WrongModel { ref found } if found == "llama"));
    assert!(err.to_string().contains("\"llama\""), "{err}");

    let err = Tokenizer::from_gguf(&gguf_with(vec![model("rwkv")])).unwrap_err();
    assert!(matches!(err, TokenizerError::Gguf(_)), "{err}");
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");

    let err = Tokenizer::from_gguf(&gguf_with(vec![
        model("rwkv"),
        ("tokenizer.ggml.tokens", MetadataValue::Array(vec![])),
    ]))
    .unwrap_err();
    assert!(matches!(err, TokenizerError::EmptyVocab), "{err}");

    let err = Tokenizer::from_gguf(&gguf_with(vec![
        model("rwkv"),
        ("tokenizer.ggml.tokens", strings(&["<s>", "a", r"b\x4"])),
    ]))
    .unwrap_err();
    match &err {
        TokenizerError::BadEscape { id, text, source } => {
            assert_eq!(*id, 2);
            assert_eq!(text, r"b\x4");
            assert!(matches!(
                source,
                UnescapeError::BadHexEscape { offset: 1, .. }
            ));
        }
        other => panic!("expected BadEscape, got {other}"),
    }
    assert!(err.to_string().contains("token 2"), "{err}");

    let err = Tokenizer::from_gguf(&gguf_with(vec![
        model("rwkv"),
        ("tokenizer.ggml.tokens", strings(&["<s>", "a\\"])),
    ]))
    .unwrap_err();
    assert!(
        matches!(err, TokenizerError::BadEscape { id: 1, .. }),
        "{err}"
    );

    let err = Tokenizer::from_gguf(&gguf_with(vec![
        model("rwkv"),
        ("tokenizer.ggml.tokens", strings(&["<s>", "a"])),
        (
            "tokenizer.ggml.token_type",
            MetadataValue::Array(vec![MetadataValue::I32(3)]),
        ),
    ]))
    .unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::TokenTypeCount {
                types: 1,
                tokens: 2
            }
        ),
        "{err}"
    );
}
