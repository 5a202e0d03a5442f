//! Smoke tests of the `bench` example (on whatever adapter is there: lavapipe in CI) and of
//! `web-rwkv-gguf synth` feeding it: every field of the report is present and sane. No timing
//! is asserted.
//!
//! The example's own source is compiled in here as a module, so the test runs the code the
//! binary runs (its `main` only parses the arguments and prints `run`'s report).

#[allow(dead_code)]
#[path = "../examples/bench.rs"]
mod bench;

use std::path::PathBuf;
use std::process::Command;

use bench::{Args, Report};
use clap::Parser;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")).join(name);
    assert!(p.exists(), "missing fixture {}", p.display());
    p.display().to_string()
}

fn args(model: &str, extra: &[&str]) -> Args {
    let mut v = vec!["bench", "--model", model];
    v.extend_from_slice(extra);
    Args::try_parse_from(v).unwrap()
}

fn positive(x: f64, what: &str) {
    assert!(x.is_finite() && x > 0.0, "{what}: {x}");
}

/// The JSON output: one line, one object, with every field the table script reads.
fn check_json(r: &Report) -> serde_json::Value {
    let line = serde_json::to_string(r).unwrap();
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for key in [
        "version",
        "model",
        "adapter",
        "load_s",
        "gpu_bytes",
        "weight_bytes",
        "ops_per_step",
        "bandwidth_bytes_s",
        "prefill",
        "decode",
        "batches",
        "profile",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {line}");
    }
    for key in ["name", "backend", "device_type", "driver"] {
        assert!(v["adapter"][key].is_string(), "adapter.{key}: {line}");
    }
    // Whether the tensor-core path ran: its subgroup size, or null (CI's lavapipe has none).
    assert!(
        v["adapter"]["tensor_cores"].is_null() || v["adapter"]["tensor_cores"].is_u64(),
        "adapter.tensor_cores: {line}"
    );
    assert!(v["adapter"].get("tensor_cores").is_some(), "{line}");
    for key in [
        "tok_s",
        "ms_p50",
        "ms_p90",
        "ms_p99",
        "bytes_per_token",
        "floor_tok_s",
        "floor_fraction",
    ] {
        assert!(v["decode"][key].is_number(), "decode.{key}: {line}");
    }
    assert_eq!(v["bandwidth_bytes_s"], 2.77e12);
    v
}

fn check_common(r: &Report) {
    positive(r.load_s, "load_s");
    assert!(r.gpu_bytes > r.weight_bytes && r.weight_bytes > 0);
    assert!(r.ops_per_step > 0);
    let d = &r.decode;
    positive(d.tok_s, "decode tok/s");
    assert!(d.ms_p50 <= d.ms_p90 && d.ms_p90 <= d.ms_p99 && d.ms_p99 <= d.ms_max);
    positive(d.ms_p50, "p50");
    positive(d.unchained_tok_s, "unchained decode tok/s");
    positive(d.gpu_bound_tok_s, "GPU-bound decode tok/s");
    positive(d.checkpointed_tok_s, "checkpointed decode tok/s");
    assert!(d.bytes_per_token > 0 && d.bytes_per_token <= r.weight_bytes);
    let floor = r.bandwidth_bytes_s / d.bytes_per_token as f64;
    assert!((d.floor_tok_s / floor - 1.0).abs() < 1e-9);
    assert!((d.floor_fraction - d.tok_s / d.floor_tok_s).abs() < 1e-9);
    for p in &r.prefill {
        positive(p.tok_s, "prefill tok/s");
        assert!(p.gpu_steps >= 1);
    }
}

#[test]
fn bench_reports_every_measurement_on_a_fixture() {
    let model = fixture("mini-q4_k_m.gguf");
    // The command line parses as typed.
    let typed = args(
        &model,
        &[
            "--prompt",
            "Hello",
            "--tokens",
            "100",
            "--batch",
            "64",
            "--prompt-tokens",
            "2048",
            "--json",
            "--profile",
        ],
    );
    assert_eq!((typed.tokens, typed.json, typed.profile), (100, true, true));
    assert_eq!(
        (typed.batch.clone(), typed.prompt_tokens.clone()),
        (vec![64], vec![2048])
    );

    let a = args(
        &model,
        &[
            "--prompt-tokens",
            "12,40",
            "--chunk",
            "16",
            "--tokens",
            "5",
            "--batch",
            "2,3",
            "--batch-steps",
            "3",
            "--json",
            "--profile",
            "--profile-sequence",
            "1000",
        ],
    );
    let r = bench::run(&a).unwrap();
    check_common(&r);
    let v = check_json(&r);
    assert_eq!(v["model"]["file_type"], "Q4_K_M");
    assert_eq!(v["model"]["n_layer"], 2);
    assert_eq!(v["model"]["n_embd"], 256);
    assert_eq!(v["model"]["vocab"], 4096);
    assert_eq!(r.model.params, 3844608);

    // Both prompts, in chunks of 16 tokens.
    let prompts: Vec<(usize, u32)> = r
        .prefill
        .iter()
        .map(|p| (p.prompt_tokens, p.gpu_steps))
        .collect();
    assert_eq!(prompts, [(12, 1), (40, 3)]);
    assert!(r
        .prefill
        .iter()
        .all(|p| p.requested_tokens == p.prompt_tokens));
    assert_eq!(r.decode.tokens, 5);

    let batches: Vec<(usize, usize)> = r.batches.iter().map(|b| (b.batch, b.steps)).collect();
    assert_eq!(batches, [(2, 3), (3, 3)]);
    for b in &r.batches {
        positive(b.tok_s, "batch tok/s");
        assert!(b.step_ms_p50 <= b.step_ms_p99);
        // The weights are read once per step whatever the batch: the floor per token falls.
        assert!(b.floor_tok_s > r.decode.floor_tok_s);
        assert!(b.bytes_per_step > r.decode.bytes_per_token);
    }

    // One decode token's GPU time by op kind; every dispatch of a step is in one kind.
    match (&r.profile, &r.profile_error) {
        (Some(p), None) => {
            assert!(!p.ops.is_empty());
            let dispatches: usize = p.ops.iter().map(|o| o.dispatches).sum();
            assert_eq!(dispatches, r.ops_per_step);
            let sum: f64 = p.ops.iter().map(|o| o.us).sum();
            assert!((sum - p.total_us).abs() <= 1e-6 * p.total_us.max(1.0));
            assert!(
                p.ops.windows(2).all(|w| w[0].us >= w[1].us),
                "largest first"
            );
            assert!(p.ops.iter().any(|o| o.kind.contains("wkv")));
            // In order, the same ops (every op of the step: fewer than 1000).
            let in_order: usize = p.sequence.iter().map(|o| o.dispatches).sum();
            assert_eq!(in_order, r.ops_per_step);
            assert_eq!(p.sequence[0].kind, "embedding");
            assert!(p.sequence.len() >= p.ops.len());
            // A prompt chunk's too, each op of a kind its summary lists (rounding ops with
            // the activation they round added).
            let chunk = r
                .prefill_profile
                .as_ref()
                .expect("a prompt chunk's profile");
            let count = |ops: &[bench::ProfileOp]| ops.iter().map(|o| o.dispatches).sum::<usize>();
            assert_eq!(count(&chunk.sequence), count(&chunk.ops));
            for op in &chunk.sequence {
                let kind = op.kind.split(' ').next().unwrap_or_default();
                assert!(chunk.ops.iter().any(|o| o.kind == kind), "{}", op.kind);
            }
        }
        // An adapter without timestamp queries says so instead of failing.
        (None, Some(e)) => assert!(!r.adapter.timestamps, "{e}"),
        other => panic!("profile and its error: {other:?}"),
    }

    // The text report names every measurement.
    let text = bench::text(&r);
    for needle in [
        "adapter:",
        "tensor cores o",
        "load:",
        "gpu memory:",
        "ops per step:   ",
        "prefill:        12 tokens",
        "prefill:        40 tokens",
        "decode (b=1):   5 tokens",
        "p50",
        "p99",
        "floor:",
        "decode (b=2):",
        "decode (b=3):",
    ] {
        assert!(text.contains(needle), "{needle}:\n{text}");
    }
}

#[test]
fn bench_uses_the_models_tokenizer_for_a_text_prompt() {
    let a = args(
        &fixture("vocab-q4_k_m.gguf"),
        &["--prompt", "Hello world, hello GPU", "--tokens", "3"],
    );
    let r = bench::run(&a).unwrap();
    check_common(&r);
    assert_eq!(r.prefill.len(), 1);
    assert!(r.prefill[0].prompt_tokens >= 4);
    assert!(r.batches.is_empty() && r.profile.is_none() && r.profile_error.is_none());
    // A time limit stops the decode early but still reports what was done.
    let a = args(
        &fixture("vocab-q4_k_m.gguf"),
        &[
            "--prompt-tokens",
            "4",
            "--tokens",
            "1000",
            "--max-seconds",
            "0",
        ],
    );
    let r = bench::run(&a).unwrap();
    assert_eq!(r.decode.tokens, 1);
    check_common(&r);
    // ... and a prompt after its first chunk.
    let a = args(
        &fixture("vocab-q4_k_m.gguf"),
        &[
            "--prompt-tokens",
            "20",
            "--chunk",
            "8",
            "--tokens",
            "2",
            "--max-seconds",
            "0",
        ],
    );
    let r = bench::run(&a).unwrap();
    let p = &r.prefill[0];
    assert_eq!(
        (p.prompt_tokens, p.requested_tokens, p.gpu_steps),
        (8, 20, 1)
    );
    assert!(bench::text(&r).contains("8 tokens (of 20: out of time)"));
}

#[test]
fn a_synthetic_model_from_the_cli_runs_in_the_bench() {
    let dir = std::env::temp_dir().join(format!("bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("synth-q4_k_m.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_web-rwkv-gguf"))
        .args([
            "synth", "--layers", "2", "--embd", "256", "--type", "q4_k_m",
        ])
        .args(["--seed", "7", "--tokenizer-from"])
        .arg(fixture("vocab-q4_k_m.gguf"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.join("synth-q4_k_m.gguf.partial").exists());

    // llama-quantize's Q4_K_M mix at this shape, as `info` reports it.
    let info = Command::new(env!("CARGO_BIN_EXE_web-rwkv-gguf"))
        .arg("info")
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("(F32 32, F16 16, Q4_K 13, Q6_K 1)"), "{text}");
    assert!(text.contains("vocabulary:    65536"), "{text}");

    let r = bench::run(&args(
        out.to_str().unwrap(),
        &[
            "--prompt",
            "The quick brown fox",
            "--tokens",
            "3",
            "--batch",
            "2",
        ],
    ))
    .unwrap();
    check_common(&r);
    check_json(&r);
    assert_eq!(r.model.file_type, "Q4_K_M");
    assert_eq!(
        (r.model.n_layer, r.model.n_embd, r.model.vocab),
        (2, 256, 65536)
    );
    assert!(r.model.name.starts_with("synthetic-rwkv7"));
    std::fs::remove_dir_all(&dir).ok();
}
