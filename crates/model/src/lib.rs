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
pub use spec::{Rwkv7Config, Rwkv7Spec, Rwkv7Tensors};
pub use state::{LayerState, State};
