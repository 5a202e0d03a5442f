//! RWKV-7 on the GPU: weights uploaded in their GGUF encoding, every operation of the forward
//! pass in WGSL compute kernels, many sequences batched in slots with their own state, and
//! state control. See [`Engine`] for the pipeline stages of one step.

mod engine;
mod error;
pub mod kernels;
mod persistent;
mod profile;
mod sample;
mod state;
pub mod weights;

pub use engine::{
    Engine, EngineOptions, Logits, SlotInput, StageTimes, DEFER_RELU_ENV, LORA2_FROM,
    LORA2_FROM_ENV, LORA2_FROM_TENSOR_CORES, MIX_LONG_FROM, MIX_LONG_FROM_ENV, SCAN_CHUNKED_FROM,
    SCAN_CHUNKED_FROM_ENV, WKV_SPLIT_FROM, WKV_SPLIT_FROM_ENV,
};
pub use error::{EngineError, Result};
pub use persistent::{layer_tail_wgsl, PERSISTENT_ENV, PERSISTENT_WGS_ENV};
pub use profile::Profile;
pub use rwkv_sampler::{CpuSampler, SamplingParams};
pub use sample::{GpuSampler, SampleTicket, StepInput, StepTokens, SAMPLE_WG_ENV};
pub use state::Rollback;
