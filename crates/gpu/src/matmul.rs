//! Matrix kernels over weights in their ggml encoding: `y = W x` for a batch of tokens with
//! a fused epilogue, and a row lookup (`get_rows`) that decodes rows to f32.
//!
//! Shaders are composed from WGSL files: generated header constants, `quant/common.wgsl`,
//! the weight format's `quant/<type>.wgsl` (its decode functions) and the kernel body
//! (`matmul.wgsl` with the x loader `matmul_x1.wgsl` or `matmul_x4.wgsl`, or
//! `get_rows.wgsl`). Pipelines are compiled lazily and cached per (type, kernel, epilogue,
//! tokens per workgroup, x loader).
//!
//! The token count is read by the shader from the caller's `step_params` storage buffer:
//! the `u32` at byte [`STEP_N_TOKENS_OFFSET`], clamped to the call's `max_tokens`. Calls are
//! therefore built once and recorded every step.

use crate::pipeline::Pipeline;
use std::collections::HashMap;
use std::sync::Mutex;

use gguf::GgmlType;

use crate::context::GpuContext;
use crate::env::{env_parse, env_set};
use crate::error::GpuError;
use crate::shader::Checks;
use crate::weights::{GpuFormat, GpuMatrix, StackedF16};

mod coop;

use coop::{
    whole_blocks, CoopCall, CoopIo, CoopScratch, COOP_FROM_TOKENS, COOP_FUSED_TOKENS,
    COOP_MIN_TOKENS, COOP_SCRATCH_BYTES, COOP_SHORT_FROM_TOKENS,
};
pub use coop::{
    ConvertCall, CoopShape, CoopSplit, X16Input, COOP_DIRECT_STORE_ENV, COOP_F16_WEIGHTS_ENV,
    COOP_FEW_K_ENV, COOP_FROM_ENV, COOP_FUSED_ENV, COOP_ORDER_ENV, COOP_PROBE_ENV, COOP_SHAPE_ENV,
    COOP_SHORT_FROM_ENV, COOP_SPLIT_ENV, COOP_UNIT_ENV,
};

/// Byte offset of the token count (`u32`) in the `step_params` buffer.
pub const STEP_N_TOKENS_OFFSET: u64 = 0;

/// Threads per workgroup of the row lookup.
const GET_ROWS_WG_SIZE: u32 = 64;
/// Tokens per workgroup of the batched matmul (each decoded weight is used this many times).
const TOKENS_PER_WG: u32 = 8;

/// Environment variable overriding the tensor-core path's f16 weight scratch, in MiB (see
/// [`MatmulKernels::with_coop_scratch_bytes`]; for measurements).
pub const COOP_SCRATCH_MB_ENV: &str = "WEB_RWKV_COOP_SCRATCH_MB";

/// The tiled matrix-matrix kernel (`matmul_tiled.wgsl`): columns per decoded weight tile
/// (its workgroup shape is a [`TileShape`]), and the token count from which it replaces the
/// row kernel.
const TILE_COLS: u32 = 256;
pub const TILED_FROM_TOKENS: u32 = 16;
/// Matrices with fewer rows than this use the row kernel for every batch (default of
/// [`MatmulKernels::with_tiled_min_rows`]).
const TILED_MIN_ROWS: usize = 1024;
/// The tiled kernel's workgroup: `rows` x `tokens` outputs, `rows_per_thread` x
/// `tokens_per_thread` per thread, x staged `x_cols` columns at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileShape {
    pub rows: u32,
    pub tokens: u32,
    pub rows_per_thread: u32,
    pub tokens_per_thread: u32,
    pub x_cols: u32,
    /// Load the next x chunk into registers before the products of the current one.
    pub prefetch: bool,
}

/// Environment variable overriding the tiled kernel's shape, `ROWSxTOKENSxRTxCTxXCOLS`, with
/// `xp` appended for [`TileShape::prefetch`] (for measurements; an invalid shape is ignored).
pub const TILE_ENV: &str = "WEB_RWKV_TILE";

impl TileShape {
    /// The shapes tried by default, best first: the first whose workgroup memory and
    /// threads the adapter offers is used. Measured on an H200 (2.9B Q4_K_M prefill of
    /// 2048 tokens): 32x64 with 2x2 per thread (512 threads, 41.5 KB) and x prefetched
    /// 1,333 tok/s (1,232 without the prefetch; batch 64 961 against 920); 16x64 2x2 (256
    /// threads, 24.8 KB, fits lavapipe's 32 KB) 842 (1,039 with the prefetch); larger
    /// register blocks (4x2, 4x4, 2x4, 2x8 per thread) 777 to 1,014; 64x64 4x4 618.
    pub const PREFERRED: [TileShape; 2] = [
        TileShape {
            rows: 32,
            tokens: 64,
            rows_per_thread: 2,
            tokens_per_thread: 2,
            x_cols: 32,
            prefetch: true,
        },
        TileShape {
            rows: 16,
            tokens: 64,
            rows_per_thread: 2,
            tokens_per_thread: 2,
            x_cols: 32,
            prefetch: true,
        },
    ];

    /// [`TILE_ENV`] if it holds a valid shape, else the first of
    /// [`TileShape::PREFERRED`] that fits the adapter's `limits` (or the last, which
    /// [`MatmulKernels::prepare`] then finds too large and replaces by the row kernel).
    pub fn for_limits(limits: &wgpu::Limits) -> TileShape {
        if let Some(shape) = std::env::var(TILE_ENV)
            .ok()
            .and_then(|v| TileShape::parse(&v))
        {
            return shape;
        }
        *Self::PREFERRED
            .iter()
            .find(|s| s.fits(limits))
            .unwrap_or(&Self::PREFERRED[Self::PREFERRED.len() - 1])
    }

    /// Whether an adapter with `limits` offers the workgroup memory and threads.
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
            && self.threads() <= limits.max_compute_invocations_per_workgroup
            && self.threads() <= limits.max_compute_workgroup_size_x
    }

    /// Parses `ROWSxTOKENSxRTxCTxXCOLS[xp]`; `None` unless every part divides as the kernel
    /// needs.
    pub fn parse(text: &str) -> Option<TileShape> {
        let (text, prefetch) = match text.strip_suffix("xp") {
            Some(rest) => (rest, true),
            None => (text, false),
        };
        let v: Vec<u32> = text
            .split('x')
            .map(|p| p.trim().parse().ok())
            .collect::<Option<_>>()?;
        let &[rows, tokens, rows_per_thread, tokens_per_thread, x_cols] = v.as_slice() else {
            return None;
        };
        let shape = TileShape {
            rows,
            tokens,
            rows_per_thread,
            tokens_per_thread,
            x_cols,
            prefetch,
        };
        let ok = rows_per_thread > 0
            && tokens_per_thread > 0
            && rows.is_multiple_of(rows_per_thread)
            && tokens.is_multiple_of(tokens_per_thread)
            && x_cols > 0
            && x_cols.is_multiple_of(4)
            && TILE_COLS.is_multiple_of(x_cols)
            && (1..=1024).contains(&shape.threads());
        ok.then_some(shape)
    }

    /// Threads per workgroup.
    pub fn threads(&self) -> u32 {
        (self.rows / self.rows_per_thread) * (self.tokens / self.tokens_per_thread)
    }

    /// Workgroup memory: the decoded weight tile (one padding vec4 per row) and the x chunk.
    /// Adapters that offer less use the row kernel for every batch.
    pub fn workgroup_bytes(&self) -> u32 {
        self.rows * (TILE_COLS / 4 + 1) * 16 + self.tokens * self.x_cols * 4
    }
}

/// How the matmul's workgroups are shaped: `threads_per_row` threads share an output row,
/// `rows_per_wg` rows share a workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RowTiling {
    threads_per_row: u32,
    rows_per_wg: u32,
}

/// Threads per row by matrix height: as few as keep about 2^17 threads busy (fewer threads
/// per row means more of each row's units per thread and less reduction), so tall
/// matrices (heads, FFN keys) use 8 or 16 and short wide ones (FFN values, 2560-row
/// projections) 32. Measured on an H100 (Vulkan) with 2560- and 10240-wide rows: each
/// choice was the fastest or within a few percent of it at one token.
fn row_tiling(rows: usize) -> RowTiling {
    const BUSY_THREADS: usize = 1 << 17;
    let threads_per_row = [8u32, 16]
        .into_iter()
        .find(|&t| rows * t as usize >= BUSY_THREADS)
        .unwrap_or(32);
    RowTiling {
        threads_per_row,
        rows_per_wg: if threads_per_row == 8 { 8 } else { 4 },
    }
}

/// The parameter struct and uniform binding of the matrix kernels.
const PARAMS_WGSL: &str = include_str!("quant/params.wgsl");
/// Helpers every weight format's decoder uses (shared with the matvec kernels).
pub(crate) const COMMON_WGSL: &str = include_str!("quant/common.wgsl");
/// `epilogue_of`, what a matrix kernel does with its sums (shared with the matvec kernels,
/// which have its roundings from [`crate::ROUNDING_WGSL`]).
pub(crate) const EPILOGUE_WGSL: &str = include_str!("epilogue.wgsl");
/// [`EPILOGUE_WGSL`] with the roundings it calls, for the matrix kernels.
const EPILOGUE_ROUND_WGSL: &str = concat!(
    include_str!("round_half.wgsl"),
    "\n",
    include_str!("epilogue.wgsl")
);
const MATMUL_WGSL: &str = include_str!("matmul.wgsl");
const MATMUL_X1_WGSL: &str = include_str!("matmul_x1.wgsl");
const MATMUL_X4_WGSL: &str = include_str!("matmul_x4.wgsl");
const MATMUL_TILED_WGSL: &str = include_str!("matmul_tiled.wgsl");
const MATMUL_COOP_WGSL: &str = include_str!("matmul_coop.wgsl");
const MATMUL_COOP_A16_WGSL: &str = include_str!("matmul_coop_a16.wgsl");
const MATMUL_COOP_AQ_WGSL: &str = include_str!("matmul_coop_aq.wgsl");
const MATMUL_COOP_AQ4_K_WGSL: &str = concat!(
    include_str!("matmul_coop_k_scales.wgsl"),
    "\n",
    include_str!("matmul_coop_aq4_k.wgsl")
);
const MATMUL_COOP_AQ5_K_WGSL: &str = concat!(
    include_str!("matmul_coop_k_scales.wgsl"),
    "\n",
    include_str!("matmul_coop_aq5_k.wgsl")
);
const MATMUL_COOP_AQ6_K_WGSL: &str = include_str!("matmul_coop_aq6_k.wgsl");
const MATMUL_COOP_AQ4_0_WGSL: &str = include_str!("matmul_coop_aq4_0.wgsl");
const MATMUL_COOP_ABF16_WGSL: &str = include_str!("matmul_coop_abf16.wgsl");
const MATMUL_COOP_AQ8_0_WGSL: &str = include_str!("matmul_coop_aq8_0.wgsl");
/// The decoders of the types whose blocks are not whole 16-byte units, after the word
/// helpers (word_bits.wgsl, matmul_coop_words.wgsl); Q4_1 and Q5_1 share one (QH_BITS).
macro_rules! word_decoder {
    ($($part:expr),+) => {
        concat!(
            include_str!("word_bits.wgsl"),
            "\n",
            include_str!("matmul_coop_words.wgsl"),
            $("\n", $part),+
        )
    };
}
const MATMUL_COOP_AQ4_1_WGSL: &str = word_decoder!(
    "const QH_BITS: u32 = 0u;",
    include_str!("matmul_coop_aq4_1.wgsl")
);
const MATMUL_COOP_AQ5_1_WGSL: &str = word_decoder!(
    "const QH_BITS: u32 = 1u;",
    include_str!("matmul_coop_aq4_1.wgsl")
);
const MATMUL_COOP_AQ5_0_WGSL: &str = word_decoder!(include_str!("matmul_coop_aq5_0.wgsl"));
const MATMUL_COOP_AQ2_K_WGSL: &str = word_decoder!(include_str!("matmul_coop_aq2_k.wgsl"));
const MATMUL_COOP_AQ3_K_WGSL: &str = include_str!("matmul_coop_aq3_k.wgsl");
const MATMUL_COOP_DEQUANT_WGSL: &str = include_str!("matmul_coop_dequant.wgsl");
const MATMUL_COOP_X_WGSL: &str = include_str!("matmul_coop_x.wgsl");
const MATMUL_COOP_SUM_WGSL: &str = include_str!("matmul_coop_sum.wgsl");
const GET_ROWS_WGSL: &str = include_str!("get_rows.wgsl");

/// The decode functions of a weight type (ggml's dequantization in WGSL), for the matmul and
/// the matvec kernels' float path.
pub(crate) fn format_wgsl(ty: GgmlType) -> Option<&'static str> {
    use GgmlType::*;
    Some(match ty {
        F32 => include_str!("quant/f32.wgsl"),
        F16 => include_str!("quant/f16.wgsl"),
        BF16 => include_str!("quant/bf16.wgsl"),
        Q8_0 => include_str!("quant/q8_0.wgsl"),
        Q4_0 => include_str!("quant/q4_0.wgsl"),
        Q4_1 => include_str!("quant/q4_1.wgsl"),
        Q5_0 => include_str!("quant/q5_0.wgsl"),
        Q5_1 => include_str!("quant/q5_1.wgsl"),
        Q2_K => include_str!("quant/q2_k.wgsl"),
        Q3_K => include_str!("quant/q3_k.wgsl"),
        Q4_K => concat!(
            include_str!("quant/k_scale_min.wgsl"),
            include_str!("quant/q4_k.wgsl")
        ),
        Q5_K => concat!(
            include_str!("quant/k_scale_min.wgsl"),
            include_str!("quant/q5_k.wgsl")
        ),
        Q6_K => include_str!("quant/q6_k.wgsl"),
        _ => return None,
    })
}

/// What the matmul does with its result `r` for output `y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// `y = r`
    Store,
    /// `y += r`
    Add,
    /// `y = max(r, 0)^2`
    ReluSquare,
    /// `y = tanh(r)`
    Tanh,
    /// `y = 1 / (1 + exp(-r))`
    Sigmoid,
    /// `y = max(r, 0)^2` rounded to the nearest f16 (as ggml rounds the input of a product
    /// with F16 weights: the next product reads `y` as it is)
    ReluSquareF16,
    /// The same rounded to bf16 (for BF16 weights)
    ReluSquareBf16,
}

impl Epilogue {
    pub const ALL: [Epilogue; 7] = [
        Epilogue::Store,
        Epilogue::Add,
        Epilogue::ReluSquare,
        Epilogue::Tanh,
        Epilogue::Sigmoid,
        Epilogue::ReluSquareF16,
        Epilogue::ReluSquareBf16,
    ];

    fn id(self) -> u32 {
        match self {
            Epilogue::Store => 0,
            Epilogue::Add => 1,
            Epilogue::ReluSquare => 2,
            Epilogue::Tanh => 3,
            Epilogue::Sigmoid => 4,
            Epilogue::ReluSquareF16 => 5,
            Epilogue::ReluSquareBf16 => 6,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kernel {
    /// `vec_x`: x read as vec4 (offset and stride multiples of 4).
    Matmul {
        epilogue: Epilogue,
        tokens: u32,
        vec_x: bool,
        tiling: RowTiling,
    },
    /// The tiled matrix-matrix kernel (x read as scalars).
    Tiled {
        epilogue: Epilogue,
        shape: TileShape,
    },
    /// The tensor-core product of f16 copies, for subgroups of `subgroup` invocations.
    Coop {
        epilogue: Epilogue,
        subgroup: u32,
        shape: CoopShape,
    },
    /// [`Kernel::Coop`] decoding its weight tiles from the blocks of the type it is keyed
    /// by as it stages them (types with a file in [`coop_fused_wgsl`]).
    /// With `stack`, a decoded stack's product: each matrix's blocks in their own binding
    /// (0, then [`STACK_WEIGHT_BINDINGS`]), in the layout of [`MatmulKernels::bind_stack`].
    CoopFused {
        epilogue: Epilogue,
        subgroup: u32,
        shape: CoopShape,
        stack: bool,
    },
    /// Weight rows decoded to f16 for [`Kernel::Coop`].
    CoopDequant,
    /// Inputs converted to f16 for [`Kernel::Coop`].
    CoopX,
    /// The parts of a [`Kernel::Coop`] product split over columns, added.
    CoopSum {
        epilogue: Epilogue,
    },
    GetRows,
}

/// Compiled pipelines, created on first use and cached.
pub struct MatmulKernels {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// The layout with the weights of a stack's other matrices ([`STACK_WEIGHT_BINDINGS`]).
    stack_layout: wgpu::BindGroupLayout,
    stack_pipeline_layout: wgpu::PipelineLayout,
    cache: Mutex<HashMap<(GgmlType, Kernel), Pipeline>>,
    tiled_min_rows: usize,
    tile: TileShape,
    /// The f16 copies the tensor-core path multiplies (shared by every call; see
    /// [`CoopScratch`]).
    coop_scratch: Mutex<CoopScratch>,
    coop_scratch_bytes: u64,
    coop_from: u32,
    coop_shape: CoopShape,
    coop_split: CoopSplit,
    /// Keep an f16 copy of every quantized matrix the tensor-core path multiplies, decoded
    /// once (see [`MatmulKernels::with_coop_f16_weights`]).
    coop_f16_weights: bool,
    /// [`COOP_SHORT_FROM_TOKENS`], or [`COOP_SHORT_FROM_ENV`].
    coop_short_from: u32,
    /// Steps of at most this many tokens decode quantized weights inside the tensor-core
    /// product ([`COOP_FUSED_TOKENS`], or [`COOP_FUSED_ENV`]; 0: never).
    coop_fused_upto: u32,
}

/// The uniform parameters of one part (mirrors `Params` in quant/params.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    blocks_per_row: u32,
    row_words: u32,
    scale_base: u32,
    row_start: u32,
    in_offset: u32,
    in_stride: u32,
    out_offset: u32,
    out_stride: u32,
    max_tokens: u32,
    /// The tensor-core weight decode: the slice's first row within its part.
    first_row: u32,
    /// The tensor-core product: parts the columns are split into (0 or 1: not split; see
    /// `matmul_coop_sum.wgsl`).
    k_split: u32,
    /// The tensor-core product of a stack of matrices (see `quant/params.wgsl`): the input
    /// block of each (8 bits each), elements per block, the epilogue of each (4 bits each),
    /// the matrices' row ends (0 first: no stack; the last and unused ones `u32::MAX`), what
    /// is added (wrapping) to each matrix's output index, and each matrix's rows written,
    /// columns, and first f16 element in the weights.
    stack_in: u32,
    stack_block: u32,
    stack_epilogues: u32,
    stack_ends: [u32; 4],
    stack_shift: [u32; 4],
    stack_rows: [u32; 4],
    stack_cols: [u32; 4],
    stack_base: [u32; 4],
}

struct PartCall {
    bind_group: wgpu::BindGroup,
    /// Rows of this part (the tiled kernel's grid is derived from it).
    rows: u32,
    /// Workgroups along x and y covering this part's row groups (matmul).
    groups: (u32, u32),
    // Keeps the uniform buffer alive next to the bind group that uses it.
    _params: wgpu::Buffer,
}

/// A matmul prepared for one weight matrix and fixed buffers: bind groups and static
/// parameters, built once and recorded every step.
pub struct MatmulCall {
    parts: Vec<PartCall>,
    /// Pipeline for one token, and for batches ([`TOKENS_PER_WG`] tokens per workgroup).
    single: Pipeline,
    batched: Pipeline,
    /// The kernel for batches of [`TILED_FROM_TOKENS`] or more where the adapter has the
    /// workgroup memory for it, with its rows and tokens per workgroup.
    tiled: Option<(Pipeline, u32, u32)>,
    /// The tensor-core path, for batches of `coop_from` tokens or more, where the device
    /// has cooperative matrices.
    coop: Option<CoopCall>,
    coop_from: u32,
    max_groups: u32,
    max_tokens: u32,
}

/// One matrix of a stacked product ([`MatmulKernels::prepare_stacked`]): its inputs from
/// `x_offset` (a whole block of the shared f16 copy), its outputs from `y_offset`, and what
/// is done with its sums.
#[derive(Clone, Copy)]
pub struct StackItem<'a> {
    pub w: &'a GpuMatrix,
    pub x_offset: u32,
    pub y_offset: u32,
    pub epilogue: Epilogue,
}

/// Products of several matrices reading one shared f16 input copy and writing one output,
/// taken as one tensor-core product in steps of `from` tokens or more (see
/// [`MatmulKernels::prepare_stacked`]); the matrices' own [`MatmulCall`]s serve the smaller
/// steps.
pub struct StackedCall {
    coop: CoopCall,
    from: u32,
    max_groups: u32,
    max_tokens: u32,
}

impl StackedCall {
    /// Tokens from which a step takes the stacked product (see [`Self::takes`]).
    pub fn from(&self) -> u32 {
        self.from
    }

    /// Whether a step of `n_tokens` tokens takes the stacked product.
    pub fn takes(&self, n_tokens: u32) -> bool {
        n_tokens.min(self.max_tokens) >= self.from
    }

    /// Records the stacked product for a step of `n_tokens` tokens (one it [`Self::takes`]).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        let n = n_tokens.min(self.max_tokens);
        self.coop.record(pass, n, self.max_groups);
    }

    /// Dispatches [`Self::record`] makes for `n_tokens` tokens.
    pub fn n_dispatches(&self, n_tokens: u32) -> usize {
        let n = n_tokens.min(self.max_tokens);
        self.coop.n_dispatches(n, self.max_groups)
    }
}

/// A row lookup prepared for one weight matrix and fixed buffers.
pub struct GetRowsCall {
    parts: Vec<PartCall>,
    pipeline: Pipeline,
    max_tokens: u32,
    max_groups_x: u32,
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

fn elements(buf: &wgpu::Buffer) -> u64 {
    buf.size() / 4
}

/// Checks shared by both kernels' `prepare`.
fn check_common(
    ctx: &GpuContext,
    w: &GpuMatrix,
    step_params: &wgpu::Buffer,
    max_tokens: u32,
    per_wg: u32,
) -> Result<(), GpuError> {
    if max_tokens == 0 {
        return Err(GpuError::InvalidArgument(
            "max_tokens must be at least 1".into(),
        ));
    }
    let max_dim = ctx.limits.max_compute_workgroups_per_dimension.max(1);
    if max_tokens.div_ceil(per_wg) > max_dim {
        return Err(GpuError::InvalidArgument(format!(
            "max_tokens {max_tokens} needs more than {max_dim} workgroups along z"
        )));
    }
    if step_params.size() < STEP_N_TOKENS_OFFSET + 4
        || !step_params.usage().contains(wgpu::BufferUsages::STORAGE)
    {
        return Err(GpuError::InvalidArgument(
            "step_params must be a STORAGE buffer of at least 4 bytes".into(),
        ));
    }
    if w.cols > u32::MAX as usize / 2 || w.rows > u32::MAX as usize / 2 {
        return Err(GpuError::InvalidArgument(format!(
            "matrix '{}' is too large for 32-bit indexing",
            w.name
        )));
    }
    Ok(())
}

/// Checks that `n` tokens of `len` elements at `offset`, `stride` apart, fit in `buf`.
fn check_span(
    what: &str,
    buf: &wgpu::Buffer,
    offset: u32,
    stride: u32,
    len: u64,
    max_tokens: u32,
) -> Result<(), GpuError> {
    if !buf.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(GpuError::InvalidArgument(format!(
            "{what} needs STORAGE usage"
        )));
    }
    let end = offset as u64 + (max_tokens as u64 - 1) * stride as u64 + len;
    if end > elements(buf) || end > u32::MAX as u64 {
        return Err(GpuError::InvalidArgument(format!(
            "{what}: {max_tokens} tokens of {len} values at offset {offset}, stride {stride} \
             need {end} elements, the buffer has {}",
            elements(buf)
        )));
    }
    if max_tokens > 1 && (stride as u64) < len && what.starts_with("output") {
        return Err(GpuError::InvalidArgument(format!(
            "{what}: stride {stride} is shorter than a token's {len} values"
        )));
    }
    Ok(())
}

/// `groups` workgroups as the x and y of a grid, at most `max_dim` along x.
fn split_grid(groups: u32, max_dim: u32) -> (u32, u32) {
    let x = groups.clamp(1, max_dim);
    (x, groups.div_ceil(x).max(1))
}

/// Row groups of `n` rows, `per` per workgroup, as a 2-D grid within the device limit.
fn grid(ctx: &GpuContext, groups: u32) -> Result<(u32, u32), GpuError> {
    let max_dim = ctx.limits.max_compute_workgroups_per_dimension.max(1);
    let (x, y) = split_grid(groups, max_dim);
    if y > max_dim {
        return Err(GpuError::InvalidArgument(format!(
            "{groups} workgroups do not fit a {max_dim} x {max_dim} grid"
        )));
    }
    Ok((x, y))
}

/// A uniform buffer holding one call's (or slice's) parameters.
fn params_buffer(ctx: &GpuContext, params: &Params) -> Result<wgpu::Buffer, GpuError> {
    ctx.create_buffer_checked(
        "rwkv-gpu matmul params",
        std::mem::size_of::<Params>() as u64,
        wgpu::BufferUsages::UNIFORM,
        Some(bytemuck::bytes_of(params)),
    )
}

impl MatmulKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self, GpuError> {
        let mut entries = vec![
            storage_entry(0, true),
            wgpu::BindGroupLayoutEntry {
                binding: 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
            storage_entry(2, true),
            storage_entry(3, false),
            storage_entry(4, true),
        ];
        let layouts = |label: &str, entries: &[wgpu::BindGroupLayoutEntry]| {
            let layout = ctx
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(label),
                    entries,
                });
            let pipeline = ctx
                .device
                .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(label),
                    bind_group_layouts: &[Some(&layout)],
                    immediate_size: 0,
                });
            (layout, pipeline)
        };
        let (layout, pipeline_layout) = layouts("rwkv-gpu matmul", &entries);
        entries.extend(STACK_WEIGHT_BINDINGS.map(|b| storage_entry(b, true)));
        let (stack_layout, stack_pipeline_layout) = layouts("rwkv-gpu matmul stack", &entries);
        Ok(MatmulKernels {
            layout,
            pipeline_layout,
            stack_layout,
            stack_pipeline_layout,
            cache: Mutex::new(HashMap::new()),
            tiled_min_rows: TILED_MIN_ROWS,
            tile: TileShape::for_limits(&ctx.limits),
            coop_scratch: Mutex::new(CoopScratch::default()),
            coop_scratch_bytes: env_parse::<u64>(COOP_SCRATCH_MB_ENV)
                .map_or(COOP_SCRATCH_BYTES, |mb| mb.max(1) << 20),
            coop_shape: CoopShape::from_env(),
            coop_split: CoopSplit::from_env(),
            coop_f16_weights: env_set(COOP_F16_WEIGHTS_ENV),
            coop_short_from: env_parse::<u32>(COOP_SHORT_FROM_ENV)
                .unwrap_or(COOP_SHORT_FROM_TOKENS),
            coop_from: env_parse::<u32>(COOP_FROM_ENV)
                .unwrap_or(COOP_FROM_TOKENS)
                .max(COOP_MIN_TOKENS),
            coop_fused_upto: env_parse::<u32>(COOP_FUSED_ENV).unwrap_or(COOP_FUSED_TOKENS),
        })
    }

    /// Use the tile kernels for batches only on matrices of at least `rows` rows (default
    /// 1024; tests set 0 to run them on small matrices).
    pub fn with_tiled_min_rows(mut self, rows: usize) -> Self {
        self.tiled_min_rows = rows;
        self
    }

    /// Decode at most `bytes` of f16 weight rows at a time in the tensor-core path (default
    /// 64 MiB; tests set a few KiB so that every matrix is multiplied in several slices).
    pub fn with_coop_scratch_bytes(mut self, bytes: u64) -> Self {
        self.coop_scratch_bytes = bytes;
        self
    }

    /// Use the tensor-core path from `tokens` tokens on (default 5, the first step the
    /// direct matvec leaves to it on such a device, for tall F16 matrices; other types keep
    /// the direct matvec up to 8 tokens. Or [`COOP_FROM_ENV`]; at least 2).
    pub fn with_coop_from(mut self, tokens: u32) -> Self {
        self.coop_from = tokens.max(COOP_MIN_TOKENS);
        self
    }

    /// When the tensor-core product splits its columns (default [`CoopSplit::DEFAULT`], or
    /// [`COOP_SPLIT_ENV`]).
    pub fn with_coop_split(mut self, split: CoopSplit) -> Self {
        self.coop_split = split;
        self
    }

    /// Store whole tiles of plain sums straight from the tensor-core product's accumulators
    /// (default on, or off with [`COOP_DIRECT_STORE_ENV`]`=0`), or every tile through
    /// workgroup memory.
    pub fn with_coop_direct_store(mut self, on: bool) -> Self {
        self.coop_shape.direct_store = on as u32;
        self
    }

    /// Keep f16 copies of the quantized weights for the tensor-core path (default off, or
    /// [`COOP_F16_WEIGHTS_ENV`]`=1`): each matrix is decoded once, when its first call is
    /// prepared, instead of at every step; this costs GPU memory (2 bytes per weight; 5.9
    /// GB for a 2.9B model) and saves a decode of every weight per batch step. F16 weights
    /// are multiplied as they are either way.
    pub fn with_coop_f16_weights(mut self, on: bool) -> Self {
        self.coop_f16_weights = on;
        self
    }

    /// Decode quantized weights inside the tensor-core product, instead of into an f16 copy
    /// before it, in steps of at most `tokens` tokens (default `COOP_FUSED_TOKENS`, or
    /// [`COOP_FUSED_ENV`]; 0 never), for the types that have such a kernel.
    pub fn with_coop_fused(mut self, tokens: u32) -> Self {
        self.coop_fused_upto = tokens;
        self
    }

    /// Bytes the tensor-core path holds on the GPU: its scratch buffers and f16 weights.
    pub fn coop_bytes(&self) -> u64 {
        self.coop_scratch.lock().map_or(0, |s| s.bytes())
    }

    /// Use `shape` for the tiled kernel (default [`TileShape::for_limits`]).
    pub fn with_tile_shape(mut self, shape: TileShape) -> Self {
        self.tile = shape;
        self
    }

    fn pipeline(
        &self,
        ctx: &GpuContext,
        ty: GgmlType,
        kernel: Kernel,
    ) -> Result<Pipeline, GpuError> {
        let key = (ty, kernel);
        if let Some(p) = self.cache.lock().map_err(poisoned)?.get(&key) {
            return Ok(p.clone());
        }
        let label = match kernel {
            Kernel::Matmul {
                epilogue,
                tokens,
                vec_x,
                tiling,
            } => format!(
                "matmul {ty} {epilogue:?} x{tokens} vec_x={vec_x} tpr={}",
                tiling.threads_per_row
            ),
            Kernel::Tiled { epilogue, shape } => format!(
                "matmul_tiled {ty} {epilogue:?} {}x{}{}",
                shape.rows,
                shape.tokens,
                if shape.prefetch { " prefetch" } else { "" }
            ),
            Kernel::Coop { epilogue, .. } => format!("matmul_coop {epilogue:?}"),
            Kernel::CoopFused {
                epilogue, stack, ..
            } => format!("matmul_coop_fused {ty} {epilogue:?} stack={stack}"),
            Kernel::CoopDequant => format!("matmul_coop_dequant {ty}"),
            Kernel::CoopX => "matmul_coop_x".to_string(),
            Kernel::CoopSum { epilogue } => format!("matmul_coop_sum {epilogue:?}"),
            Kernel::GetRows => format!("get_rows {ty}"),
        };
        let fmt = format_wgsl(ty).ok_or_else(|| GpuError::UnsupportedType {
            name: label.clone(),
            ty,
        })?;
        let source = compose(ty, kernel, fmt);
        // The tensor-core product's indices, and the weight decode's for block formats,
        // are in range by construction (see their WGSL); together their bounds checks cost
        // prompts 13-15% and batches of 32-256 sequences 11-14% (shader.rs).
        let in_range = match kernel {
            Kernel::Coop { .. } | Kernel::CoopFused { .. } => true,
            Kernel::CoopDequant => !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16),
            _ => false,
        };
        let checks = if in_range {
            Checks::unchecked_on(ctx.info.backend)
        } else {
            Checks::Bounds
        };
        let layout = match kernel {
            Kernel::CoopFused { stack: true, .. } => &self.stack_pipeline_layout,
            _ => &self.pipeline_layout,
        };
        let pipeline = crate::shader::compute_pipeline_with(
            &ctx.device,
            &label,
            &source,
            Some(layout),
            checks,
        )?;
        self.cache
            .lock()
            .map_err(poisoned)?
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// A bind group of the matrix kernels' layout over `[weights, params, input, output,
    /// step]` (bindings 0 to 4).
    fn bind_group(
        &self,
        ctx: &GpuContext,
        label: &str,
        buffers: [&wgpu::Buffer; 5],
    ) -> wgpu::BindGroup {
        let entries: Vec<_> = (0u32..).zip(buffers).map(|(i, b)| entry(i, b)).collect();
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.layout,
            entries: &entries,
        })
    }

    /// A bind group of the stack layout: `buffers` as for [`Self::bind_group`], and the
    /// blocks of a stack's other matrices at [`STACK_WEIGHT_BINDINGS`] (the first matrix's
    /// where the stack has fewer).
    fn bind_stack(
        &self,
        ctx: &GpuContext,
        label: &str,
        buffers: [&wgpu::Buffer; 5],
        others: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let mut entries: Vec<_> = (0u32..).zip(buffers).map(|(i, b)| entry(i, b)).collect();
        for (k, binding) in STACK_WEIGHT_BINDINGS.into_iter().enumerate() {
            entries.push(entry(binding, others.get(k).copied().unwrap_or(buffers[0])));
        }
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.stack_layout,
            entries: &entries,
        })
    }

    /// One bind group (and uniform parameters) per part; `buffers` = input, output, step.
    fn part_calls(
        &self,
        ctx: &GpuContext,
        w: &GpuMatrix,
        io: &Params,
        [input, output, step_params]: [&wgpu::Buffer; 3],
        rows_per_group: Option<u32>,
    ) -> Result<Vec<PartCall>, GpuError> {
        let mut out = Vec::with_capacity(w.parts.len());
        for part in &w.parts {
            let params = Params {
                rows: part.rows as u32,
                cols: w.cols as u32,
                blocks_per_row: w.blocks_per_row as u32,
                row_words: w.row_words as u32,
                scale_base: part.scale_base as u32,
                row_start: part.row_start as u32,
                ..*io
            };
            let params_buf = params_buffer(ctx, &params)?;
            let bind_group = self.bind_group(
                ctx,
                &w.name,
                [&part.buffer, &params_buf, input, output, step_params],
            );
            let groups = match rows_per_group {
                Some(r) => grid(ctx, (part.rows as u32).div_ceil(r))?,
                None => (0, 0),
            };
            out.push(PartCall {
                bind_group,
                rows: part.rows as u32,
                groups,
                _params: params_buf,
            });
        }
        Ok(out)
    }

    /// Prepare `y[t][r] (op)= Σ_c W[r][c] · x[t][c]` for t < n_tokens (read at run time from
    /// `step_params`, see [`STEP_N_TOKENS_OFFSET`], clamped to `max_tokens`).
    ///
    /// Token t's input is `x[x_offset + t * x_stride ..][..cols]` and its output
    /// `y[y_offset + t * y_stride ..][..rows]` (element offsets into f32 buffers). `x`, `y`
    /// and `step_params` must be distinct STORAGE buffers (`y` is bound read-write).
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &self,
        ctx: &GpuContext,
        w: &GpuMatrix,
        x: &wgpu::Buffer,
        x_offset: u32,
        x_stride: u32,
        y: &wgpu::Buffer,
        y_offset: u32,
        y_stride: u32,
        epilogue: Epilogue,
        step_params: &wgpu::Buffer,
        max_tokens: u32,
    ) -> Result<MatmulCall, GpuError> {
        self.prepare_shared(
            ctx,
            w,
            x,
            x_offset,
            x_stride,
            y,
            y_offset,
            y_stride,
            epilogue,
            step_params,
            max_tokens,
            None,
        )
    }

    /// The stacked form of `calls` (prepared with [`MatmulKernels::prepare_shared`] for the
    /// matrices of `items`, reading the shared f16 copy `x16` and writing `y` with stride
    /// `y_stride`): a single product and sum instead of one of each per matrix. Its f16 rows
    /// are `source`'s, or without one each matrix's, decoded every step into its rows of the
    /// f16 scratch. Matrix g reads input block `x_offset / block` and writes from
    /// `y_offset`, with its own epilogue. From the step size where tall matrices take tensor
    /// cores (short ones alone take them later). None where they do not qualify (every call
    /// with a tensor-core path, 2 to 4 matrices; see `prepare_coop_stacked`).
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_stacked(
        &self,
        ctx: &GpuContext,
        calls: &[&MatmulCall],
        items: &[StackItem<'_>],
        block: u32,
        x16: X16Input<'_>,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        y_stride: u32,
        step_params: &wgpu::Buffer,
        source: Option<&StackedF16>,
    ) -> Result<Option<StackedCall>, GpuError> {
        let (Some(first), Some(item), Some(subgroup)) =
            (calls.first(), items.first(), ctx.coop_subgroup_size())
        else {
            return Ok(None);
        };
        let same_path = calls.len() == items.len()
            && calls
                .iter()
                .all(|c| c.coop.is_some() && c.max_tokens == first.max_tokens);
        if !same_path {
            return Ok(None);
        }
        let io = CoopIo {
            x,
            x_offset: 0,
            x_stride: x16.stride,
            y,
            y_offset: item.y_offset,
            y_stride,
            step_params,
            max_tokens: first.max_tokens,
            x16: Some(x16),
        };
        Ok(self
            .prepare_coop_stacked(ctx, items, block, &io, subgroup, source)?
            .map(|coop| StackedCall {
                coop,
                // From where tall matrices take tensor cores, short ones too: the separate
                // short products wait for more tokens because each would be a product and a
                // sum of a few workgroups (see COOP_SHORT_FROM_TOKENS), and a stack is one.
                from: self.coop_from,
                max_groups: first.max_groups,
                max_tokens: first.max_tokens,
            }))
    }

    /// [`MatmulKernels::prepare`], with the tensor-core path reading the f16 copy `x16` of
    /// the same inputs (converted before the call by a [`ConvertCall`], in every step where
    /// the call takes that path: from [`MatmulCall::coop_from`] tokens) instead of
    /// converting them itself.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_shared(
        &self,
        ctx: &GpuContext,
        w: &GpuMatrix,
        x: &wgpu::Buffer,
        x_offset: u32,
        x_stride: u32,
        y: &wgpu::Buffer,
        y_offset: u32,
        y_stride: u32,
        epilogue: Epilogue,
        step_params: &wgpu::Buffer,
        max_tokens: u32,
        x16: Option<X16Input<'_>>,
    ) -> Result<MatmulCall, GpuError> {
        check_common(ctx, w, step_params, max_tokens, TOKENS_PER_WG)?;
        if let Some(s) = x16 {
            let end = s.offset as u64
                + (max_tokens.next_multiple_of(self.coop_shape.tokens()) as u64 - 1)
                    * s.stride as u64
                + w.cols as u64;
            if !(s.offset.is_multiple_of(2) && s.stride.is_multiple_of(2))
                || s.stride < w.cols as u32
                || end * 2 > s.buf.size()
            {
                return Err(GpuError::InvalidArgument(format!(
                    "f16 inputs of '{}': offset {}, stride {} in {} bytes",
                    w.name,
                    s.offset,
                    s.stride,
                    s.buf.size()
                )));
            }
        }
        if x == y || y == step_params {
            return Err(GpuError::InvalidArgument(
                "y must be a different buffer from x and step_params".into(),
            ));
        }
        check_span("input x", x, x_offset, x_stride, w.cols as u64, max_tokens)?;
        check_span("output y", y, y_offset, y_stride, w.rows as u64, max_tokens)?;
        // Offsets and strides in whole vec4s let the kernel load x four values at a time.
        let vec_x = x_offset.is_multiple_of(4) && (max_tokens == 1 || x_stride.is_multiple_of(4));
        let tiling = row_tiling(w.rows);
        let kernel = |tokens| Kernel::Matmul {
            epilogue,
            tokens,
            vec_x,
            tiling,
        };
        let single = self.pipeline(ctx, w.ty, kernel(1))?;
        let batched = self.pipeline(ctx, w.ty, kernel(TOKENS_PER_WG))?;
        let invocations = ctx.limits.max_compute_invocations_per_workgroup;
        let max_dim = ctx.limits.max_compute_workgroups_per_dimension;
        // Short matrices (the LoRA products, a few dozen rows) would give the tile kernels a
        // handful of workgroups each walking every column: the row kernel spreads them
        // better (measured on the H100 at 64 tokens: 165 us per LoRA product tiled).
        let tall = w.rows >= self.tiled_min_rows;
        let big = max_tokens >= TILED_FROM_TOKENS && tall;
        // The tensor-core path takes short matrices too once there are enough tokens (see
        // COOP_SHORT_FROM_TOKENS; with their columns split, a grid of their token groups
        // fills the GPU from a few dozen tokens).
        let coop_from = if tall {
            self.coop_from
        } else {
            self.coop_from.max(self.coop_short_from)
        };
        let tiled = match () {
            _ if big && self.tile.fits(&ctx.limits) => {
                let kernel = Kernel::Tiled {
                    epilogue,
                    shape: self.tile,
                };
                Some((
                    self.pipeline(ctx, w.ty, kernel)?,
                    self.tile.rows,
                    self.tile.tokens,
                ))
            }
            _ => None,
        };
        let shape = self.coop_shape.for_cols(w.cols);
        let coop = match ctx.coop_subgroup_size() {
            // The product walks whole chunks of `k` columns of the f16 copies.
            Some(subgroup)
                // (coop_from is at least COOP_MIN_TOKENS.)
                if max_tokens >= coop_from
                    && invocations >= shape.subgroups() * subgroup
                    && shape.splits_evenly(subgroup)
                    && shape.workgroup_bytes()
                        <= ctx.limits.max_compute_workgroup_storage_size
                    && w.cols.is_multiple_of(shape.k as usize)
                    && whole_blocks(w)
                    && max_tokens.next_multiple_of(shape.tokens()) <= max_dim =>
            {
                let io = CoopIo {
                    x,
                    x_offset,
                    x_stride,
                    y,
                    y_offset,
                    y_stride,
                    step_params,
                    max_tokens,
                    x16,
                };
                Some(self.prepare_coop(ctx, w, &io, epilogue, subgroup)?)
            }
            _ => None,
        };
        let io = Params {
            in_offset: x_offset,
            in_stride: x_stride,
            out_offset: y_offset,
            out_stride: y_stride,
            max_tokens,
            ..Params::default()
        };
        let parts = self.part_calls(ctx, w, &io, [x, y, step_params], Some(tiling.rows_per_wg))?;
        Ok(MatmulCall {
            parts,
            single,
            batched,
            tiled,
            coop,
            coop_from,
            max_groups: ctx.limits.max_compute_workgroups_per_dimension.max(1),
            max_tokens,
        })
    }

    /// Prepare a row lookup:
    /// `out[out_offset + t * out_stride ..][..cols] = W[ids[ids_offset + t]]`
    /// decoded to f32 (bit-identical to ggml's `dequantize_row_*`), for t < n_tokens
    /// (read from `step_params` as for [`MatmulKernels::prepare`]). Ids past the matrix's
    /// rows write nothing. `ids` holds u32.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_get_rows(
        &self,
        ctx: &GpuContext,
        w: &GpuMatrix,
        ids: &wgpu::Buffer,
        ids_offset: u32,
        out: &wgpu::Buffer,
        out_offset: u32,
        out_stride: u32,
        step_params: &wgpu::Buffer,
        max_tokens: u32,
    ) -> Result<GetRowsCall, GpuError> {
        check_common(ctx, w, step_params, max_tokens, 1)?;
        if ids == out || out == step_params {
            return Err(GpuError::InvalidArgument(
                "out must be a different buffer from ids and step_params".into(),
            ));
        }
        check_span("token ids", ids, ids_offset, 1, 1, max_tokens)?;
        check_span(
            "output rows",
            out,
            out_offset,
            out_stride,
            w.cols as u64,
            max_tokens,
        )?;
        let pipeline = self.pipeline(ctx, w.ty, Kernel::GetRows)?;
        let io = Params {
            in_offset: ids_offset,
            in_stride: 1,
            out_offset,
            out_stride,
            max_tokens,
            ..Params::default()
        };
        let parts = self.part_calls(ctx, w, &io, [ids, out, step_params], None)?;
        Ok(GetRowsCall {
            parts,
            pipeline,
            max_tokens,
            max_groups_x: ctx.limits.max_compute_workgroups_per_dimension.max(1),
        })
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> GpuError {
    GpuError::InvalidArgument("pipeline cache lock poisoned".into())
}

/// The WGSL `parts` joined, with their `enable` directives moved to the front (WGSL wants
/// them before anything else).
fn enables_first(parts: &[&str]) -> String {
    let mut enables: Vec<&str> = Vec::new();
    let mut body = String::new();
    for line in parts.iter().flat_map(|p| p.lines()) {
        if line.starts_with("enable ") {
            if !enables.contains(&line) {
                enables.push(line);
            }
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    format!("{}\n{body}", enables.join("\n"))
}

/// The WGSL of the tensor-core product (F16 weights, plain store) for subgroups of
/// `subgroup` lanes and `shape` (for tools that inspect the compiled kernels, e.g. the
/// `pipeline_stats` example).
pub fn coop_kernel_wgsl(shape: CoopShape, subgroup: u32) -> String {
    let kernel = Kernel::Coop {
        epilogue: Epilogue::Store,
        subgroup,
        shape,
    };
    let format = format_wgsl(GgmlType::F16).expect("F16 has a decode");
    compose(GgmlType::F16, kernel, format)
}

/// The weight side of [`Kernel::CoopFused`] for blocks of type `ty`, and the most tokens a
/// step may have to take it: its `fetch_a` and `stage_a` decode the product's weight tiles
/// as they stage them (BK a multiple of 64, staging unit 4, whole rows of 16-byte aligned
/// blocks). None for the other types. Q8_0 (twice Q4_K's bytes, a scale per 32 values) pays
/// only for one token group: on an H200 with 2.9B Q8_0, batch 32 / 64 2,540 / 4,643 ->
/// 2,717 / 5,077 tok/s, but 128 / 256 6,737 / 9,056 -> 6,297 / 7,640. Q5_K and Q4_0 up to
/// two token groups: on an H200 (2.9B Q5_K_M / Q4_0; session 12, run 10), batch 16 / 64 /
/// 128 1,328-1,330 / 4,803-4,804 / 7,246-7,255 -> 1,869-1,872 / 6,544-6,560 / 8,127-8,130
/// tok/s (Q5_K_M) and 1,367-1,370 / 4,919-4,927 / 7,339-7,353 -> 1,831-1,838 / 6,568-6,601 /
/// 7,976-7,988 (Q4_0) with the decode in the staging, but batch 256 9,870 -> 9,532-9,537
/// and 9,924-9,929 -> 9,363-9,379. Q6_K likewise (2.9B Q6_K batch 256 8,446-8,454 with the
/// decode in the staging, 9,182-9,192 with the copy from 129 tokens; 2.9B Q4_K_M, whose
/// Q6_K matrices are a few, par; run 13); Q4_K keeps it to 256 (Q4_K_M batch 192 / 256 with
/// the copy from 129 tokens for every type: 9,799-9,834 / 10,304-10,337 -> 8,965-8,975 /
/// 9,884; run 12). BF16 rows, converted to f16 as they are staged, likewise up to 128
/// (2.9B BF16 batch 8 / 16 / 64 / 128 759-760 / 1,145 / 4,316-4,322 / 6,827-6,828 with the
/// copy -> 928-929 / 1,328-1,330 / 5,016-5,017 / 6,911-6,922; run 15). The word-read
/// decoders (session 13, run 2; 2.9B, batch 16 / 64 / 128 with the copy -> decoding as they
/// stage): Q4_1 1,375-1,378 / 4,930-4,951 / 7,287-7,304 -> 1,984-1,987 / 6,854-6,905 /
/// 8,396-8,414, Q5_1 +39% / +33% / +11%, Q5_0 +30% / +26% / +5.5%, Q2_K +40% / +39% /
/// +12%; Q3_K +22% at 16-64. Q3_K's blocks padded to whole vec4s (five loads per 32 values
/// instead of eleven; run 4): batch 16 / 64 1,528-1,536 / 5,549-5,567 -> 1,808-1,818 /
/// 6,445-6,495, and 128 6,833-6,835 with the copy -> 7,834 decoding in the staging. Up to 256
/// tokens against 128 (run 11): batch 192 / 256 Q3_K_M 8,478-8,498 / 9,428-9,443 ->
/// 8,842-8,868 / 9,289-9,292, Q4_1 9,012-9,041 / 9,901-9,943 -> 9,387-9,397 / 9,901-9,907,
/// Q2_K +1.3% / -3.4%, Q5_1 par / -4%, Q5_0 -3% / -6.5%: Q3_K and Q4_1 take three token
/// groups (192), the others two.
pub(super) fn coop_fused_wgsl(ty: GgmlType) -> Option<(&'static str, u32)> {
    let (one_group, two_groups) = (coop::COOP_FEW_TOKENS, 2 * coop::COOP_FEW_TOKENS);
    let three_groups = 3 * coop::COOP_FEW_TOKENS;
    match ty {
        GgmlType::Q4_K => Some((MATMUL_COOP_AQ4_K_WGSL, u32::MAX)),
        GgmlType::Q5_K => Some((MATMUL_COOP_AQ5_K_WGSL, two_groups)),
        GgmlType::Q6_K => Some((MATMUL_COOP_AQ6_K_WGSL, two_groups)),
        GgmlType::Q8_0 => Some((MATMUL_COOP_AQ8_0_WGSL, one_group)),
        GgmlType::Q4_0 => Some((MATMUL_COOP_AQ4_0_WGSL, two_groups)),
        GgmlType::Q4_1 => Some((MATMUL_COOP_AQ4_1_WGSL, three_groups)),
        GgmlType::Q5_1 => Some((MATMUL_COOP_AQ5_1_WGSL, two_groups)),
        GgmlType::Q5_0 => Some((MATMUL_COOP_AQ5_0_WGSL, two_groups)),
        GgmlType::Q2_K => Some((MATMUL_COOP_AQ2_K_WGSL, two_groups)),
        GgmlType::Q3_K => Some((MATMUL_COOP_AQ3_K_WGSL, three_groups)),
        GgmlType::BF16 => Some((MATMUL_COOP_ABF16_WGSL, two_groups)),
        _ => None,
    }
}

/// Where a stack's matrices after the first bind their blocks in [`Kernel::CoopFused`].
pub(super) const STACK_WEIGHT_BINDINGS: [u32; 3] = [5, 6, 7];

/// The weight bindings of [`Kernel::CoopFused`] and `wq(g, i)`, vec4 i of matrix g's blocks:
/// one binding, or with `stack` one per matrix of a stack.
fn stack_weights_wgsl(stack: bool) -> String {
    let mut out = String::from(
        "// (generated by matmul.rs) The weights' blocks, one binding per matrix of a stack.\n\
         @group(0) @binding(0) var<storage, read> WQ0: array<vec4<u32>>;\n",
    );
    if !stack {
        out += "fn wq(g: u32, i: u32) -> vec4<u32> {\n    return WQ0[i];\n}\n";
        return out;
    }
    for (k, b) in STACK_WEIGHT_BINDINGS.into_iter().enumerate() {
        out += &format!(
            "@group(0) @binding({b}) var<storage, read> WQ{}: array<vec4<u32>>;\n",
            k + 1
        );
    }
    out += "fn wq(g: u32, i: u32) -> vec4<u32> {\n    switch g {\n";
    for k in 1..=STACK_WEIGHT_BINDINGS.len() {
        out += &format!("        case {k}u: {{ return WQ{k}[i]; }}\n");
    }
    out += "        default: { return WQ0[i]; }\n    }\n}\n";
    out
}

/// Header constants + common helpers + format decoders + kernel body.
fn compose(ty: GgmlType, kernel: Kernel, format: &str) -> String {
    let (body, input, tokens, epilogue, rpw, tpr) = match kernel {
        Kernel::Matmul {
            epilogue,
            tokens,
            vec_x,
            tiling,
        } => (
            MATMUL_WGSL,
            if vec_x {
                MATMUL_X4_WGSL
            } else {
                MATMUL_X1_WGSL
            },
            tokens,
            epilogue.id(),
            tiling.rows_per_wg,
            tiling.threads_per_row,
        ),
        Kernel::Tiled { epilogue, shape } => {
            return format!(
                "// {ty} {kernel:?} (generated by rwkv-gpu matmul.rs)\n\
                 const WG_SIZE: u32 = {}u;\n\
                 const BM: u32 = {}u;\n\
                 const BN: u32 = {}u;\n\
                 const RT: u32 = {}u;\n\
                 const CT: u32 = {}u;\n\
                 const KT: u32 = {TILE_COLS}u;\n\
                 const KX: u32 = {}u;\n\
                 const PREFETCH: bool = {};\n\
                 const EPILOGUE: u32 = {}u;\n\
                 const N_TOKENS_WORD: u32 = {}u;\n\n\
                 {PARAMS_WGSL}\n{COMMON_WGSL}\n{EPILOGUE_ROUND_WGSL}\n{format}\n{MATMUL_X1_WGSL}\n{MATMUL_TILED_WGSL}",
                shape.threads(),
                shape.rows,
                shape.tokens,
                shape.rows_per_thread,
                shape.tokens_per_thread,
                shape.x_cols,
                shape.prefetch,
                epilogue.id(),
                STEP_N_TOKENS_OFFSET / 4
            );
        }
        Kernel::Coop {
            epilogue,
            subgroup,
            shape,
        }
        | Kernel::CoopFused {
            epilogue,
            subgroup,
            shape,
            ..
        } => {
            let weights = match kernel {
                Kernel::CoopFused { stack, .. } => format!(
                    "{}\n{MATMUL_COOP_AQ_WGSL}\n{}",
                    stack_weights_wgsl(stack),
                    coop_fused_wgsl(ty).map_or("", |f| f.0)
                ),
                _ => MATMUL_COOP_A16_WGSL.to_string(),
            };
            let header = format!(
                "// {kernel:?} (generated by rwkv-gpu matmul.rs)\n\
                 const SG: u32 = {subgroup}u;\n\
                 const WG_SIZE: u32 = {}u;\n\
                 const SGR: u32 = {}u;\n\
                 const SGC: u32 = {}u;\n\
                 const BM: u32 = {}u;\n\
                 const BN: u32 = {}u;\n\
                 const BK: u32 = {}u;\n\
                 const UNIT: u32 = {}u;\n\
                 alias Unit = {};\n\
                 const TOKENS_FIRST: u32 = {}u;\n\
                 const PROBE: u32 = {}u;\n\
                 const DIRECT_STORE: u32 = {}u;\n\
                 const EPILOGUE: u32 = {}u;\n\
                 const N_TOKENS_WORD: u32 = {}u;\n",
                shape.subgroups() * subgroup,
                shape.sgr,
                shape.sgc,
                shape.rows(),
                shape.tokens(),
                shape.k,
                shape.unit,
                shape.unit_wgsl(),
                shape.tokens_first,
                shape.probe,
                shape.direct_store,
                epilogue.id(),
                STEP_N_TOKENS_OFFSET / 4
            );
            return enables_first(&[
                &header,
                PARAMS_WGSL,
                EPILOGUE_ROUND_WGSL,
                MATMUL_COOP_WGSL,
                &weights,
            ]);
        }
        Kernel::CoopDequant => {
            let header = format!("// {ty} {kernel:?} (generated by rwkv-gpu matmul.rs)\n");
            return enables_first(&[
                &header,
                PARAMS_WGSL,
                COMMON_WGSL,
                format,
                MATMUL_COOP_DEQUANT_WGSL,
            ]);
        }
        Kernel::CoopX => {
            let header = format!(
                "// {kernel:?} (generated by rwkv-gpu matmul.rs)\n\
                 const N_TOKENS_WORD: u32 = {}u;\n",
                STEP_N_TOKENS_OFFSET / 4
            );
            return enables_first(&[&header, PARAMS_WGSL, MATMUL_X1_WGSL, MATMUL_COOP_X_WGSL]);
        }
        Kernel::CoopSum { epilogue } => {
            return format!(
                "// {kernel:?} (generated by rwkv-gpu matmul.rs)\n\
                 const EPILOGUE: u32 = {}u;\n\
                 const N_TOKENS_WORD: u32 = {}u;\n\n\
                 {PARAMS_WGSL}\n{EPILOGUE_ROUND_WGSL}\n{MATMUL_COOP_SUM_WGSL}",
                epilogue.id(),
                STEP_N_TOKENS_OFFSET / 4
            );
        }
        Kernel::GetRows => (GET_ROWS_WGSL, "", 1, 0, 1, GET_ROWS_WG_SIZE),
    };
    debug_assert!(GpuFormat::of(ty).is_some());
    // The row lookup has no output epilogue (nor a `Y` for one to read).
    let epilogue_fn = match kernel {
        Kernel::GetRows => "",
        _ => EPILOGUE_ROUND_WGSL,
    };
    format!(
        "// {ty} {kernel:?} (generated by rwkv-gpu matmul.rs)\n\
         const WG_SIZE: u32 = {}u;\n\
         const TPR: u32 = {tpr}u;\n\
         const RPW: u32 = {rpw}u;\n\
         const TT: u32 = {tokens}u;\n\
         const EPILOGUE: u32 = {epilogue}u;\n\
         const N_TOKENS_WORD: u32 = {}u;\n\n\
         {PARAMS_WGSL}\n{COMMON_WGSL}\n{epilogue_fn}\n{format}\n{input}\n{body}",
        rpw * tpr,
        STEP_N_TOKENS_OFFSET / 4
    )
}

impl MatmulCall {
    /// Records the dispatch(es) for `n_tokens` tokens (clamped to `max_tokens`; it should
    /// equal the count in `step_params`, which bounds what the kernel computes; tokens past
    /// `n_tokens` are not computed) into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        let n = n_tokens.min(self.max_tokens);
        if n == 0 {
            return;
        }
        if let Some(coop) = self.coop.as_ref().filter(|_| n >= self.coop_from) {
            coop.record(pass, n, self.max_groups);
            return;
        }
        if let Some((pipeline, rows, tokens)) =
            self.tiled.as_ref().filter(|_| n >= TILED_FROM_TOKENS)
        {
            pass.set_pipeline(pipeline);
            for part in &self.parts {
                let (x, y) = split_grid(part.rows.div_ceil(*rows), self.max_groups);
                pass.set_bind_group(0, &part.bind_group, &[]);
                pass.dispatch_workgroups(x, y, n.div_ceil(*tokens));
            }
            return;
        }
        let (pipeline, per_wg) = if n == 1 {
            (&self.single, 1)
        } else {
            (&self.batched, TOKENS_PER_WG)
        };
        pass.set_pipeline(pipeline);
        for part in &self.parts {
            pass.set_bind_group(0, &part.bind_group, &[]);
            pass.dispatch_workgroups(part.groups.0, part.groups.1, n.div_ceil(per_wg));
        }
    }

    /// The token count from which this call takes the tensor-core path (None: it has none).
    pub fn coop_from(&self) -> Option<u32> {
        self.coop.as_ref().map(|_| self.coop_from)
    }

    /// Whether batches of [`TILED_FROM_TOKENS`] or more use a tile kernel (tiled or tensor
    /// cores) rather than the row kernel.
    pub fn is_tiled(&self) -> bool {
        self.tiled.is_some() || self.coop.is_some()
    }

    /// Number of dispatches one `record` of `n_tokens` makes (one per matrix part, or for
    /// the tensor-core path the input conversion plus a decode and a product per slice).
    pub fn n_dispatches(&self, n_tokens: u32) -> usize {
        let n = n_tokens.min(self.max_tokens);
        match self.coop.as_ref() {
            _ if n == 0 => 0,
            Some(coop) if n >= self.coop_from => coop.n_dispatches(n, self.max_groups),
            _ => self.parts.len(),
        }
    }
}

impl GetRowsCall {
    /// Records the lookup of `n_tokens` rows (clamped to `max_tokens`; it should equal the
    /// count in `step_params`) into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        let n = n_tokens.min(self.max_tokens);
        if n == 0 {
            return;
        }
        let x = n.min(self.max_groups_x);
        let y = n.div_ceil(x);
        pass.set_pipeline(&self.pipeline);
        for part in &self.parts {
            pass.set_bind_group(0, &part.bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor-core kernels cannot run on a device without cooperative matrices (CI's
    /// lavapipe), so every one is at least parsed and validated here as wgpu would on a
    /// device that has them; `tests/coop.rs` runs them where the device allows.
    #[test]
    fn coop_shaders_validate_for_every_type() {
        use GgmlType::*;
        let types = [
            F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
        ];
        let mut kernels = vec![(F16, Kernel::CoopX)];
        for epilogue in Epilogue::ALL {
            kernels.push((F16, Kernel::CoopSum { epilogue }));
            for subgroup in [32, 64] {
                // (shape, probe, staging unit, direct stores: off, on, or their probe)
                for (shape, probe, unit, direct_store) in [
                    ("2x2x32", 0, 4, 1),
                    ("2x2x64", 0, 4, 1),
                    ("2x2x64", 0, 2, 1),
                    ("2x2x128", 0, 4, 1),
                    ("4x2x64", 0, 4, 1),
                    ("2x4x64", 0, 4, 1),
                    ("4x4x32", 0, 4, 1),
                    ("2x2x64", 1, 4, 1),
                    ("2x2x64", 2, 4, 1),
                    ("2x2x64", 3, 4, 1),
                    ("2x2x64", 0, 4, 0),
                    ("2x2x64", 0, 4, 2),
                ] {
                    let shape = CoopShape {
                        probe,
                        unit,
                        direct_store,
                        ..CoopShape::parse(shape).unwrap()
                    };
                    kernels.push((
                        F16,
                        Kernel::Coop {
                            epilogue,
                            subgroup,
                            shape,
                        },
                    ));
                }
            }
        }
        kernels.extend(types.iter().map(|&ty| (ty, Kernel::CoopDequant)));
        // The products that decode as they stage, for every type that has one.
        for &ty in types.iter().filter(|&&ty| coop_fused_wgsl(ty).is_some()) {
            for subgroup in [32, 64] {
                for shape in ["2x2x64", "2x2x128", "4x2x64", "2x4x64", "1x1x64"] {
                    let shape = CoopShape::parse(shape).unwrap();
                    let epilogue = Epilogue::Add;
                    for stack in [false, true] {
                        kernels.push((
                            ty,
                            Kernel::CoopFused {
                                epilogue,
                                subgroup,
                                shape,
                                stack,
                            },
                        ));
                    }
                }
            }
        }
        for (ty, kernel) in kernels {
            let source = compose(ty, kernel, format_wgsl(ty).unwrap());
            let module = naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{ty} {kernel:?}: {}", e.emit_to_string(&source)));
            let info = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{ty} {kernel:?}: {}", e.emit_to_string(&source)));
            // And translated to SPIR-V as wgpu does for them on Vulkan (no runtime checks:
            // shader.rs), where naga 30's writer has panicked on forms the validator takes
            // (a cooperative store whose stride is an unnamed expression).
            let unchecked = naga::proc::BoundsCheckPolicy::Unchecked;
            let options = naga::back::spv::Options {
                lang_version: (1, 3),
                bounds_check_policies: naga::proc::BoundsCheckPolicies {
                    index: unchecked,
                    buffer: unchecked,
                    image_load: unchecked,
                    binding_array: unchecked,
                },
                ..Default::default()
            };
            naga::back::spv::write_vec(&module, &info, &options, None)
                .unwrap_or_else(|e| panic!("{ty} {kernel:?}: SPIR-V: {e}"));
            // Their layouts are worked out from the WGSL, so they compile on worker threads.
            assert!(
                crate::bind_group0_entries(&source, "main").is_some(),
                "{ty} {kernel:?}"
            );
        }
    }
}
