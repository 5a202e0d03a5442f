//! Sampling parameters, their validation, and their integer form ([`Prepared`]).

/// How to pick the next token. `Default` is plain sampling at temperature 1 with RWKV's
/// penalty decay (0.996) ready for penalties that are off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0: greedy (arg max, lowest id on ties). Otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (and every token tied with the last). 0: off.
    pub top_k: u32,
    /// Keep the most likely tokens whose probabilities add up to at least `top_p`. 1: off.
    pub top_p: f32,
    /// Keep tokens at least `min_p` times as likely as the most likely one. 0: off.
    pub min_p: f32,
    /// Subtracted from the logit of every token seen before in the sequence.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per (decayed) occurrence.
    pub frequency_penalty: f32,
    /// Every occurrence count is multiplied by this after each step. 1: no decay.
    pub penalty_decay: f32,
    /// Seed of the sequence's random draws.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_decay: 0.996,
            seed: 0,
        }
    }
}

/// Parameters that cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid sampling parameter {name} = {value}: {expected}")]
pub struct SamplingError {
    pub name: &'static str,
    pub value: f32,
    pub expected: &'static str,
}

impl SamplingParams {
    /// Greedy decoding: temperature 0, penalties off.
    pub fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let check = |name, value: f32, ok: bool, expected| {
            if ok {
                Ok(())
            } else {
                Err(SamplingError {
                    name,
                    value,
                    expected,
                })
            }
        };
        let t = self.temperature;
        check(
            "temperature",
            t,
            t.is_finite() && t >= 0.0,
            "a finite number ≥ 0 (0: greedy)",
        )?;
        let p = self.top_p;
        check("top_p", p, p > 0.0 && p <= 1.0, "in (0, 1] (1: off)")?;
        let m = self.min_p;
        check("min_p", m, (0.0..=1.0).contains(&m), "in [0, 1] (0: off)")?;
        let pp = self.presence_penalty;
        check("presence_penalty", pp, pp.is_finite(), "a finite number")?;
        let fp = self.frequency_penalty;
        check("frequency_penalty", fp, fp.is_finite(), "a finite number")?;
        let d = self.penalty_decay;
        check(
            "penalty_decay",
            d,
            (0.0..=1.0).contains(&d),
            "in [0, 1] (1: no decay)",
        )?;
        Ok(())
    }

    /// The integer form both samplers work from. The parameters should be valid
    /// ([`SamplingParams::validate`]); out-of-range values are clamped.
    pub fn prepare(&self) -> Prepared {
        let greedy = self.temperature.is_nan() || self.temperature <= 0.0;
        // Clamped so that (x - max) * k stays finite for any realistic logit range.
        let k = if greedy {
            0.0
        } else {
            (65536.0 * std::f64::consts::LOG2_E / self.temperature as f64).min(1e30) as f32
        };
        let top_p = if self.top_p >= 1.0 || self.top_p.is_nan() {
            0
        } else {
            (self.top_p as f64 * 4294967296.0)
                .round()
                .clamp(1.0, 4294967295.0) as u32
        };
        let min_w = if self.min_p > 0.0 {
            (self.min_p as f64 * 2147483648.0).ceil().min(2147483648.0) as u32
        } else {
            0
        };
        Prepared {
            k,
            presence: self.presence_penalty,
            frequency: self.frequency_penalty,
            decay: self.penalty_decay,
            greedy: greedy as u32,
            top_k: self.top_k,
            top_p,
            min_w,
            seed_lo: self.seed as u32,
            seed_hi: (self.seed >> 32) as u32,
        }
    }
}

/// [`SamplingParams`] as the algorithm (see the crate documentation) uses them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prepared {
    /// `2^16 · log2(e) / temperature` as f32; 0 when greedy.
    pub k: f32,
    pub presence: f32,
    pub frequency: f32,
    pub decay: f32,
    /// 1: temperature 0.
    pub greedy: u32,
    /// 0: off.
    pub top_k: u32,
    /// `round(top_p · 2^32)`; 0: off.
    pub top_p: u32,
    /// The min-p threshold on weights, `ceil(min_p · 2^31)`; 0: off.
    pub min_w: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
}

impl Prepared {
    pub fn seed(&self) -> u64 {
        self.seed_lo as u64 | (self.seed_hi as u64) << 32
    }

    /// The 12 words of the GPU kernel's `Params` struct, in order. Word 10 must stay 0: the
    /// kernel mixes it into products to keep them from being fused into FMAs.
    pub fn words(&self) -> [u32; 12] {
        [
            self.k.to_bits(),
            self.presence.to_bits(),
            self.frequency.to_bits(),
            self.decay.to_bits(),
            self.greedy,
            self.top_k,
            self.top_p,
            self.min_w,
            self.seed_lo,
            self.seed_hi,
            0,
            0,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(SamplingParams::default().validate().is_ok());
        assert!(SamplingParams::greedy().validate().is_ok());
        let bad = [
            SamplingParams {
                temperature: -0.1,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::INFINITY,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                top_p: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                min_p: -0.5,
                ..Default::default()
            },
            SamplingParams {
                min_p: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                presence_penalty: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                frequency_penalty: f32::NEG_INFINITY,
                ..Default::default()
            },
            SamplingParams {
                penalty_decay: 1.01,
                ..Default::default()
            },
        ];
        for p in bad {
            let e = p.validate().unwrap_err();
            assert!(e.to_string().contains(e.name), "{e}");
        }
        let e = SamplingParams {
            top_p: 2.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid sampling parameter top_p = 2: in (0, 1] (1: off)"
        );
    }

    #[test]
    fn preparation() {
        let p = SamplingParams::default().prepare();
        assert_eq!((p.greedy, p.top_k, p.top_p, p.min_w), (0, 0, 0, 0));
        assert_eq!(p.k, (65536.0 * std::f64::consts::LOG2_E) as f32);
        let p = SamplingParams {
            temperature: 0.0,
            top_p: 0.5,
            min_p: 1.0,
            seed: 0x1_0000_0002,
            ..Default::default()
        }
        .prepare();
        assert_eq!(
            (p.greedy, p.k, p.top_p, p.min_w),
            (1, 0.0, 1 << 31, 1 << 31)
        );
        assert_eq!((p.seed_lo, p.seed_hi, p.seed()), (2, 1, 0x1_0000_0002));
        let tiny = SamplingParams {
            temperature: 1e-38,
            ..Default::default()
        }
        .prepare();
        assert_eq!(tiny.k, 1e30);
    }
}
