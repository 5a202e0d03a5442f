//! GPU runtime on wgpu: the device context ([`GpuContext`]), weight matrices kept in their
//! GGUF encoding ([`GpuMatrix`]) and the quantized matrix kernels ([`MatmulKernels`]).

mod context;
mod env;
mod error;
mod grid_sync;
mod matmul;
mod matvec;
mod pipeline;
mod shader;
mod weights;

pub use context::{AdapterSummary, ContextOptions, GpuContext, ADAPTER_ENV, COOP_ENV};
pub use env::{env_on, env_parse, env_set};
pub use error::GpuError;
pub use grid_sync::{GridSync, GRID_SYNC_WGSL, MAX_GRID, SYNC_MAX_SPINS};
pub use matmul::{
    coop_kernel_wgsl, ConvertCall, CoopShape, CoopSplit, Epilogue, GetRowsCall, MatmulCall,
    MatmulKernels, StackItem, StackedCall, TileShape, X16Input, COOP_DIRECT_STORE_ENV,
    COOP_F16_WEIGHTS_ENV, COOP_FEW_K_ENV, COOP_FROM_ENV, COOP_FUSED_ENV, COOP_ORDER_ENV,
    COOP_PROBE_ENV, COOP_SCRATCH_MB_ENV, COOP_SHAPE_ENV, COOP_SHORT_FROM_ENV, COOP_SPLIT_ENV,
    COOP_UNIT_ENV, STEP_N_TOKENS_OFFSET, TILED_FROM_TOKENS, TILE_ENV,
};
pub use matvec::{
    direct_kernel_wgsl, persistent_format, persistent_phase, persistent_prelude, q8_format_of_mode,
    MatvecCall, MatvecInput, MatvecJob, MatvecKernels, PhaseMatrix, Q8Format, Q8Input,
    QuantizeCall, TokensCall, XqRegion, DIRECT_TOKENS_F16, DIRECT_TOKENS_F16_COOP, F16_TALL_ROWS,
    F16_TALL_ROWS_ENV, INT_Q8_0_ENV, MAX_BINDINGS, MAX_TOKENS, PERSISTENT_WG_SIZE, Q8K_INPUT_ENV,
    Q8_PACK_WGSL, ROUNDING_WGSL, ROUND_Q8_0, ROUND_Q8_K,
};
pub use pipeline::{bind_group0_entries, wait_for_compiles, Pipeline};
pub use shader::{compile_times, shader_module, SHADER_CHECKS_ENV};
pub use weights::{GpuMatrix, StackedF16};
