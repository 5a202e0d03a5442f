//! Token sampling for RWKV: temperature, top-k, top-p, min-p, and presence/frequency penalties
//! whose counts decay as in RWKV's chat tools (ChatRWKV).
//!
//! The algorithm is specified exactly, down to every rounding, so that the GPU kernel of
//! `rwkv-engine` (`kernels/sample.wgsl`) and the CPU sampler here ([`CpuSampler`]) pick the
//! same token from the same logits, counts, parameters and step counter. Floating point is
//! used only where every operation is a single IEEE-754 `+`, `-` or `*` (correctly rounded on
//! every GPU; the kernel keeps products from being fused into FMAs), a maximum, and one
//! conversion to an integer; from there on everything is integer arithmetic, so neither `exp`
//! (a few ulps apart between GPUs and libm) nor the order of summation can make the two
//! disagree.
//!
//! # The algorithm
//!
//! Per step, for one sequence with logits `l` (finite), penalty counts `c` (one `f32` per
//! token, kept with the sequence) and a step counter `n`, with the parameters prepared as
//! [`Prepared`]:
//!
//! 1. **Penalties.** `x_i = l_i - (presence + c_i * frequency)` for tokens with `c_i > 0`,
//!    `x_i = l_i` otherwise (`f32`, each operation rounded on its own). See [`penalised`].
//! 2. **Greedy.** With temperature 0, the token is the arg max of `x`, the lowest id on ties;
//!    go to 6.
//! 3. **Weights.** With `m = max x` and `K = f32(2^16 · log2(e) / temperature)`:
//!    `d_i = max((x_i - m) * K, -40 · 2^16)` and `e_i = trunc(d_i)`, an integer ≤ 0: the log2
//!    of `p_i / p_max` in units of 2^-16. The token's weight is the integer
//!    `w_i = (A[h] · B[b]) >> q` where `-e_i = q · 2^16 + h · 2^8 + b`, `A[h] =
//!    round(2^16 · 2^(-h/256))`, `B[b] = round(2^15 · 2^(-b/65536))` ([`exp_table`]), and
//!    `w_i = 0` when `q ≥ 32`. So `w_i ≈ 2^31 · exp((x_i - m) / temperature)` within 5e-5
//!    (relative), the most likely token weighs exactly [`ONE`] = 2^31, and tokens less likely
//!    than 2^-31 of it weigh 0 and are never picked. See [`weight`].
//! 4. **Threshold.** The kept set is `{i : w_i ≥ t}` with `t = max(t_min_p, t_top_k, t_top_p)`:
//!    - min-p: `t_min_p = ceil(min_p · 2^31)` (0 when off);
//!    - top-k: `t_top_k` is the k-th largest weight, so ties with it are all kept (0 when `k`
//!      is 0 or at least the vocabulary);
//!    - top-p: with `S = Σ w_i` (as `u64`) and `P = round(top_p · 2^32)`, `t_top_p` is the
//!      largest `t` for which `Σ {w_i : w_i ≥ t} ≥ max(1, ⌊S · P / 2^32⌋)` (0 when top-p is 1).
//!
//!    Every threshold is an exactly defined integer; the GPU finds top-k and top-p ones by
//!    radix select over the bytes of `t` in `[0, 2^31]`, the CPU by sorting (see
//!    [`threshold`]).
//! 5. **Draw.** `r = random(seed, n)` (a 32-bit counter-based hash, [`random`]); with
//!    `S_K = Σ {w_i : w_i ≥ t}` and `target = ⌊S_K · r / 2^32⌋ < S_K`, the token is the
//!    smallest id `i` of the kept set with `Σ {w_j : j ≤ i, w_j ≥ t} > target` (inverse CDF
//!    in token-id order).
//! 6. **Update.** Every count decays, `c_j = c_j * decay`, and becomes 0 once below
//!    [`COUNT_FLOOR`] (2^-64: a token not seen for that long loses its presence penalty too,
//!    and no count is ever subnormal, which GPUs may flush); then `c_token += 1` and
//!    `n += 1`. This happens in greedy mode too. See [`update_counts`].
//!
//! A slot's counts and counter start at zero and are reset with the sequence.

mod cpu;
mod params;
mod stop;

pub use cpu::{pick, threshold, update_counts, CpuSampler};
pub use params::{Prepared, SamplingError, SamplingParams};
pub use stop::{StopHit, StopMatcher};

use std::sync::OnceLock;

/// The weight of the most likely token (2^31).
pub const ONE: u32 = 1 << 31;

/// The lower clamp of `d_i` in step 3: 40 powers of two below the most likely token, where
/// every weight is 0 already.
pub const MIN_LOG2: f32 = -40.0 * 65536.0;

/// Counts that decay below this (2^-64) are set to 0.
pub const COUNT_FLOOR: f32 = f32::from_bits(0x1f80_0000);

/// `A[0..256]` then `B[0..256]` of step 3: `A[h] = round(2^16 · 2^(-h/256))`,
/// `B[b] = round(2^15 · 2^(-b/65536))`. The GPU kernel reads this very table.
pub fn exp_table() -> &'static [u32; 512] {
    static TABLE: OnceLock<[u32; 512]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u32; 512];
        for i in 0..256 {
            t[i] = (65536.0 * (-(i as f64) / 256.0).exp2()).round() as u32;
            t[256 + i] = (32768.0 * (-(i as f64) / 65536.0).exp2()).round() as u32;
        }
        t
    })
}

/// Step 1: the logit less the penalties of a token seen `count` times (decayed).
#[inline]
pub fn penalised(logit: f32, count: f32, presence: f32, frequency: f32) -> f32 {
    if count > 0.0 {
        logit - (presence + count * frequency)
    } else {
        logit
    }
}

/// Step 3: the integer weight of a token with penalised logit `x` when the largest is `max`,
/// with `k` = [`Prepared::k`].
#[inline]
pub fn weight(x: f32, max: f32, k: f32) -> u32 {
    let d = ((x - max) * k).max(MIN_LOG2);
    // In [-40·2^16, 0]: the conversion truncates toward zero, exactly as WGSL's i32().
    let e = (-(d as i32)) as u32;
    let q = e >> 16;
    if q >= 32 {
        return 0;
    }
    let t = exp_table();
    (t[((e >> 8) & 0xff) as usize] * t[256 + (e & 0xff) as usize]) >> q
}

/// One round of Chris Wellons' `lowbias32` integer hash (a bijection of u32).
#[inline]
fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Step 5: the 32 random bits of draw number `counter` of a sequence seeded with `seed`.
pub fn random(seed: u64, counter: u32) -> u32 {
    let h = mix(seed as u32 ^ 0x9e37_79b9);
    let h = mix(h ^ (seed >> 32) as u32);
    let h = mix(h ^ counter);
    mix(h.wrapping_add(0x6a09_e667))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_approximates_exp() {
        assert_eq!(weight(3.0, 3.0, 65536.0), ONE);
        let k = 65536.0 * std::f32::consts::LOG2_E;
        let mut worst = 0.0f64;
        for i in 0..20_000 {
            let x = -(i as f32) * 0.001;
            let w = weight(x, 0.0, k) as f64;
            let exact = (x as f64).exp() * ONE as f64;
            // Relative error 5e-5 plus the rounding down to an integer.
            assert!(
                (w - exact).abs() <= 1.0 + 5e-5 * exact,
                "x {x}: {w} vs {exact}"
            );
            if exact > 65536.0 {
                worst = worst.max((w - exact).abs() / exact);
            }
        }
        assert!(worst < 5e-5, "worst relative error {worst:e}");
        // 2^-31 of the maximum and below weigh (about) nothing.
        assert!(weight(-31.0, 0.0, 65536.0) <= 1);
        assert_eq!(weight(-32.5, 0.0, 65536.0), 0);
        assert_eq!(weight(-1e30, 0.0, 65536.0), 0);
    }

    #[test]
    fn table_products_fit_u32() {
        let t = exp_table();
        assert_eq!(t[0] * t[256], ONE);
        assert!(t.iter().all(|&v| v > 0 && v <= 65536));
    }

    #[test]
    fn random_bits_are_uniform() {
        // 64 buckets of the top 6 bits over 64k draws: chi-square with 63 degrees of freedom
        // stays below 130 except with probability < 1e-6.
        for seed in [0u64, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            let mut buckets = [0u32; 64];
            for n in 0..65536 {
                buckets[(random(seed, n) >> 26) as usize] += 1;
            }
            let chi: f64 = buckets
                .iter()
                .map(|&b| (b as f64 - 1024.0).powi(2) / 1024.0)
                .sum();
            assert!(chi < 130.0, "seed {seed}: chi-square {chi}");
        }
        assert_ne!(random(1, 0), random(2, 0));
        assert_ne!(random(1 << 32, 0), random(0, 0));
    }
}
