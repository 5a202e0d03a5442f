//! How ggml's CPU backend rounds the activations of a matrix product.
//!
//! ggml multiplies a weight of type T by an activation converted to T's `vec_dot_type`:
//! F16 weights take f16 activations, BF16 take bf16, Q4_0/Q5_0/Q8_0 take Q8_0, Q4_1/Q5_1 take
//! Q8_1 and the K-quants take Q8_K. That rounding moves llama.cpp's logits by ~2e-4 relative,
//! so to reproduce llama.cpp within 1e-4 the CPU reference applies the same rounding
//! ([`Precision::LlamaCpp`]). The GPU engine keeps f32 activations, so its oracle is
//! [`Precision::Exact`].

use gguf::GgmlType;
use half::{bf16, f16};

/// Arithmetic of the CPU reference's matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations times exactly decoded weights.
    #[default]
    Exact,
    /// Activations rounded as ggml's CPU backend rounds them before the dot product.
    LlamaCpp,
}

/// Rounds `x` (one activation row) in place the way ggml's CPU backend does before
/// multiplying it with a weight of type `weight`.
pub fn round_activation(weight: GgmlType, x: &mut [f32]) {
    use GgmlType::*;
    match weight.vec_dot_type() {
        F16 => x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
        BF16 => x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32()),
        // Q8_1 scales and rounds the values exactly as Q8_0 does.
        Q8_0 | Q8_1 => x.chunks_mut(32).for_each(round_q8_0),
        Q8_K => x.chunks_mut(256).for_each(round_q8_k),
        _ => {}
    }
}

/// `quantize_row_q8_0` (and Q8_1, which scales the same way): d = amax / 127 stored as f16,
/// q = round(x / d).
fn round_q8_0(block: &mut [f32]) {
    let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let d16 = f16::from_f32(d).to_f32();
    for v in block.iter_mut() {
        *v = (*v * id).round_ties_even() * d16;
    }
}

/// `quantize_row_q8_K_ref`: the scale comes from the value of largest magnitude, with its
/// sign, so that value maps to -128/-127 exactly; d is kept in f32.
fn round_q8_k(block: &mut [f32]) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in block.iter() {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        block.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let iscale = -127.0 / max;
    let d = 1.0 / iscale;
    for v in block.iter_mut() {
        let q = (iscale * *v).round_ties_even().min(127.0);
        *v = q * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_rounding_keeps_the_extreme_and_snaps_the_rest() {
        let mut x: Vec<f32> = (0..32).map(|i| i as f32 * 0.1 - 1.0).collect();
        x[5] = 2.54;
        round_activation(GgmlType::Q8_0, &mut x);
        // d = 0.02 (as f16), every value a multiple of it.
        let d = f16::from_f32(2.54 / 127.0).to_f32();
        for v in &x {
            assert!(((v / d) - (v / d).round()).abs() < 1e-3);
        }
        assert!((x[5] - 2.54).abs() < 2e-3);
    }

    #[test]
    fn q8_k_rounding_uses_the_signed_maximum() {
        let mut x = vec![0.25f32; 256];
        x[7] = -3.0;
        round_activation(GgmlType::Q4_K, &mut x);
        assert_eq!(x[7], -3.0);
        let d = 3.0 / 127.0;
        assert!((x[0] - (0.25f32 / d).round_ties_even() * d).abs() < 1e-6);
    }

    #[test]
    fn f16_rounding() {
        let mut x = vec![1.0 + 1e-4];
        round_activation(GgmlType::F16, &mut x);
        assert_eq!(x[0], 1.0);
        let mut y = vec![1.0 + 1e-4];
        round_activation(GgmlType::F32, &mut y);
        assert_eq!(y[0], 1.0 + 1e-4);
    }
}
