//! RWKV-7 as described by a llama.cpp GGUF file: the configuration and weights by role
//! ([`spec`]) and the f32 CPU reference forward pass ([`cpu`]) that the GPU engine is checked
//! against.

pub mod cpu;
mod error;
mod ggml_cpu;
pub mod spec;
pub mod state;
pub mod synth;

pub use cpu::{CpuModel, Precision};
pub use error::{ModelError, Result};
/// ggml's rounding of an activation row for a weight type (f16, bf16, Q8_0, Q8_K), as the
/// CPU reference applies it.
pub use ggml_cpu::round_activation;
pub use spec::{Rwkv7Config, Rwkv7Spec, Rwkv7Tensors};
pub use state::{LayerState, State};

/// The relative L2 error of `ours` against `expected` (|ours - expected| / |expected|): how
/// logits and states are compared with a reference, per position, in the tests and tools.
pub fn relative_error(ours: &[f32], expected: &[f32]) -> f64 {
    let diff: f64 = ours
        .iter()
        .zip(expected)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = expected.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm).sqrt()
}
