//! The command-line tool end to end: outputs on the fixtures, and one-line errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")).join(name);
    assert!(p.exists(), "missing fixture {}", p.display());
    p.display().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_web-rwkv-gguf"))
        .args(args)
        .output()
        .expect("run the tool")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// An error is exactly one line on stderr with exit code 1.
fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn info_text_and_json() {
    let model = fixture("mini-q4_k_m.gguf");
    let text = stdout(&run(&["info", &model]));
    assert!(text.contains("architecture:  rwkv7"), "{text}");
    assert!(text.contains("layers:        2"), "{text}");
    assert!(text.contains("Q4_K 13"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["info", &model, "--json"]))).unwrap();
    assert_eq!(json["config"]["n_embd"], 256);
    assert_eq!(json["config"]["n_head"], 4);
    assert_eq!(json["vocab_size"], 4096);
    assert_eq!(json["tensor_types"]["Q6_K"], 1);
    assert_eq!(json["tensor_count"], 62);
}

#[test]
fn tokenize_and_detokenize() {
    let model = fixture("vocab-q4_k_m.gguf");
    let text = "The quick brown fox jumps over the lazy dog. 12345 你好";
    let ids: Vec<u32> =
        serde_json::from_str(&stdout(&run(&["tokenize", "--model", &model, text]))).unwrap();
    let expected: Vec<u32> = serde_json::from_str(
        &std::fs::read_to_string(fixture("expected/vocab-q4_k_m.tokens.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ids, expected);
    let ids_arg = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    assert_eq!(
        stdout(&run(&["detokenize", "--model", &model, &ids_arg])),
        format!("{text}\n")
    );
    let detailed: serde_json::Value = serde_json::from_str(&stdout(&run(&[
        "tokenize", "--model", &model, "--json", "Hello",
    ])))
    .unwrap();
    assert_eq!(detailed[0]["id"], 33155);
    assert_eq!(detailed[0]["text"], "Hello");
}

#[test]
fn logits_on_the_cpu_match_llama_cpp() {
    let model = fixture("vocab-q4_k_m.gguf");
    let out = std::env::temp_dir().join(format!("cli-logits-{}.f32", std::process::id()));
    let out_s = out.display().to_string();
    let text = "The quick brown fox jumps over the lazy dog. 12345 你好";
    run(&[
        "logits",
        "--model",
        &model,
        "--text",
        text,
        "--out",
        &out_s,
        "--backend",
        "cpu",
        "--cpu-precision",
        "llama-cpp",
    ]);
    let ours: Vec<f32> = bytes_to_f32(&std::fs::read(&out).unwrap());
    std::fs::remove_file(&out).ok();
    let expected =
        bytes_to_f32(&std::fs::read(fixture("expected/vocab-q4_k_m.logits.f32")).unwrap());
    assert_eq!(ours.len(), expected.len());
    let diff: f64 = ours
        .iter()
        .zip(&expected)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = expected.iter().map(|b| (*b as f64).powi(2)).sum();
    assert!((diff / norm).sqrt() < 1e-4);
}

fn bytes_to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn errors_are_one_line() {
    let e = one_line_error(&run(&["info", "/no/such/model.gguf"]));
    assert!(e.contains("/no/such/model.gguf"), "{e}");
    let not_gguf = std::env::temp_dir().join(format!("not-gguf-{}.bin", std::process::id()));
    std::fs::write(&not_gguf, b"this is not a gguf file at all").unwrap();
    let e = one_line_error(&run(&["info", &not_gguf.display().to_string()]));
    std::fs::remove_file(&not_gguf).ok();
    assert!(e.contains("not a GGUF file"), "{e}");
    let model = fixture("mini-f16.gguf");
    let e = one_line_error(&run(&["detokenize", "--model", &model, "1,x"]));
    assert!(e.contains("\"x\" is not a token id"), "{e}");
    let e = one_line_error(&run(&["detokenize", "--model", &model, "99999"]));
    assert!(e.contains("99999"), "{e}");
    let out = std::env::temp_dir()
        .join("never-written.f32")
        .display()
        .to_string();
    let e = one_line_error(&run(&[
        "logits", "--model", &model, "--text", "", "--out", &out,
    ]));
    assert!(e.contains("empty"), "{e}");
}
