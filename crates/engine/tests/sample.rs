//! The GPU sampler (`kernels/sample.wgsl`) against rwkv_sampler's CPU sampler: the same
//! tokens seed for seed, the same penalty counts bit for bit, for every setting; temperature
//! 0 is the arg max; and `Engine::step_sample` samples the engine's own logits on the GPU.
//! Runs on any adapter; CI uses lavapipe.

use rwkv_engine::{
    CpuSampler, Engine, EngineOptions, GpuSampler, Logits, SamplingParams, SlotInput,
};

mod support;
use support::rng::Rng;
use support::{context, fixture};

impl Rng {
    /// Roughly normal logits with standard deviation `scale`, a few of them well above the
    /// rest (like a language model's head), and some exact ties.
    fn logits(&mut self, vocab: usize, scale: f32) -> Vec<f32> {
        let mut l: Vec<f32> = (0..vocab)
            .map(|_| {
                let s: f32 = (0..4).map(|_| self.unit()).sum::<f32>() - 2.0;
                s * scale * 1.7
            })
            .collect();
        for _ in 0..4 {
            let i = (self.next() % vocab as u64) as usize;
            l[i] += scale * 4.0 * self.unit();
        }
        let (a, b) = (
            (self.next() % vocab as u64) as usize,
            (self.next() % vocab as u64) as usize,
        );
        l[a] = l[b];
        l
    }
}

/// Every setting the sampler has, alone and combined.
fn settings() -> Vec<(&'static str, SamplingParams)> {
    let d = SamplingParams::default;
    vec![
        ("default", d()),
        (
            "temperature 0.5",
            SamplingParams {
                temperature: 0.5,
                ..d()
            },
        ),
        (
            "temperature 2",
            SamplingParams {
                temperature: 2.0,
                ..d()
            },
        ),
        (
            "greedy",
            SamplingParams {
                temperature: 0.0,
                ..d()
            },
        ),
        ("top-k 1", SamplingParams { top_k: 1, ..d() }),
        ("top-k 40", SamplingParams { top_k: 40, ..d() }),
        ("top-p 0.5", SamplingParams { top_p: 0.5, ..d() }),
        ("top-p 0.9", SamplingParams { top_p: 0.9, ..d() }),
        ("min-p 0.05", SamplingParams { min_p: 0.05, ..d() }),
        (
            "presence 0.5, decay 0.996",
            SamplingParams {
                presence_penalty: 0.5,
                ..d()
            },
        ),
        (
            "frequency 0.7, decay 0.9",
            SamplingParams {
                frequency_penalty: 0.7,
                penalty_decay: 0.9,
                ..d()
            },
        ),
        (
            "presence -0.3, frequency 0.4, no decay",
            SamplingParams {
                presence_penalty: -0.3,
                frequency_penalty: 0.4,
                penalty_decay: 1.0,
                ..d()
            },
        ),
        (
            "penalties, decay 0 (only the last token counts)",
            SamplingParams {
                presence_penalty: 2.0,
                frequency_penalty: 1.0,
                penalty_decay: 0.0,
                ..d()
            },
        ),
        (
            "greedy with penalties",
            SamplingParams {
                temperature: 0.0,
                presence_penalty: 1.5,
                frequency_penalty: 0.5,
                penalty_decay: 0.95,
                ..d()
            },
        ),
        (
            "T 0.8, top-k 50, top-p 0.85, min-p 0.02, penalties",
            SamplingParams {
                temperature: 0.8,
                top_k: 50,
                top_p: 0.85,
                min_p: 0.02,
                presence_penalty: 0.3,
                frequency_penalty: 0.3,
                penalty_decay: 0.99,
                ..d()
            },
        ),
    ]
}

/// Runs `steps` steps on `slots` slots at once (each with its own seed and logits), on the
/// GPU and on the CPU, and checks tokens, counts and counters agree exactly.
fn agree(vocab: usize, slots: usize, steps: usize, scale: f32, seed: u64) {
    let mut logits = |rng: &mut Rng| rng.logits(vocab, scale);
    agree_on(vocab, slots, steps, seed, &settings(), &mut logits, true);
}

/// [`agree`] with the given settings and logits; `varied`: check that sampled settings drew
/// more than one token.
fn agree_on(
    vocab: usize,
    slots: usize,
    steps: usize,
    seed: u64,
    settings: &[(&str, SamplingParams)],
    new_logits: &mut dyn FnMut(&mut Rng) -> Vec<f32>,
    varied: bool,
) {
    let ctx = context();
    let mut gpu = GpuSampler::new(ctx, vocab, slots, slots).unwrap();
    for &(name, params) in settings {
        let mut cpu: Vec<CpuSampler> = Vec::new();
        for s in 0..slots {
            let p = SamplingParams {
                seed: seed.wrapping_mul(31).wrapping_add(s as u64 * 1_000_003),
                ..params
            };
            gpu.set_params(s, &p).unwrap();
            gpu.reset(s).unwrap();
            cpu.push(CpuSampler::new(p).unwrap());
        }
        let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        // Some steps reuse the previous logits so the penalties decide more often.
        let mut logits: Vec<Vec<f32>> = (0..slots).map(|_| new_logits(&mut rng)).collect();
        let mut distinct = std::collections::BTreeSet::new();
        for step in 0..steps {
            if step % 3 != 2 {
                logits = (0..slots).map(|_| new_logits(&mut rng)).collect();
            }
            // Slots in a changing order, so rows and slots do not line up.
            let order: Vec<usize> = (0..slots).map(|i| (i + step) % slots).collect();
            let rows: Vec<(usize, &[f32])> =
                order.iter().map(|&s| (s, logits[s].as_slice())).collect();
            let got = gpu.sample(&rows).unwrap();
            for (n, &s) in order.iter().enumerate() {
                let want = cpu[s].sample(&logits[s]);
                assert_eq!(
                    got[n], want,
                    "{name}: vocab {vocab}, slot {s}, step {step}: GPU {} vs CPU {want}",
                    got[n]
                );
                distinct.insert(want);
            }
        }
        for (s, c) in cpu.iter().enumerate() {
            let counts = gpu.counts(s).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&counts) == bits(c.counts()),
                "{name}: vocab {vocab}, slot {s}: penalty counts differ"
            );
            assert_eq!(gpu.counter(s).unwrap(), steps as u32, "{name}");
        }
        if varied && params.temperature > 0.0 && params.top_k != 1 {
            assert!(distinct.len() > 1, "{name}: the draws should vary");
        }
    }
}

#[test]
fn gpu_and_cpu_pick_the_same_tokens_small_vocabulary() {
    agree(10, 3, 60, 1.5, 1);
}

#[test]
fn gpu_and_cpu_pick_the_same_tokens_model_vocabulary() {
    agree(4096, 2, 24, 2.0, 2);
}

#[test]
fn gpu_and_cpu_pick_the_same_tokens_world_vocabulary() {
    agree(65536, 1, 8, 3.0, 3);
}

/// Step 4's thresholds at their edges, on rows built for them: many weights tied at the
/// threshold; top-p thresholds inside one byte of the weights shared by most of them (their
/// masses past 2^32); one weight and the rest 0; top-k 1 with a tied maximum; top-p tiny and
/// close to 1; vocabularies that are no multiple of the workgroup.
#[test]
fn gpu_and_cpu_agree_at_the_threshold_edges() {
    let d = SamplingParams::default;
    let settings = [
        ("top-k 1", SamplingParams { top_k: 1, ..d() }),
        ("top-k 2", SamplingParams { top_k: 2, ..d() }),
        ("top-k 7", SamplingParams { top_k: 7, ..d() }),
        ("top-k 500", SamplingParams { top_k: 500, ..d() }),
        ("top-p 1e-6", SamplingParams { top_p: 1e-6, ..d() }),
        ("top-p 0.3", SamplingParams { top_p: 0.3, ..d() }),
        ("top-p 0.85", SamplingParams { top_p: 0.85, ..d() }),
        (
            "top-p 0.999999",
            SamplingParams {
                top_p: 0.999_999,
                ..d()
            },
        ),
        (
            "T 2, top-k 40, top-p 0.95",
            SamplingParams {
                temperature: 2.0,
                top_k: 40,
                top_p: 0.95,
                ..d()
            },
        ),
        (
            "min-p 0.3, top-p 0.7",
            SamplingParams {
                min_p: 0.3,
                top_p: 0.7,
                ..d()
            },
        ),
    ];
    // A few values each held by many tokens, the maximum among them.
    let ties = |rng: &mut Rng, vocab: usize| -> Vec<f32> {
        (0..vocab).map(|_| -0.5 * (rng.next() % 6) as f32).collect()
    };
    // Most tokens in a narrow band of logits 1, 6 or 9 below the maximum (their weights share
    // their top bytes, and below about e^-5.5 of the maximum neighbouring weights are less
    // than 256 apart, so that even t's last byte decides), a few above, a few far below.
    let band = |rng: &mut Rng, vocab: usize| -> Vec<f32> {
        let at = [-1.0, -6.0, -9.0][(rng.next() % 3) as usize];
        let width = [1e-2, 1e-4, 1e-6][(rng.next() % 3) as usize];
        let mut l: Vec<f32> = (0..vocab)
            .map(|_| match rng.next() % 16 {
                0 => -20.0 - 10.0 * rng.unit(),
                _ => at - width * rng.unit(),
            })
            .collect();
        for _ in 0..3 {
            l[(rng.next() % vocab as u64) as usize] = -rng.unit();
        }
        l[(rng.next() % vocab as u64) as usize] = 0.0;
        l
    };
    // One token; every other weighs 0.
    let single = |rng: &mut Rng, vocab: usize| -> Vec<f32> {
        let mut l = vec![-100.0; vocab];
        l[(rng.next() % vocab as u64) as usize] = 1.0;
        l
    };
    for (n, vocab) in [1, 3, 1000, 5003, 65535].into_iter().enumerate() {
        let seed = 100 + n as u64;
        agree_on(vocab, 2, 6, seed, &settings, &mut |r| ties(r, vocab), false);
        agree_on(vocab, 2, 6, seed, &settings, &mut |r| band(r, vocab), false);
        agree_on(
            vocab,
            1,
            3,
            seed,
            &settings,
            &mut |r| single(r, vocab),
            false,
        );
    }
}

/// Draws that land exactly between two tokens: with `vocab` equal logits every weight is 2^31,
/// and these seeds' first draws are r = 2^30, 2^31 and 3 * 2^30 (found by search), so the
/// goal is exactly the mass of the first `vocab * r / 2^32` tokens and the token after them
/// is the pick. For 65,536 tokens that is also where the GPU's runs of step 5 meet, for every
/// workgroup size; for 65,532, with 1024 invocations, it falls inside a part an invocation
/// walks.
#[test]
fn draws_between_two_tokens_pick_the_later() {
    let d = SamplingParams::default;
    for (seed, quarters) in [
        (2_639_530_354u64, 1),
        (4_156_638_577, 2),
        (3_822_128_227, 3),
    ] {
        assert_eq!(rwkv_sampler::random(seed, 0), quarters << 30);
        for vocab in [1000, 65532, 65536] {
            let mut gpu = GpuSampler::new(context(), vocab, 1, 1).unwrap();
            let logits = vec![0.5f32; vocab];
            let cases = [
                d(),
                SamplingParams { top_k: 5, ..d() },
                SamplingParams { top_p: 0.5, ..d() },
            ];
            for params in cases {
                let p = SamplingParams { seed, ..params };
                gpu.set_params(0, &p).unwrap();
                gpu.reset(0).unwrap();
                let want = CpuSampler::new(p).unwrap().sample(&logits);
                assert_eq!(want as usize, vocab * quarters as usize / 4, "{p:?}");
                assert_eq!(gpu.sample(&[(0, &logits)]).unwrap(), vec![want], "{p:?}");
            }
        }
    }
}

#[test]
fn temperature_zero_is_the_arg_max() {
    let vocab = 3000;
    let mut gpu = GpuSampler::new(context(), vocab, 2, 2).unwrap();
    for s in 0..2 {
        gpu.set_params(
            s,
            &SamplingParams {
                seed: s as u64 + 7,
                ..SamplingParams::greedy()
            },
        )
        .unwrap();
    }
    let mut rng = Rng(42);
    for step in 0..10 {
        let a = rng.logits(vocab, 2.0);
        let mut b = rng.logits(vocab, 2.0);
        // A tie for the maximum: the lowest id wins.
        let m = b.iter().cloned().fold(f32::MIN, f32::max) + 1.0;
        b[2999 - step] = m;
        b[1000 + step] = m;
        let got = gpu.sample(&[(0, &a), (1, &b)]).unwrap();
        let arg_max = |v: &[f32]| {
            let mut best = 0;
            for (i, &x) in v.iter().enumerate() {
                if x > v[best] {
                    best = i;
                }
            }
            best as u32
        };
        assert_eq!(got, vec![arg_max(&a), 1000 + step as u32], "step {step}");
    }
}

#[test]
fn bad_sampler_calls_are_errors() {
    let mut gpu = GpuSampler::new(context(), 8, 2, 2).unwrap();
    let l = [0.0f32; 8];
    assert!(gpu.sample(&[(2, &l)]).is_err(), "slot out of range");
    assert!(gpu.sample(&[(0, &l), (0, &l)]).is_err(), "slot twice");
    assert!(gpu.sample(&[(0, &l[..4])]).is_err(), "wrong length");
    assert!(
        gpu.sample(&[(0, &l), (1, &l), (1, &l)]).is_err(),
        "too many rows"
    );
    let bad = SamplingParams {
        top_p: 0.0,
        ..Default::default()
    };
    assert!(gpu.set_params(0, &bad).is_err());
    assert!(gpu.set_params(5, &SamplingParams::default()).is_err());
    assert!(GpuSampler::new(context(), 0, 1, 1).is_err());
}

/// `step_sample` picks, on the GPU, what the CPU sampler picks from the logits `step` returns
/// for the same state: slot 0 runs `step` (logits back, CPU sampler), slot 1 the same tokens
/// with `step_sample` (ids back). Prefill chunks split over several GPU steps too.
#[test]
fn step_sample_samples_the_engine_logits() {
    let mut engine = mini_engine(2, 16);
    let prompt: Vec<u32> = (0..40).map(|i| 300 + i * 37 % 2000).collect();
    for (name, params) in sampling_cases(99) {
        engine.reset(0).unwrap();
        engine.reset(1).unwrap();
        engine.set_sampling(1, &params).unwrap();
        engine.reset_sampling(1).unwrap();
        let mut cpu = CpuSampler::new(params).unwrap();
        let mut input = prompt.clone();
        let mut produced = Vec::new();
        for _ in 0..12 {
            let logits = engine
                .step(&[SlotInput {
                    slot: 0,
                    tokens: &input,
                    logits: Logits::Last,
                }])
                .unwrap()
                .remove(0)
                .remove(0);
            let want = cpu.sample(&logits);
            let got = engine
                .step_sample(&[SlotInput {
                    slot: 1,
                    tokens: &input,
                    logits: Logits::Last,
                }])
                .unwrap();
            assert_eq!(got, vec![Some(want)], "{name}: after {produced:?}");
            produced.push(want);
            input = vec![want];
        }
        let counts = engine.sampler().unwrap().counts(1).unwrap();
        assert_eq!(counts, cpu.counts(), "{name}: counts");
    }
    // Inputs without logits sample nothing; a slot's state still advances.
    let out = engine
        .step_sample(&[
            SlotInput {
                slot: 0,
                tokens: &[5, 6],
                logits: Logits::None,
            },
            SlotInput {
                slot: 1,
                tokens: &[7],
                logits: Logits::Last,
            },
        ])
        .unwrap();
    assert!(out[0].is_none() && out[1].is_some(), "{out:?}");
    assert!(engine.set_sampling(2, &SamplingParams::default()).is_err());
}

/// The tiny Q4_K_M fixture with llama.cpp's roundings, `slots` slots (each may want logits)
/// and steps of up to `rows` rows.
fn mini_engine(slots: usize, rows: usize) -> Engine {
    let options = EngineOptions {
        max_slots: slots,
        max_rows: rows,
        max_out: slots,
        llama_cpp_rounding: true,
        ..EngineOptions::default()
    };
    Engine::load(
        context(),
        &fixture("mini-q4_k_m.gguf"),
        options,
        &mut |_, _| {},
    )
    .unwrap()
}

/// Greedy, and sampled with penalties from `seed`.
fn sampling_cases(seed: u64) -> [(&'static str, SamplingParams); 2] {
    [
        ("greedy", SamplingParams::greedy()),
        (
            "sampled with penalties",
            SamplingParams {
                temperature: 0.9,
                top_p: 0.9,
                presence_penalty: 0.4,
                frequency_penalty: 0.4,
                penalty_decay: 0.9,
                seed,
                ..SamplingParams::default()
            },
        ),
    ]
}

fn last_of(slot: usize, tokens: &[u32]) -> SlotInput<'_> {
    SlotInput {
        slot,
        tokens,
        logits: Logits::Last,
    }
}

/// Decoding with chained steps (each submitted before the previous one's token is read, the
/// token fed from the GPU) picks the tokens that `step_sample` picks one step at a time:
/// slots 0 and 1 decode together with `step_sample`, slots 2 and 3 together with chained
/// steps (two rows per step both ways, so the same kernels). Tickets read out of turn are
/// refused.
#[test]
fn chained_sampling_steps_decode_what_step_sample_decodes() {
    let mut engine = mini_engine(4, 16);
    let prompt: Vec<u32> = (0..9).map(|i| 500 + i * 53 % 1500).collect();
    let steps = 10;
    for (name, params) in sampling_cases(7) {
        for slot in 0..4 {
            engine.reset(slot).unwrap();
            engine.set_sampling(slot, &params).unwrap();
            engine.reset_sampling(slot).unwrap();
        }
        let both = |engine: &mut Engine, slot: usize, tokens: [&[u32]; 2]| {
            let out = engine
                .step_sample(&[last_of(slot, tokens[0]), last_of(slot + 1, tokens[1])])
                .unwrap();
            [out[0].unwrap(), out[1].unwrap()]
        };
        let mut want = vec![both(&mut engine, 0, [&prompt, &prompt])];
        for _ in 0..steps {
            let [a, b] = want[want.len() - 1];
            want.push(both(&mut engine, 0, [&[a], &[b]]));
        }
        let mut got = vec![both(&mut engine, 2, [&prompt, &prompt])];
        let [a, b] = got[0];
        let mut ticket = engine
            .submit_sample(&[last_of(2, &[a]), last_of(3, &[b])])
            .unwrap();
        for n in 0..steps {
            let following = (n + 1 < steps).then(|| engine.submit_sample_chained(&ticket).unwrap());
            let ids = engine.wait_sampled(ticket).unwrap();
            got.push([ids[0], ids[1]]);
            match following {
                Some(t) => ticket = t,
                None => break,
            }
        }
        assert_eq!(got, want, "{name}");
        for slot in 0..2 {
            let counts = engine.sampler().unwrap().counts(slot).unwrap();
            assert_eq!(
                engine.sampler().unwrap().counts(slot + 2).unwrap(),
                counts,
                "{name}: counts"
            );
        }
    }
    // A chained step follows the latest sampling step only; a ticket whose read-back buffer
    // two later steps reused is refused.
    let a = engine
        .submit_sample(&[SlotInput {
            slot: 0,
            tokens: &[1],
            logits: Logits::Last,
        }])
        .unwrap();
    let b = engine.submit_sample_chained(&a).unwrap();
    assert!(engine.submit_sample_chained(&a).is_err());
    let c = engine.submit_sample_chained(&b).unwrap();
    assert!(engine.wait_sampled(a).is_err());
    engine.wait_sampled(b).unwrap();
    engine.wait_sampled(c).unwrap();
    assert!(engine
        .submit_sample(&[SlotInput {
            slot: 0,
            tokens: &[1],
            logits: Logits::None,
        }])
        .is_err());
}

/// A slot's part of a step in [`mixed_schedule`]: its tokens (`None`: the token sampled for
/// it in the step before) and whether it samples after them.
type Part = (usize, Option<Vec<u32>>, bool);

/// A server's steps: prompts joining (one read in two chunks), decoding slots in changing
/// order, one leaving, one feeding its token without sampling. Slots 0-2 of the schedule.
fn mixed_schedule() -> Vec<Vec<Part>> {
    let prompt = |n: u32, from: u32| -> Option<Vec<u32>> {
        Some((0..n).map(|i| from + i * 37 % 900).collect())
    };
    vec![
        vec![(0, prompt(9, 300), true), (2, prompt(5, 700), true)],
        vec![(0, None, true), (2, None, true), (1, prompt(6, 100), false)],
        vec![(2, None, true), (0, None, true), (1, prompt(3, 900), true)],
        vec![(1, None, true), (0, None, true)],
        vec![(0, None, true), (1, None, true)],
        vec![(1, None, false), (0, None, true)],
        vec![(0, None, true)],
    ]
}

/// `Engine::submit_sample_step` with each step submitted before the previous one's tokens
/// are read (the sampled tokens fed on the GPU, rows in any order, prompt chunks and
/// feed-only rows beside them) picks what `step_sample` picks over the same steps with the
/// tokens read in between, and leaves the same states and penalty counts. Bad chains are
/// refused.
#[test]
fn mixed_chained_steps_decode_what_step_sample_decodes() {
    use rwkv_engine::{StepInput, StepTokens};
    let mut engine = mini_engine(6, 24);
    let schedule = mixed_schedule();
    let logits = |sample: bool| if sample { Logits::Last } else { Logits::None };
    for (name, params) in sampling_cases(11) {
        for slot in 0..6 {
            engine.reset(slot).unwrap();
            engine.set_sampling(slot, &params).unwrap();
            engine.reset_sampling(slot).unwrap();
        }
        // Slots 0-2, one step at a time, the tokens read between steps.
        let mut last = [0u32; 3];
        let mut want: Vec<Vec<(usize, u32)>> = Vec::new();
        for step in &schedule {
            let fed: Vec<Vec<u32>> = step
                .iter()
                .map(|(s, tokens, _)| tokens.clone().unwrap_or(vec![last[*s]]))
                .collect();
            let inputs: Vec<SlotInput> = step
                .iter()
                .zip(&fed)
                .map(|((s, _, sample), tokens)| SlotInput {
                    slot: *s,
                    tokens,
                    logits: logits(*sample),
                })
                .collect();
            let out = engine.step_sample(&inputs).unwrap();
            let mut sampled = Vec::new();
            for ((s, _, _), t) in step.iter().zip(out) {
                if let Some(t) = t {
                    last[*s] = t;
                    sampled.push((*s, t));
                }
            }
            want.push(sampled);
        }
        // Slots 3-5, each step submitted before the previous one is read.
        let mut got: Vec<Vec<(usize, u32)>> = Vec::new();
        let mut pending: Option<rwkv_engine::SampleTicket> = None;
        for step in &schedule {
            let inputs: Vec<StepInput> = step
                .iter()
                .map(|(s, tokens, sample)| StepInput {
                    slot: s + 3,
                    tokens: match tokens {
                        Some(t) => StepTokens::Known(t),
                        None => StepTokens::Sampled,
                    },
                    logits: logits(*sample),
                })
                .collect();
            let ticket = engine
                .submit_sample_step(&inputs, pending.as_ref())
                .unwrap();
            if let Some(before) = pending.replace(ticket) {
                let slots = before.sampled_slots().to_vec();
                let ids = engine.wait_sampled(before).unwrap();
                got.push(slots.iter().map(|s| s - 3).zip(ids).collect());
            }
        }
        let before = pending.take().unwrap();
        let slots = before.sampled_slots().to_vec();
        let ids = engine.wait_sampled(before).unwrap();
        got.push(slots.iter().map(|s| s - 3).zip(ids).collect());
        assert_eq!(got, want, "{name}");
        for slot in 0..3 {
            assert!(
                engine.read_state(slot + 3).unwrap() == engine.read_state(slot).unwrap(),
                "{name}: state of slot {slot}"
            );
            let counts = engine.sampler().unwrap().counts(slot).unwrap();
            assert_eq!(
                engine.sampler().unwrap().counts(slot + 3).unwrap(),
                counts,
                "{name}: counts of slot {slot}"
            );
        }
    }

    // Refused: a sampled token with no step before, or for a slot that step did not sample
    // for, or after a step that is no longer the latest to sample; every token's logits.
    let sampled = |slot: usize| StepInput {
        slot,
        tokens: StepTokens::Sampled,
        logits: Logits::Last,
    };
    assert!(engine.submit_sample_step(&[sampled(0)], None).is_err());
    let a = engine
        .submit_sample_step(
            &[StepInput {
                slot: 0,
                tokens: StepTokens::Known(&[5]),
                logits: Logits::Last,
            }],
            None,
        )
        .unwrap();
    assert!(engine.submit_sample_step(&[sampled(1)], Some(&a)).is_err());
    let all = StepInput {
        slot: 1,
        tokens: StepTokens::Known(&[5, 6]),
        logits: Logits::All,
    };
    assert!(engine.submit_sample_step(&[all], None).is_err());
    let b = engine.submit_sample_step(&[sampled(0)], Some(&a)).unwrap();
    assert!(engine.submit_sample_step(&[sampled(0)], Some(&a)).is_err());
    engine.wait_sampled(a).unwrap();
    engine.wait_sampled(b).unwrap();
}

/// `Engine::checkpoint` between chained steps keeps the slot's state and sampling counters
/// as the steps before left them, and `rollback` puts them back: all of it (the step after
/// undone) or only the counters (its token kept fed, its draw undone). Slot 1 builds the
/// same states one step at a time.
#[test]
fn checkpoint_and_rollback_undo_a_chained_step() {
    use rwkv_engine::Rollback;
    let mut engine = mini_engine(2, 16);
    assert!(engine.rollback(Rollback::All).is_err());
    // A checkpoint no step has taken yet: nothing to undo.
    engine.checkpoint(0).unwrap();
    engine.rollback(Rollback::All).unwrap();
    let prompt: Vec<u32> = (0..7).map(|i| 200 + i * 61 % 1500).collect();
    let params = &sampling_cases(5)[1].1;
    for what in [Rollback::All, Rollback::Sampling] {
        for slot in 0..2 {
            engine.reset(slot).unwrap();
            engine.set_sampling(slot, params).unwrap();
            engine.reset_sampling(slot).unwrap();
        }
        let one = |engine: &mut Engine, slot: usize, tokens: &[u32]| {
            engine.step_sample(&[last_of(slot, tokens)]).unwrap()[0].unwrap()
        };
        let t0 = one(&mut engine, 0, &prompt);
        assert_eq!(one(&mut engine, 1, &prompt), t0);
        // Slot 0: a step, the checkpoint, a chained step, then the rollback.
        let a = engine.submit_sample(&[last_of(0, &[t0])]).unwrap();
        engine.checkpoint(0).unwrap();
        let b = engine.submit_sample_chained(&a).unwrap();
        let t1 = engine.wait_sampled(a).unwrap()[0];
        engine.wait_sampled(b).unwrap();
        engine.rollback(what).unwrap();
        // Slot 1: the step, and with `Sampling` the next token fed without a draw.
        assert_eq!(one(&mut engine, 1, &[t0]), t1);
        if what == Rollback::Sampling {
            engine
                .step(&[SlotInput {
                    slot: 1,
                    tokens: &[t1],
                    logits: Logits::None,
                }])
                .unwrap();
        }
        assert!(
            engine.read_state(0).unwrap() == engine.read_state(1).unwrap(),
            "{what:?}: state"
        );
        let sampler = engine.sampler().unwrap();
        assert_eq!(sampler.counts(0).unwrap(), sampler.counts(1).unwrap());
        assert_eq!(sampler.counter(0).unwrap(), sampler.counter(1).unwrap());
        // The draw after is the same too.
        let next = one(&mut engine, 0, &[t1]);
        assert_eq!(one(&mut engine, 1, &[t1]), next, "{what:?}: next draw");
    }
}
