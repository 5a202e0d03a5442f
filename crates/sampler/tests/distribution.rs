//! The CPU sampler draws from the distribution each setting defines.
//!
//! Every case draws N tokens with consecutive step counters from fixed logits and counts, and
//! compares the frequencies with the exact (f64) target distribution by Pearson's chi-square
//! over the kept tokens; tokens outside the kept set must never appear. With `df` degrees of
//! freedom the statistic has mean `df` and standard deviation `sqrt(2 df)`; the bound
//! `df + 7 sqrt(2 df) + 10` is exceeded by chance with probability far below 1e-6 for the
//! small `df` used here, so a failure means a wrong distribution (the draws are seeded, so
//! the outcome is also reproducible). The weights approximate exp within 5e-5 (relative),
//! which shifts expected counts by far less than one standard deviation at these N.

use rwkv_sampler::{pick, CpuSampler, SamplingParams};

const LOGITS: [f32; 10] = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -3.0, -5.0];

fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The target distribution by the textbook definitions: softmax of penalised logits over
/// the temperature, restricted to the tokens top-k, top-p (over all tokens) and min-p keep.
fn target(params: &SamplingParams, logits: &[f32], counts: &[f32]) -> Vec<f64> {
    let x: Vec<f64> = logits
        .iter()
        .zip(counts)
        .map(|(&l, &c)| {
            let pen = if c > 0.0 {
                params.presence_penalty as f64 + c as f64 * params.frequency_penalty as f64
            } else {
                0.0
            };
            (l as f64 - pen) / params.temperature as f64
        })
        .collect();
    let p = softmax(&x);
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let p_max = p[order[0]];
    let mut keep = vec![true; p.len()];
    if params.top_k != 0 {
        for &i in &order[params.top_k as usize..] {
            keep[i] = false;
        }
    }
    if params.top_p < 1.0 {
        let top_p = params.top_p as f64;
        let mut cum = 0.0;
        let mut reached = false;
        for &i in &order {
            if reached {
                keep[i] = false;
                continue;
            }
            let before = cum;
            cum += p[i];
            if cum >= top_p {
                // The cases keep clear of the boundary, so f64 and fixed point agree.
                assert!(
                    cum - top_p > 1e-3 && top_p - before > 1e-3,
                    "top-p boundary"
                );
                reached = true;
            }
        }
    }
    for i in 0..p.len() {
        let ratio = p[i] / p_max;
        let min_p = params.min_p as f64;
        assert!(
            min_p == 0.0 || (ratio - min_p).abs() > 1e-3,
            "min-p boundary"
        );
        if ratio < params.min_p as f64 {
            keep[i] = false;
        }
    }
    let kept: f64 = (0..p.len()).filter(|&i| keep[i]).map(|i| p[i]).sum();
    (0..p.len())
        .map(|i| if keep[i] { p[i] / kept } else { 0.0 })
        .collect()
}

fn check(name: &str, params: SamplingParams, logits: &[f32], counts: &[f32], n: u32) {
    params.validate().unwrap();
    let prepared = params.prepare();
    let mut seen = vec![0u64; logits.len()];
    for step in 0..n {
        seen[pick(&prepared, logits, counts, step) as usize] += 1;
    }
    let expected = target(&params, logits, counts);
    let mut chi = 0.0;
    let mut df = 0.0f64;
    for (i, (&o, &p)) in seen.iter().zip(&expected).enumerate() {
        if p == 0.0 {
            assert_eq!(
                o, 0,
                "{name}: token {i} is outside the kept set but was drawn {o} times"
            );
            continue;
        }
        let e = p * n as f64;
        chi += (o as f64 - e).powi(2) / e;
        df += 1.0;
    }
    df -= 1.0;
    let bound = df + 7.0 * (2.0 * df).sqrt() + 10.0;
    eprintln!("{name}: chi-square {chi:.1} with {df} degrees of freedom (bound {bound:.1})");
    assert!(
        chi <= bound,
        "{name}: chi-square {chi:.1} > {bound:.1}; drawn {seen:?}, expected {expected:?}"
    );
}

const N: u32 = 200_000;

#[test]
fn temperature() {
    let zero = [0.0; 10];
    for (t, seed) in [(1.0, 1), (0.5, 2), (2.0, 3), (0.25, 4)] {
        let p = SamplingParams {
            temperature: t,
            seed,
            ..Default::default()
        };
        check(&format!("temperature {t}"), p, &LOGITS, &zero, N);
    }
}

#[test]
fn top_k() {
    let zero = [0.0; 10];
    for k in [1, 3, 7] {
        let p = SamplingParams {
            top_k: k,
            seed: 10 + k as u64,
            ..Default::default()
        };
        check(&format!("top-k {k}"), p, &LOGITS, &zero, N);
    }
    // Ties with the k-th weight are all kept.
    let tied = [1.0, 3.0, 2.0, 2.0, 2.0, 0.0];
    let p = SamplingParams {
        top_k: 2,
        seed: 5,
        ..Default::default()
    };
    let prepared = p.prepare();
    let mut seen = [0u32; 6];
    for step in 0..20_000 {
        seen[pick(&prepared, &tied, &[0.0; 6], step) as usize] += 1;
    }
    assert!(
        seen[2] > 0 && seen[3] > 0 && seen[4] > 0 && seen[0] == 0 && seen[5] == 0,
        "{seen:?}"
    );
}

#[test]
fn top_p() {
    let zero = [0.0; 10];
    for (top_p, temperature) in [(0.5, 1.0), (0.9, 1.0), (0.7, 0.6), (0.6, 1.5)] {
        let p = SamplingParams {
            top_p,
            temperature,
            seed: 20,
            ..Default::default()
        };
        check(
            &format!("top-p {top_p} at T {temperature}"),
            p,
            &LOGITS,
            &zero,
            N,
        );
    }
}

#[test]
fn min_p() {
    let zero = [0.0; 10];
    for (min_p, temperature) in [(0.1, 1.0), (0.3, 1.0), (0.05, 0.7)] {
        let p = SamplingParams {
            min_p,
            temperature,
            seed: 30,
            ..Default::default()
        };
        check(
            &format!("min-p {min_p} at T {temperature}"),
            p,
            &LOGITS,
            &zero,
            N,
        );
    }
}

#[test]
fn penalties_and_combinations() {
    let counts = [0.0, 3.0, 0.0, 1.2, 0.5, 0.0, 0.0, 2.0, 0.0, 0.0];
    let p = SamplingParams {
        presence_penalty: 0.4,
        frequency_penalty: 0.3,
        seed: 40,
        ..Default::default()
    };
    check("penalties", p, &LOGITS, &counts, N);
    let p = SamplingParams {
        presence_penalty: -0.2,
        frequency_penalty: 0.5,
        temperature: 0.8,
        top_k: 5,
        top_p: 0.8,
        seed: 41,
        ..Default::default()
    };
    check(
        "penalties, top-k 5, top-p 0.8, T 0.8",
        p,
        &LOGITS,
        &counts,
        N,
    );
    let p = SamplingParams {
        temperature: 1.3,
        top_k: 6,
        min_p: 0.2,
        seed: 42,
        ..Default::default()
    };
    check("top-k 6, min-p 0.2, T 1.3", p, &LOGITS, &[0.0; 10], N);
}

#[test]
fn uniform_over_a_large_vocabulary() {
    let logits = vec![0.25f32; 1000];
    let p = SamplingParams {
        seed: 50,
        ..Default::default()
    };
    check("uniform over 1000", p, &logits, &vec![0.0; 1000], N);
}

#[test]
fn penalties_follow_the_sequence() {
    // A strong presence penalty without decay: every token is drawn once before any repeats.
    let mut s = CpuSampler::new(SamplingParams {
        presence_penalty: 100.0,
        penalty_decay: 1.0,
        seed: 60,
        ..Default::default()
    })
    .unwrap();
    let mut drawn: Vec<u32> = (0..50).map(|_| s.sample(&[0.0; 50])).collect();
    drawn.sort();
    assert_eq!(drawn, (0..50).collect::<Vec<u32>>());
    assert!(s.counts().iter().all(|&c| c == 1.0));

    // With decay, a count is the sum of decay^age over the token's occurrences.
    let decay = 0.9f32;
    let mut s = CpuSampler::new(SamplingParams {
        penalty_decay: decay,
        seed: 61,
        ..Default::default()
    })
    .unwrap();
    let tokens: Vec<u32> = (0..40).map(|_| s.sample(&LOGITS)).collect();
    for t in 0..10u32 {
        let expected: f64 = tokens
            .iter()
            .enumerate()
            .filter(|(_, &x)| x == t)
            .map(|(i, _)| (decay as f64).powi((tokens.len() - 1 - i) as i32))
            .sum();
        let got = s.counts()[t as usize] as f64;
        assert!(
            (got - expected).abs() < 1e-5,
            "token {t}: count {got} vs {expected}"
        );
    }

    // Same seed, same tokens; another seed, other tokens; reset starts over.
    let run = |seed| {
        let mut s = CpuSampler::new(SamplingParams {
            seed,
            frequency_penalty: 0.3,
            ..Default::default()
        })
        .unwrap();
        (0..100).map(|_| s.sample(&LOGITS)).collect::<Vec<u32>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    let mut s = CpuSampler::new(SamplingParams::default()).unwrap();
    let a: Vec<u32> = (0..20).map(|_| s.sample(&LOGITS)).collect();
    s.reset();
    let b: Vec<u32> = (0..20).map(|_| s.sample(&LOGITS)).collect();
    assert_eq!(a, b);
}

#[test]
fn greedy_ignores_the_seed() {
    for seed in 0..5 {
        let mut s = CpuSampler::new(SamplingParams {
            seed,
            ..SamplingParams::greedy()
        })
        .unwrap();
        assert_eq!(s.sample(&LOGITS), 0);
    }
    assert!(CpuSampler::new(SamplingParams {
        top_p: 0.0,
        ..Default::default()
    })
    .is_err());
}
