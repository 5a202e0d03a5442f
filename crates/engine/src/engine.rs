//! The batched RWKV-7 engine: many sequences ("slots"), each with its own state on the GPU.
//!
//! One [`Engine::step`] takes, for each active slot, a chunk of tokens and runs them in the
//! pipeline stages the product is built around, each timed on its own ([`StageTimes`]):
//!
//! - **input**: lay the chunks out as rows (one per token) with their slot and the row of the
//!   previous token of the same sequence (for the token shift);
//! - **load**: upload token ids and row tables; the embedding lookup itself runs on the GPU;
//! - **dispatch**: record every kernel of the step into one command encoder and one pass;
//! - **submit**: hand it to the GPU;
//! - **back**: read the wanted logits back.
//!
//! Steps larger than the engine's row budget are split into several GPU steps, so a long prompt
//! is prefilled in chunks of at most `max_rows` tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gguf::GgufFile;
use rwkv_gpu::{
    ConvertCall, Epilogue, GetRowsCall, GpuContext, GpuMatrix, MatmulCall, MatmulKernels,
    MatvecCall, MatvecInput, MatvecJob, MatvecKernels, Q8Format, Q8Input, QuantizeCall, StackItem,
    StackedF16, TokensCall, X16Input,
};
use rwkv_model::{Rwkv7Config, Rwkv7Spec};

use crate::error::{EngineError, Result};
use crate::kernels::{
    bind, bind_at, uniform, wkv_scan_lanes, ChunkInfo, Kernels, Launch, LayerNormParams,
    RoundParams, RowInfo, StepUniform, TokenMixParams, Wkv7Params, NO_PREV,
};
use crate::persistent::{PersistentTail, TailWeights, PERSISTENT_ENV};
use crate::weights::ModelWeights;

/// Sizes fixed when the engine is built.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Sequences that can be in flight at once, each with its own state.
    pub max_slots: usize,
    /// Tokens (over all slots) computed in one GPU step; longer inputs are split.
    pub max_rows: usize,
    /// Rows of logits one GPU step can return.
    pub max_out: usize,
    /// Round activations before each matrix product as llama.cpp's CPU backend does (f16 for
    /// F16 weights, 8-bit blocks for quantized ones), so logits match llama.cpp's. Off: plain
    /// f32 activations, which match the CPU reference's exact mode.
    pub llama_cpp_rounding: bool,
    /// GPU steps of at least this many tokens compute the second LoRA products of the time
    /// mix with the matrix kernels (0: never). None: the device's default, [`LORA2_FROM`],
    /// or [`LORA2_FROM_TENSOR_CORES`] where the matrix kernels have tensor cores. The
    /// default reads [`LORA2_FROM_ENV`].
    pub lora2_from: Option<u32>,
    /// Steps of one-token chunks (batches of decoding sequences) of at least this many rows
    /// run the WKV-7 kernel in three parts, like prompts ([`WKV_SPLIT_FROM`]; 0: never).
    /// The default reads [`WKV_SPLIT_FROM_ENV`].
    pub wkv_split_from: u32,
    /// Keep f16 copies of quantized weights for the tensor-core path (steps of many tokens:
    /// prompts and batches), decoded once at load instead of at every such step. Faster
    /// batches for 2 more bytes of GPU memory per weight (5.9 GB for a 2.9B model); no
    /// effect without tensor cores or for F16 weights, which are used as they are.
    pub f16_weights: bool,
    /// One-token steps run each layer's tail (output projection and channel mix) as one
    /// persistent dispatch with grid barriers (`persistent.rs`) instead of six dispatches.
    /// Off by default: on an H200 it measured within a few % of the six dispatches (see
    /// BENCHMARKS.md). The default reads [`PERSISTENT_ENV`] (`1`: on).
    pub persistent: bool,
    /// The channel mix's key product rounds its output for the value product itself where
    /// that rounding is to f16 or bf16 (F16 or BF16 weights with `llama_cpp_rounding`),
    /// instead of a rounding dispatch after it: one dispatch fewer per layer, the same
    /// results bit for bit. Off only to check that.
    pub round_in_epilogues: bool,
    /// Chunks of at least this many tokens (prompts) run the WKV-7 scan in matrix form,
    /// sub-chunk by sub-chunk (wkv7_chunked.wgsl), instead of token by token
    /// ([`SCAN_CHUNKED_FROM`]; 0: never). The default reads [`SCAN_CHUNKED_FROM_ENV`].
    pub scan_chunked_from: u32,
    /// Steps of at least this many rows (more than 16) run the attention's token mix with a
    /// workgroup per row (token_mix_long.wgsl) where a target of it is rounded to 8 bits
    /// (the quantized types' products, with `llama_cpp_rounding`) and the model's width
    /// allows it, instead of a workgroup per row and group of 256-column tiles
    /// ([`MIX_LONG_FROM`]; 0: never). The default reads [`MIX_LONG_FROM_ENV`].
    pub token_mix_long_from: u32,
    /// Where the value product reads the key's output through an 8-bit rounding op (the
    /// quantized types with `llama_cpp_rounding`), the channel mix's key product stores
    /// plain sums in steps too long for the few-token matvecs, and that rounding op squares
    /// their ReLU: a product epilogue through workgroup memory fewer (the tensor-core
    /// product stores whole tiles of plain sums straight from its accumulators), the same
    /// results bit for bit. The default reads [`DEFER_RELU_ENV`] (`0`: off).
    pub defer_relu_square: bool,
}

/// Environment variable turning [`EngineOptions::defer_relu_square`] off (`0`) in
/// [`EngineOptions::default`], for measurements.
pub const DEFER_RELU_ENV: &str = "WEB_RWKV_DEFER_RELU";

/// Rows from which a step takes token_mix_long.wgsl for the attention's mix (see
/// [`EngineOptions::token_mix_long_from`]): one workgroup a row, so a step of fewer leaves
/// the GPU idle (on an H200, 2.9B Q4_K_M: batch 64 7,042 -> 6,574 tok/s with it, batch 256
/// 10,320 -> 10,190; the attention's mix of a 2048-token step 9.68 -> 7.85 ms).
pub const MIX_LONG_FROM: u32 = 512;

/// Environment variable overriding [`MIX_LONG_FROM`] in [`EngineOptions::default`], for
/// measurements (0: never).
pub const MIX_LONG_FROM_ENV: &str = "WEB_RWKV_MIX_LONG_FROM";

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_slots: 4,
            max_rows: 128,
            max_out: 16,
            llama_cpp_rounding: true,
            lora2_from: rwkv_gpu::env_parse(LORA2_FROM_ENV),
            wkv_split_from: rwkv_gpu::env_parse(WKV_SPLIT_FROM_ENV).unwrap_or(WKV_SPLIT_FROM),
            f16_weights: false,
            persistent: rwkv_gpu::env_parse::<u32>(PERSISTENT_ENV) == Some(1),
            round_in_epilogues: true,
            scan_chunked_from: rwkv_gpu::env_parse(SCAN_CHUNKED_FROM_ENV)
                .unwrap_or(SCAN_CHUNKED_FROM),
            token_mix_long_from: rwkv_gpu::env_parse(MIX_LONG_FROM_ENV).unwrap_or(MIX_LONG_FROM),
            defer_relu_square: rwkv_gpu::env_on(DEFER_RELU_ENV),
        }
    }
}

/// Tokens from which a chunk takes the matrix-form WKV-7 scan (see
/// [`EngineOptions::scan_chunked_from`]).
pub const SCAN_CHUNKED_FROM: u32 = 64;

/// Environment variable overriding [`SCAN_CHUNKED_FROM`] in [`EngineOptions::default`], for
/// measurements (0: never).
pub const SCAN_CHUNKED_FROM_ENV: &str = "WEB_RWKV_SCAN_CHUNKED_FROM";

/// Tokens from which a GPU step computes the second LoRA products of the time mix (rank →
/// dim, for decay, iclr, gate and value residual) as matrix products over all its tokens,
/// which read each weight once per step, instead of per token and head inside the WKV
/// kernels. Shorter steps (decoding one sequence) keep the in-kernel products, summed in
/// llama.cpp's CPU order. 17, not 16: a step of 16 sequences reads its first LoRA products
/// with the direct matvec, and on an H200 (2.9B Q4_K_M) it is 4% faster with the second
/// ones inside the WKV kernel (1,156 against 1,105-1,112 tok/s).
pub const LORA2_FROM: u32 = 17;

/// [`LORA2_FROM`] where the matrix kernels have tensor cores, which take steps from
/// [`rwkv_gpu::MatvecKernels::max_tokens`] + 1 = 9 tokens on: the second LoRA products pay
/// as matrix products wherever the other products do. On an H200 (2.9B Q4_K_M; session 12,
/// run 2) batch 10 / 12 / 14 / 16 +3.5% / +5.2% / +5.2% / +6.3% against keeping them in the
/// WKV kernel (and at 12 with the direct matvecs -7%).
pub const LORA2_FROM_TENSOR_CORES: u32 = 9;

/// Environment variable setting [`EngineOptions::lora2_from`] in its default, for
/// measurements (0, or more than a step's rows: never).
pub const LORA2_FROM_ENV: &str = "WEB_RWKV_LORA2_FROM";

/// Rows from which a step's Q8_K and Q8_0 rounding ops round four tiles of 256 per
/// workgroup (round_q8k.wgsl's `main_q8k`, its own pipeline, four values a thread) instead
/// of one (a value a thread, a workgroup-wide search per block). On an H200 (2.9B Q4_K_M,
/// one 2048-token step) the roundings took 7.6 ms with one tile per workgroup, 6.3 with
/// eight of eight scalars a thread (batch 64 lost 1.8% with it), 3.5 with the vec4 kernel,
/// which from 64 rows also makes batch 64 / 256 +1-3% / +1%.
const ROUND_WIDE_ROWS: u32 = 64;

/// Environment variable setting [`ROUND_WIDE_ROWS`] (0: never), for measurements.
pub const ROUND_WIDE_ENV: &str = "WEB_RWKV_ROUND_WIDE_ROWS";

/// [`ROUND_WIDE_ROWS`], or what [`ROUND_WIDE_ENV`] says (`u32::MAX` for 0: never).
fn round_wide_rows() -> u32 {
    static ROWS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| match rwkv_gpu::env_parse::<u32>(ROUND_WIDE_ENV) {
        Some(0) => u32::MAX,
        Some(r) => r,
        None => ROUND_WIDE_ROWS,
    })
}

/// Which logits a slot wants back from a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (e.g. a prompt chunk whose logits nobody reads).
    None,
    /// After the last token of the chunk.
    Last,
    /// After every token of the chunk.
    All,
}

/// What one slot feeds into a step.
#[derive(Clone, Debug)]
pub struct SlotInput<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// Wall time spent in each stage, summed over the GPU steps of one [`Engine::step`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    pub input: Duration,
    pub load: Duration,
    pub dispatch: Duration,
    pub submit: Duration,
    pub back: Duration,
    /// Part of `back`: recording, while the GPU runs the step, the commands of a next step of
    /// the same shape (whose `dispatch` is then almost nothing).
    pub prerecord: Duration,
    pub gpu_steps: u32,
}

/// A GPU step submitted and not yet read back (`Engine::submit_gpu_step`): its logits rows,
/// the bytes of logits to read, or the sampler's read-back buffer and sampling number.
pub(crate) struct Submitted {
    n_out: u32,
    out_bytes: u64,
    pub(crate) readback: Option<(usize, u64)>,
    submitted_at: Instant,
    /// The queue's index of the submission.
    index: wgpu::SubmissionIndex,
}

/// What a step's recorded commands depend on: its row, logits-row and chunk counts, and
/// whether the GPU sampler runs; for a sampling step, the read-back buffer its ids go to
/// (the sampler's two in turn); whether some of its tokens are ids the sampling step before
/// kept on the GPU (a chained step, which starts with the dispatch that feeds them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StepShape {
    n_rows: u32,
    n_out: u32,
    n_chunks: u32,
    sample: bool,
    readback: usize,
    chained: bool,
    /// The slot of a checkpoint taken at the start of the step (see [`Engine::checkpoint`]).
    checkpoint: Option<u32>,
}

impl StepShape {
    /// Logits bytes the step copies for reading back (none when sampling on the GPU).
    fn out_bytes(&self, vocab: u64) -> u64 {
        if self.sample {
            0
        } else {
            self.n_out as u64 * vocab * 4
        }
    }
}

/// Scratch buffers sized for `max_rows` tokens.
struct Scratch {
    step: wgpu::Buffer,
    head_step: wgpu::Buffer,
    tokens: wgpu::Buffer,
    rows: wgpu::Buffer,
    chunks: wgpu::Buffer,
    out_rows: wgpu::Buffer,
    logits: wgpu::Buffer,
    readback: wgpu::Buffer,
}

/// Per-layer state buffers: [2][slots][dim] shifts (double-buffered: a step reads a slot's
/// half and writes the other, see `Engine::halves`) and [slots][heads][64][64] WKV state.
pub(crate) struct LayerState {
    pub att_shift: wgpu::Buffer,
    pub ffn_shift: wgpu::Buffer,
    pub wkv: wgpu::Buffer,
}

/// How many workgroups (or tokens) an op runs over in a step.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Grid {
    /// One per token row.
    Rows,
    /// One per token row of each of `n` blocks.
    RowBlocks(u32),
    /// One per wanted logits row.
    Out,
    /// One per chunk and group of heads.
    ChunkHeads(u32),
    /// `ChunkHeads`, only in steps that take the one-token WKV kernel (every chunk has one
    /// token, and fewer rows than the [`WkvSplit`]; else none).
    SingleChunkHeads(u32, WkvSplit),
    /// `RowBlocks`, only in steps that take the chunk path (a chunk of several tokens, or
    /// as many rows as the [`WkvSplit`]; else none).
    LongChunkRows(u32, WkvSplit),
    /// `ChunkHeads`, only in steps that take the chunk path, and of those only in the ones
    /// whose chunks all have one token (`true`: batch steps) or only in the others; not in
    /// steps of one chunk that takes the matrix-form scan.
    ScanHeads(u32, bool, WkvSplit, ChunkedFrom),
    /// One per sub-chunk the step may have (see [`ChunkedFrom::max_subs`]) and head, in steps
    /// that may have a chunk for the matrix-form scan.
    ChunkedSubs(u32, ChunkedFrom),
    /// `ChunkHeads` in steps that may have a chunk for the matrix-form scan.
    ChunkedHeads(u32, ChunkedFrom),
    /// One per token row and group of column tiles (`tiles` of them, [`mix_tiles_per_wg`]
    /// a group), or in steps of up to [`MIX_SPLIT_ROWS`] rows one per row, tile and mix
    /// (`(tiles, mixes)`).
    MixTiles(u32, u32),
    /// One per wanted logits row and tile of columns.
    OutTiles(u32),
    /// A fixed number (a persistent kernel's grid).
    Fixed(u32),
}

/// Whether activations are rounded with `mode` before the products in every step (f16 and
/// bf16, value by value: cheaper once than in every matvec thread that reads a value) or only
/// in steps of several rows (the 8-bit block roundings, which one-token matvecs do as they
/// quantize their input).
fn every_step_rounding(mode: u32) -> bool {
    mode == 1 || mode == 2
}

/// Whether a product op's few-token matvecs take a step of `n` rows.
fn takes_tokens(tokens: &[TokensCall], n: u32) -> bool {
    !tokens.is_empty() && tokens.iter().all(|t| n <= t.max_tokens())
}

/// One prepared GPU operation of a step.
pub(crate) enum Op {
    /// The embedding lookup, over the step's rows.
    Gather(GetRowsCall),
    Kernel(Launch, Grid),
    /// Rounds an activation for the matrix products of a step of several rows, in steps of
    /// at least `from` rows (the products of fewer take the few-token matvecs, which read an
    /// 8-bit copy instead); a one-token step skips it (its matvecs quantize their input
    /// themselves) unless `every_step` is set (the f16 and bf16 roundings, which the matvecs
    /// then need not do for every value).
    Round {
        launch: Launch,
        grid: Grid,
        every_step: bool,
        from: u32,
        /// The activation it rounds (for profiles).
        of: &'static str,
        /// Q8_K and Q8_0 roundings: the launch of `main_q8k` (four tiles per workgroup), taken in
        /// steps of at least [`ROUND_WIDE_ROWS`] rows, with its workgroups per row.
        wide: Option<(Launch, u32)>,
    },
    /// Matrix products over the step's rows (or, with `Grid::Out`, its logits rows) that
    /// read the same activation and write the same buffer, with the kind of weight they
    /// multiply (e.g. `time_mix_key`) for profiles: `calls` for steps of several rows,
    /// `singles` (one matvec call per rounding mode, each packing its matrices into as few
    /// dispatches as it can) for one row; `tokens` (the direct matvec for a few tokens) for
    /// 2 up to its maximum of rows, where every product has one. Both after `quantize` (the
    /// Q8_K copies of their inputs that some of them read, where not current).
    Matmul {
        calls: Vec<MatmulCall>,
        /// The calls' tensor-core products as one, in the steps it takes (see
        /// [`Builder::stacked`]).
        stacked: Option<Box<rwkv_gpu::StackedCall>>,
        quantize: Vec<QuantizeCall>,
        singles: Vec<MatvecCall>,
        tokens: Vec<TokensCall>,
        grid: Grid,
        kind: String,
    },
    /// An activation converted to f16 once for the tensor-core products that read it, in
    /// steps of at least `from` rows (the smallest step in which one of them takes that
    /// path; `u32::MAX` while none does).
    Convert {
        call: ConvertCall,
        from: u32,
    },
    /// `op` only in steps of at least `from` rows (`at_least`) or only in the others: the
    /// two ways of computing the second LoRA products (see [`EngineOptions::lora2_from`]).
    ByRows {
        from: u32,
        at_least: bool,
        op: Box<Op>,
    },
}

impl Op {
    /// The launch of a kernel op, through its row conditions.
    fn launch_mut(&mut self) -> Option<&mut Launch> {
        match self {
            Op::Kernel(launch, _) => Some(launch),
            Op::ByRows { op, .. } => op.launch_mut(),
            _ => None,
        }
    }

    /// What the op is, for profiles: the kernel name or the weight's role.
    pub(crate) fn kind(&self) -> &str {
        match self {
            Op::Gather(_) => "embedding",
            Op::Convert { .. } => "f16_inputs",
            Op::Kernel(launch, _) | Op::Round { launch, .. } => launch.label,
            Op::Matmul { kind, .. } => kind,
            Op::ByRows { op, .. } => op.kind(),
        }
    }

    /// The op's kind with what it works on where that tells ops of a kind apart (the
    /// activation a rounding op rounds), for profiles that list a step's ops in order.
    pub(crate) fn detail(&self) -> String {
        match self {
            Op::Round { launch, of, .. } => format!("{} {of}", launch.label),
            Op::ByRows { op, .. } => op.detail(),
            _ => self.kind().to_string(),
        }
    }

    /// Whether a `Round` op runs in a step of `rows` token rows and `out` logits rows (any
    /// other op: true).
    fn round_runs(&self, rows: u32, out: u32) -> bool {
        match self {
            Op::Round {
                grid,
                every_step,
                from,
                ..
            } => match count(*grid, rows, out) {
                0 | 1 => *every_step,
                n => n >= *from,
            },
            _ => true,
        }
    }

    /// The `from` of a `Round` op, or of the `Round` op inside a `ByRows` one.
    fn round_from_mut(&mut self) -> Option<&mut u32> {
        match self {
            Op::Round { from, .. } => Some(from),
            Op::ByRows { op, .. } => op.round_from_mut(),
            _ => None,
        }
    }

    /// The fewest rows of a step whose matvecs do not all bind the `also` buffer the op was
    /// prepared with (`Builder::also_read`): 1 where its one-token matvecs do not, 2 where
    /// only they do, `u32::MAX` where its few-token ones do too (longer steps take other
    /// kernels, which never bind it). Any other op: 1.
    fn also_read_from(&self) -> u32 {
        match self {
            Op::Matmul {
                singles, tokens, ..
            } if singles.iter().all(MatvecCall::binds_also) => {
                if !tokens.is_empty() && tokens.iter().all(TokensCall::binds_also) {
                    u32::MAX
                } else {
                    2
                }
            }
            _ => 1,
        }
    }

    /// Whether a `ByRows` op runs in a step of `rows` rows (any other op: true).
    fn runs_in(&self, rows: u32) -> bool {
        match self {
            Op::ByRows { from, at_least, .. } => (rows >= *from) == *at_least,
            _ => true,
        }
    }

    /// Dispatches the op records in a step of `rows` token rows, `out` logits rows and
    /// `chunks` chunks.
    pub(crate) fn dispatches(&self, rows: u32, out: u32, chunks: u32) -> usize {
        match self {
            Op::Round { .. } if !self.round_runs(rows, out) => 0,
            Op::Kernel(_, grid) if !runs(*grid, rows, chunks) => 0,
            Op::Convert { from, .. } => (rows >= *from) as usize,
            Op::ByRows { op, .. } if self.runs_in(rows) => op.dispatches(rows, out, chunks),
            Op::ByRows { .. } => 0,
            Op::Matmul {
                calls,
                stacked,
                quantize,
                singles,
                tokens,
                grid,
                ..
            } => match count(*grid, rows, out) {
                0 => 0,
                1 => quantize.len() + singles.iter().map(MatvecCall::n_dispatches).sum::<usize>(),
                n if takes_tokens(tokens, n) => {
                    quantize.len() + tokens.iter().map(|t| t.n_dispatches(n)).sum::<usize>()
                }
                n => match stacked {
                    Some(s) if s.takes(n) => s.n_dispatches(n),
                    _ => calls.iter().map(|c| c.n_dispatches(n)).sum(),
                },
            },
            _ => 1,
        }
    }

    /// Records the op for a step of `rows` token rows, `out` logits rows and `chunks` chunks.
    pub(crate) fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        rows: u32,
        out: u32,
        chunks: u32,
    ) {
        match self {
            Op::Gather(call) => call.record(pass, rows),
            Op::Convert { call, from } => {
                if rows >= *from {
                    call.record(pass, rows);
                }
            }
            Op::ByRows { op, .. } if self.runs_in(rows) => op.record(pass, rows, out, chunks),
            Op::ByRows { .. } => {}
            Op::Matmul {
                calls,
                stacked,
                quantize,
                singles,
                tokens,
                grid,
                ..
            } => match count(*grid, rows, out) {
                1 => {
                    quantize.iter().for_each(|q| q.record(pass, 1));
                    singles.iter().for_each(|s| s.record(pass));
                }
                n if takes_tokens(tokens, n) => {
                    quantize.iter().for_each(|q| q.record(pass, n));
                    tokens.iter().for_each(|t| t.record(pass, n));
                }
                n => match stacked {
                    Some(s) if s.takes(n) => s.record(pass, n),
                    _ => calls.iter().for_each(|c| c.record(pass, n)),
                },
            },
            Op::Round { .. } if !self.round_runs(rows, out) => {}
            Op::Round {
                wide: Some((launch, groups)),
                grid,
                ..
            } if count(*grid, rows, out) >= round_wide_rows() => {
                launch.record(pass, count(*grid, rows, out), *groups)
            }
            Op::Kernel(launch, grid) | Op::Round { launch, grid, .. } => match *grid {
                Grid::Rows => launch.record(pass, rows, 1),
                Grid::RowBlocks(n) => launch.record(pass, rows, n),
                Grid::Out => launch.record(pass, out, 1),
                Grid::ChunkHeads(groups) => launch.record(pass, chunks, groups),
                _ if !runs(*grid, rows, chunks) => {}
                Grid::SingleChunkHeads(groups, _)
                | Grid::ScanHeads(groups, ..)
                | Grid::ChunkedHeads(groups, _) => launch.record(pass, chunks, groups),
                Grid::ChunkedSubs(heads, from) => launch.record(pass, from.max_subs(rows), heads),
                Grid::LongChunkRows(n, _) => launch.record(pass, rows, n),
                Grid::MixTiles(n, mixes) if rows <= MIX_SPLIT_ROWS => {
                    launch.record(pass, rows, n * mixes)
                }
                Grid::MixTiles(n, _) => {
                    launch.record(pass, rows, n.div_ceil(mix_tiles_per_wg(rows, n)))
                }
                Grid::OutTiles(n) => launch.record(pass, out, n),
                Grid::Fixed(n) => launch.record(pass, n, 1),
            },
        }
    }
}

/// The most rows of a step whose token mix runs a workgroup per row, tile and mix (so that
/// the mixes' roundings run side by side); longer steps have enough rows to fill the GPU
/// with a workgroup per row and group of tiles, which saves recomputing each row's norm per
/// mix (and per tile of the group).
const MIX_SPLIT_ROWS: u32 = 16;

/// Column tiles of 256 per token-mix workgroup in a step of `rows` rows (more than
/// [`MIX_SPLIT_ROWS`]) of `tiles` tiles: each workgroup works out its row's norm statistics
/// (and its previous row's) once for that many tiles (token_mix.wgsl), as many as keep about
/// [`MIX_WORKGROUPS`] workgroups. `WEB_RWKV_MIX_TILES` fixes it, for measurements. On an
/// H200 (2.9B, 10 tiles), prefill of 512 tokens: 1 tile 2.95 + 1.77 ms for the two token
/// mixes, 5 tiles 2.43 + 1.04 (prefill 2048 11,310 → 11,690 tok/s); batch 64 lost 3% with 5
/// tiles (128 workgroups) and 8% with 10, hence the workgroup target.
fn mix_tiles_per_wg(rows: u32, tiles: u32) -> u32 {
    static FIXED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    FIXED
        .get_or_init(|| rwkv_gpu::env_parse::<u32>("WEB_RWKV_MIX_TILES").filter(|&t| t >= 1))
        .unwrap_or_else(|| (rows * tiles / MIX_WORKGROUPS).max(1))
        .min(tiles.max(1))
}

/// See [`mix_tiles_per_wg`].
const MIX_WORKGROUPS: u32 = 1024;

/// Mixes from which a token mix takes token_mix_long.wgsl in long steps (the attention's
/// six, not the channel mix's one), where a target is rounded to 8 bits ([`eight_bit`]).
/// On an H200 (2.9B Q4_K_M, 2048-token chunk, 320 threads): the attention's mix 9.64 ->
/// 8.00 ms, the channel mix's 2.88 -> 3.70; each row's norm statistics and shift cost more
/// there than the tile kernel's, and only the 8-bit roundings of several mixes per barrier
/// pay for them (F16, whose mixes are rounded to f16, prefill 2048 17,503-17,549 ->
/// 17,024-17,354 tok/s with it).
const MIX_LONG_MIXES: u32 = 4;

/// Whether rounding `mode` is an 8-bit block rounding (Q8_0 or Q8_K).
fn eight_bit(mode: u32) -> bool {
    mode == rwkv_gpu::ROUND_Q8_0 || mode == rwkv_gpu::ROUND_Q8_K
}

/// How many rows an op over `grid` covers: the step's token rows or its logits rows.
fn count(grid: Grid, rows: u32, out: u32) -> u32 {
    match grid {
        Grid::Out | Grid::OutTiles(_) => out,
        _ => rows,
    }
}

/// Rows from which a step whose chunks all have one token (a batch of decoding sequences)
/// runs the WKV-7 kernel in three parts (prep, scan, post) like a prompt, instead of the
/// one-token kernel ([`EngineOptions::wkv_split_from`]; 0: never).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WkvSplit(pub u32);

impl WkvSplit {
    /// Whether a step of `rows` rows in `chunks` chunks takes the chunk path (each chunk has
    /// at least one row, so `rows > chunks` means some chunk has several).
    fn long(self, rows: u32, chunks: u32) -> bool {
        rows > chunks || (self.0 != 0 && rows >= self.0)
    }
}

/// Tokens from which a chunk takes the matrix-form WKV scan
/// ([`EngineOptions::scan_chunked_from`]; 0: never).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkedFrom(pub u32);

impl ChunkedFrom {
    /// Whether a step of `rows` rows in `chunks` chunks may have such a chunk.
    fn may_run(self, rows: u32, chunks: u32) -> bool {
        self.0 != 0 && rows > chunks && rows >= self.0
    }

    /// Whether every chunk of such a step is one (then the token-by-token scan has nothing
    /// to do).
    fn takes_all(self, rows: u32, chunks: u32) -> bool {
        self.may_run(rows, chunks) && chunks == 1
    }

    /// The most sub-chunks of such chunks in a step of `rows` rows: each chunk of n tokens
    /// has ceil(n / CL), at most n / CL + 1.
    fn max_subs(self, rows: u32) -> u32 {
        rows.div_ceil(crate::kernels::CHUNKED_CL) + rows / self.0.max(1)
    }
}

/// Whether an op over `grid` runs in a step of `rows` rows in `chunks` chunks.
fn runs(grid: Grid, rows: u32, chunks: u32) -> bool {
    match grid {
        Grid::SingleChunkHeads(_, split) => !split.long(rows, chunks),
        Grid::LongChunkRows(_, split) => split.long(rows, chunks),
        Grid::ScanHeads(_, single, split, from) => {
            split.long(rows, chunks) && (rows == chunks) == single && !from.takes_all(rows, chunks)
        }
        Grid::ChunkedSubs(_, from) | Grid::ChunkedHeads(_, from) => from.may_run(rows, chunks),
        _ => true,
    }
}

/// Environment variable turning off (`0`) the shared f16 copies of activations: each
/// tensor-core product then converts its own input (one dispatch more per product).
pub const SHARED_X16_ENV: &str = "WEB_RWKV_SHARED_X16";

/// Environment variable turning off the stacked tensor-core products (`0`: each of the r/k/v
/// products decodes, multiplies and sums on its own; see `Builder::stacked`).
pub const COOP_STACK_ENV: &str = "WEB_RWKV_COOP_STACK";

/// Environment variable overriding [`WKV_SPLIT_FROM`] in [`EngineOptions::default`], for
/// measurements (0: never).
pub const WKV_SPLIT_FROM_ENV: &str = "WEB_RWKV_WKV_SPLIT_FROM";

/// Rows from which a batch of one-token chunks takes the three-part WKV-7 path, whose scan
/// spreads the state updates over more workgroups (there one workgroup per head and sequence
/// walks the head's 64 state rows). On an H200 (2.9B Q4_K_M; session 12, run 2): batch 4 /
/// 6 / 8 / 12 / 16 +3.5% / +3% / +6.6% / +3.5% / +6.6% against the one-token kernel,
/// batch 2 / 3 -2% / -1.3%. (17 before, with the second LoRA products' threshold.)
pub const WKV_SPLIT_FROM: u32 = 4;

/// Environment variable turning off the f16 copies written by the rounding ops and token
/// mixes (`0`: a conversion op after each, as before; for measurements).
pub const ROUND_X16_ENV: &str = "WEB_RWKV_ROUND_X16";

/// A rounding op of the step being built (see [`Builder::round_to_x16`]): its output, its
/// input, its index in the ops, the activation's rows (per block) and columns, and the
/// rounding mode. (Rounding ops of logits rows are not listed.)
struct RoundWriter {
    out: wgpu::Buffer,
    input: wgpu::Buffer,
    at: usize,
    rows: u32,
    cols: u32,
    mode: u32,
    relu_from: u32,
}

/// A token mix of the step being built (see [`Builder::mix_to_x16`]): its ops (steps of a
/// few rows, longer steps, and where it takes them the longest steps) with the pipeline
/// each runs, label, parameters and buffers (bindings 0-12), its targets (a, and b where it
/// has its own buffer) and the f16 copies it writes of them.
struct MixWriter {
    at: Vec<(usize, rwkv_gpu::Pipeline)>,
    label: &'static str,
    params: TokenMixParams,
    buffers: Vec<wgpu::Buffer>,
    targets: [Option<wgpu::Buffer>; 2],
    x16: [Option<wgpu::Buffer>; 2],
}

/// Each LoRA's values in a row of the hidden vectors start at a multiple of this, so that a
/// stacked product's row tiles (64 rows) hold one LoRA's rows (`LayerWeights::lora1_stack`).
pub const LORA_ALIGN: usize = 64;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A LoRA rank padded to [`LORA_ALIGN`].
fn lora_padded(rank: usize) -> u32 {
    rank.next_multiple_of(LORA_ALIGN) as u32
}

/// Whether each layer's first LoRA products run beside its r/k/v products, which they do
/// not wait for (`WEB_RWKV_LORA_BESIDE=0`: after them, for measurements). wgpu puts a
/// pipeline barrier before a dispatch that moves one of its buffers to another state, and on
/// Vulkan such a barrier waits for every dispatch before it. The LoRA products write a buffer
/// the previous layer's WKV kernel read, and read the token mix's output; each is a state
/// change, so their dispatch waited for the r/k/v products. Beside them: each layer writes
/// its own hidden buffer (first used in the step, no barrier), and the r/k/v products' direct
/// matvecs bind the LoRA input read-only (a binding they never read: rwkv-gpu's
/// `MatvecCall::binds_also`), so their barrier moves it to the read-only state; steps whose
/// products take other kernels get a `touch` dispatch (touch.wgsl) for that instead.
fn lora_beside() -> bool {
    rwkv_gpu::env_on("WEB_RWKV_LORA_BESIDE")
}

/// Measurement knob `WEB_RWKV_SKIP_OPS`: op kinds (as profiles name them, comma-separated)
/// left out of every step, to time what each costs in the step's chain of dependent
/// dispatches. Results are wrong with any set.
fn skipped_ops() -> &'static [String] {
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("WEB_RWKV_SKIP_OPS")
            .map(|v| {
                v.split(',')
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// What the GPU needs to know about a step's rows: token ids, token-shift sources, chunks and
/// which rows' logits are wanted.
pub(crate) struct StepTables {
    pub tokens: Vec<u32>,
    pub rows: Vec<RowInfo>,
    pub chunks: Vec<ChunkInfo>,
    pub out_rows: Vec<u32>,
    pub step: StepUniform,
}

impl StepTables {
    /// Lays out the planned `(input, start, len)` chunks as rows; `halves[slot]` is the half
    /// of the shift state holding each slot's current state.
    pub fn build(
        inputs: &[SlotInput],
        plan: &[(usize, usize, usize)],
        halves: &[u32],
    ) -> StepTables {
        let mut t = StepTables {
            tokens: Vec::new(),
            rows: Vec::new(),
            chunks: Vec::new(),
            out_rows: Vec::new(),
            step: StepUniform::default(),
        };
        for &(i, start, len) in plan {
            let input = &inputs[i];
            let first_row = t.tokens.len() as u32;
            for (n, &token) in input.tokens[start..start + len].iter().enumerate() {
                let row = first_row + n as u32;
                t.tokens.push(token);
                t.rows.push(RowInfo {
                    slot: input.slot as u32,
                    prev: if n == 0 { NO_PREV } else { row - 1 },
                    half: halves[input.slot],
                    last: (n + 1 == len) as u32,
                });
                let wanted = match input.logits {
                    Logits::All => true,
                    Logits::Last => n + 1 == len && start + len == input.tokens.len(),
                    Logits::None => false,
                };
                if wanted {
                    t.out_rows.push(row);
                }
            }
            t.chunks.push(ChunkInfo {
                slot: input.slot as u32,
                first_row,
                n_rows: len as u32,
                _pad: 0,
            });
        }
        t.step = StepUniform {
            n_rows: t.tokens.len() as u32,
            n_chunks: t.chunks.len() as u32,
            n_out: t.out_rows.len() as u32,
            _pad: 0,
        };
        t
    }
}

/// The role of a weight from its GGUF name: `blk.3.time_mix_key.weight` → `time_mix_key`.
fn weight_kind(name: &str) -> String {
    let name = name.strip_suffix(".weight").unwrap_or(name);
    match name.strip_prefix("blk.") {
        Some(rest) => rest.split_once('.').map_or(rest, |(_, r)| r).to_string(),
        None => name.to_string(),
    }
}

/// Activation rounding modes of `round_activations.wgsl`, by ggml `vec_dot_type`.
fn rounding_mode(weight: gguf::GgmlType) -> Option<u32> {
    use gguf::GgmlType::*;
    match weight.vec_dot_type() {
        F16 => Some(1),
        BF16 => Some(2),
        Q8_0 | Q8_1 => Some(3),
        Q8_K => Some(4),
        _ => None,
    }
}

pub struct Engine {
    pub(crate) ctx: Arc<GpuContext>,
    pub config: Rwkv7Config,
    pub options: EngineOptions,
    weights: ModelWeights,
    /// Bytes of every buffer the engine allocated besides the weights.
    pub(crate) buffer_bytes: u64,
    /// Per slot, the half of the double-buffered shift states that holds its current state;
    /// flipped after every GPU step the slot takes part in.
    pub(crate) halves: Vec<u32>,
    pub(crate) states: Vec<LayerState>,
    scratch: Scratch,
    /// Every operation of a step, in order.
    pub(crate) ops: Vec<Op>,
    /// Kept alive for the bind groups that reference them.
    _buffers: Vec<wgpu::Buffer>,
    pub(crate) last_times: StageTimes,
    /// Commands recorded ahead for a step of the given shape (see `Engine::gpu_step`).
    prerecorded: Option<(StepShape, wgpu::CommandBuffer)>,
    /// The GPU sampler bound to the logits buffer, made on first use (`sample.rs`).
    pub(crate) sampler: Option<crate::sample::GpuSampler>,
    /// See [`Engine::persistent_grids`].
    persistent_grids: Vec<u32>,
    /// Sampling submissions so far: the number of the latest, and per read-back buffer of
    /// the sampler the number of the submission that copies its ids there (see
    /// [`SampleTicket`]).
    pub(crate) sample_seq: u64,
    pub(crate) readback_seq: [u64; 2],
    /// Sampling steps read so far (see `DRAIN_EVERY`).
    sampled_reads: std::cell::Cell<u64>,
    /// The bytes last written to each step table (see `Engine::upload_tables`).
    uploaded_tables: std::cell::RefCell<[Vec<u8>; 6]>,
    /// See [`Engine::checkpoint`], made on first use.
    pub(crate) checkpoint: Option<crate::state::Checkpoint>,
}

/// Every this many sampled reads, the read waits for every submission (a chained step
/// included), so the queue drains, for ~0.4 ms of GPU idling each time. With chained steps
/// the queue is otherwise never idle, and the server's memory on an H200 (64 sequences under
/// load) grew 282 -> 394 MiB over 100 s, still 2-13 MiB per 10 s at the end; with the drain
/// it levelled off at ~330 MiB (0.2-1.3 MiB per 10 s after 60 s). One step at a time it
/// stays at ~285. The cause (wgpu's or the driver's bookkeeping of finished submissions)
/// is not pinned down.
const DRAIN_EVERY: u64 = 64;

/// A storage buffer that can also be copied to and from, checked against the device's limits.
fn storage(ctx: &GpuContext, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    Ok(ctx.create_buffer_checked(label, bytes.max(16), usage, None)?)
}

/// The per-step uniform ([`StepUniform`]).
fn step_buffer(ctx: &GpuContext, label: &str) -> Result<wgpu::Buffer> {
    let usage =
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    Ok(ctx.create_buffer_checked(
        label,
        std::mem::size_of::<StepUniform>() as u64,
        usage,
        None,
    )?)
}

/// Waits for submission `index`, or for every submission.
pub(crate) fn wait_gpu(ctx: &GpuContext, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
    let wait = wgpu::PollType::Wait {
        submission_index: index,
        timeout: None,
    };
    ctx.device
        .poll(wait)
        .map(|_| ())
        .map_err(|e| EngineError::Gpu(rwkv_gpu::GpuError::Readback(e.to_string())))
}

/// Writes `bytes` to the start of `buffer` unless `last` (what was last written there)
/// starts with them already: each write is a copy command before the next submission, and
/// a decode loop's tables are mostly the same from step to step. Empty `bytes` write nothing.
pub(crate) fn write_changed(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    bytes: &[u8],
    last: &mut Vec<u8>,
) {
    if !bytes.is_empty() && !last.starts_with(bytes) {
        ctx.queue.write_buffer(buffer, 0, bytes);
        last.clear();
        last.extend_from_slice(bytes);
    }
}

/// Waits for submission `after` and returns the first `len` bytes of a MAP_READ buffer it
/// wrote: later submissions (a chained step submitted since) run on.
pub(crate) fn map_read(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    len: u64,
    after: wgpu::SubmissionIndex,
) -> Result<Vec<u8>> {
    let slice = buffer.slice(..len);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    let failed = |e: String| EngineError::Gpu(rwkv_gpu::GpuError::Readback(e));
    wait_gpu(ctx, Some(after))?;
    let mapped = match rx.try_recv() {
        Ok(r) => r,
        // (Not mapped yet: a later submission also used the buffer. Wait for them all.)
        Err(_) => {
            wait_gpu(ctx, None)?;
            rx.recv().map_err(|e| failed(e.to_string()))?
        }
    };
    mapped.map_err(|e| failed(e.to_string()))?;
    let data = slice
        .get_mapped_range()
        .map_err(|e| failed(format!("{e:?}")))?
        .to_vec();
    buffer.unmap();
    Ok(data)
}

/// An activation buffer laid out as `blocks` blocks of `[max rows][cols]`.
#[derive(Clone, Copy)]
struct Act<'a> {
    name: &'static str,
    buf: &'a wgpu::Buffer,
    cols: u32,
    blocks: u32,
    /// Rows per block (`max_rows`, or `max_out` for the head's input).
    rows: u32,
    /// Counted by step.n_out instead of step.n_rows.
    out: bool,
}

/// Builds the ops of a step, allocating rounded copies of activations on first use.
struct Builder<'a> {
    ctx: &'a GpuContext,
    kernels: &'a Kernels,
    matmul: &'a MatmulKernels,
    matvec: &'a MatvecKernels,
    step: &'a wgpu::Buffer,
    head_step: &'a wgpu::Buffer,
    round: bool,
    rounded: Vec<(&'static str, u32, wgpu::Buffer)>,
    /// (activation, mode) pairs whose rounded copy is up to date at the end of `ops`.
    fresh: Vec<(&'static str, u32)>,
    /// The fresh copies that a rounding op (skipped in one-token steps) made, with the op's
    /// index in `ops`.
    rounded_by_op: Vec<(&'static str, u32, usize)>,
    /// The rounding ops whose output is current (latest first not implied): what
    /// [`Builder::round_to_x16`] needs to make one write an f16 copy too.
    round_writers: Vec<RoundWriter>,
    /// The token mixes whose targets are current (see [`Builder::mix_to_x16`]).
    mix_writers: Vec<MixWriter>,
    /// The activation that the product writing it stores as plain sums in steps of at least
    /// so many rows, leaving its ReLU² to the rounding op that reads it (see
    /// [`EngineOptions::defer_relu_square`]).
    relu_raw: Option<(&'static str, u32)>,
    /// Whether rounding ops and token mixes write the f16 copies the products read
    /// ([`ROUND_X16_ENV`]).
    fuse_round_x16: bool,
    /// See [`EngineOptions::token_mix_long_from`].
    mix_long_from: u32,
    /// Bound where a kernel's optional output is not used.
    dummy: wgpu::Buffer,
    /// Whether the tensor-core products of an activation share one f16 copy of it
    /// ([`SHARED_X16_ENV`]).
    share_x16: bool,
    /// The f16 copies: (the buffer converted, its copy).
    x16: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    /// (buffer, index of its `Op::Convert` in `ops`) for copies current at the end of `ops`.
    converted: Vec<(wgpu::Buffer, usize)>,
    /// The 8-bit copies the direct matvecs read (`MatvecKernels::q8k_input`): (the buffer
    /// quantized, the format, its copy of the first rows of each block, up to
    /// [`Builder::q8_rows`]).
    q8: Vec<(wgpu::Buffer, Q8Format, Arc<Q8Input>)>,
    /// The (buffer, format) pairs whose copy is current at the end of `ops` (in steps of up
    /// to [`Builder::q8_rows`] rows).
    q8_fresh: Vec<(wgpu::Buffer, Q8Format)>,
    /// A buffer the next `matmul_group`'s direct matvecs bind read-only besides their own
    /// (`MatvecCall::binds_also`; `Op::also_read_from` says in which steps they all did).
    also_read: Option<wgpu::Buffer>,
    ops: Vec<Op>,
}

impl Builder<'_> {
    fn kernel(
        &mut self,
        label: &'static str,
        pipeline: &rwkv_gpu::Pipeline,
        buffers: &[&wgpu::Buffer],
        grid: Grid,
    ) {
        let at: Vec<(u32, &wgpu::Buffer)> = (0..).zip(buffers.iter().copied()).collect();
        self.kernel_at(label, pipeline, &at, grid);
    }

    /// [`Builder::kernel`] with the binding of each buffer given.
    fn kernel_at(
        &mut self,
        label: &'static str,
        pipeline: &rwkv_gpu::Pipeline,
        buffers: &[(u32, &wgpu::Buffer)],
        grid: Grid,
    ) {
        let bind_group = bind_at(&self.ctx.device, pipeline, label, buffers);
        // Kernels write activations: every rounded copy may be stale after one, except the
        // copy this very launch makes (marked fresh by the caller afterwards); so may every
        // f16 copy.
        self.fresh.clear();
        self.rounded_by_op.clear();
        self.round_writers.clear();
        self.mix_writers.clear();
        self.converted.clear();
        self.q8_fresh.clear();
        self.ops.push(Op::Kernel(
            Launch {
                label,
                pipeline: pipeline.clone(),
                bind_group,
            },
            grid,
        ));
    }

    /// Appends a dispatch that binds `buffer` read-only and does nothing (touch.wgsl): wgpu's
    /// barrier for the buffer's move to that state comes here instead of at its next reader.
    /// It writes nothing, so every copy that is current stays current.
    fn touch(&mut self, buffer: &wgpu::Buffer, pipeline: &rwkv_gpu::Pipeline) {
        let bind_group = bind_at(&self.ctx.device, pipeline, "touch", &[(0, buffer)]);
        self.ops.push(Op::Kernel(
            Launch {
                label: "touch",
                pipeline: pipeline.clone(),
                bind_group,
            },
            Grid::Fixed(1),
        ));
    }

    /// Makes the ops appended since `start` run only in steps of at least `from` rows
    /// (`at_least`) or only in the others ([`Op::ByRows`]).
    fn by_rows(&mut self, start: usize, from: u32, at_least: bool) {
        let ops: Vec<Op> = self.ops.drain(start..).collect();
        self.ops.extend(ops.into_iter().map(|op| Op::ByRows {
            from,
            at_least,
            op: Box::new(op),
        }));
    }

    /// Takes activation `name` in `buf`, which the product just appended wrote already
    /// rounded with `mode` (f16 or bf16), as its rounded copy: products that read that copy
    /// read `buf`, with no rounding op.
    fn rounded_in_place(&mut self, name: &'static str, mode: u32, buf: &wgpu::Buffer) {
        self.rounded.retain(|(n, m, _)| !(*n == name && *m == mode));
        self.rounded.push((name, mode, buf.clone()));
        self.fresh.push((name, mode));
    }

    /// The buffer a product with a weight of type `ty` reads `x` from: `x` itself, or a copy
    /// rounded as ggml rounds activations for that type (made once per step and mode).
    fn input_for(&mut self, x: Act, ty: gguf::GgmlType) -> Result<wgpu::Buffer> {
        let mode = match rounding_mode(ty) {
            Some(m) if self.round => m,
            _ => return Ok(x.buf.clone()),
        };
        // One buffer per (activation, mode); it is recomputed only when the activation may
        // have changed since it was last rounded.
        let existing = self
            .rounded
            .iter()
            .position(|(n, m, _)| *n == x.name && *m == mode);
        let index = match existing {
            Some(i) => i,
            None => {
                let bytes = x.blocks as u64 * x.rows as u64 * x.cols as u64 * 4;
                let buf = storage(self.ctx, x.name, bytes)?;
                self.rounded.push((x.name, mode, buf));
                self.rounded.len() - 1
            }
        };
        let out = self.rounded[index].2.clone();
        if self.fresh.contains(&(x.name, mode)) {
            return Ok(out);
        }
        let relu_from = self.relu_from(x.name);
        let params = self.round_params(x.rows, x.cols, mode, x.out, false, relu_from);
        let tiles = x.cols.div_ceil(256);
        let grid = if x.out {
            Grid::OutTiles(tiles)
        } else {
            Grid::RowBlocks(x.blocks * tiles)
        };
        let pipeline = &self.kernels.round_activations;
        let label = "round_activations";
        let buffers = [&params, self.step, x.buf, &out, &self.dummy];
        let bind_group = bind(&self.ctx.device, pipeline, label, &buffers);
        let wide = self.wide_round(mode, x, &buffers);
        // The 8-bit roundings start out needed by no step: each product that reads them
        // lowers `from` to the steps it needs them in (matmul_group).
        let every_step = every_step_rounding(mode);
        self.ops.push(Op::Round {
            launch: Launch {
                label,
                pipeline: pipeline.clone(),
                bind_group,
            },
            grid,
            every_step,
            from: if every_step { 2 } else { u32::MAX },
            of: x.name,
            wide,
        });
        self.converted.retain(|(b, _)| *b != out);
        self.fresh.push((x.name, mode));
        if !every_step {
            self.rounded_by_op.push((x.name, mode, self.ops.len() - 1));
        }
        self.round_writers.retain(|w| w.out != out);
        if !x.out {
            self.round_writers.push(RoundWriter {
                out: out.clone(),
                input: x.buf.clone(),
                at: self.ops.len() - 1,
                rows: x.rows,
                cols: x.cols,
                mode,
                relu_from,
            });
        }
        Ok(out)
    }

    /// The `main_q8k` launch of a rounding op with `mode` over `x` bound to `buffers`, with
    /// its workgroups per row: Q8_K and Q8_0 rows of whole 256-value tiles only.
    fn wide_round(&self, mode: u32, x: Act, buffers: &[&wgpu::Buffer]) -> Option<(Launch, u32)> {
        let wide = eight_bit(mode) && x.cols.is_multiple_of(256) && round_wide_rows() != u32::MAX;
        wide.then(|| {
            let pipeline = &self.kernels.round_q8k;
            let launch = Launch {
                label: "round_activations",
                pipeline: pipeline.clone(),
                bind_group: bind(&self.ctx.device, pipeline, "round_activations", buffers),
            };
            let blocks = if x.out { 1 } else { x.blocks };
            (launch, blocks * (x.cols / 256).div_ceil(4))
        })
    }

    /// The rows from which a rounding op of activation `name` rounds its ReLU² (0: never; see
    /// [`Builder::relu_raw`]).
    fn relu_from(&self, name: &str) -> u32 {
        self.relu_raw
            .filter(|&(n, _)| n == name)
            .map_or(0, |(_, from)| from)
    }

    /// The parameters of a rounding op over rows of `cols` values (`rows` per block) with
    /// `mode`, counting the step's logits rows (`out`) or its token rows, writing the f16
    /// copy too or not, rounding the input's ReLU² in steps of `relu_from` rows or more (0:
    /// none) (round_activations.wgsl).
    fn round_params(
        &self,
        rows: u32,
        cols: u32,
        mode: u32,
        out: bool,
        x16: bool,
        relu_from: u32,
    ) -> wgpu::Buffer {
        let params = RoundParams {
            cols,
            block_stride: rows * cols,
            mode,
            count_out: out as u32,
            write_x16: x16 as u32,
            relu_from,
            _pad: [0; 2],
        };
        uniform(&self.ctx.device, "round params", &params)
    }

    /// Makes the rounding op that wrote `input` (if the latest writer of it is one) write the
    /// f16 copy `x16` too, instead of a conversion of its own after it; returns the op's
    /// index.
    fn round_to_x16(&mut self, input: &wgpu::Buffer, x16: &wgpu::Buffer) -> Option<usize> {
        let w = self.round_writers.iter().find(|w| w.out == *input)?;
        if !w.cols.is_multiple_of(2) {
            return None;
        }
        let params = self.round_params(w.rows, w.cols, w.mode, false, true, w.relu_from);
        let pipeline = &self.kernels.round_activations;
        let buffers = [&params, self.step, &w.input, &w.out, x16];
        let bind_group = bind(&self.ctx.device, pipeline, "round_activations", &buffers);
        let at = w.at;
        let wide_group = match &self.ops[at] {
            Op::Round {
                wide: Some((l, _)), ..
            } => Some(bind(
                &self.ctx.device,
                &l.pipeline,
                "round_activations",
                &buffers,
            )),
            _ => None,
        };
        match &mut self.ops[at] {
            Op::Round { launch, wide, .. } => {
                launch.bind_group = bind_group;
                if let (Some((l, _)), Some(g)) = (wide.as_mut(), wide_group) {
                    l.bind_group = g;
                }
            }
            _ => return None,
        }
        Some(at)
    }

    /// The buffer holding `x` rounded with `mode` (0: `x` itself), allocated on first use.
    fn rounded_buffer(&mut self, x: Act, mode: u32) -> Result<wgpu::Buffer> {
        if mode == 0 {
            return Ok(x.buf.clone());
        }
        if let Some((_, _, buf)) = self
            .rounded
            .iter()
            .find(|(n, m, _)| *n == x.name && *m == mode)
        {
            return Ok(buf.clone());
        }
        let bytes = x.blocks as u64 * x.rows as u64 * x.cols as u64 * 4;
        let buf = storage(self.ctx, x.name, bytes)?;
        self.rounded.push((x.name, mode, buf.clone()));
        Ok(buf)
    }

    /// The f16 copy of `input` (an activation laid out as `x`, or a rounded copy of it) that
    /// the tensor-core products reading it share, with the index of the op converting it:
    /// appended now unless the copy is current. None where products convert their own
    /// input (no tensor-core path, the logits head, or sharing turned off).
    fn x16_for(&mut self, input: &wgpu::Buffer, x: Act) -> Result<Option<(wgpu::Buffer, usize)>> {
        if !self.share_x16 || x.out || self.ctx.coop_subgroup_size().is_none() {
            return Ok(None);
        }
        let x16 = match self.x16.iter().find(|(b, _)| b == input) {
            Some((_, c)) => c.clone(),
            None => {
                let bytes = self.matmul.shared_x16_bytes(x.blocks, x.rows, x.cols);
                let c = storage(self.ctx, "f16 inputs", bytes)?;
                self.x16.push((input.clone(), c.clone()));
                c
            }
        };
        if let Some(&(_, at)) = self.converted.iter().find(|(b, _)| b == input) {
            return Ok(Some((x16, at)));
        }
        if self.fuse_round_x16 {
            let writer = match self.round_to_x16(input, &x16) {
                Some(at) => Some(at),
                None => self.mix_to_x16(input, &x16),
            };
            if let Some(at) = writer {
                self.converted.push((input.clone(), at));
                return Ok(Some((x16, at)));
            }
        }
        let Some(call) = self
            .matmul
            .prepare_convert(self.ctx, input, &x16, x.blocks, x.rows, x.cols, self.step)?
        else {
            return Ok(None);
        };
        self.ops.push(Op::Convert {
            call,
            from: u32::MAX,
        });
        let at = self.ops.len() - 1;
        self.converted.push((input.clone(), at));
        Ok(Some((x16, at)))
    }

    /// Makes the token mix that wrote `input` (one of its targets, if it is the latest
    /// writer of it) write the f16 copy `x16` too, in every step of several rows, instead of
    /// a conversion after it; returns the index of its op for long steps.
    fn mix_to_x16(&mut self, input: &wgpu::Buffer, x16: &wgpu::Buffer) -> Option<usize> {
        let w = self
            .mix_writers
            .iter_mut()
            .find(|w| w.targets.iter().any(|t| t.as_ref() == Some(input)))?;
        let k = w.targets.iter().position(|t| t.as_ref() == Some(input))?;
        w.x16[k] = Some(x16.clone());
        w.params.x16 |= 1 << k;
        let params = uniform(&self.ctx.device, w.label, &w.params);
        let mut buffers: Vec<&wgpu::Buffer> = w.buffers.iter().collect();
        buffers[0] = &params;
        for (j, copy) in w.x16.iter().enumerate() {
            if let Some(copy) = copy {
                buffers[11 + j] = copy;
            }
        }
        for (at, pipeline) in &w.at {
            let group = bind(&self.ctx.device, pipeline, w.label, &buffers);
            self.ops[*at].launch_mut()?.bind_group = group;
        }
        w.at.last().map(|&(at, _)| at)
    }

    /// Rounding mode for the activations a weight reads (0: plain f32).
    fn mode_for(&self, w: &GpuMatrix) -> u32 {
        match rounding_mode(w.ty) {
            Some(m) if self.round => m,
            _ => 0,
        }
    }

    /// Appends a fused layer norm + token shift + lerp kernel writing the mixes of `out`:
    /// block i goes, rounded, to the readers `proj[i]` (target a) and `lora[i]` (target b).
    #[allow(clippy::too_many_arguments)]
    fn token_mix(
        &mut self,
        label: &'static str,
        params: &TokenMixParams,
        x: &wgpu::Buffer,
        norm: (&wgpu::Buffer, &wgpu::Buffer),
        mu: &wgpu::Buffer,
        state: &wgpu::Buffer,
        rows: &wgpu::Buffer,
        out: Act,
        proj: &[Option<&GpuMatrix>],
        lora: &[Option<&GpuMatrix>],
    ) -> Result<()> {
        // A target's mode if all its readers agree; mixed readers get plain f32 and their own
        // rounding launches.
        let common = |ws: &[Option<&GpuMatrix>]| -> u32 {
            let modes: Vec<u32> = ws.iter().flatten().map(|w| self.mode_for(w)).collect();
            match modes.first() {
                Some(&m) if modes.iter().all(|&x| x == m) => m,
                _ => 0,
            }
        };
        let (ma, mb) = (common(proj), common(lora));
        let buf_a = self.rounded_buffer(out, ma)?;
        let mut buf_b = self.rounded_buffer(out, mb)?;
        let mut p = *params;
        for (i, _) in proj.iter().enumerate().filter(|(_, t)| t.is_some()) {
            p.mode_a[i / 4][i % 4] = ma;
        }
        if buf_b == buf_a {
            // Both targets are the same buffer: write it once.
            for (i, _) in lora.iter().enumerate().filter(|(_, t)| t.is_some()) {
                p.mode_a[i / 4][i % 4] = ma;
            }
            buf_b = self.dummy.clone();
        } else {
            for (i, _) in lora.iter().enumerate().filter(|(_, t)| t.is_some()) {
                p.mode_b[i / 4][i % 4] = mb;
            }
        }
        // Few-token steps' matvecs read the 8-bit mixes quantized here.
        let format = rwkv_gpu::q8_format_of_mode(ma).filter(|_| {
            self.matvec.q8k_input()
                && out.cols.is_multiple_of(256)
                && p.mix_stride == out.rows * out.cols
        });
        let xq = match format {
            Some(format) => {
                // (Its own quantization, not needed after this kernel, is left out.)
                let xq = self.q8_copy(&buf_a, out, format, &mut Vec::new())?;
                (p.q8k, p.xq_d, p.xq_bs) = (self.q8_rows(out), xq.d_base(), xq.bs_base());
                Some(xq)
            }
            None => None,
        };
        let params = uniform(&self.ctx.device, label, &p);
        let step = self.step;
        let xq_buf = xq.as_ref().map_or(&self.dummy, |q| &q.buffer).clone();
        let dummy = self.dummy.clone();
        let buffers = [
            &params, step, x, norm.0, norm.1, mu, state, rows, &buf_a, &buf_b, &xq_buf, &dummy,
            &dummy,
        ];
        let grid = Grid::MixTiles(p.dim.div_ceil(256), p.n_mix);
        // Pipelines of steps of up to MIX_SPLIT_ROWS rows, longer ones, and for the
        // attention's mixes steps of at least `mix_long_from` rows where token_mix_long.wgsl
        // takes them (a workgroup per row).
        let kernels = self.kernels;
        let split = MIX_SPLIT_ROWS + 1;
        // Each pipeline with its grid and the rows of the steps it takes ([from, below)).
        let mut pipelines = vec![
            (&kernels.token_mix_few, grid, 0, Some(split)),
            (&kernels.token_mix, grid, split, None),
        ];
        let takes_long = p.n_mix >= MIX_LONG_MIXES && [ma, mb].iter().any(|&m| eight_bit(m));
        if let Some(long) = kernels.token_mix_long.as_ref().filter(|_| takes_long) {
            let from = self.mix_long_from.max(split);
            pipelines[1].3 = Some(from);
            pipelines.push((long, Grid::Rows, from, None));
        }
        let mut at = Vec::new();
        for (pipeline, grid, from, below) in pipelines {
            let start = self.ops.len();
            self.kernel(label, pipeline, &buffers, grid);
            if let Some(below) = below {
                self.by_rows(start, below, false);
            }
            if from > 0 {
                self.by_rows(start, from, true);
            }
            at.push((start, pipeline.clone()));
        }
        // The tensor-core products reading a target may have this kernel write their f16
        // copy of it (see `Builder::mix_to_x16`).
        if out.cols.is_multiple_of(2) {
            self.mix_writers.push(MixWriter {
                at,
                label,
                params: p,
                buffers: buffers.map(|b| b.clone()).to_vec(),
                targets: [
                    Some(buf_a.clone()),
                    (buf_b != self.dummy).then(|| buf_b.clone()),
                ],
                x16: [None, None],
            });
        }
        for m in [ma, mb] {
            if m != 0 {
                self.fresh.push((out.name, m));
            }
        }
        if let Some(format) = format {
            self.q8_fresh.push((buf_a, format));
        }
        Ok(())
    }

    /// Appends `y[y_offset + t * y_stride..] (op)= W x[block xb][t]` for every row t, rounding
    /// x first if needed; with one row, a matvec that rounds x itself.
    #[allow(clippy::too_many_arguments)]
    fn matmul_to(
        &mut self,
        w: &GpuMatrix,
        x: Act,
        xb: u32,
        y: (&'static str, &wgpu::Buffer),
        y_offset: u32,
        y_stride: u32,
        epilogue: Epilogue,
    ) -> Result<()> {
        let kind = weight_kind(&w.name);
        let x_offset = xb * x.rows * x.cols;
        let item = (w, x_offset, y_offset, y_stride, epilogue);
        self.matmul_group(x, y, &[item], kind, None)
    }

    /// Appends products that read the same activation `x` and write the same buffer `y`,
    /// each `(W, x offset, y offset, y stride, epilogue)`: `y[y offset + t * y stride..]
    /// (op)= W x[x offset + t * x.cols..]` (W's columns may be fewer than `x.cols`: part of
    /// a row), as one op: in one-token steps their matvecs share dispatches where they can,
    /// and none waits for another; in steps on tensor cores one stacked product where they
    /// qualify (see [`Builder::stacked`]; `source`: the F16 rows of all the items, stacked).
    fn matmul_group(
        &mut self,
        x: Act,
        y: (&'static str, &wgpu::Buffer),
        items: &[(&GpuMatrix, u32, u32, u32, Epilogue)],
        kind: String,
        source: Option<&StackedF16>,
    ) -> Result<()> {
        let (y_name, y) = y;
        let (step, grid) = if x.out {
            (self.head_step, Grid::Out)
        } else {
            (self.step, Grid::Rows)
        };
        let mut calls = Vec::new();
        // Per rounding mode: the buffer the one-token matvecs read, and their jobs; the same
        // for the few-token ones.
        let mut singles: Vec<(u32, wgpu::Buffer, Vec<MatvecJob>)> = Vec::new();
        let mut several: Vec<(u32, wgpu::Buffer, Vec<MatvecJob>)> = Vec::new();
        // The 8-bit rounding ops and the f16 conversions (with the tokens from which the
        // product takes the tensor cores) the products read.
        let mut round_ops: Vec<usize> = Vec::new();
        let mut converts: Vec<(usize, u32)> = Vec::new();
        // The shared f16 input copy of every item, if they all read the same one (for the
        // stacked product below).
        let mut shared_x16: Vec<wgpu::Buffer> = Vec::new();
        for &(w, x_offset, y_offset, y_stride, epilogue) in items {
            let mode = self.mode_for(w);
            // The one-token matvec reads a copy a kernel wrote rounded (rounding it again
            // changes nothing), else the unrounded activation: the rounding ops it would
            // wait for are skipped in one-token steps.
            // The f16 and bf16 roundings run in every step: the matvec reads their copy and
            // does not round again.
            let kernel_rounded = self.fresh.contains(&(x.name, mode))
                && !self
                    .rounded_by_op
                    .iter()
                    .any(|r| (r.0, r.1) == (x.name, mode));
            let input = self.input_for(x, w.ty)?;
            if let Some(&(_, _, at)) = self
                .rounded_by_op
                .iter()
                .find(|r| (r.0, r.1) == (x.name, mode))
            {
                round_ops.push(at);
            }
            let single_x = if mode == 0 || kernel_rounded || every_step_rounding(mode) {
                input.clone()
            } else {
                x.buf.clone()
            };
            let single_mode = if every_step_rounding(mode) { 0 } else { mode };
            let shared = self.x16_for(&input, x)?;
            if let Some((buf, _)) = &shared {
                shared_x16.push(buf.clone());
            }
            let x16 = shared.as_ref().map(|(buf, _)| X16Input {
                buf,
                offset: x_offset,
                stride: x.cols,
            });
            let call = self.matmul.prepare_shared(
                self.ctx, w, &input, x_offset, x.cols, y, y_offset, y_stride, epilogue, step,
                x.rows, x16,
            )?;
            // The conversion runs in every step where this product reads it (set below, once
            // the steps the few-token matvecs take are known).
            if let (Some((_, at)), Some(f)) = (&shared, call.coop_from()) {
                converts.push((*at, f));
            }
            calls.push(call);
            let job = MatvecJob {
                w,
                x_offset,
                y_offset,
                epilogue,
                x_stride: x.cols,
                y_stride,
            };
            // The few-token matvecs read the 8-bit copy of what the one-token ones read (the
            // token mix writes it from its unrounded values), or the multi-row products'
            // input, rounded in such steps.
            let tokens_x = if rwkv_gpu::q8_format_of_mode(mode).is_some() {
                single_x.clone()
            } else {
                input.clone()
            };
            match several
                .iter_mut()
                .find(|(m, b, _)| *m == mode && *b == tokens_x)
            {
                Some((_, _, jobs)) => jobs.push(job.clone()),
                None => several.push((mode, tokens_x, vec![job.clone()])),
            }
            match singles
                .iter_mut()
                .find(|(m, b, _)| *m == single_mode && *b == single_x)
            {
                Some((_, _, jobs)) => jobs.push(job),
                None => singles.push((single_mode, single_x, vec![job])),
            }
        }
        let stacked = self.stacked(x, y, items, &calls, &shared_x16, step, source)?;
        let mut quantize = Vec::new();
        let mut prepared = Vec::new();
        for (mode, single_x, jobs) in &singles {
            if let Some(call) = self.q8_matvec(x, single_x, y, *mode, jobs, &mut quantize)? {
                prepared.push(call);
            } else {
                let also = self.also_read.as_ref();
                prepared.push(
                    self.matvec
                        .prepare(self.ctx, single_x, y, *mode, jobs, also)?,
                );
            }
        }
        let tokens = self.tokens_matvecs(x, y, &several, &mut quantize)?;
        self.also_read = None;
        // Steps of up to `direct` rows take the few-token matvecs, which read neither the
        // 8-bit rounded copies nor the f16 ones.
        let direct = tokens.iter().map(TokensCall::max_tokens).min().unwrap_or(1);
        for at in round_ops {
            if let Some(from) = self.ops[at].round_from_mut() {
                *from = (*from).min(direct + 1);
            }
        }
        // The stacked product may take tensor cores from fewer tokens than its matrices.
        let stack_from = stacked.as_ref().map_or(u32::MAX, |s| s.from());
        for (at, f) in converts {
            let f = f.min(stack_from);
            if let Op::Convert { from, .. } = &mut self.ops[at] {
                *from = (*from).min(f.max(direct + 1));
            }
        }
        self.fresh.retain(|(name, _)| *name != y_name);
        self.converted.retain(|(b, _)| b != y);
        self.q8_fresh.retain(|(b, _)| b != y);
        self.ops.push(Op::Matmul {
            calls,
            stacked,
            quantize,
            singles: prepared,
            tokens,
            grid,
            kind,
        });
        Ok(())
    }

    /// The products `items` (prepared as `calls`) as one stacked tensor-core product, where
    /// they qualify ([`MatmulKernels::prepare_stacked`]): all read the same shared f16 copy
    /// (`shared_x16`, one entry per item) and write `y` with one stride; from `source`'s
    /// rows if given, else each decoded every step.
    /// `WEB_RWKV_COOP_STACK=0` turns it off.
    #[allow(clippy::too_many_arguments)]
    fn stacked(
        &self,
        x: Act,
        y: &wgpu::Buffer,
        items: &[(&GpuMatrix, u32, u32, u32, Epilogue)],
        calls: &[MatmulCall],
        shared_x16: &[wgpu::Buffer],
        step: &wgpu::Buffer,
        source: Option<&StackedF16>,
    ) -> Result<Option<Box<rwkv_gpu::StackedCall>>> {
        let Some(&(_, _, _, y_stride, _)) = items.first() else {
            return Ok(None);
        };
        let same_x16 =
            shared_x16.len() == items.len() && shared_x16.windows(2).all(|p| p[0] == p[1]);
        let one_stride = items.iter().all(|&(_, _, _, s, _)| s == y_stride);
        if !same_x16 || !one_stride || !rwkv_gpu::env_on(COOP_STACK_ENV) {
            return Ok(None);
        }
        let stack: Vec<StackItem> = items
            .iter()
            .map(|&(w, x_offset, y_offset, _, epilogue)| StackItem {
                w,
                x_offset,
                y_offset,
                epilogue,
            })
            .collect();
        let call_refs: Vec<&MatmulCall> = calls.iter().collect();
        let x16 = X16Input {
            buf: &shared_x16[0],
            offset: 0,
            stride: x.cols,
        };
        // The input's blocks: whole blocks of x, or parts of a row where the items read
        // those (the second LoRA products, each its part of a hidden row).
        let block = stack
            .iter()
            .fold(x.rows * x.cols, |b, it| gcd(b, it.x_offset));
        let stacked = self.matmul.prepare_stacked(
            self.ctx, &call_refs, &stack, block, x16, x.buf, y, y_stride, step, source,
        )?;
        Ok(stacked.map(Box::new))
    }

    /// The Q8_0 copy of `src` (the WKV kernels' output, laid out as `x`) that the output
    /// projection `w`'s matvecs read, for the WKV kernels to write: None where they read
    /// none (see [`Builder::q8_input_format`]).
    fn wkv_q8_copy(
        &mut self,
        src: &wgpu::Buffer,
        x: Act,
        w: &GpuMatrix,
    ) -> Result<Option<Arc<Q8Input>>> {
        let job = MatvecJob::new(w, 0, 0, Epilogue::Add);
        if self.q8_input_format(x, rwkv_gpu::ROUND_Q8_0, &[job]) != Some(Q8Format::Zero) {
            return Ok(None);
        }
        // (Its own quantization, which the WKV kernels make needless, is left out.)
        Ok(Some(self.q8_copy(
            src,
            x,
            Q8Format::Zero,
            &mut Vec::new(),
        )?))
    }

    /// Rows per block of an activation's 8-bit copy: the most rows of the steps whose products
    /// take the direct matvecs (`MatvecKernels::max_tokens`, at most `x.rows`).
    fn q8_rows(&self, x: Act) -> u32 {
        self.matvec.max_tokens().min(x.rows)
    }

    /// The `format` copy of the first [`Builder::q8_rows`] rows of each block of `src` (laid
    /// out as `x`), allocated on first use, with the quantization that updates it appended to
    /// `quantize` unless it is current.
    fn q8_copy(
        &mut self,
        src: &wgpu::Buffer,
        x: Act,
        format: Q8Format,
        quantize: &mut Vec<QuantizeCall>,
    ) -> Result<Arc<Q8Input>> {
        let rows = self.q8_rows(x);
        let xq = match self.q8.iter().find(|(b, f, _)| b == src && *f == format) {
            Some((_, _, q)) => q.clone(),
            None => {
                let values = x.blocks * rows * x.cols;
                let q = Arc::new(Q8Input::with_format(self.ctx, x.name, format, values)?);
                self.q8.push((src.clone(), format, q.clone()));
                q
            }
        };
        let key = (src.clone(), format);
        if !self.q8_fresh.contains(&key) {
            let block = x.rows * x.cols;
            quantize.push(
                self.matvec
                    .prepare_quantize_segments(self.ctx, src, &xq, x.cols, block, x.cols, rows)?,
            );
            self.q8_fresh.push(key);
        }
        Ok(xq)
    }

    /// The 8-bit format in which `jobs` (reading an activation laid out as `x` with rounding
    /// `mode`) can read an 8-bit copy of it, if they can: the copies are on
    /// (`MatvecKernels::q8k_input`), hold whole rows of blocks of 256, and every matrix reads
    /// that format.
    fn q8_input_format(&self, x: Act, mode: u32, jobs: &[MatvecJob]) -> Option<Q8Format> {
        let format = rwkv_gpu::q8_format_of_mode(mode)?;
        let block = x.rows * x.cols;
        let usable = self.matvec.q8k_input()
            && x.cols.is_multiple_of(256)
            && jobs.iter().all(|j| {
                MatvecKernels::q8_format(j.w) == Some(format) && j.x_offset.is_multiple_of(block)
            });
        usable.then_some(format)
    }

    /// `jobs` (reading an activation laid out as `x` at offsets of whole blocks) reading its
    /// 8-bit copy instead: row t of block b of the activation is row b * q8_rows + t there.
    fn q8_jobs<'j>(&self, x: Act, jobs: &[MatvecJob<'j>]) -> Vec<MatvecJob<'j>> {
        let block = x.rows * x.cols;
        jobs.iter()
            .map(|j| MatvecJob {
                x_offset: j.x_offset / block * self.q8_rows(x) * x.cols,
                ..j.clone()
            })
            .collect()
    }

    /// The one-token matvec of `jobs` (reading `src`, laid out as `x`) on an 8-bit copy of the
    /// first row of each block of `src` (Q8_K or Q8_0 per the rounding `mode`), quantized once
    /// (its quantization pushed to `quantize` unless the copy is current): None where the
    /// matrices or offsets do not allow it, or [`MatvecKernels::q8k_input`] is off.
    fn q8_matvec(
        &mut self,
        x: Act,
        src: &wgpu::Buffer,
        y: &wgpu::Buffer,
        mode: u32,
        jobs: &[MatvecJob],
        quantize: &mut Vec<QuantizeCall>,
    ) -> Result<Option<MatvecCall>> {
        let Some(format) = self.q8_input_format(x, mode, jobs) else {
            return Ok(None);
        };
        let xq = self.q8_copy(src, x, format, quantize)?;
        let jobs = self.q8_jobs(x, jobs);
        let also = self.also_read.as_ref();
        Ok(Some(self.matvec.prepare_q8(self.ctx, &xq, y, &jobs, also)?))
    }

    /// The direct matvecs of steps of 2 to [`Builder::q8_rows`] rows for the products of
    /// `groups` ((rounding mode, the buffer they read: the one-token matvecs' for the 8-bit
    /// modes, else the multi-row products' input, rounded in such steps; their jobs)), with
    /// the 8-bit quantizations of their inputs that are not current appended to
    /// `quantize`: none unless every product has one ([`MatvecKernels::supports_tokens`]).
    fn tokens_matvecs(
        &mut self,
        x: Act,
        y: &wgpu::Buffer,
        groups: &[(u32, wgpu::Buffer, Vec<MatvecJob>)],
        quantize: &mut Vec<QuantizeCall>,
    ) -> Result<Vec<TokensCall>> {
        let max = self.q8_rows(x);
        let q8 = rwkv_gpu::q8_format_of_mode;
        let supported = max >= 2
            && groups.iter().all(|(mode, _, jobs)| {
                let is_q8 = q8(*mode).is_some();
                (!is_q8 || self.q8_input_format(x, *mode, jobs).is_some())
                    && jobs
                        .iter()
                        .all(|j| self.matvec.supports_tokens(j.w, is_q8, *mode, j.x_offset))
            });
        if !supported {
            return Ok(Vec::new());
        }
        let mut tokens = Vec::new();
        for (mode, src, jobs) in groups {
            let max = jobs
                .iter()
                .map(|j| self.matvec.max_tokens_for(j.w))
                .fold(max, u32::min);
            if max < 2 {
                return Ok(Vec::new());
            }
            let Some(format) = q8(*mode) else {
                // Rounded already: no rounding as read.
                let input = MatvecInput::F32(src);
                tokens.push(self.matvec.prepare_tokens(
                    self.ctx,
                    input,
                    y,
                    0,
                    jobs,
                    max,
                    self.also_read.as_ref(),
                )?);
                continue;
            };
            let xq = self.q8_copy(src, x, format, quantize)?;
            let jobs = self.q8_jobs(x, jobs);
            let input = MatvecInput::Q8(&xq);
            tokens.push(self.matvec.prepare_tokens(
                self.ctx,
                input,
                y,
                *mode,
                &jobs,
                max,
                self.also_read.as_ref(),
            )?);
        }
        Ok(tokens)
    }

    /// Appends `y[block yb] (op)= W x[block xb]` for every row, rounding x first if needed.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &mut self,
        w: &GpuMatrix,
        x: Act,
        xb: u32,
        y: (&'static str, &wgpu::Buffer),
        yb: u32,
        y_rows: u32,
        epilogue: Epilogue,
    ) -> Result<()> {
        let rows = w.rows as u32;
        self.matmul_to(w, x, xb, y, yb * y_rows * rows, rows, epilogue)
    }
}

impl Engine {
    /// Uploads the model and builds every launch. `progress` sees (bytes done, bytes total).
    pub fn load(
        ctx: Arc<GpuContext>,
        file: &GgufFile,
        options: EngineOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Engine> {
        let spec = Rwkv7Spec::from_gguf(file)?;
        let c = spec.config.clone();
        if c.head_size != 64 {
            return Err(EngineError::Unsupported(format!(
                "head size {} (the GPU kernels are written for RWKV-7's head size 64)",
                c.head_size
            )));
        }
        if options.max_slots == 0 || options.max_rows == 0 || options.max_out == 0 {
            return Err(EngineError::Invalid(
                "max_slots, max_rows and max_out must be at least 1".into(),
            ));
        }
        let weights = ModelWeights::upload(&ctx, file, &spec, progress)?;
        let lora_ranks = [c.decay_lora, c.iclr_lora, c.gate_lora, c.value_lora].map(|r| r as u32);
        // The matrix-form scan where a step can hold a chunk long enough for it and the
        // device has the workgroup memory its kernels take (the token-by-token scan, built
        // to leave such chunks to it, must know).
        let chunked_from = match options.scan_chunked_from {
            f if f <= options.max_rows as u32
                && ctx.limits.max_compute_workgroup_storage_size
                    >= crate::kernels::CHUNKED_WORKGROUP_BYTES =>
            {
                f
            }
            _ => 0,
        };
        let kernels = Kernels::new(
            &ctx.device,
            lora_ranks,
            wkv_scan_lanes(&ctx),
            ctx.has_subgroups(),
            chunked_from,
            crate::kernels::token_mix_long_shape(c.n_embd as u32, &ctx.limits)
                .filter(|_| options.token_mix_long_from != 0),
        );
        let mut matmul = MatmulKernels::new(&ctx)?;
        if options.f16_weights {
            matmul = matmul.with_coop_f16_weights(true);
        }
        // Models whose big matrices are F16 or BF16 send all of them to the tensor cores from
        // the same token count (see `MatvecKernels::with_f16_tall_rows`).
        let half_model = weights
            .layers
            .first()
            .is_some_and(|l| matches!(l.ffn_key.ty, gguf::GgmlType::F16 | gguf::GgmlType::BF16));
        let matvec = match half_model {
            true => MatvecKernels::for_context(&ctx).with_f16_tall_rows(0),
            false => MatvecKernels::for_context(&ctx),
        };
        let dev = &ctx.device;

        let (d, r, s) = (
            c.n_embd as u64,
            options.max_rows as u64,
            options.max_slots as u64,
        );
        let f32s = |n: u64| n * 4;
        let states = (0..c.n_layer)
            .map(|_| {
                Ok(LayerState {
                    att_shift: storage(&ctx, "att_shift", f32s(2 * s * d))?,
                    ffn_shift: storage(&ctx, "ffn_shift", f32s(2 * s * d))?,
                    wkv: storage(&ctx, "wkv_state", f32s(s * d * 64))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let max_out = options.max_out as u64;
        let scratch = Scratch {
            step: step_buffer(&ctx, "step")?,
            head_step: step_buffer(&ctx, "head_step")?,
            tokens: storage(&ctx, "tokens", 4 * r)?,
            rows: storage(&ctx, "rows", 16 * r)?,
            chunks: storage(&ctx, "chunks", 16 * r)?,
            out_rows: storage(&ctx, "out_rows", 4 * max_out)?,
            logits: storage(&ctx, "logits", f32s(max_out * c.vocab_size as u64))?,
            readback: ctx.create_buffer_checked(
                "logits readback",
                f32s(max_out * c.vocab_size as u64),
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                None,
            )?,
        };

        // Activations, [blocks][rows][width] each.
        let emb = storage(&ctx, "embedding rows", f32s(r * d))?;
        let x = storage(&ctx, "x", f32s(r * d))?;
        let mix = storage(&ctx, "time mix lerps", f32s(6 * r * d))?;
        let ffn_in = storage(&ctx, "ffn lerp", f32s(r * d))?;
        let rkv = storage(&ctx, "rkv", f32s(3 * r * d))?;
        // LoRA hidden vectors, [rows][n_hidden]: a row holds decay, iclr, gate and value
        // residual one after the other (from hidden_starts, each rank padded to LORA_ALIGN
        // values), so that one rounding pass covers all four for the second products and
        // one stacked product can write all four (see `LayerWeights::lora1_stack`).
        let ranks = [c.decay_lora, c.iclr_lora, c.gate_lora, c.value_lora];
        if ranks.iter().sum::<usize>() > 1024 {
            return Err(EngineError::Unsupported(format!(
                "LoRA ranks {ranks:?} add up to more than the WKV kernel's 1024"
            )));
        }
        let mut hidden_starts = [0u32; 4];
        for k in 1..4 {
            hidden_starts[k] = hidden_starts[k - 1] + lora_padded(ranks[k - 1]);
        }
        let n_hidden = (hidden_starts[3] + lora_padded(ranks[3])) as usize;
        // One per layer where the LoRA products run beside the r/k/v products (see
        // `lora_beside`): a buffer's first use in a command buffer needs no barrier inside
        // it, where writing a buffer that an earlier dispatch read does.
        let lora_beside = lora_beside();
        let n_hidden_buffers = if lora_beside { c.n_layer } else { 1 };
        let hiddens = (0..n_hidden_buffers)
            .map(|_| storage(&ctx, "lora hidden", f32s(r * n_hidden as u64)))
            .collect::<Result<Vec<_>>>()?;
        // Steps of at least lora2_from rows: the second LoRA products' sums, [4][rows][dim]
        // (decay, iclr, gate, value residual), from the matrix kernels. None where no step
        // can have that many rows.
        let lora2_from = options
            .lora2_from
            .unwrap_or(if ctx.coop_subgroup_size().is_some() {
                LORA2_FROM_TENSOR_CORES
            } else {
                LORA2_FROM
            });
        let lora_sums = if (1..=options.max_rows as u32).contains(&lora2_from) {
            Some(storage(&ctx, "lora sums", f32s(4 * r * d))?)
        } else {
            None
        };

        let v_first = storage(&ctx, "v_first", f32s(r * d))?;
        // The WKV chunk path's per-token values (see wkv7.wgsl): 6 and 3 values per channel
        // and row, as big as the time-mix lerps and rkv.
        let (wkv_scan, wkv_post) = if kernels.wkv7_chunk.is_some() {
            (
                storage(&ctx, "wkv scan in", f32s(6 * r * d))?,
                storage(&ctx, "wkv post in", f32s(3 * r * d))?,
            )
        } else {
            (storage(&ctx, "unused", 16)?, storage(&ctx, "unused", 16)?)
        };
        // The matrix-form scan's scratch: per sub-chunk and head, wkv7_chunked.wgsl's PART.
        let chunked_from = ChunkedFrom(chunked_from);
        let chunked_parts = match kernels.wkv7_chunk.as_ref().and_then(|w| w.chunked.as_ref()) {
            Some(_) => {
                let subs = chunked_from.max_subs(options.max_rows as u32) as u64;
                let part = crate::kernels::CHUNKED_PART as u64;
                storage(&ctx, "wkv sub-chunks", f32s(subs * c.n_head as u64 * part))?
            }
            None => storage(&ctx, "unused", 16)?,
        };
        let att_out = storage(&ctx, "att out", f32s(r * d))?;
        let ffn_k = storage(&ctx, "ffn key", f32s(r * c.ffn_size as u64))?;
        let out_x = storage(&ctx, "output norm", f32s(max_out * d))?;

        let (dim, rows) = (c.n_embd as u32, options.max_rows as u32);
        let mut persistent = match options.persistent {
            true => PersistentTail::new(&ctx, dim, c.ffn_size as u32)?,
            false => None,
        };
        let mut b = Builder {
            ctx: &ctx,
            kernels: &kernels,
            matmul: &matmul,
            matvec: &matvec,
            step: &scratch.step,
            head_step: &scratch.head_step,
            round: options.llama_cpp_rounding,
            rounded: Vec::new(),
            fresh: Vec::new(),
            rounded_by_op: Vec::new(),
            round_writers: Vec::new(),
            relu_raw: None,
            mix_writers: Vec::new(),
            fuse_round_x16: rwkv_gpu::env_on(ROUND_X16_ENV),
            mix_long_from: options.token_mix_long_from,
            dummy: storage(&ctx, "unused output", 16)?,
            share_x16: rwkv_gpu::env_on(SHARED_X16_ENV),
            x16: Vec::new(),
            converted: Vec::new(),
            q8: Vec::new(),
            q8_fresh: Vec::new(),
            also_read: None,
            ops: Vec::new(),
        };
        let a = |name: &'static str,
                 buf: &wgpu::Buffer,
                 cols: usize,
                 blocks: u32|
         -> (&'static str, wgpu::Buffer, u32, u32) {
            (name, buf.clone(), cols as u32, blocks)
        };
        let mix_a = a("mix", &mix, c.n_embd, 6);
        let att_a = a("att_out", &att_out, c.n_embd, 1);
        let ffn_in_a = a("ffn_in", &ffn_in, c.n_embd, 1);
        let ffn_k_a = a("ffn_k", &ffn_k, c.ffn_size, 1);
        fn view<'a>(t: &'a (&'static str, wgpu::Buffer, u32, u32), rows: u32) -> Act<'a> {
            Act {
                name: t.0,
                buf: &t.1,
                cols: t.2,
                blocks: t.3,
                rows,
                out: false,
            }
        }

        let ln_params = |gather: bool| LayerNormParams {
            dim,
            eps: c.layer_norm_eps,
            gather: gather as u32,
            count_out: gather as u32,
        };
        let plain_ln = uniform(dev, "layer norm", &ln_params(false));
        let gather_ln = uniform(dev, "output norm", &ln_params(true));
        let token_mix_params = |n_mix: u32| TokenMixParams {
            dim,
            n_mix,
            mix_stride: rows * dim,
            half_stride: options.max_slots as u32 * dim,
            eps: c.layer_norm_eps,
            q8k: 0,
            xq_d: 0,
            xq_bs: 0,
            mode_a: [[255; 4]; 2],
            mode_b: [[255; 4]; 2],
            x16: 0,
            _pad: [0; 3],
        };
        let embed = matmul.prepare_get_rows(
            &ctx,
            &weights.embedding,
            &scratch.tokens,
            0,
            &emb,
            0,
            dim,
            &scratch.step,
            rows,
        )?;
        b.kernel(
            "embedding_norm",
            &kernels.layer_norm,
            &[
                &plain_ln,
                &scratch.step,
                &emb,
                &x,
                &weights.embedding_norm_w,
                &weights.embedding_norm_b,
                &scratch.out_rows,
            ],
            Grid::Rows,
        );
        for (i, (lw, st)) in weights.layers.iter().zip(&states).enumerate() {
            let hidden = &hiddens[i % hiddens.len()];
            let hidden_a = a("hidden", hidden, n_hidden, 1);
            // Mix blocks: 0 r, 1 w, 2 k, 3 v, 4 a, 5 g. Target a feeds the projections
            // (r, k, v), target b the LoRAs (w, a, g, v), each rounded for its readers.
            let proj = [
                Some(&lw.receptance),
                None,
                Some(&lw.key),
                Some(&lw.value),
                None,
                None,
            ];
            let loras = [
                None,
                Some(&lw.w1),
                None,
                lw.v1.as_ref(),
                Some(&lw.a1),
                Some(&lw.g1),
            ];
            b.token_mix(
                "att_mix",
                &token_mix_params(6),
                &x,
                (&lw.att_norm_w, &lw.att_norm_b),
                &lw.lerp,
                &st.att_shift,
                &scratch.rows,
                view(&mix_a, rows),
                &proj,
                &loras,
            )?;
            // Mix blocks: 0 r, 1 w, 2 k, 3 v, 4 a, 5 g. rkv blocks: 0 r, 1 k, 2 v.
            // lora blocks: 0 decay, 1 iclr, 2 gate, 3 value residual.
            // r, k, v into [3][rows][dim], as one op (none waits for another).
            let rkv_items: Vec<(&GpuMatrix, u32, u32, u32, Epilogue)> =
                [(&lw.receptance, 0), (&lw.key, 2), (&lw.value, 3)]
                    .into_iter()
                    .enumerate()
                    .map(|(k, (w, xb))| {
                        let (x_offset, y_offset) = (xb * rows * dim, k as u32 * rows * dim);
                        (w, x_offset, y_offset, dim, Epilogue::Store)
                    })
                    .collect();
            // First LoRA products into the packed hidden buffer, as one op, recorded after
            // the r/k/v products, beside which they run (see `lora_beside`).
            let hidden_blocks = [
                (Some(&lw.w1), 1, Epilogue::Tanh),
                (Some(&lw.a1), 4, Epilogue::Store),
                (Some(&lw.g1), 5, Epilogue::Sigmoid),
                (lw.v1.as_ref(), 3, Epilogue::Store),
            ];
            let lora_items: Vec<(&GpuMatrix, u32, u32, u32, Epilogue)> = hidden_blocks
                .into_iter()
                .enumerate()
                .filter_map(|(k, (w, block, epilogue))| {
                    w.map(|w| {
                        let x_offset = block * rows * dim;
                        (w, x_offset, hidden_starts[k], n_hidden as u32, epilogue)
                    })
                })
                .collect();
            let mut touch_at = None;
            if lora_beside {
                // The LoRA products' input, moved to the read-only state at the r/k/v
                // products' barrier (their direct matvecs bind it too), else by a `touch`
                // dispatch whose barrier is the one that waits for the token mix anyway.
                let lora_x = b.input_for(view(&mix_a, rows), lw.w1.ty)?;
                touch_at = Some(b.ops.len());
                b.touch(&lora_x, &kernels.touch);
                b.also_read = Some(lora_x);
            }
            b.matmul_group(
                view(&mix_a, rows),
                ("rkv", &rkv),
                &rkv_items,
                "time_mix_rkv".into(),
                None,
            )?;
            if let Some(touch_at) = touch_at {
                // Only for steps whose r/k/v matvecs did not bind it (one-token steps and
                // those of the few-token matvecs; longer steps' LoRA products wait for the
                // r/k/v products' scratch buffers anyway).
                let from = b.ops.last().map_or(1, Op::also_read_from);
                let touch = b.ops.remove(touch_at);
                b.ops.insert(
                    touch_at,
                    Op::ByRows {
                        from,
                        at_least: true,
                        op: Box::new(touch),
                    },
                );
            }
            b.matmul_group(
                view(&mix_a, rows),
                ("hidden", hidden),
                &lora_items,
                "time_mix_lora".into(),
                lw.lora1_stack.as_ref(),
            )?;
            // The second ones: in steps of at least lora2_from rows, matrix products into
            // lora_sums, as one op (with the rounding of `hidden` it needs); in the others
            // inside the WKV kernel.
            if let Some(sums) = &lora_sums {
                let second = [Some(&lw.w2), Some(&lw.a2), Some(&lw.g2), lw.v2.as_ref()];
                let items: Vec<(&GpuMatrix, u32, u32, u32, Epilogue)> = second
                    .into_iter()
                    .enumerate()
                    .filter_map(|(k, w)| {
                        let y_offset = k as u32 * rows * dim;
                        w.map(|w| (w, hidden_starts[k], y_offset, dim, Epilogue::Store))
                    })
                    .collect();
                let start = b.ops.len();
                b.matmul_group(
                    view(&hidden_a, rows),
                    ("lora_sums", sums),
                    &items,
                    "time_mix_lora2".into(),
                    lw.lora2_stack.as_ref(),
                )?;
                b.by_rows(start, lora2_from, true);
            }
            // The WKV kernel rounds its output for the output projection when the rounding
            // stays within a head; Q8_K blocks span 4 heads and are rounded by the reader.
            let out_mode = match b.mode_for(&lw.output) {
                4 => 0,
                m => m,
            };
            let att_in = b.rounded_buffer(view(&att_a, rows), out_mode)?;
            // With Q8_0 rounding the kernel also writes the output projection's 8-bit copy
            // for the steps whose matvecs read one (no quantization dispatch after it).
            let att_q8 = match out_mode {
                rwkv_gpu::ROUND_Q8_0 => b.wkv_q8_copy(&att_in, view(&att_a, rows), &lw.output)?,
                _ => None,
            };
            let (q8_rows, xq_d) = att_q8
                .as_ref()
                .map_or((0, 0), |q| (b.q8_rows(view(&att_a, rows)), q.d_base()));
            let dummy = b.dummy.clone();
            let att_xq = att_q8.as_ref().map_or(&dummy, |q| &q.buffer);
            let [rw, ra, rg, rv] = lora_ranks;
            let want = [rw, ra, rg, if lw.v1.is_some() { rv } else { 0 }];
            if lw.lora2_ranks != want {
                return Err(EngineError::Unsupported(format!(
                    "layer {i}: LoRA ranks {:?} differ from the model's {want:?}",
                    lw.lora2_ranks
                )));
            }
            let wkv_params = uniform(
                dev,
                "wkv params",
                &Wkv7Params {
                    dim,
                    first_layer: (i == 0) as u32,
                    block_stride: rows * dim,
                    group_norm_eps: Rwkv7Config::GROUP_NORM_EPS,
                    ranks: lw.lora2_ranks,
                    weight_offsets: lw.lora2_offsets,
                    lora_f16: lw.lora2_f16 as u32,
                    out_mode,
                    round_hidden: (lw.lora2_f16 && options.llama_cpp_rounding) as u32,
                    hidden_stride: n_hidden as u32,
                    hidden_starts,
                    q8_rows,
                    xq_d,
                    _pad: [0; 2],
                },
            );
            let n_head = c.n_head as u32;
            let split = WkvSplit(options.wkv_split_from);
            let main_grid = if kernels.wkv7_chunk.is_some() {
                Grid::SingleChunkHeads(n_head, split)
            } else {
                Grid::ChunkHeads(n_head)
            };
            // wkv7.wgsl's bindings; each entry point binds those it uses.
            let wkv_bindings: [(u32, &wgpu::Buffer); 14] = [
                (0, &wkv_params),
                (1, &scratch.step),
                (2, &scratch.chunks),
                (3, &rkv),
                (4, hidden),
                (5, &lw.lora2),
                (6, &v_first),
                (7, &st.wkv),
                (8, &lw.vecs),
                (9, &att_in),
                (10, &wkv_scan),
                (11, &wkv_post),
                (12, lora_sums.as_ref().unwrap_or(&dummy)),
                (13, att_xq),
            ];
            let wkv = |at: &[u32]| -> Vec<(u32, &wgpu::Buffer)> {
                at.iter().map(|&i| wkv_bindings[i as usize]).collect()
            };
            let start = b.ops.len();
            b.kernel_at(
                "wkv7",
                if lw.lora2_f16 {
                    &kernels.wkv7
                } else {
                    &kernels.wkv7_f32
                },
                &wkv(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13]),
                main_grid,
            );
            if lora_sums.is_some() {
                b.by_rows(start, lora2_from, false);
                let start = b.ops.len();
                b.kernel_at(
                    "wkv7",
                    &kernels.wkv7_pre,
                    &wkv(&[0, 1, 2, 3, 6, 7, 8, 9, 12, 13]),
                    main_grid,
                );
                b.by_rows(start, lora2_from, true);
            }
            // Steps with a chunk of several tokens: per-token inputs, the scan over the
            // chunks' tokens, per-token outputs (wkv7.wgsl's `prep` and `post` use some of
            // its bindings; see also wkv7_scan.wgsl).
            if let Some(wc) = &kernels.wkv7_chunk {
                let start = b.ops.len();
                b.kernel_at(
                    "wkv7_prep",
                    if lw.lora2_f16 { &wc.prep } else { &wc.prep_f32 },
                    &wkv(&[0, 1, 2, 3, 4, 5, 6, 8, 10, 11]),
                    Grid::LongChunkRows(n_head, split),
                );
                if lora_sums.is_some() {
                    b.by_rows(start, lora2_from, false);
                    let start = b.ops.len();
                    b.kernel_at(
                        "wkv7_prep",
                        &wc.prep_pre,
                        &wkv(&[0, 1, 3, 6, 8, 10, 11, 12]),
                        Grid::LongChunkRows(n_head, split),
                    );
                    b.by_rows(start, lora2_from, true);
                }
                // Two scans: one for steps of one-token chunks (batches), one for the others
                // (see `Wkv7Chunk::scan_single`).
                let scans = [
                    (&wc.scan, false, wc.workgroups_per_head),
                    (&wc.scan_single, true, wc.workgroups_per_head_single),
                ];
                // The scans' bindings (scan_bindings.wgsl; the matrix form's scratch last).
                let bindings = [
                    &wkv_params,
                    &scratch.step,
                    &scratch.chunks,
                    &wkv_scan,
                    &st.wkv,
                    &wkv_post,
                    &chunked_parts,
                ];
                for (scan, single, per_head) in scans {
                    b.kernel(
                        "wkv7_scan",
                        scan,
                        &bindings[..6],
                        Grid::ScanHeads(n_head * per_head, single, split, chunked_from),
                    );
                }
                // Long chunks: the scan in matrix form (wkv7_chunked.wgsl).
                if let Some(ch) = &wc.chunked {
                    let at = |used: &[u32]| -> Vec<(u32, &wgpu::Buffer)> {
                        used.iter().map(|&i| (i, bindings[i as usize])).collect()
                    };
                    let groups = 64 / crate::kernels::chunked_chain_rows();
                    b.kernel_at(
                        "wkv7_chunk_prep",
                        &ch.prep,
                        &at(&[0, 1, 2, 3, 5, 6]),
                        Grid::ChunkedSubs(n_head, chunked_from),
                    );
                    b.kernel_at(
                        "wkv7_chunk_chain",
                        &ch.chain,
                        &at(&[0, 1, 2, 3, 4, 5, 6]),
                        Grid::ChunkedHeads(n_head * groups, chunked_from),
                    );
                }
                b.kernel_at(
                    "wkv7_post",
                    &wc.post,
                    &wkv(&[0, 1, 8, 9, 11, 13]),
                    Grid::LongChunkRows(n_head, split),
                );
            }
            if out_mode != 0 {
                b.fresh.push(("att_out", out_mode));
            }
            if att_q8.is_some() {
                b.q8_fresh.push((att_in.clone(), Q8Format::Zero));
            }
            let tail_start = b.ops.len();
            b.matmul(
                &lw.output,
                view(&att_a, rows),
                0,
                ("x", &x),
                0,
                rows,
                Epilogue::Add,
            )?;
            b.token_mix(
                "ffn_mix",
                &token_mix_params(1),
                &x,
                (&lw.ffn_norm_w, &lw.ffn_norm_b),
                &lw.ffn_lerp,
                &st.ffn_shift,
                &scratch.rows,
                view(&ffn_in_a, rows),
                &[Some(&lw.ffn_key)],
                &[None],
            )?;
            // Where the value product rounds its input to f16 or bf16, the key product's
            // epilogue does it (no rounding dispatch in between).
            let value_mode = b.mode_for(&lw.ffn_value);
            let key_epilogue = match value_mode {
                1 if options.round_in_epilogues => Epilogue::ReluSquareF16,
                2 if options.round_in_epilogues => Epilogue::ReluSquareBf16,
                _ => Epilogue::ReluSquare,
            };
            let key = |b: &mut Builder, epilogue| {
                b.matmul(
                    &lw.ffn_key,
                    view(&ffn_in_a, rows),
                    0,
                    ("ffn_k", &ffn_k),
                    0,
                    rows,
                    epilogue,
                )
            };
            key(&mut b, key_epilogue)?;
            if key_epilogue != Epilogue::ReluSquare {
                b.rounded_in_place("ffn_k", value_mode, &ffn_k);
            }
            // Steps too long for every few-token matvec: there the value product reads the
            // key's output only through its rounding op (EngineOptions::defer_relu_square).
            let raw_from = b.matvec.max_tokens() + 1;
            if options.defer_relu_square
                && key_epilogue == Epilogue::ReluSquare
                && eight_bit(value_mode)
                && raw_from <= rows
            {
                // (The product alone, the op matmul appended last: ops it may have appended
                // before it, for its input, run in every step.)
                b.by_rows(b.ops.len() - 1, raw_from, false);
                let raw_at = b.ops.len();
                key(&mut b, Epilogue::Store)?;
                b.by_rows(raw_at, raw_from, true);
                b.relu_raw = Some(("ffn_k", raw_from));
            }
            b.matmul(
                &lw.ffn_value,
                view(&ffn_k_a, rows),
                0,
                ("x", &x),
                0,
                rows,
                Epilogue::Add,
            )?;
            b.relu_raw = None;
            // One-token steps: the layer's tail (output projection, channel mix) as one
            // persistent dispatch, where its weights suit it.
            if let Some(pt) = persistent.as_mut() {
                let layer_buffers = [
                    &scratch.step,
                    &x,
                    &lw.ffn_norm_w,
                    &lw.ffn_norm_b,
                    &lw.ffn_lerp,
                    &st.ffn_shift,
                    &scratch.rows,
                    &ffn_k,
                    // What the WKV kernel wrote (rounded for the output where that stays
                    // within a head).
                    &att_in,
                ];
                let weights = TailWeights {
                    output: &lw.output,
                    key: &lw.ffn_key,
                    value: &lw.ffn_value,
                };
                let launch = pt.launch(
                    &ctx,
                    weights,
                    options.llama_cpp_rounding,
                    options.max_slots as u32 * dim,
                    c.layer_norm_eps,
                    &layer_buffers,
                )?;
                if let Some(l) = launch {
                    b.by_rows(tail_start, 2, true);
                    let params = uniform(dev, "layer_tail", &l.params);
                    let mut buffers = vec![&params];
                    buffers.extend(layer_buffers);
                    buffers.extend(pt.shared_buffers(l.weights));
                    let start = b.ops.len();
                    b.kernel(
                        "layer_tail",
                        &l.pipeline,
                        &buffers,
                        Grid::Fixed(l.workgroups),
                    );
                    b.by_rows(start, 2, false);
                }
            }
        }
        b.kernel(
            "output_norm",
            &kernels.layer_norm,
            &[
                &gather_ln,
                &scratch.step,
                &x,
                &out_x,
                &weights.output_norm_w,
                &weights.output_norm_b,
                &scratch.out_rows,
            ],
            Grid::Out,
        );
        let head_in = Act {
            name: "out_x",
            buf: &out_x,
            cols: dim,
            blocks: 1,
            rows: options.max_out as u32,
            out: true,
        };
        b.matmul(
            &weights.head,
            head_in,
            0,
            ("logits", &scratch.logits),
            0,
            options.max_out as u32,
            Epilogue::Store,
        )?;

        let mut ops = vec![Op::Gather(embed)];
        ops.append(&mut b.ops);
        let mut buffers = vec![
            emb, x, mix, ffn_in, rkv, v_first, wkv_scan, wkv_post, att_out, ffn_k, out_x,
        ];
        buffers.extend(hiddens);
        buffers.extend(lora_sums);
        buffers.extend(b.rounded.into_iter().map(|(_, _, buf)| buf));
        buffers.extend(b.x16.into_iter().map(|(_, buf)| buf));
        let sc = &scratch;
        let buffer_bytes = buffers.iter().map(wgpu::Buffer::size).sum::<u64>()
            + states
                .iter()
                .map(|l| l.att_shift.size() + l.ffn_shift.size() + l.wkv.size())
                .sum::<u64>()
            + [
                &sc.step,
                &sc.head_step,
                &sc.tokens,
                &sc.rows,
                &sc.chunks,
                &sc.out_rows,
                &sc.logits,
                &sc.readback,
            ]
            .iter()
            .map(|b| b.size())
            .sum::<u64>()
            // The tensor-core path's f16 scratch (and resident weights, if asked for).
            + matmul.coop_bytes();
        let max_slots = options.max_slots;
        let persistent_grids = persistent.as_ref().map_or(Vec::new(), |p| p.grids());
        // The pipelines compile on worker threads while the step is built: the engine is
        // ready when they are (and a kernel that did not compile is an error here).
        rwkv_gpu::wait_for_compiles()?;
        Ok(Engine {
            ctx,
            config: c,
            options,
            weights,
            buffer_bytes,
            halves: vec![0; max_slots],
            states,
            scratch,
            ops,
            _buffers: buffers,
            last_times: StageTimes::default(),
            prerecorded: None,
            sampler: None,
            persistent_grids,
            sample_seq: 0,
            readback_seq: [0; 2],
            checkpoint: None,
            uploaded_tables: Default::default(),
            sampled_reads: Default::default(),
        })
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.gpu_bytes(&self.config)
    }

    /// Bytes of weights a step reads at most: all of them, less the second copies of LoRA
    /// matrices (a step reads one of the two; see `ModelWeights::second_copy_bytes`).
    pub fn weight_bytes_read(&self) -> u64 {
        self.weight_bytes() - self.weights.second_copy_bytes()
    }

    /// Bytes of everything the engine holds on the GPU: weights, states, activations.
    pub fn gpu_bytes(&self) -> u64 {
        self.weight_bytes() + self.buffer_bytes
    }

    /// The grids (workgroups) of the persistent kernels one-token steps run (empty: none).
    pub fn persistent_grids(&self) -> &[u32] {
        &self.persistent_grids
    }

    /// Dispatches recorded for a one-token step (one sequence decoding one token), the
    /// count that bounds decode speed.
    pub fn ops_per_step(&self) -> usize {
        self.ops.iter().map(|op| op.dispatches(1, 1, 1)).sum()
    }

    /// Stage times of the last [`Engine::step`].
    pub fn last_times(&self) -> StageTimes {
        self.last_times
    }

    pub(crate) fn check_inputs(&self, inputs: &[SlotInput]) -> Result<()> {
        let mut seen = vec![false; self.options.max_slots];
        for input in inputs {
            if input.slot >= self.options.max_slots {
                return Err(EngineError::Invalid(format!(
                    "slot {} does not exist (the engine has {} slots)",
                    input.slot, self.options.max_slots
                )));
            }
            if std::mem::replace(&mut seen[input.slot], true) {
                return Err(EngineError::Invalid(format!(
                    "slot {} appears twice in one step",
                    input.slot
                )));
            }
            if let Some(&bad) = input
                .tokens
                .iter()
                .find(|&&t| t as usize >= self.config.vocab_size)
            {
                return Err(EngineError::Invalid(format!(
                    "token id {bad} is outside the vocabulary of {} tokens",
                    self.config.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// Runs the tokens of every input through the model, updating each slot's state, and
    /// returns, per input, the logits it asked for (one row per wanted position). Where no
    /// input wants logits it returns once the work is submitted, without waiting for the
    /// GPU: the next step, and anything that reads results back, runs after it (so a long
    /// prompt's chunks follow each other with no idle GPU in between).
    pub fn step(&mut self, inputs: &[SlotInput]) -> Result<Vec<Vec<Vec<f32>>>> {
        self.run_step(inputs, false)
    }

    /// The engine's logits buffer, `[max_out][vocab]` f32 (the sampler reads it).
    pub(crate) fn logits_buffer(&self) -> &wgpu::Buffer {
        &self.scratch.logits
    }

    /// The step uniform and the token table (a chained step's first dispatch, which the
    /// sampler owns, rewrites the table).
    pub(crate) fn step_and_tokens(&self) -> (&wgpu::Buffer, &wgpu::Buffer) {
        (&self.scratch.step, &self.scratch.tokens)
    }

    /// [`Engine::step`]; with `sample`, the sampler (which must exist) picks a token from
    /// every wanted logits row in the same submission, and each returned row is that token
    /// id alone (as `f32::from_bits`): only the ids are read back.
    pub(crate) fn run_step(
        &mut self,
        inputs: &[SlotInput],
        sample: bool,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        self.check_inputs(inputs)?;
        let mut outputs: Vec<Vec<Vec<f32>>> = vec![Vec::new(); inputs.len()];
        let mut done = vec![0usize; inputs.len()];
        let mut times = StageTimes::default();
        loop {
            // Share the row budget among the inputs that still have tokens; Logits::All also
            // spends the output budget, one row per token.
            let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (input, start, len)
            let (mut rows_left, mut outs_left) = (self.options.max_rows, self.options.max_out);
            let pending: Vec<usize> = (0..inputs.len())
                .filter(|&i| done[i] < inputs[i].tokens.len())
                .collect();
            if pending.is_empty() {
                break;
            }
            for (n, &i) in pending.iter().enumerate() {
                let fair = rows_left.div_ceil(pending.len() - n);
                let remaining = inputs[i].tokens.len() - done[i];
                let mut take = remaining.min(fair);
                match inputs[i].logits {
                    Logits::All => take = take.min(outs_left),
                    Logits::Last if take == remaining && outs_left == 0 => take = remaining - 1,
                    _ => {}
                }
                if take == 0 {
                    continue;
                }
                rows_left -= take;
                let emits = match inputs[i].logits {
                    Logits::All => take,
                    Logits::Last => usize::from(done[i] + take == inputs[i].tokens.len()),
                    Logits::None => 0,
                };
                outs_left -= emits;
                plan.push((i, done[i], take));
            }
            if plan.is_empty() {
                return Err(EngineError::Invalid(
                    "a step could not make progress (row or output budget of 0)".into(),
                ));
            }
            let rows = self.gpu_step(inputs, &plan, &mut times, sample)?;
            let mut rows = rows.into_iter();
            for &(i, start, len) in &plan {
                let emits = match inputs[i].logits {
                    Logits::All => len,
                    Logits::Last => usize::from(start + len == inputs[i].tokens.len()),
                    Logits::None => 0,
                };
                outputs[i].extend(rows.by_ref().take(emits));
                done[i] += len;
            }
        }
        self.last_times = times;
        Ok(outputs)
    }

    /// The commands of one step of `shape`: every op, then the sampler or the copy of the
    /// logits to the read-back buffer.
    fn record_step(&self, shape: StepShape) -> wgpu::CommandBuffer {
        let sampler = self.sampler.as_ref().filter(|_| shape.sample);
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        if let Some(slot) = shape.checkpoint {
            self.record_checkpoint_counters(&mut encoder, slot as usize);
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            if shape.checkpoint.is_some() {
                self.record_checkpoint_state(&mut pass);
            }
            // A chained step's rows marked in the token table take the ids the sampling step
            // before kept on the GPU.
            if let Some(s) = sampler.filter(|_| shape.chained) {
                s.record_feed(&mut pass);
            }
            let skip = skipped_ops();
            for op in &self.ops {
                if skip.iter().any(|k| k == op.kind()) {
                    continue;
                }
                op.record(&mut pass, shape.n_rows, shape.n_out, shape.n_chunks);
            }
            if let Some(s) = sampler {
                s.record(&mut pass, shape.n_out);
            }
        }
        // The sampled ids, to their read-back buffer (they stay where the sampler wrote them
        // for a chained step after).
        if let Some(s) = sampler.filter(|_| shape.n_out > 0) {
            s.copy_ids(&mut encoder, shape.n_out, shape.readback);
        }
        let out_bytes = shape.out_bytes(self.config.vocab_size as u64);
        if out_bytes > 0 {
            encoder.copy_buffer_to_buffer(
                &self.scratch.logits,
                0,
                &self.scratch.readback,
                0,
                out_bytes,
            );
        }
        encoder.finish()
    }

    /// Writes a step's tables to the GPU (the "load" stage), those that changed since they
    /// were last written ([`write_changed`]). `chained`: the step's first dispatch
    /// rewrites the token table (feed_sampled.wgsl), so it is written next time whatever.
    pub(crate) fn upload_tables(&self, t: &StepTables, chained: bool) {
        let head_step = StepUniform {
            n_rows: t.step.n_out,
            ..t.step
        };
        let s = &self.scratch;
        let tables: [(&wgpu::Buffer, &[u8]); 6] = [
            (&s.step, bytemuck::bytes_of(&t.step)),
            (&s.head_step, bytemuck::bytes_of(&head_step)),
            (&s.tokens, bytemuck::cast_slice(&t.tokens)),
            (&s.rows, bytemuck::cast_slice(&t.rows)),
            (&s.chunks, bytemuck::cast_slice(&t.chunks)),
            (&s.out_rows, bytemuck::cast_slice(&t.out_rows)),
        ];
        let mut uploaded = self.uploaded_tables.borrow_mut();
        for ((buffer, bytes), last) in tables.into_iter().zip(uploaded.iter_mut()) {
            write_changed(&self.ctx, buffer, bytes, last);
        }
        if chained {
            uploaded[2].clear();
        }
    }

    /// One GPU submission for the planned chunks; returns the wanted logits rows in plan order.
    fn gpu_step(
        &mut self,
        inputs: &[SlotInput],
        plan: &[(usize, usize, usize)],
        times: &mut StageTimes,
        sample: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let submitted = self.submit_gpu_step(inputs, plan, times, sample, &[])?;
        self.finish_submitted(submitted, times)
    }

    /// The first stages of [`Engine::gpu_step`], up to the submission (and the next step's
    /// commands recorded ahead). `sampled[i]`, where given and `Some(k)`, makes input `i`
    /// (planned whole, one token) feed the id that the latest sampling step sampled from its
    /// logits row `k`, read on the GPU (a chained step); its tokens are a placeholder.
    pub(crate) fn submit_gpu_step(
        &mut self,
        inputs: &[SlotInput],
        plan: &[(usize, usize, usize)],
        times: &mut StageTimes,
        sample: bool,
        sampled: &[Option<u32>],
    ) -> Result<Submitted> {
        // input
        let t0 = Instant::now();
        let mut tables = StepTables::build(inputs, plan, &self.halves);
        let mut chained = false;
        let mut first_row = 0;
        for &(i, _, len) in plan {
            if let Some(k) = sampled.get(i).copied().flatten() {
                tables.tokens[first_row] = crate::kernels::SAMPLED_TOKEN | k;
                chained = true;
            }
            first_row += len;
        }
        let t1 = Instant::now();

        // load
        self.upload_tables(&tables, chained);
        let (step, out_rows) = (tables.step, &tables.out_rows);
        let sampler = match (sample, &self.sampler) {
            (true, Some(s)) => Some(s),
            (true, None) => return Err(EngineError::Invalid("no sampler".into())),
            (false, _) => None,
        };
        if let Some(s) = sampler {
            let slots: Vec<u32> = out_rows
                .iter()
                .map(|&r| tables.rows[r as usize].slot)
                .collect();
            s.load_rows(&slots);
        }
        let t2 = Instant::now();

        // A sampling step's ids go to the sampler's read-back buffers in turn.
        let sampling = sampler.is_some();
        let samples = sampling && step.n_out > 0;
        if chained && !sampling {
            return Err(EngineError::Invalid(
                "a step feeding sampled ids runs with the sampler".into(),
            ));
        }
        let readback = samples.then(|| {
            self.sample_seq += 1;
            let which = (self.sample_seq % 2) as usize;
            self.readback_seq[which] = self.sample_seq;
            (which, self.sample_seq)
        });

        // dispatch (commands recorded ahead, during the previous step, when its shape was
        // this one's)
        let checkpoint = self.take_checkpoint_request();
        let shape = StepShape {
            n_rows: step.n_rows,
            n_out: step.n_out,
            n_chunks: step.n_chunks,
            sample: sampling,
            readback: readback.map_or(0, |r| r.0),
            chained,
            checkpoint,
        };
        let commands = match self.prerecorded.take() {
            Some((ahead, commands)) if ahead == shape => commands,
            _ => self.record_step(shape),
        };
        let vocab = self.config.vocab_size as u64;
        let out_bytes = shape.out_bytes(vocab);
        let t3 = Instant::now();

        // submit
        let index = self.ctx.queue.submit([commands]);
        for chunk in &tables.chunks {
            self.halves[chunk.slot as usize] ^= 1;
        }
        let t4 = Instant::now();

        // While the GPU runs, record the next step as if it had this shape (the next token
        // of the same sequences, the common case in a decode loop): the commands depend only
        // on the shape, the tables are uploaded at submission. (A sampling step's ids go to
        // the other read-back buffer.)
        let next = StepShape {
            readback: match readback {
                Some(_) => (self.sample_seq as usize + 1) % 2,
                None => 0,
            },
            ..shape
        };
        self.prerecorded = Some((next, self.record_step(next)));
        let t4b = Instant::now();

        times.input += t1 - t0;
        times.load += t2 - t1;
        times.dispatch += t3 - t2;
        times.submit += t4 - t3;
        times.prerecord += t4b - t4;
        times.gpu_steps += 1;
        Ok(Submitted {
            n_out: step.n_out,
            out_bytes,
            readback,
            submitted_at: t4,
            index,
        })
    }

    /// The last stage of [`Engine::gpu_step`]: the wanted rows read back (waiting for the
    /// GPU), or nothing to wait for.
    pub(crate) fn finish_submitted(
        &self,
        s: Submitted,
        times: &mut StageTimes,
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.config.vocab_size;
        let mut result = Vec::with_capacity(s.n_out as usize);
        if let Some((which, _)) = s.readback {
            let sampler = self
                .sampler
                .as_ref()
                .ok_or_else(|| EngineError::Invalid("no sampler".into()))?;
            let ids = sampler.read_ids(s.n_out, which, s.index)?;
            result.extend(ids.into_iter().map(|id| vec![f32::from_bits(id)]));
            // Chained steps keep the queue busy, and host memory then grew (see DRAIN_EVERY)
            // unless the GPU is let to finish everything now and then.
            let reads = self.sampled_reads.get() + 1;
            self.sampled_reads.set(reads);
            if reads.is_multiple_of(DRAIN_EVERY) {
                wait_gpu(&self.ctx, None)?;
            }
        } else if s.out_bytes > 0 {
            let data = map_read(&self.ctx, &self.scratch.readback, s.out_bytes, s.index)?;
            let values: &[f32] = bytemuck::cast_slice(&data);
            result.extend(values.chunks_exact(vocab).map(<[f32]>::to_vec));
        } else {
            // A step with nothing to read back is not waited for: the queue runs the next
            // submission (and its table uploads) after it, and every read-back waits for
            // the GPU. So the GPU goes on from one such step to the next (a long prompt's
            // chunks) without idling while the CPU learns that it finished. (A poll that
            // does not block lets wgpu release what finished steps held.)
            let _ = self.ctx.device.poll(wgpu::PollType::Poll);
        }
        times.back += s.submitted_at.elapsed();
        Ok(result)
    }
}
