//! The algorithm on the CPU (see the crate documentation for its steps).

use crate::params::{Prepared, SamplingError, SamplingParams};
use crate::{penalised, random, weight, COUNT_FLOOR};

/// Step 4: the weight threshold of the kept set, from the weights of every token.
///
/// Thresholds are found here by sorting, the GPU finds them by radix select; both give the
/// integer the crate documentation defines.
pub fn threshold(p: &Prepared, weights: &[u32]) -> u32 {
    let mut t = p.min_w;
    let k = p.top_k as usize;
    if k != 0 && k < weights.len() {
        let mut w = weights.to_vec();
        let (_, kth, _) = w.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        t = t.max(*kth);
    }
    if p.top_p != 0 {
        let total: u64 = weights.iter().map(|&w| w as u64).sum();
        let need = (((total as u128 * p.top_p as u128) >> 32) as u64).max(1);
        let mut w = weights.to_vec();
        w.sort_unstable_by(|a, b| b.cmp(a));
        let mut mass = 0u64;
        for v in w {
            mass += v as u64;
            if mass >= need {
                t = t.max(v);
                break;
            }
        }
    }
    t
}

/// Steps 1 to 5: the token picked from `logits` for a sequence with penalty `counts` at step
/// `counter`. Changes nothing; see [`update_counts`] for step 6.
///
/// # Panics
///
/// When `logits` is empty or `counts` is not as long.
pub fn pick(p: &Prepared, logits: &[f32], counts: &[f32], counter: u32) -> u32 {
    assert!(!logits.is_empty(), "no logits to sample from");
    assert_eq!(logits.len(), counts.len(), "one count per logit");
    let x: Vec<f32> = logits
        .iter()
        .zip(counts)
        .map(|(&l, &c)| penalised(l, c, p.presence, p.frequency))
        .collect();
    let (mut arg_max, mut max) = (0, x[0]);
    for (i, &v) in x.iter().enumerate().skip(1) {
        if v > max {
            (arg_max, max) = (i, v);
        }
    }
    if p.greedy != 0 {
        return arg_max as u32;
    }
    let w: Vec<u32> = x.iter().map(|&v| weight(v, max, p.k)).collect();
    let t = threshold(p, &w);
    let kept: u64 = w.iter().filter(|&&v| v >= t).map(|&v| v as u64).sum();
    let r = random(p.seed(), counter);
    let target = ((kept as u128 * r as u128) >> 32) as u64;
    let mut mass = 0u64;
    for (i, &v) in w.iter().enumerate() {
        if v >= t {
            mass += v as u64;
            if mass > target {
                return i as u32;
            }
        }
    }
    unreachable!("the most likely token weighs 2^31 and is always kept")
}

/// Step 6: decays every count and counts `token` once more.
pub fn update_counts(counts: &mut [f32], decay: f32, token: u32) {
    for c in counts.iter_mut() {
        let d = *c * decay;
        *c = if d < COUNT_FLOOR { 0.0 } else { d };
    }
    counts[token as usize] += 1.0;
}

/// The sampler of one sequence on the CPU: its parameters, penalty counts and step counter.
/// Gives the same tokens as the GPU sampler of `rwkv-engine` for the same logits.
#[derive(Clone, Debug)]
pub struct CpuSampler {
    params: SamplingParams,
    prepared: Prepared,
    counts: Vec<f32>,
    counter: u32,
}

impl CpuSampler {
    pub fn new(params: SamplingParams) -> Result<CpuSampler, SamplingError> {
        params.validate()?;
        Ok(CpuSampler {
            params,
            prepared: params.prepare(),
            counts: Vec::new(),
            counter: 0,
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Changes the parameters from the next step on; counts and counter stay.
    pub fn set_params(&mut self, params: SamplingParams) -> Result<(), SamplingError> {
        params.validate()?;
        self.params = params;
        self.prepared = params.prepare();
        Ok(())
    }

    /// Picks the next token from `logits` and counts it (steps 1 to 6).
    ///
    /// # Panics
    ///
    /// When `logits` is empty or its length differs from an earlier call's.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.counts.is_empty() {
            self.counts = vec![0.0; logits.len()];
        }
        let token = pick(&self.prepared, logits, &self.counts, self.counter);
        update_counts(&mut self.counts, self.prepared.decay, token);
        self.counter = self.counter.wrapping_add(1);
        token
    }

    /// Forgets the sequence: counts and step counter back to zero.
    pub fn reset(&mut self) {
        self.counts.clear();
        self.counter = 0;
    }

    /// The penalty counts (empty before the first step).
    pub fn counts(&self) -> &[f32] {
        &self.counts
    }

    /// Steps taken since the last reset.
    pub fn counter(&self) -> u32 {
        self.counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ONE;

    /// The definition of step 4 taken literally: bisection over t, as the GPU does.
    fn bisect(weights: &[u32], target: u64, mass: bool) -> u32 {
        let f = |t: u32| -> u64 {
            weights
                .iter()
                .filter(|&&w| w >= t)
                .map(|&w| if mass { w as u64 } else { 1 })
                .sum()
        };
        let (mut lo, mut hi) = (0u32, ONE + 1);
        for _ in 0..32 {
            let mid = lo + (hi - lo) / 2;
            if f(mid) >= target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        assert_eq!(hi, lo + 1);
        lo
    }

    /// The GPU's radix select (rwkv-engine's kernels/sample.wgsl), a byte of t per pass from
    /// the top, `above` the count or mass above the bytes fixed so far (need ≥ 1, as always).
    fn radix(weights: &[u32], need: u64, mass: bool) -> u32 {
        let (mut t, mut above) = (0u32, 0u64);
        for b in 0..4 {
            let shift = 24 - 8 * b;
            let fixed = !(u32::MAX >> (8 * b));
            let mut bins = [0u64; 256];
            for &w in weights.iter().filter(|&&w| w & fixed == t) {
                bins[((w >> shift) & 0xff) as usize] += if mass { w as u64 } else { 1 };
            }
            let mut s = above;
            for d in (0..256).rev() {
                s += bins[d];
                if s >= need {
                    t |= (d as u32) << shift;
                    above = s - bins[d];
                    break;
                }
            }
        }
        t
    }

    #[test]
    fn sorted_thresholds_equal_bisection() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..300 {
            let n = 1 + (next() % 200) as usize;
            // Few distinct values (many ties) in some cases, wide ranges in others.
            let shift = next() % 32;
            let mut w: Vec<u32> = (0..n)
                .map(|_| ((next() as u32) >> shift).min(ONE))
                .collect();
            w[0] = ONE;
            let k = (next() % (n as u64 + 3)) as u32;
            let top_p = (next() as u32).max(1);
            let p = |top_k, top_p| Prepared {
                k: 1.0,
                presence: 0.0,
                frequency: 0.0,
                decay: 1.0,
                greedy: 0,
                top_k,
                top_p,
                min_w: 0,
                seed_lo: 0,
                seed_hi: 0,
            };
            let expect_k = if k == 0 || k as usize >= n {
                0
            } else {
                bisect(&w, k as u64, false)
            };
            assert_eq!(threshold(&p(k, 0), &w), expect_k, "case {case}: top-k {k}");
            let total: u64 = w.iter().map(|&v| v as u64).sum();
            let need = (((total as u128 * top_p as u128) >> 32) as u64).max(1);
            assert_eq!(
                threshold(&p(0, top_p), &w),
                bisect(&w, need, true),
                "case {case}: top-p"
            );
            // The GPU's radix select; where even t = 0 keeps too little, 0 as bisection gives.
            for need in [1, (k as u64).max(1), need, total] {
                assert_eq!(radix(&w, need, true), bisect(&w, need, true), "case {case}");
            }
            for k in [1, (k as u64).clamp(1, n as u64), n as u64] {
                assert_eq!(radix(&w, k, false), bisect(&w, k, false), "case {case}");
            }
            assert_eq!(radix(&w, total + 1, true), 0, "case {case}");
            assert_eq!(radix(&w, n as u64 + 1, false), 0, "case {case}");
        }
    }

    #[test]
    fn greedy_takes_the_lowest_arg_max_after_penalties() {
        let p = SamplingParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::greedy()
        }
        .prepare();
        let logits = [1.0, 3.0, 2.0, 3.0, 2.5];
        assert_eq!(pick(&p, &logits, &[0.0; 5], 0), 1);
        // Token 1 penalised by 0.5 + 2 * 0.25 = 1: now 2.0; token 3 wins.
        assert_eq!(pick(&p, &logits, &[0.0, 2.0, 0.0, 0.0, 0.0], 0), 3);
        // Both penalised by 0.75: 2.25 each, below token 4's 2.5.
        assert_eq!(pick(&p, &logits, &[0.0, 1.0, 0.0, 1.0, 0.0], 0), 4);
    }

    #[test]
    fn counts_decay_and_grow() {
        let mut c = vec![0.0f32, 1.0, 2.0, COUNT_FLOOR * 1.5];
        update_counts(&mut c, 0.5, 0);
        assert_eq!(c, [1.0, 0.5, 1.0, 0.0]);
        update_counts(&mut c, 0.5, 0);
        assert_eq!(c, [1.5, 0.25, 0.5, 0.0]);
        let mut s = CpuSampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.0, 1.0]), 1);
        assert_eq!(s.counts(), [0.0, 1.0]);
        assert_eq!(s.counter(), 1);
        s.reset();
        assert_eq!((s.counts().len(), s.counter()), (0, 0));
    }
}
