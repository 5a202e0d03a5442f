//! The GPU engine against llama.cpp's logits (every fixture type), against the CPU reference on
//! a generated model of other dimensions, and its batching, chunking and state control.
//! Runs on any adapter; CI uses lavapipe.

use std::path::PathBuf;

use gguf::GgufFile;
use rwkv_engine::{Engine, EngineOptions, Logits, SlotInput};
use rwkv_gpu::{ContextOptions, GpuContext};
use rwkv_model::synth::{synth_gguf, FileType, SynthOptions};
use rwkv_model::{relative_error, CpuModel, Precision};

mod support;
use support::{context, fixtures};

fn engine(file: &GgufFile, options: EngineOptions) -> Engine {
    Engine::load(context(), file, options, &mut |_, _| {}).unwrap()
}

fn read_json_ids(path: PathBuf) -> Vec<u32> {
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Runs `tokens` through slot 0 and returns the logits after every position.
fn all_logits(engine: &mut Engine, tokens: &[u32]) -> Vec<Vec<f32>> {
    let out = engine
        .step(&[SlotInput {
            slot: 0,
            tokens,
            logits: Logits::All,
        }])
        .unwrap();
    out.into_iter().next().unwrap()
}

/// The last logits of one step of `tokens` on slot 0.
fn last_logits(engine: &mut Engine, tokens: &[u32]) -> Vec<f32> {
    let out = engine
        .step(&[SlotInput {
            slot: 0,
            tokens,
            logits: Logits::Last,
        }])
        .unwrap();
    out[0][0].clone()
}

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

/// Worst per-position error of llama.cpp's single-token path (token by token, as it decodes)
/// against its batch logits in the fixture, computed by the bit-exact CPU reference.
fn llama_cpp_decode_spread(file: &GgufFile, tokens: &[u32], expected: &[f32]) -> f64 {
    let cpu = CpuModel::load_with(file, Precision::LlamaCpp).unwrap();
    let vocab = cpu.config.vocab_size;
    let mut state = cpu.new_state();
    let mut worst = 0.0f64;
    for (pos, &t) in tokens.iter().enumerate() {
        let row = cpu.forward_token(t, &mut state).unwrap();
        worst = worst.max(relative_error(
            &row,
            &expected[pos * vocab..(pos + 1) * vocab],
        ));
    }
    worst
}

/// The GPU against llama.cpp's logits for every fixture.
///
/// The bound is 5e-3 (relative L2 error per position), or twice llama.cpp's own spread where
/// that is wider. llama.cpp rounds activations to 8 bits before quantized products, so the
/// last bit of a sum can move a value across a rounding step; it computed the fixtures' prompt
/// as one batch, and its *own* single-token path (the one generation uses) differs from that
/// batch by up to 1.3e-2 on these tiny models. The spread is measured here with the CPU
/// reference, whose batch path reproduces the fixtures bit for bit (see rwkv-model's tests).
#[test]
fn every_fixture_matches_llama_cpp() {
    // Every fixture is checked and reported before the verdict, so one run shows them all.
    let mut failures = Vec::new();
    for name in FIXTURES {
        let dir = fixtures();
        let file = GgufFile::open(dir.join(format!("{name}.gguf"))).unwrap();
        let tokens = read_json_ids(dir.join(format!("expected/{name}.tokens.json")));
        let bytes = std::fs::read(dir.join(format!("expected/{name}.logits.f32"))).unwrap();
        let expected: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let mut e = engine(
            &file,
            EngineOptions {
                max_slots: 1,
                max_rows: 64,
                max_out: 64,
                llama_cpp_rounding: true,
                ..EngineOptions::default()
            },
        );
        let vocab = e.config.vocab_size;
        let logits = all_logits(&mut e, &tokens);
        assert_eq!(logits.len(), tokens.len());
        let (mut worst, mut worst_pos, mut sum) = (0.0f64, 0, 0.0f64);
        for (pos, row) in logits.iter().enumerate() {
            let err = relative_error(row, &expected[pos * vocab..(pos + 1) * vocab]);
            sum += err;
            if err > worst {
                (worst, worst_pos) = (err, pos);
            }
        }
        let spread = llama_cpp_decode_spread(&file, &tokens, &expected);
        let bound = (2.0 * spread).max(5e-3);
        eprintln!(
            "{name}: worst relative error {worst:.2e} at position {worst_pos} (mean {:.2e}); \
             llama.cpp decode vs batch {spread:.2e}; bound {bound:.2e}",
            sum / logits.len() as f64
        );
        if worst > bound {
            failures.push(format!(
                "{name}: position {worst_pos}: {worst:e} > {bound:e}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn synthetic(n_layer: usize, n_embd: usize, vocab: usize, seed: u64) -> GgufFile {
    let mut o = SynthOptions::new(n_layer, n_embd, vocab);
    o.seed = seed;
    GgufFile::from_bytes(synth_gguf(&o).unwrap().to_bytes()).unwrap()
}

fn sequence(n: usize, vocab: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| {
            (i.wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503)))
                % vocab as u32
        })
        .collect()
}

#[test]
fn generated_model_of_other_shape_matches_cpu_reference() {
    // 3 layers, 8 heads: dimensions the fixtures do not have.
    let file = synthetic(3, 512, 300, 7);
    let cpu = CpuModel::load_with(&file, Precision::Exact).unwrap();
    let tokens = sequence(20, 300, 1);
    let mut state = cpu.new_state();
    let expected = cpu.forward_sequence(&tokens, &mut state).unwrap();
    let mut e = engine(
        &file,
        EngineOptions {
            max_slots: 2,
            max_rows: 8,
            max_out: 8,
            llama_cpp_rounding: false,
            ..EngineOptions::default()
        },
    );
    let ours = all_logits(&mut e, &tokens);
    // (Its steps of 8 tokens take the tensor cores for its 2048-row F16 matrices.)
    let tol = tensor_core_tolerance(1e-4);
    for (pos, (a, b)) in ours.iter().zip(&expected).enumerate() {
        let err = relative_error(a, b);
        assert!(err <= tol, "position {pos}: relative error {err:e}");
    }
    // The GPU state equals the CPU state after the same tokens.
    let gpu_state = e.read_state(0).unwrap();
    let (tol_wkv, tol_shift) = (tensor_core_tolerance(1e-4), tensor_core_tolerance(1e-5));
    for (l, (g, c)) in gpu_state.layers.iter().zip(&state.layers).enumerate() {
        let err = relative_error(&g.wkv, &c.wkv);
        assert!(err < tol_wkv, "layer {l} wkv state: {err:e}");
        let err = relative_error(&g.att_shift, &c.att_shift);
        assert!(err < tol_shift, "layer {l} att shift: {err:e}");
        let err = relative_error(&g.ffn_shift, &c.ffn_shift);
        assert!(err < tol_shift, "layer {l} ffn shift: {err:e}");
    }
    // A step of 1024 tokens: the long-step token mix, whose workgroups then take both of a
    // row's tiles (engine.rs's mix_tiles_per_wg), against the CPU at a few positions.
    let tokens = sequence(1024, 300, 2);
    let mut state = cpu.new_state();
    let expected = cpu.forward_sequence(&tokens, &mut state).unwrap();
    let mut long = engine(
        &file,
        EngineOptions {
            max_slots: 1,
            max_rows: 1024,
            max_out: 1024,
            llama_cpp_rounding: false,
            ..EngineOptions::default()
        },
    );
    let ours = all_logits(&mut long, &tokens);
    assert_eq!(long.last_times().gpu_steps, 1);
    // (A device with tensor cores multiplies such a step's inputs rounded to f16.)
    let tol = tensor_core_tolerance(1e-4);
    for pos in [0, 1, 2, 511, 1022, 1023] {
        let err = relative_error(&ours[pos], &expected[pos]);
        assert!(
            err <= tol,
            "one step: position {pos}: relative error {err:e}"
        );
    }
}

/// The tolerance for logits of steps that may take the tensor-core path: 2e-3 where the
/// device has one (it multiplies inputs rounded to f16), else `exact`.
fn tensor_core_tolerance(exact: f64) -> f64 {
    if context().coop_subgroup_size().is_some() {
        2e-3
    } else {
        exact
    }
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: row count");
    for (pos, (x, y)) in a.iter().zip(b).enumerate() {
        let err = relative_error(x, y);
        assert!(err <= tol, "{what}: position {pos}: relative error {err:e}");
    }
}

#[test]
fn a_batch_equals_separate_runs() {
    let file = synthetic(2, 256, 200, 3);
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| sequence(5 + 3 * i, 200, i as u32)).collect();
    let options = EngineOptions {
        max_slots: 4,
        max_rows: 64,
        max_out: 64,
        llama_cpp_rounding: false,
        ..EngineOptions::default()
    };
    let mut separate = Vec::new();
    for p in &prompts {
        let mut e = engine(&file, options.clone());
        separate.push(all_logits(&mut e, p));
    }
    let mut e = engine(&file, options);
    let inputs: Vec<SlotInput> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| SlotInput {
            slot: 3 - i,
            tokens: p,
            logits: Logits::All,
        })
        .collect();
    let batched = e.step(&inputs).unwrap();
    // The batch's 38 tokens may take the tensor-core path, which rounds its inputs to f16
    // (the separate prompts are too short for it); the states it leaves differ as much.
    let tol = tensor_core_tolerance(1e-5);
    for (i, (b, s)) in batched.iter().zip(&separate).enumerate() {
        assert_close(b, s, tol, &format!("prompt {i}"));
    }
    // A decode step mixing all four slots continues each sequence independently.
    let next: Vec<u32> = vec![11, 12, 13, 14];
    let step: Vec<SlotInput> = (0..4)
        .map(|i| SlotInput {
            slot: 3 - i,
            tokens: &next[i..i + 1],
            logits: Logits::Last,
        })
        .collect();
    let decoded = e.step(&step).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let mut e1 = engine(
            &file,
            EngineOptions {
                max_slots: 1,
                max_rows: 64,
                max_out: 64,
                llama_cpp_rounding: false,
                ..EngineOptions::default()
            },
        );
        let mut full = p.clone();
        full.push(next[i]);
        let alone = all_logits(&mut e1, &full);
        assert_close(
            &decoded[i],
            &alone[alone.len() - 1..],
            tol,
            &format!("decode {i}"),
        );
    }
}

#[test]
fn a_batch_of_many_one_token_sequences_matches_separate_runs() {
    // 20 sequences advancing one token per step together: from 17 rows such a step runs
    // WKV-7 in three parts (prep, scan, post) and the second LoRA products as matrix
    // products; each sequence must get what its own one-token steps give.
    let file = synthetic(2, 256, 200, 5);
    let n = 20;
    let options = |slots| EngineOptions {
        max_slots: slots,
        max_rows: 64,
        max_out: 64,
        llama_cpp_rounding: false,
        ..EngineOptions::default()
    };
    let seqs: Vec<Vec<u32>> = (0..n).map(|i| sequence(3, 200, 11 * i as u32)).collect();
    let batched = batch_steps(&mut engine(&file, options(n)), &seqs);
    // The batch may take the tensor-core path, which rounds its inputs to f16.
    let tol = tensor_core_tolerance(1e-5);
    for (i, s) in seqs.iter().enumerate() {
        let mut alone = engine(&file, options(1));
        let logits: Vec<Vec<f32>> = s
            .iter()
            .map(|&tok| alone.step(&[last(0, &[tok])]).unwrap().remove(0).remove(0))
            .collect();
        assert_close(&batched[i], &logits, tol, &format!("sequence {i}"));
    }
}

#[test]
fn chunked_prefill_matches_token_by_token() {
    let file = synthetic(2, 256, 200, 5);
    let tokens = sequence(70, 200, 9);
    let options = |max_rows| EngineOptions {
        max_slots: 1,
        max_rows,
        max_out: 8,
        llama_cpp_rounding: false,
        ..EngineOptions::default()
    };
    let mut e = engine(&file, options(64));
    let one_by_one: Vec<Vec<f32>> = tokens
        .iter()
        .map(|t| last_logits(&mut e, std::slice::from_ref(t)))
        .collect();
    for chunk in [1, 7, 64] {
        let mut e = engine(&file, options(chunk));
        // max_out 8 < 70 tokens: the step is split by outputs too.
        let all = all_logits(&mut e, &tokens);
        // (Steps of 5 or more tokens take the tensor cores for F16 matrices of 1024 rows.)
        let tol = tensor_core_tolerance(1e-5);
        assert_close(&all, &one_by_one, tol, &format!("chunk {chunk}"));
        assert!(e.last_times().gpu_steps as usize >= tokens.len().div_ceil(chunk.min(8)));
    }
    // Only the last logits: steps of up to 64 (or 37) tokens, so the WKV scan walks long
    // chunks and carries the state across steps (the tokens after the prompt read it back).
    // Such steps take the tensor-core path where the device has one, which rounds the
    // products' inputs to f16 (1.7e-4 on an H200).
    let tol = tensor_core_tolerance(1e-5);
    for chunk in [64, 37] {
        let mut e = engine(&file, options(chunk));
        let (prompt, rest) = tokens.split_at(60);
        let mut got = vec![last_logits(&mut e, prompt)];
        for t in rest {
            got.push(last_logits(&mut e, std::slice::from_ref(t)));
        }
        assert_close(
            &got,
            &one_by_one[59..],
            tol,
            &format!("last logits, chunk {chunk}"),
        );
    }
}

#[test]
fn long_steps_match_short_ones() {
    // A 600-token prompt in one step (its Q8_K roundings take main_q8k, four blocks per
    // workgroup, from ROUND_WIDE_ROWS = 64 rows) against the same prompt in steps of 64,
    // with llama.cpp's roundings (Q4_K products: Q8_K inputs; F16 LoRAs: f16) and without,
    // then a few tokens after it. Where an ulp moves an 8-bit code, logits
    // move by up to ~1e-2 (as in one_token_steps_match_the_cpu_reference), which happens
    // here only where the long step's products take tensor cores and the short ones not;
    // otherwise they agree to f32 rounding. (Both take the token-mix kernel of 256-column
    // tiles: the long step's would take token_mix_long.wgsl, whose norm sums, in another
    // order, can move an 8-bit code; long_step_token_mix_matches_the_tile_kernel tests it.)
    let file = support::fixture("mini-q4_k_m.gguf");
    let tokens = sequence(603, 4096, 17);
    let (prompt, rest) = tokens.split_at(600);
    for rounding in [false, true] {
        let run = |max_rows: usize| {
            let mut e = engine(
                &file,
                EngineOptions {
                    max_slots: 1,
                    max_rows,
                    max_out: 1,
                    llama_cpp_rounding: rounding,
                    token_mix_long_from: 0,
                    ..EngineOptions::default()
                },
            );
            let mut got = vec![last_logits(&mut e, prompt)];
            assert_eq!(
                e.last_times().gpu_steps as usize,
                600usize.div_ceil(max_rows)
            );
            for t in rest {
                got.push(last_logits(&mut e, std::slice::from_ref(t)));
            }
            got
        };
        let (long, short) = (run(640), run(64));
        let tol = tensor_core_tolerance(1e-5);
        let errors: Vec<f64> = long
            .iter()
            .zip(&short)
            .map(|(a, b)| relative_error(a, b))
            .collect();
        eprintln!("rounding {rounding}: relative errors {errors:?}");
        let worst = errors.iter().fold(0.0f64, |a, &b| a.max(b));
        if rounding && context().coop_subgroup_size().is_some() {
            // The products take the tensor cores (f16 inputs) in steps tiled differently:
            // the 8-bit codes of later layers' inputs can differ (on an H200: 0.9-1.1e-2
            // apart at all four positions, 0.3-2.5e-4 without the 8-bit roundings).
            assert!(worst < 2e-2, "{errors:?}");
        } else {
            assert!(worst <= tol, "{errors:?}");
        }
    }
}

#[test]
fn deferred_relu_square_gives_the_same_logits() {
    // The channel mix's key product storing plain sums in steps longer than every few-token
    // matvec, their ReLU² squared by the rounding op the value product reads
    // (EngineOptions::defer_relu_square), against the key's ReLU² epilogue: the same
    // operations on the same values, so the same logits bit for bit. A step of 48 rows
    // (deferred), then steps of 5 rows and 1 (not). It fails if the rounding op skips the
    // ReLU² or squares it in the wrong steps.
    let file = support::fixture("mini-q4_k_m.gguf");
    let tokens = sequence(59, 4096, 23);
    let run = |defer: bool| {
        let mut e = engine(
            &file,
            EngineOptions {
                max_slots: 1,
                max_rows: 48,
                max_out: 1,
                defer_relu_square: defer,
                ..EngineOptions::default()
            },
        );
        vec![
            last_logits(&mut e, &tokens[..48]),
            last_logits(&mut e, &tokens[48..53]),
            last_logits(&mut e, &tokens[53..58]),
            last_logits(&mut e, &tokens[58..]),
        ]
    };
    let (deferred, epilogue) = (run(true), run(false));
    for (i, (a, b)) in deferred.iter().zip(&epilogue).enumerate() {
        let same = a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "step {i}: relative error {}", relative_error(a, b));
    }
}

#[test]
fn state_save_load_and_slot_control() {
    let file = synthetic(2, 256, 200, 11);
    let (a, b) = (sequence(9, 200, 1), sequence(6, 200, 2));
    let options = EngineOptions {
        max_slots: 3,
        max_rows: 16,
        max_out: 16,
        llama_cpp_rounding: false,
        ..EngineOptions::default()
    };
    let mut e = engine(&file, options.clone());
    let run = |e: &mut Engine, slot: usize, tokens: &[u32]| {
        e.step(&[SlotInput {
            slot,
            tokens,
            logits: Logits::All,
        }])
        .unwrap()
        .remove(0)
    };
    run(&mut e, 0, &a);
    let saved = e.read_state(0).unwrap();
    let direct = run(&mut e, 0, &b);

    // Save to a file, load into a fresh engine, continue.
    let path = std::env::temp_dir().join(format!("rwkv-state-{}.safetensors", std::process::id()));
    saved.save(&path, &e.config).unwrap();
    let loaded = rwkv_model::State::load(&path, &e.config).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(loaded, saved);
    let mut fresh = engine(&file, options.clone());
    fresh.write_state(2, &loaded).unwrap();
    assert_close(
        &run(&mut fresh, 2, &b),
        &direct,
        0.0,
        "continued after load",
    );

    // Copy a slot, reset a slot.
    fresh.write_state(0, &saved).unwrap();
    fresh.copy_slot(0, 1).unwrap();
    assert_close(
        &run(&mut fresh, 1, &b),
        &direct,
        0.0,
        "continued after copy",
    );
    fresh.reset(1).unwrap();
    let zero = fresh.read_state(1).unwrap();
    assert!(zero.layers.iter().all(|l| l.wkv.iter().all(|&v| v == 0.0)));
    // The same options: a step's products are split by its capacity (the tensor-core path
    // takes this 9-token step where the device has it), and bit-identical results need the
    // same sums.
    let mut clean = engine(&file, options);
    assert_close(
        &run(&mut fresh, 1, &a),
        &run(&mut clean, 0, &a),
        0.0,
        "after reset",
    );

    // Bad requests are errors, not panics.
    assert!(fresh.read_state(3).is_err());
    assert!(fresh
        .step(&[SlotInput {
            slot: 0,
            tokens: &[200],
            logits: Logits::Last
        }])
        .is_err());
    let twice = [
        SlotInput {
            slot: 0,
            tokens: &a,
            logits: Logits::Last,
        },
        SlotInput {
            slot: 0,
            tokens: &b,
            logits: Logits::Last,
        },
    ];
    assert!(fresh.step(&twice).is_err());
    let mut other = rwkv_model::State::new(&synthetic_config(1, 256));
    other.layers.truncate(1);
    assert!(fresh.write_state(0, &other).is_err());
}

fn synthetic_config(n_layer: usize, n_embd: usize) -> rwkv_model::Rwkv7Config {
    let file = synthetic(n_layer, n_embd, 100, 1);
    rwkv_model::Rwkv7Config::from_gguf(&file).unwrap()
}

#[test]
fn clear_errors_for_what_cannot_run() {
    // An adapter that does not exist.
    let err = GpuContext::new(&ContextOptions {
        adapter: Some("no-such-gpu-xyz".into()),
    })
    .err()
    .expect("no adapter by that name");
    assert!(err.to_string().contains("no-such-gpu-xyz"), "{err}");

    // A state too large for the device (more than any buffer can hold).
    let file = synthetic(1, 256, 100, 2);
    let err = Engine::load(
        context(),
        &file,
        EngineOptions {
            max_slots: 1 << 24,
            ..EngineOptions::default()
        },
        &mut |_, _| {},
    )
    .err()
    .expect("a state larger than the device allows");
    assert!(
        err.to_string().contains("more than the device allows"),
        "{err}"
    );

    // A tensor type the engine cannot compute with names the tensor.
    let mut o = SynthOptions::new(1, 256, 100);
    o.seed = 4;
    let bytes = synth_gguf(&o).unwrap().to_bytes();
    let mut w = gguf::GgufWriter::new();
    let src = GgufFile::from_bytes(bytes).unwrap();
    for (k, v) in src.metadata() {
        w.metadata(k.clone(), v.clone());
    }
    for t in src.tensors() {
        if t.name == "blk.0.time_mix_key.weight" {
            // 256x256 values of IQ2_XXS: 256 blocks of 66 bytes.
            w.tensor(
                t.name.clone(),
                &t.dims,
                gguf::GgmlType::IQ2_XXS,
                vec![0; 256 * 66],
            );
        } else {
            w.tensor(t.name.clone(), &t.dims, t.ty, src.tensor_bytes(t).to_vec());
        }
    }
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let err = Engine::load(context(), &file, EngineOptions::default(), &mut |_, _| {})
        .err()
        .expect("IQ2_XXS is not supported");
    let msg = err.to_string();
    assert!(
        msg.contains("blk.0.time_mix_key.weight") && msg.contains("IQ2_XXS"),
        "{msg}"
    );
}

/// The engine records each step's commands ahead, during the step before, for a step of the
/// same shape; interleaving shapes (decode, a prompt on another slot, decode again) must give
/// the logits of uninterrupted runs, and decode steps of one shape must keep advancing.
#[test]
fn interleaved_step_shapes_match_uninterrupted_runs() {
    let file = synthetic(2, 256, 200, 11);
    let options = EngineOptions {
        max_slots: 2,
        max_rows: 64,
        max_out: 64,
        llama_cpp_rounding: false,
        ..EngineOptions::default()
    };
    let a = sequence(12, 200, 1);
    let b = sequence(9, 200, 2);
    let mut reference_a = engine(&file, options.clone());
    let want_a = all_logits(&mut reference_a, &a);
    let mut reference_b = engine(&file, options.clone());
    let want_b = all_logits(&mut reference_b, &b);

    let mut e = engine(&file, options);
    let mut got_a = Vec::new();
    // Slot 0 one token at a time; after its fourth token, slot 1's whole prompt in one step.
    // (The references' whole-prompt steps take the tensor cores where the device has them.)
    let tol = tensor_core_tolerance(1e-5);
    for (i, t) in a.iter().enumerate() {
        got_a.push(e.step(&[last(0, std::slice::from_ref(t))]).unwrap()[0][0].clone());
        if i == 3 {
            let out = e.step(&[last(1, &b)]).unwrap();
            assert_close(&out[0], &want_b[b.len() - 1..], tol, "slot 1 prompt");
        }
    }
    assert_close(&got_a, &want_a, tol, "slot 0 token by token");
}

#[test]
fn a_step_mixing_one_token_and_longer_chunks_matches_separate_runs() {
    // One step with chunks of 1, 10 and 1 tokens: the several-token path (per-token inputs,
    // the row-parallel scan, per-token outputs) runs every chunk, the one-token ones with
    // the single-token LoRA lanes, as they would alone. (f32 activations: with llama.cpp's
    // rounding, the scan's summation order, which differs from the one-token kernel's, can
    // move an activation by one f16 step.)
    let file = synthetic(2, 256, 200, 13);
    let options = EngineOptions {
        max_slots: 3,
        max_rows: 64,
        max_out: 64,
        llama_cpp_rounding: false,
        ..EngineOptions::default()
    };
    let prompts = [
        sequence(6, 200, 4),
        sequence(10, 200, 5),
        sequence(1, 200, 6),
    ];
    let want: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| all_logits(&mut engine(&file, options.clone()), p))
        .collect();
    let mut e = engine(&file, options);
    // Slot 0's first five tokens alone (logits of the first four unused here).
    e.step(&[last(0, &prompts[0][..5])]).unwrap();
    let inputs: Vec<SlotInput> = [
        (0, &prompts[0][5..]),
        (1, &prompts[1][..]),
        (2, &prompts[2][..]),
    ]
    .into_iter()
    .map(|(slot, tokens)| SlotInput {
        slot,
        tokens,
        logits: Logits::All,
    })
    .collect();
    let got = e.step(&inputs).unwrap();
    // Steps of 9 tokens or more take the tensor cores where the device has them.
    let tol = tensor_core_tolerance(1e-5);
    assert_close(&got[0], &want[0][5..], tol, "slot 0 (one token)");
    assert_close(&got[1], &want[1], tol, "slot 1 (ten tokens)");
    assert_close(&got[2], &want[2], tol, "slot 2 (one token)");
}

#[test]
fn matrix_form_scan_matches_the_token_by_token_scan() {
    // Chunks of `scan_chunked_from` tokens or more take the WKV scan in matrix form, sub-chunk
    // by sub-chunk (wkv7_chunked.wgsl): every position's logits and the tokens after them
    // (the state it leaves) against the token-by-token scan. Lengths with a short last
    // sub-chunk, one sub-chunk, one short of a sub-chunk; then one step with two long chunks
    // (sub-chunks numbered across chunks) between two short ones (left to the other scan).
    // Where steps take the tensor cores, the scans' last-bit differences move f16 roundings
    // of the products' inputs, hence the wider tolerance there.
    let tol = tensor_core_tolerance(1e-5);
    let file = support::fixture("mini-q4_k_m.gguf");
    let options = |from: u32| EngineOptions {
        max_slots: 4,
        max_rows: 256,
        max_out: 256,
        llama_cpp_rounding: false,
        scan_chunked_from: from,
        ..EngineOptions::default()
    };
    let worst = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| relative_error(a, b))
            .fold(0.0f64, f64::max)
    };
    for len in [150usize, 33, 16, 15, 5] {
        let tokens = sequence(len + 3, 4096, 23 + len as u32);
        let (prompt, rest) = tokens.split_at(len);
        let run = |from: u32| {
            let mut e = engine(&file, options(from));
            let mut got = all_logits(&mut e, prompt);
            for t in rest {
                got.push(last_logits(&mut e, std::slice::from_ref(t)));
            }
            got
        };
        let err = worst(&run(4), &run(0));
        eprintln!("{len} tokens: worst relative error {err:e}");
        assert!(err < tol, "{len} tokens: {err:e}");
    }
    let prompts: Vec<Vec<u32>> = [3usize, 70, 2, 41]
        .iter()
        .enumerate()
        .map(|(i, &n)| sequence(n, 4096, 90 + i as u32))
        .collect();
    let run = |from: u32| {
        let mut e = engine(&file, options(from));
        let mut got = e.step(&every_position(&prompts)).unwrap();
        // One more token each, from the states the step left.
        let next: Vec<u32> = (0..4).collect();
        let inputs: Vec<SlotInput> = (0..4).map(|i| last(i, &next[i..i + 1])).collect();
        for (i, out) in e.step(&inputs).unwrap().into_iter().enumerate() {
            got[i].extend(out);
        }
        got
    };
    let (chunked, walked) = (run(40), run(0));
    for (slot, (a, b)) in chunked.iter().zip(&walked).enumerate() {
        let err = worst(a, b);
        eprintln!("slot {slot} of the mixed step: worst relative error {err:e}");
        assert!(err < tol, "slot {slot}: {err:e}");
    }
}

#[test]
fn long_step_token_mix_matches_the_tile_kernel() {
    // Steps of `token_mix_long_from` rows or more (here 17) take token_mix_long.wgsl for the
    // attention's mix (a workgroup per row) where its targets are rounded to 8 bits and the
    // width allows it, instead of the kernel of 256-column tiles. On a one-layer model six
    // Q8_K blocks wide (192 threads of two vec4s each, so three 64-thread blocks at each of
    // the two), with Q8_K (Q4_K_M) and Q8_0 roundings: a prompt in two steps (the second
    // step's first row reads the shift state the first saved), a step of three chunks (one
    // continuing the prompt), then one-token steps. The two kernels differ only in the order
    // of the norm sums: the shift state each saves (the normalized row) agrees to f32
    // rounding, but an ulp can move an 8-bit code (on lavapipe ~1e-2 at most positions
    // after the first), so the logits of each are held to the CPU reference with llama.cpp's
    // roundings, the long kernel's no further from it than the tile kernel's, give or take a
    // quarter.
    let prompt = sequence(40, 300, 5);
    let chunks: Vec<Vec<u32>> = (0..3)
        .map(|i| sequence(3 + 5 * i, 300, 40 + i as u32))
        .collect();
    let after = [3u32, 99];
    for file_type in [FileType::Q4_K_M, FileType::Q8_0] {
        let mut o = SynthOptions::new(1, 1536, 300);
        o.file_type = file_type;
        o.seed = 29;
        let file = GgufFile::from_bytes(synth_gguf(&o).unwrap().to_bytes()).unwrap();
        let run = |long: bool| {
            let mut e = engine(
                &file,
                EngineOptions {
                    max_slots: 3,
                    max_rows: 64,
                    max_out: 64,
                    llama_cpp_rounding: true,
                    token_mix_long_from: if long { 17 } else { 0 },
                    ..EngineOptions::default()
                },
            );
            let mut got = all_logits(&mut e, &prompt[..20]);
            let shift = e.read_state(0).unwrap().layers[0].att_shift.clone();
            got.extend(all_logits(&mut e, &prompt[20..]));
            got.extend(
                e.step(&every_position(&chunks))
                    .unwrap()
                    .into_iter()
                    .flatten(),
            );
            for t in after {
                got.push(last_logits(&mut e, &[t]));
            }
            (got, shift)
        };
        let ((long, long_shift), (tiles, tile_shift)) = (run(true), run(false));
        let what = format!("{file_type:?}");
        let err = relative_error(&long_shift, &tile_shift);
        assert!(err < 1e-6, "{what}: shift state {err:e}");
        // The same inputs on the CPU: slot 0 (the prompt, chunk 0, the last tokens), then
        // chunks 1 and 2 from fresh states.
        let cpu = CpuModel::load_with(&file, Precision::LlamaCpp).unwrap();
        let mut state = cpu.new_state();
        let mut want = cpu.forward_sequence(&prompt, &mut state).unwrap();
        want.extend(cpu.forward_sequence(&chunks[0], &mut state).unwrap());
        let mut last = Vec::new();
        for &t in &after {
            last.push(cpu.forward_token(t, &mut state).unwrap());
        }
        for chunk in &chunks[1..] {
            want.extend(cpu.forward_sequence(chunk, &mut cpu.new_state()).unwrap());
        }
        want.extend(last);
        assert_eq!(long.len(), want.len());
        let against = |got: &[Vec<f32>]| -> (f64, f64) {
            let errors: Vec<f64> = got
                .iter()
                .zip(&want)
                .map(|(a, b)| relative_error(a, b))
                .collect();
            let worst = errors.iter().fold(0.0f64, |a, &b| a.max(b));
            (worst, errors.iter().sum::<f64>() / errors.len() as f64)
        };
        let ((worst, mean), (tile_worst, tile_mean)) = (against(&long), against(&tiles));
        eprintln!(
            "{what}: shift state {err:.1e} from the tile kernel's; logits against the CPU, \
             worst / mean {worst:.2e} / {mean:.2e} (tile kernel {tile_worst:.2e} / \
             {tile_mean:.2e})"
        );
        assert!(worst < 2e-2 && mean <= 1.25 * tile_mean + 1e-6, "{what}");
    }
}

/// The logits of sequences `seqs` (sequence i in slot i, all of one length) advancing one
/// token per step together: per sequence, per token.
fn batch_steps(e: &mut Engine, seqs: &[Vec<u32>]) -> Vec<Vec<Vec<f32>>> {
    let mut batched = vec![Vec::new(); seqs.len()];
    for t in 0..seqs.first().map_or(0, Vec::len) {
        let inputs: Vec<SlotInput> = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| last(i, &s[t..t + 1]))
            .collect();
        for (i, mut out) in e.step(&inputs).unwrap().into_iter().enumerate() {
            batched[i].push(out.remove(0));
        }
    }
    batched
}

fn last(slot: usize, tokens: &[u32]) -> SlotInput<'_> {
    SlotInput {
        slot,
        tokens,
        logits: Logits::Last,
    }
}

/// Sequence i of `seqs` in slot i, every position's logits wanted.
fn every_position(seqs: &[Vec<u32>]) -> Vec<SlotInput<'_>> {
    seqs.iter()
        .enumerate()
        .map(|(slot, tokens)| SlotInput {
            slot,
            tokens,
            logits: Logits::All,
        })
        .collect()
}

/// Steps of at least `lora2_from` tokens compute the second LoRA products of the time mix
/// with the matrix kernels (op `time_mix_lora2`, then the WKV kernels' `_pre` entry points),
/// shorter ones inside the WKV kernels: both give the same logits, for a step of several
/// prompts (chunk path), a batch of one-token chunks and a single token (one-token kernel;
/// with `lora2_from` 1 its products are matvecs), with f32 activations and with llama.cpp's
/// rounding (which rounds the hidden vectors before the products).
#[test]
fn lora_second_products_as_matrix_products_match_the_wkv_kernel() {
    let file = support::fixture("mini-f16.gguf");
    let tokens = read_json_ids(fixtures().join("expected/mini-f16.tokens.json"));
    let prompts = [
        &tokens[..24],
        &tokens[24..40],
        &tokens[40..50],
        &tokens[50..52],
    ];
    let next = [tokens[60], tokens[61], tokens[62], tokens[63]];
    for rounding in [false, true] {
        let run = |lora2_from: u32| -> Vec<Vec<Vec<f32>>> {
            let mut e = engine(
                &file,
                EngineOptions {
                    max_slots: 4,
                    max_rows: 64,
                    max_out: 64,
                    llama_cpp_rounding: rounding,
                    lora2_from: Some(lora2_from),
                    ..EngineOptions::default()
                },
            );
            let all: Vec<SlotInput> = (0..4)
                .map(|slot| SlotInput {
                    slot,
                    tokens: prompts[slot],
                    logits: Logits::All,
                })
                .collect();
            let mut out = e.step(&all).unwrap();
            let batch: Vec<SlotInput> = (0..4).map(|s| last(s, &next[s..s + 1])).collect();
            out.extend(e.step(&batch).unwrap());
            out.extend(e.step(&[last(0, &next[1..2])]).unwrap());
            out
        };
        // The two paths sum in different orders: 4e-7 apart in f32 on lavapipe; with
        // rounding, a sum that moves across an f16 step of an activation moves the logits by
        // 4e-4 here. The tensor-core path (from 9 tokens where the device has it) rounds the
        // products' inputs to f16. Leaving out any one of the four products moved some
        // output by 8e-3 to 9e-2 (measured on lavapipe).
        let tol = if rounding {
            2e-3
        } else {
            tensor_core_tolerance(1e-5)
        };
        let exact = run(0);
        for lora2_from in [1, 4] {
            let got = run(lora2_from);
            for (i, (g, x)) in got.iter().zip(&exact).enumerate() {
                let what = format!("rounding {rounding}, lora2_from {lora2_from}, output {i}");
                assert_close(g, x, tol, &what);
            }
        }
    }
}

#[test]
fn kernels_build_with_and_without_subgroups() {
    // The roundings' maximum search has a subgroup version and a workgroup-tree one (what a
    // device without subgroups runs): both must pass wgpu's validation here (a failure
    // panics in wgpu's error handler). The engine tests above run the one this device uses.
    let ctx = context();
    for subgroups in [false, ctx.has_subgroups()] {
        let kernels = rwkv_engine::kernels::Kernels::new(
            &ctx.device,
            [32, 32, 32, 32],
            None,
            subgroups,
            0,
            Some(rwkv_engine::kernels::MixLongShape {
                threads: 64,
                per_thread: 3,
            }),
        );
        drop(kernels);
    }
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("device lost");
}

#[test]
fn weight_bytes_read_count_each_weight_once() {
    // The second LoRA matrices are on the GPU twice (transposed for the WKV kernels, as
    // matrices for long steps), and the first ones too where the device has tensor cores
    // (stacked for one product); what a step reads counts them once, so it comes to about
    // the file's tensor bytes (the per-channel vectors are stored as f32 either way; here
    // read is 0.4% under them, held 1.5% over).
    let file = support::fixture("mini-f16.gguf");
    let e = engine(&file, EngineOptions::default());
    let in_file: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    let (read, held) = (e.weight_bytes_read(), e.weight_bytes());
    assert!(read < held, "read {read}, held {held}");
    let diff = read.abs_diff(in_file);
    assert!(diff * 100 < in_file, "read {read}, file tensors {in_file}");
}

#[test]
fn one_token_steps_match_the_cpu_reference_with_llama_cpp_rounding() {
    one_token_steps_match_the_cpu_reference(false);
}

#[test]
fn persistent_layer_tails_match_the_cpu_reference_with_llama_cpp_rounding() {
    // The same with each layer's tail (output projection, channel mix) as one persistent
    // dispatch (on a CPU adapter its grid is one workgroup; the device runs check more).
    one_token_steps_match_the_cpu_reference(true);
}

fn one_token_steps_match_the_cpu_reference(persistent: bool) {
    // Decode (one token per step) takes the one-token matvecs, which read inputs rounded
    // like llama.cpp's (Q8_K codes written by the token mix or quantized once per step, Q8_0
    // roundings in the matvec): against the CPU reference with the same roundings, token by
    // token. Most positions agree to f32 rounding (the same 8-bit codes); where an f32
    // difference moves one code across a rounding step the logits differ by up to ~1e-2 for a
    // few positions, as llama.cpp's decode and batch runs do (every_fixture_matches_llama_cpp).
    // (Not Q4_1 and Q5_1: ggml's Q8_1 input rounds its sum to f16, which the GPU does not.
    // Not Q2_K: its first positions differ by ~1e-2 from the reference with the direct and
    // the staging kernels alike, which agree with each other.)
    for name in [
        "mini-q4_k_m",
        "mini-q6_k",
        "mini-q8_0",
        "mini-q4_0",
        "mini-q5_k_m",
        "mini-q3_k_m",
        "mini-f16",
    ] {
        let file = GgufFile::open(fixtures().join(format!("{name}.gguf"))).unwrap();
        let tokens = read_json_ids(fixtures().join(format!("expected/{name}.tokens.json")));
        let tokens = &tokens[..tokens.len().min(24)];
        let cpu = CpuModel::load_with(&file, Precision::LlamaCpp).unwrap();
        let mut state = cpu.new_state();
        let mut e = engine(
            &file,
            EngineOptions {
                max_slots: 1,
                max_rows: 8,
                max_out: 1,
                llama_cpp_rounding: true,
                persistent,
                ..EngineOptions::default()
            },
        );
        let mut errors = Vec::new();
        for &t in tokens {
            let want = cpu.forward_token(t, &mut state).unwrap();
            let got = e
                .step(&[SlotInput {
                    slot: 0,
                    tokens: &[t],
                    logits: Logits::Last,
                }])
                .unwrap();
            errors.push(relative_error(&got[0][0], &want));
        }
        let exact = errors.iter().filter(|&&e| e < 1e-5).count();
        let worst = errors.iter().fold(0.0f64, |a, &b| a.max(b));
        if name == "mini-f16" {
            // No 8-bit codes to flip: the GPU and the CPU differ by ~3e-4 at every position
            // (as in every_fixture_matches_llama_cpp; an unrounded input: ~2e-3).
            eprintln!("{name}: worst {worst:.2e}");
            assert!(worst < 1e-3, "{name}: relative errors {errors:?}");
            continue;
        }
        eprintln!(
            "{name}: {exact} of {} positions within 1e-5, worst {worst:.2e}",
            errors.len()
        );
        // The first position has no earlier code flip to inherit; after one, a sequence can
        // stay ~1e-2 away for many tokens (Q4_0 here, with the staging kernels too).
        assert!(
            errors[0] < 1e-5 && exact * 3 >= errors.len() && worst < 2e-2,
            "{name}: relative errors {errors:?}"
        );
    }
}

#[test]
fn q8_0_outputs_written_by_the_wkv_kernels_match_one_token_steps() {
    // With Q8_0 or Q4_0 output projections, the WKV kernels also write the projection's
    // 8-bit input (codes and scales) for steps of up to 16 rows: `main` in steps of
    // one-token chunks, `post` after the scan in steps with a longer chunk. A 6-token chunk
    // (the scan's path) against the same tokens one step each (`main`'s), and a step of two
    // one-token chunks against their own steps.
    for name in ["mini-q8_0", "mini-q4_0"] {
        let file = support::fixture(&format!("{name}.gguf"));
        let tokens = read_json_ids(fixtures().join(format!("expected/{name}.tokens.json")));
        let options = EngineOptions {
            max_slots: 2,
            max_rows: 16,
            max_out: 2,
            llama_cpp_rounding: true,
            ..EngineOptions::default()
        };
        let mut e = engine(&file, options.clone());
        let mut one_by_one = Vec::new();
        for t in &tokens[..6] {
            one_by_one = last_logits(&mut e, std::slice::from_ref(t));
        }
        let mut e = engine(&file, options.clone());
        let chunk = last_logits(&mut e, &tokens[..6]);
        let err = relative_error(&chunk, &one_by_one);
        assert!(err < 1e-5, "{name}: 6-token chunk: relative error {err:e}");
        // Two sequences side by side (slot 1 one token behind).
        let mut e = engine(&file, options);
        let mut want = Vec::new();
        for t in &tokens[6..9] {
            want.push(last_logits(&mut e, std::slice::from_ref(t)));
        }
        e.reset(0).unwrap();
        for (k, t) in tokens[6..9].iter().enumerate() {
            let mut inputs = vec![SlotInput {
                slot: 0,
                tokens: std::slice::from_ref(t),
                logits: Logits::Last,
            }];
            if k > 0 {
                inputs.push(SlotInput {
                    slot: 1,
                    tokens: &tokens[6 + k - 1..6 + k],
                    logits: Logits::Last,
                });
            }
            let out = e.step(&inputs).unwrap();
            let err = relative_error(&out[0][0], &want[k]);
            assert!(
                err < 1e-5,
                "{name}: slot 0 token {k}: relative error {err:e}"
            );
            if k > 0 {
                let err = relative_error(&out[1][0], &want[k - 1]);
                assert!(
                    err < 1e-5,
                    "{name}: slot 1 token {k}: relative error {err:e}"
                );
            }
        }
    }
}

#[test]
fn few_token_steps_with_llama_cpp_rounding_match_one_token_steps() {
    few_token_steps_match_one_token_steps(false);
}

#[test]
fn few_token_steps_match_persistent_one_token_steps() {
    // The one-token steps with persistent layer tails: the same 8-bit codes, sums in
    // another order.
    few_token_steps_match_one_token_steps(true);
}

fn few_token_steps_match_one_token_steps(persistent: bool) {
    // With llama.cpp's roundings, a batch of one-token steps (2 to 8 rows) takes the direct
    // matvec for several tokens (Q8_K copies of every row for the K-quants, f16 rounding as
    // read for F16), which must give each sequence what its own one-token steps give (the
    // same sums in the same order); the logits head does the same for the batch's rows.
    // (The second LoRA products stay in the WKV kernel, as in one-token steps.)
    for name in [
        "mini-q4_k_m",
        "mini-q5_k_m",
        "mini-f16",
        "mini-q6_k",
        "mini-q8_0",
        "mini-q4_0",
        "mini-q3_k_m",
        "mini-q2_k",
        "mini-q4_1",
        "mini-q5_1",
    ] {
        let file = GgufFile::open(fixtures().join(format!("{name}.gguf"))).unwrap();
        let vocab = 4096;
        let options = |slots| EngineOptions {
            max_slots: slots,
            max_rows: 16,
            max_out: 16,
            llama_cpp_rounding: true,
            lora2_from: Some(0),
            // The one-token WKV kernel for the batches too: the three-part path (from
            // WKV_SPLIT_FROM rows by default) sums in another order, and with llama.cpp's
            // 8-bit roundings that can move a code (5e-3 in the logits on lavapipe).
            wkv_split_from: 0,
            persistent,
            ..EngineOptions::default()
        };
        for batch in [3usize, 8] {
            // Where the device has tensor cores, F16 matrices of 1024 rows and more take them
            // in steps of more than DIRECT_TOKENS_F16_COOP tokens (mini-f16's channel mix).
            let tol = if name == "mini-f16" && batch as u32 > rwkv_gpu::DIRECT_TOKENS_F16_COOP {
                tensor_core_tolerance(1e-6)
            } else {
                1e-6
            };
            let seqs: Vec<Vec<u32>> = (0..batch)
                .map(|i| sequence(3, vocab, 7 * i as u32 + batch as u32))
                .collect();
            let batched = batch_steps(&mut engine(&file, options(batch)), &seqs);
            // Each sequence alone in its own slot of another engine.
            let mut one = engine(&file, options(batch));
            for (i, s) in seqs.iter().enumerate() {
                for (t, &tok) in s.iter().enumerate() {
                    let alone = one
                        .step(&[SlotInput {
                            slot: i,
                            tokens: &[tok],
                            logits: Logits::Last,
                        }])
                        .unwrap();
                    let err = relative_error(&batched[i][t], &alone[0][0]);
                    assert!(
                        err < tol,
                        "{name}: batch {batch}, sequence {i}, token {t}: relative error {err:e}"
                    );
                }
            }
        }
    }
}

/// F16 and BF16 weights with llama.cpp's roundings: the channel mix's key product rounds its
/// output to f16 or bf16 in its epilogue (`EngineOptions::round_in_epilogues`) instead of a
/// rounding dispatch after it, and every step shape gives the same logits bit for bit either
/// way: one token, a few tokens (the direct matvec for several), a chunk on the matrix
/// kernels, and a batch of one-token sequences.
#[test]
fn half_rounding_in_the_key_epilogue_changes_no_bit() {
    for name in ["mini-f16", "mini-bf16"] {
        half_rounding_in_the_key_epilogue(name);
    }
}

fn half_rounding_in_the_key_epilogue(name: &str) {
    let file = GgufFile::open(fixtures().join(format!("{name}.gguf"))).unwrap();
    let options = |fused| EngineOptions {
        max_slots: 4,
        max_rows: 64,
        max_out: 64,
        llama_cpp_rounding: true,
        round_in_epilogues: fused,
        ..EngineOptions::default()
    };
    let (mut fused, mut apart) = (engine(&file, options(true)), engine(&file, options(false)));
    assert!(fused.ops_per_step() < apart.ops_per_step(), "{name}");
    let prompt = sequence(40, 4096, 3);
    let run = |e: &mut Engine| -> Vec<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for chunk in [&prompt[..1], &prompt[1..4], &prompt[4..40]] {
            out.push(all_logits(e, chunk));
        }
        let seqs: Vec<Vec<u32>> = (0..4).map(|i| sequence(2, 4096, 11 + i)).collect();
        out.extend(batch_steps(e, &seqs));
        out
    };
    let (a, b) = (run(&mut fused), run(&mut apart));
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        for (j, (u, v)) in x.iter().zip(y).enumerate() {
            let same = u.iter().zip(v).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{name}: part {i}, row {j}: logits differ");
        }
    }
}
