//! The RWKV-7-specific compute kernels (WGSL files beside this one) and small helpers to bind
//! them. The quantized matrix products live in `rwkv-gpu`.

use rwkv_gpu::Pipeline;
use wgpu::util::DeviceExt;

/// Per-step values every kernel reads from one uniform buffer (see `Step` in the WGSL files).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepUniform {
    pub n_rows: u32,
    pub n_chunks: u32,
    pub n_out: u32,
    pub _pad: u32,
}

/// Per-row token-shift source: the row's slot, the previous token's row or [`NO_PREV`], the
/// half of the double-buffered shift state that holds the slot's state, and whether the row
/// is the last of its chunk (it then saves the new state into the other half).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RowInfo {
    pub slot: u32,
    pub prev: u32,
    pub half: u32,
    pub last: u32,
}

pub const NO_PREV: u32 = u32::MAX;

/// A token-table entry `SAMPLED_TOKEN | k`: the row feeds the id sampled from logits row `k`
/// of the sampling step before, read on the GPU (feed_sampled.wgsl).
pub const SAMPLED_TOKEN: u32 = 1 << 31;

/// Consecutive rows of one sequence within a step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChunkInfo {
    pub slot: u32,
    pub first_row: u32,
    pub n_rows: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LayerNormParams {
    pub dim: u32,
    pub eps: f32,
    pub gather: u32,
    pub count_out: u32,
}

/// See `token_mix.wgsl`. Modes per mix: 0 f32, 1 f16, 2 bf16, 3 Q8_0, 4 Q8_K, 255 none.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TokenMixParams {
    pub dim: u32,
    pub n_mix: u32,
    pub mix_stride: u32,
    pub half_stride: u32,
    pub eps: f32,
    /// Rows per mix of the `Q8Input` at binding 10 (0: none): steps of up to that many rows
    /// also write the Q8_K mixes of target a to it, quantized; its scales and sums per 16
    /// values start at words `xq_d` and `xq_bs`.
    pub q8k: u32,
    pub xq_d: u32,
    pub xq_bs: u32,
    pub mode_a: [[u32; 4]; 2],
    pub mode_b: [[u32; 4]; 2],
    /// Bits: 1 also writes target a as f16 pairs to binding 11, 2 target b to binding 12
    /// (the tensor-core products' input copies).
    pub x16: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RoundParams {
    pub cols: u32,
    pub block_stride: u32,
    pub mode: u32,
    pub count_out: u32,
    /// 1: also write the rounded values as f16 pairs (the tensor-core products' input copy).
    pub write_x16: u32,
    /// Steps of at least this many rows round the ReLU² of the input (0: none; see
    /// round_bindings.wgsl).
    pub relu_from: u32,
    pub _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Wkv7Params {
    pub dim: u32,
    pub first_layer: u32,
    pub block_stride: u32,
    pub group_norm_eps: f32,
    pub ranks: [u32; 4],
    pub weight_offsets: [u32; 4],
    pub lora_f16: u32,
    pub out_mode: u32,
    pub round_hidden: u32,
    pub hidden_stride: u32,
    /// Where each LoRA's values start in a row of `hidden` (decay, iclr, gate, value).
    pub hidden_starts: [u32; 4],
    /// Q8_0 output (`out_mode` 3): the rows of the output projection's 8-bit copy
    /// (rwkv-gpu's `Q8Input`, binding 13) the kernel also writes (0: none), and the word of
    /// its first scale.
    pub q8_rows: u32,
    pub xq_d: u32,
    pub _pad: [u32; 2],
}

/// Compiled pipelines of the model's own kernels.
pub struct Kernels {
    pub layer_norm: Pipeline,
    pub token_mix: Pipeline,
    /// The token mix of the attention's mixes in long steps (see
    /// `EngineOptions::token_mix_long_from`) where the model's width allows it
    /// (token_mix_long.wgsl's `main_long`, one workgroup per row; see
    /// [`token_mix_long_shape`]); `None`: `token_mix` runs them.
    pub token_mix_long: Option<Pipeline>,
    /// The token mix for steps of up to 16 rows (its `main_few`, which also writes the Q8
    /// copies of its mixes).
    pub token_mix_few: Pipeline,
    /// The WKV kernel for f16 LoRA weights, and for f32 ones.
    pub wkv7: Pipeline,
    pub wkv7_f32: Pipeline,
    /// The WKV kernel that reads the second LoRA products (computed by the matrix kernels).
    pub wkv7_pre: Pipeline,
    /// The WKV path for steps with chunks of several tokens; `None`: `wkv7` runs them.
    pub wkv7_chunk: Option<Wkv7Chunk>,
    pub round_activations: Pipeline,
    /// The Q8_K and Q8_0 roundings with four tiles per workgroup (round_q8k.wgsl's
    /// `main_q8k`), for long steps.
    pub round_q8k: Pipeline,
    /// A dispatch that only binds a buffer read-only (touch.wgsl).
    pub touch: Pipeline,
}

/// The WKV kernels for steps with chunks of several tokens (see wkv7.wgsl): `prep` (f16 or
/// f32 LoRA weights, or `prep_pre`, which reads the second LoRA products) and `post` run
/// per (token, head), the scan per (chunk, head, part of its rows) with `lanes` lanes per
/// state row.
pub struct Wkv7Chunk {
    pub prep: Pipeline,
    pub prep_f32: Pipeline,
    pub prep_pre: Pipeline,
    pub scan: Pipeline,
    /// The scan for steps whose chunks all have one token (batches): one token's loads in
    /// flight (`SCAN_DEPTH_SINGLE`) instead of `scan_depth`, and `scan_rows`'s rows per
    /// lane group.
    pub scan_single: Pipeline,
    pub post: Pipeline,
    /// The scan in matrix form for chunks of [`Kernels::new`]'s `chunked_from` tokens or
    /// more (wkv7_chunked.wgsl); `None`: the scan walks every chunk.
    pub chunked: Option<Wkv7Chunked>,
    pub lanes: u32,
    /// Workgroups of the scan per head (`scan_threads`), and of `scan_single`.
    pub workgroups_per_head: u32,
    pub workgroups_per_head_single: u32,
}

/// wkv7_chunked.wgsl's two passes (see there): per (sub-chunk, head) `prep`, per (chunk,
/// head, group of [`chunked_chain_rows`] state rows) `chain`.
pub struct Wkv7Chunked {
    pub prep: Pipeline,
    pub chain: Pipeline,
}

/// Tokens per sub-chunk of the matrix-form scan (wkv7_chunked.wgsl's CL; its thread layout
/// takes 16). On an H200 (2.9B, a 2048-token prompt) sub-chunks of 8 made the old chain of
/// 64 x 64 products twice as long (8.6 → 16.9 ms).
pub const CHUNKED_CL: u32 = 16;

/// State rows per workgroup of the matrix-form scan's `chain` (wkv7_chunked.wgsl's
/// CHAIN_ROWS): 16, or 8 or 32 with `WEB_RWKV_CHAIN_ROWS`, for measurements.
pub fn chunked_chain_rows() -> u32 {
    static ROWS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| {
        rwkv_gpu::env_parse::<u32>("WEB_RWKV_CHAIN_ROWS")
            .filter(|r| matches!(r, 8 | 32))
            .unwrap_or(16)
    })
}

/// Workgroup memory the matrix-form scan's kernels take at most (the chain 23.3 KB, the prep
/// 21.8 KB); devices with less (WebGPU's default limit is 16 KB) walk every chunk token by
/// token.
pub const CHUNKED_WORKGROUP_BYTES: u32 = 24 * 1024;

/// Floats per sub-chunk and head of the matrix-form scan's scratch (wkv7_chunked.wgsl's
/// PART: Rh, Ah, Bh, Kt and g_end).
pub const CHUNKED_PART: u32 = 4 * CHUNKED_CL * 64 + 64;

/// The matrix-form WKV scan's source (wkv7_chunked.wgsl) for chunks of at least
/// `chunked_from` tokens.
pub fn wkv7_chunked_wgsl(chunked_from: u32) -> String {
    format!(
        "const CL: u32 = {CHUNKED_CL}u;\nconst CHUNKED_FROM: u32 = {chunked_from}u;\n\
         const CHUNKED_PROBE: u32 = {}u;\nconst CHAIN_ROWS: u32 = {}u;\n",
        rwkv_gpu::env_parse::<u32>("WEB_RWKV_CHUNKED_PROBE").unwrap_or(0),
        chunked_chain_rows()
    ) + STEP_WGSL
        + SCAN_BLOCKS_WGSL
        + include_str!("scan_bindings.wgsl")
        + include_str!("wkv7_chunked.wgsl")
}

/// Environment variable for the lanes per state row of the chunk path's WKV scan (1, 2,
/// 4, 8 or 16; 0: no chunk path, the one-workgroup-per-head kernel runs chunks too). The
/// default is 16 (on an H200, 2.9B: prefill 512 / 2048 +1.7% / +2.4% against 8), fewer
/// where the device's smallest subgroup is smaller (1 without subgroup operations); a value
/// the device cannot run is lowered the same way.
pub const WKV_LANES_ENV: &str = "WEB_RWKV_WKV_LANES";

/// Lanes per state row of the WKV scan on this device, `None` for no chunk path (see
/// [`WKV_LANES_ENV`]). The lanes of a row reduce with subgroup shuffles, so they must be
/// an aligned group within one subgroup: a power of two no larger than the smallest
/// subgroup size the device may use.
pub fn wkv_scan_lanes(ctx: &rwkv_gpu::GpuContext) -> Option<u32> {
    let want = rwkv_gpu::env_parse::<u32>(WKV_LANES_ENV).unwrap_or(16);
    if want == 0 {
        return None;
    }
    let subgroup = if ctx.has_subgroups() {
        ctx.info.subgroup_min_size
    } else {
        1
    };
    Some(scan_lanes(want, subgroup))
}

/// `want` lanes per row (at least 1) lowered to a power of two of at most 16 and at most
/// `min_subgroup` (a subgroup of any size the device may use then holds whole groups).
fn scan_lanes(want: u32, min_subgroup: u32) -> u32 {
    let mut lanes = 1u32 << want.clamp(1, 16).ilog2();
    while lanes > 1 && lanes > min_subgroup {
        lanes /= 2;
    }
    lanes
}

/// The step's shape and chunk table structs, shared by the kernels.
const STEP_WGSL: &str = include_str!("step.wgsl");

/// The layout of the chunk path's per-token values (HEAD_SIZE and the blocks of scan_in and
/// post_in), shared by the WKV kernels and both scans.
const SCAN_BLOCKS_WGSL: &str = include_str!("scan_blocks.wgsl");

impl Kernels {
    /// step.wgsl (the Step, Chunk and Row structs), for kernels composed elsewhere.
    pub fn step_wgsl() -> &'static str {
        STEP_WGSL
    }

    /// The chained steps' first dispatch (feed_sampled.wgsl), with step.wgsl and
    /// [`SAMPLED_TOKEN`].
    pub fn feed_sampled_wgsl() -> String {
        format!(
            "const SAMPLED: u32 = {SAMPLED_TOKEN}u;\n{STEP_WGSL}{}",
            include_str!("feed_sampled.wgsl")
        )
    }

    /// The 256-thread reductions (Lane, argmax_abs_256, sum_256): with subgroup operations
    /// where the device has them.
    pub fn reduce_wgsl(subgroups: bool) -> &'static str {
        if subgroups {
            include_str!("reduce_subgroup.wgsl")
        } else {
            include_str!("reduce_tree.wgsl")
        }
    }

    /// `lora_ranks`: the model's LoRA ranks (decay, iclr, gate, value), built into the WKV
    /// kernel as constants. `scan_lanes`: the chunk path's lanes per state row (see
    /// [`wkv_scan_lanes`]), `None` for none. `subgroups`: whether the device has subgroup
    /// operations (the roundings' maximum search uses them). `chunked_from`: chunks of at
    /// least this many tokens take the matrix-form scan (wkv7_chunked.wgsl; 0: none does).
    pub fn new(
        device: &wgpu::Device,
        lora_ranks: [u32; 4],
        scan_lanes: Option<u32>,
        subgroups: bool,
        chunked_from: u32,
        mix_long: Option<MixLongShape>,
    ) -> Kernels {
        // A module with its source, whose entry points the pipelines below compile (on worker
        // threads: rwkv-gpu's `Pipeline`, so that they compile side by side).
        let module = |label: &str, source: String| Module {
            module: rwkv_gpu::shader_module(device, label, &source),
            source,
        };
        let at = |label: &str, m: &Module, entry: &str| {
            pipeline_at(device, label, &m.module, &m.source, entry)
        };
        let wkv_f16 = module("wkv7", wkv7_wgsl(lora_ranks, true));
        let wkv_f32 = module("wkv7", wkv7_wgsl(lora_ranks, false));
        let wkv7_chunk = scan_lanes.map(|lanes| {
            let [rows, rows_single] = scan_rows();
            let threads = |rows| scan_threads(lanes).min(64 * lanes / rows);
            let scan_module = |depth, rows| {
                module(
                    "wkv7_scan",
                    wkv7_scan_wgsl(lanes, threads(rows), depth, rows, chunked_from),
                )
            };
            let scan = scan_module(scan_depth(), rows);
            let scan_single = scan_module(SCAN_DEPTH_SINGLE, rows_single);
            let chunked = (chunked_from != 0).then(|| {
                let m = module("wkv7_chunked", wkv7_chunked_wgsl(chunked_from));
                Wkv7Chunked {
                    prep: at("wkv7_chunk_prep", &m, "chunk_prep"),
                    chain: at("wkv7_chunk_chain", &m, "chunk_chain"),
                }
            });
            Wkv7Chunk {
                prep: at("wkv7_prep", &wkv_f16, "prep"),
                prep_f32: at("wkv7_prep", &wkv_f32, "prep"),
                prep_pre: at("wkv7_prep", &wkv_f16, "prep_pre"),
                scan: at("wkv7_scan", &scan, "main"),
                scan_single: at("wkv7_scan", &scan_single, "main"),
                post: at("wkv7_post", &wkv_f16, "post"),
                chunked,
                lanes,
                workgroups_per_head: scan_workgroups_per_head(lanes, threads(rows), rows),
                workgroups_per_head_single: scan_workgroups_per_head(
                    lanes,
                    threads(rows_single),
                    rows_single,
                ),
            }
        });
        let token_mix = module("token_mix", token_mix_wgsl(subgroups, None));
        let token_mix_long = mix_long.map(|shape| {
            let m = module("token_mix", token_mix_wgsl(subgroups, Some(shape)));
            at("token_mix_long", &m, "main_long")
        });
        let round = module("round_activations", round_wgsl(subgroups, false));
        let round_q8k = module("round_activations", round_wgsl(subgroups, true));
        Kernels {
            layer_norm: pipeline(device, "layer_norm", &layer_norm_wgsl(subgroups)),
            token_mix: at("token_mix", &token_mix, "main"),
            token_mix_long,
            token_mix_few: at("token_mix", &token_mix, "main_few"),
            wkv7: at("wkv7", &wkv_f16, "main"),
            wkv7_f32: at("wkv7", &wkv_f32, "main"),
            wkv7_pre: at("wkv7", &wkv_f16, "main_pre"),
            wkv7_chunk,
            round_activations: at("round_activations", &round, "main"),
            round_q8k: at("round_activations", &round_q8k, "main_q8k"),
            touch: pipeline(device, "touch", include_str!("touch.wgsl")),
        }
    }
}

/// round_activations.wgsl (`main`) or, `q8k`, round_q8k.wgsl (`main_q8k`, its own module:
/// it reads and writes vectors).
fn round_wgsl(subgroups: bool, q8k: bool) -> String {
    let (types, kernel) = match q8k {
        true => (
            "alias RoundVal = vec4<f32>;\nalias RoundWord = vec2<u32>;\n",
            include_str!("round_q8k.wgsl"),
        ),
        false => (
            "alias RoundVal = f32;\nalias RoundWord = u32;\n",
            include_str!("round_activations.wgsl"),
        ),
    };
    [
        rwkv_gpu::ROUNDING_WGSL,
        STEP_WGSL,
        Kernels::reduce_wgsl(subgroups),
        include_str!("q8_blocks.wgsl"),
        types,
        include_str!("round_bindings.wgsl"),
        kernel,
    ]
    .concat()
}

/// layer_norm.wgsl's source.
fn layer_norm_wgsl(subgroups: bool) -> String {
    [
        STEP_WGSL,
        Kernels::reduce_wgsl(subgroups),
        include_str!("layer_norm.wgsl"),
    ]
    .concat()
}

/// A shader module and the WGSL it was made from (for the layouts of its pipelines).
struct Module {
    module: wgpu::ShaderModule,
    source: String,
}

/// The WKV-7 kernels' source (wkv7.wgsl's entry points) for the model's LoRA ranks (decay,
/// iclr, gate, value) and LoRA weights in f16 pairs (`f16`) or f32.
pub fn wkv7_wgsl(lora_ranks: [u32; 4], f16: bool) -> String {
    let [rw, ra, rg, rv] = lora_ranks;
    format!(
        "const R_W: u32 = {rw}u;\nconst R_A: u32 = {ra}u;\nconst R_G: u32 = {rg}u;\n\
         const R_V: u32 = {rv}u;\nconst LORA_F16: bool = {f16};\n\
         const WKV_PROBE: u32 = {}u;\n{}{}{}{}",
        wkv_probe(),
        lora_lanes_wgsl(lora_ranks, wkv_load_group()) + &state_wgsl(),
        rwkv_gpu::ROUNDING_WGSL,
        rwkv_gpu::Q8_PACK_WGSL,
        [STEP_WGSL, SCAN_BLOCKS_WGSL, include_str!("wkv7.wgsl")].concat()
    )
}

/// The WKV scan's source (wkv7_scan.wgsl) for `lanes` lanes per state row, workgroups of
/// `threads` threads (a power of two from `lanes` to 64 `lanes`) and `depth` tokens' loads in
/// flight (1 to 8); chunks of `chunked_from` tokens or more (not 0) are left to
/// wkv7_chunked.wgsl.
pub fn wkv7_scan_wgsl(
    lanes: u32,
    threads: u32,
    depth: u32,
    rows: u32,
    chunked_from: u32,
) -> String {
    format!(
        "const SCAN_WG: u32 = {threads}u;\nconst WGS_PER_HEAD: u32 = {}u;\n\
         const CHUNKED_FROM: u32 = {chunked_from}u;\n",
        scan_workgroups_per_head(lanes, threads, rows)
    ) + &scan_wgsl(lanes, depth, rows)
        + STEP_WGSL
        + SCAN_BLOCKS_WGSL
        + include_str!("scan_bindings.wgsl")
        + include_str!("wkv7_scan.wgsl")
}

/// Workgroups of the WKV scan per head: its 64 state rows of `lanes` lanes, `rows` rows per
/// lane, `threads` per workgroup.
fn scan_workgroups_per_head(lanes: u32, threads: u32, rows: u32) -> u32 {
    (64 * lanes / rows / threads).max(1)
}

/// State rows per lane group of the WKV scan of prompt chunks and of one-token chunks
/// (batches): the rows' updates share the lane's per-token loads. `WEB_RWKV_SCAN_ROWS` and
/// `WEB_RWKV_SCAN_ROWS_SINGLE` (1, 2 or 4) set them, for measurements. On an H200 (2.9B
/// Q4_K_M): a 2048-token prompt's scan 27.5 / 28.6 / 30.5 ms with 1 / 2 / 4 rows (each
/// token's chain of updates is longer, the loads were not what bound it), so prompts keep
/// 1; a 64-sequence step's 1.17 / 1.00 / 0.99 ms, batch 64 / 256 +3% / +3.6% with 4.
fn scan_rows() -> [u32; 2] {
    let rows = |var: &str, default| {
        rwkv_gpu::env_parse::<u32>(var)
            .filter(|r| [1, 2, 4].contains(r))
            .unwrap_or(default)
    };
    [
        rows("WEB_RWKV_SCAN_ROWS", 1),
        rows("WEB_RWKV_SCAN_ROWS_SINGLE", 4),
    ]
}

/// Threads per workgroup of the WKV scan for `lanes` lanes per state row
/// (`WEB_RWKV_SCAN_THREADS`, default 64): the workgroup's rows (threads / lanes) share the
/// per-token values it loads. On an H200 (2.9B, 8 lanes, 512-token chunk): 16 and 32 threads
/// as fast as 64 (scan 7.9 / 7.7 / 8.0 ms), 256 slower (9.4: fewer L2 reads, but on fewer
/// SMs), 512 much slower.
fn scan_threads(lanes: u32) -> u32 {
    rwkv_gpu::env_parse::<u32>("WEB_RWKV_SCAN_THREADS")
        .filter(|t| t.is_power_of_two())
        .unwrap_or(64)
        .clamp(lanes.max(1), 64 * lanes.max(1))
        .min(1024)
}

/// The shape of token_mix_long.wgsl's workgroup: threads, and vec4s of the row per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixLongShape {
    pub threads: u32,
    pub per_thread: u32,
}

/// Threads of token_mix_long.wgsl's workgroup at most (`WEB_RWKV_MIX_LONG_THREADS` changes
/// it, for measurements). On an H200 (2.9B, 2560 wide): 640 / 320 / 128 / 64 threads (1 / 2
/// / 5 / 10 vec4s each) took 7.80 / 8.00 / 9.37 / 15.3 ms for the attention's mix of a
/// 2048-token chunk, prefill 2048 16,247 / 16,408 / 16,149 / 15,068 tok/s.
pub const MIX_LONG_THREADS: u32 = 320;

/// token_mix_long.wgsl's workgroup for a model `dim` wide, where the device allows it:
/// `dim` a multiple of 256 (whole Q8_K blocks per 64 threads), the most threads up to
/// [`MIX_LONG_THREADS`] that divide its vec4s in multiples of 64, and its workgroup memory
/// within `limits`.
pub fn token_mix_long_shape(dim: u32, limits: &wgpu::Limits) -> Option<MixLongShape> {
    if dim == 0 || !dim.is_multiple_of(256) {
        return None;
    }
    let vec4s = dim / 4;
    let most = rwkv_gpu::env_parse::<u32>("WEB_RWKV_MIX_LONG_THREADS")
        .unwrap_or(MIX_LONG_THREADS)
        .min(limits.max_compute_invocations_per_workgroup)
        .min(limits.max_compute_workgroup_size_x);
    let threads = (1..=vec4s / 64)
        .map(|d| 64 * d)
        .filter(|&t| t <= most && vec4s.is_multiple_of(t))
        .max()?;
    // Its sums (8 bytes a thread, 8 per 32), per-mix maxima (32 bytes per vec4, 16 per 8).
    let bytes = 8 * threads + threads / 4 + 32 * vec4s + 2 * vec4s;
    (bytes <= limits.max_compute_workgroup_storage_size).then_some(MixLongShape {
        threads,
        per_thread: vec4s / threads,
    })
}

/// The token mix's source: token_mix.wgsl's entry points `main` and `main_few`, or with
/// `long` token_mix_long.wgsl's `main_long` for workgroups of that shape (its own module:
/// its activations are read and written as vectors).
pub fn token_mix_wgsl(subgroups: bool, long: Option<MixLongShape>) -> String {
    let (types, kernel) = match long {
        Some(l) => (
            format!(
                "alias MixVal = vec4<f32>;\nalias MixWord = vec2<u32>;\nconst LONG_WG: u32 = {}u;\nconst LONG_K: u32 = {}u;\n",
                l.threads, l.per_thread
            ),
            include_str!("token_mix_long.wgsl"),
        ),
        None => (
            "alias MixVal = f32;\nalias MixWord = u32;\n".to_string(),
            concat!(include_str!("q8_store.wgsl"), include_str!("token_mix.wgsl")),
        ),
    };
    [
        rwkv_gpu::ROUNDING_WGSL,
        rwkv_gpu::Q8_PACK_WGSL,
        STEP_WGSL,
        Kernels::reduce_wgsl(subgroups),
        include_str!("q8_blocks.wgsl"),
        &types,
        include_str!("token_mix_bindings.wgsl"),
        kernel,
    ]
    .concat()
}

/// Measurement knob `WEB_RWKV_WKV_PROBE` (bits; results are wrong with any set): 1 skips the
/// one-token kernel's LoRA products, 2 its state load, update and store, 4 the group norm
/// and gate, 8 everything (the kernel returns at once).
fn wkv_probe() -> u32 {
    rwkv_gpu::env_parse("WEB_RWKV_WKV_PROBE").unwrap_or(0)
}

/// Tokens' loads the scan of one-token chunks (batch steps) keeps in flight: there is no next
/// token, and the second set of registers costs occupancy (on an H200, 2.9B Q4_K_M: depth 1
/// against 2, the scan of a 256-sequence step 5.31 -> 4.21 ms, batch 64 / 256 +2.8% / +4%).
const SCAN_DEPTH_SINGLE: u32 = 1;

/// Tokens whose values the WKV scan has in flight (`WEB_RWKV_SCAN_DEPTH`, 1 to 8; default
/// 2): see [`scan_wgsl`]. On an H200 (2.9B, prefill of 2048 tokens) 2 and 3 measured 1-3%
/// faster than 1 and 4 about even; 6 and 8 ran out of registers (prefill at a third); a
/// prompt of 512 tokens lost 3% with 1.
fn scan_depth() -> u32 {
    rwkv_gpu::env_parse::<u32>("WEB_RWKV_SCAN_DEPTH")
        .filter(|d| (1..=8).contains(d))
        .unwrap_or(2)
}

/// Loads per group in the WKV kernel's LoRA lanes: `WEB_RWKV_WKV_LOAD_GROUP` (for
/// measurements), else all at once.
fn wkv_load_group() -> Option<usize> {
    rwkv_gpu::env_parse("WEB_RWKV_WKV_LOAD_GROUP")
}

/// `lora_lanes` of wkv7.wgsl for the given ranks, every load written out (a loop whose trip
/// count the driver's compiler does not unroll would wait for its loads a few at a time).
/// The loads go in groups of `group` (weight pair, hidden pair) loads, each group's sums
/// after its loads; `None` issues every load before the first sum. The sums run in the same
/// order either way, so the grouping changes register pressure, not results.
fn lora_lanes_wgsl(ranks: [u32; 4], group: Option<usize>) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "fn lora_lanes(g: u32, pr: u32, hb: vec4<u32>, wb: vec4<u32>, vec_mode: bool, \
         has_v: bool) {\n",
    );
    let comps = ["x", "y", "z", "w"];
    for l in 0..ranks.len() {
        let _ = writeln!(s, "    var one{l} = vec2<f32>(0.0);");
        let _ = writeln!(s, "    var f{l} = array<vec2<f32>, 4>();");
    }
    // (LoRA, lane step) in sum order; the value LoRA reads weight 0 where the layer has none.
    let terms: Vec<(usize, u32)> = ranks
        .iter()
        .enumerate()
        .flat_map(|(l, &rank)| (0..rank.div_ceil(8)).map(move |m| (l, m)))
        .collect();
    let group = group.unwrap_or(terms.len()).max(1);
    for chunk in terms.chunks(group) {
        for &(l, m) in chunk {
            let (c, rank) = (comps[l], ranks[l]);
            let j = format!("({}u + g)", 8 * m);
            let mut idx = format!("wb.{c} + {j} * p.dim");
            let mut h = format!("sh_hidden[hb.{c} + {j}]");
            if rank % 8 != 0 {
                idx = format!("select(0u, {idx}, {j} < {rank}u)");
                h = format!("select(0.0, {h}, {j} < {rank}u)");
            }
            if l == 3 {
                idx = format!("select(0u, {idx}, has_v)");
            }
            let _ = writeln!(s, "    let w{l}_{m} = lora_pair({idx});");
            let _ = writeln!(s, "    let h{l}_{m} = vec2<f32>({h});");
        }
        for &(l, m) in chunk {
            let _ = writeln!(s, "    one{l} = fma(w{l}_{m}, h{l}_{m}, one{l});");
            if 8 * m < ranks[l] / 32 * 32 {
                let a = m % 4;
                let _ = writeln!(s, "    f{l}[{a}] = fma(w{l}_{m}, h{l}_{m}, f{l}[{a}]);");
            }
        }
    }
    for l in 0..ranks.len() {
        let _ = writeln!(
            s,
            "    sh_part[({l}u * LANES + g) * PAIRS + pr] = \
             select(one{l}, (f{l}[0] + f{l}[2]) + (f{l}[1] + f{l}[3]), vec_mode);"
        );
    }
    s.push_str("}\n");
    s
}

/// The state row of a WKV thread as 16 private vec4s and its update, written out (a
/// private array indexed in a loop the driver does not unroll would live in memory). The
/// sums run over the columns in order, as they always have:
///   sa = sum_j a[j] S[j];  S[j] = S[j] w[j] + v k[j] + sa b[j];  y = sum_j S[j] r[j]
fn state_wgsl() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for q in 0..16 {
        let _ = writeln!(s, "var<private> S{q}: vec4<f32>;");
    }
    s.push_str("fn state_load(at: u32) {\n");
    for q in 0..16 {
        let _ = writeln!(s, "    S{q} = state[at + {q}u];");
    }
    s.push_str("}\nfn state_store(at: u32) {\n");
    for q in 0..16 {
        let _ = writeln!(s, "    state[at + {q}u] = S{q};");
    }
    s.push_str("}\nfn state_step(v: f32) -> f32 {\n    var sa = 0.0;\n");
    for q in 0..16 {
        let _ = writeln!(s, "    let a{q} = sh_a[{q}];");
        for c in ["x", "y", "z", "w"] {
            let _ = writeln!(s, "    sa += a{q}.{c} * S{q}.{c};");
        }
    }
    s.push_str("    var y = 0.0;\n");
    for q in 0..16 {
        let _ = writeln!(
            s,
            "    S{q} = S{q} * sh_w[{q}] + v * sh_k[{q}] + sa * sh_b[{q}];\n    let r{q} = sh_r[{q}];"
        );
        for c in ["x", "y", "z", "w"] {
            let _ = writeln!(s, "    y += S{q}.{c} * r{q}.{c};");
        }
    }
    s.push_str("    return y;\n}\n");
    s
}

/// The generated part of wkv7_scan.wgsl for `lanes` lanes per state row and `depth` tokens
/// in flight: each lane's part of the row (16 / lanes vec4s) in private vec4s, the per-token
/// values it reads (`Tok`, one named slot per token in flight), the update, and the walk over
/// a chunk's tokens, written out (no private array is indexed). Each lane sums its own
/// columns in order, then the lanes' sums are added pairwise across the row's lanes
/// (`subgroupShuffleXor` over lane bits 1, 2, 4...: every lane of the row gets the same bits).
/// The walk is unrolled by `depth`: slot k holds token n + k; its values are used, the slot
/// is refilled with token n + k + depth's (loads in flight while the next tokens are worked
/// on), then the token is worked on. One token's loads in flight left each step waiting
/// for most of a load's latency (a 512-token chunk's scan took ~0.57 us per token per layer
/// on an H200; with 2 in flight 0.49, and without the loads 0.06). Staging blocks of 8-32
/// tokens in workgroup memory instead (all threads loading a block at once, the next one in
/// flight) measured no better (8) or slower (16: 0.66 us; 32).
fn scan_wgsl(lanes: u32, depth: u32, rows: u32) -> String {
    use std::fmt::Write;
    let parts = 16 / lanes;
    let blocks = ["w", "k", "a", "b", "r"];
    // A value per state row of the lane: f32, vec2 or vec4 (`rows` 1, 2, 4), and one built
    // from a per-row expression.
    let ty = match rows {
        1 => "f32".to_string(),
        n => format!("vec{n}<f32>"),
    };
    let per_row = |f: &dyn Fn(u32) -> String| -> String {
        let items: Vec<String> = (0..rows).map(f).collect();
        format!("{ty}({})", items.join(", "))
    };
    let row = |r: u32| -> String {
        if rows == 1 {
            String::new()
        } else {
            format!("[{r}]")
        }
    };
    // SCAN_PROBE: measurement bits (`WEB_RWKV_SCAN_PROBE`; results are wrong with any
    // set): 1 leaves out the shuffles, 2 the per-token loads after the first tokens', 4 the
    // stores of y.
    let probe: u32 = rwkv_gpu::env_parse("WEB_RWKV_SCAN_PROBE").unwrap_or(0);
    let mut s = format!(
        "const LANES: u32 = {lanes}u;\nconst SCAN_ROWS: u32 = {rows}u;\n\
         const SCAN_PROBE: u32 = {probe}u;\n"
    );
    // Row r's part: S{r}_{q}.
    for r in 0..rows {
        for q in 0..parts {
            let _ = writeln!(s, "var<private> S{r}_{q}: vec4<f32>;");
        }
    }
    // Rows i, i + 1.. of the state follow each other (16 vec4s each).
    s.push_str("fn state_load(at: u32) {\n");
    for r in 0..rows {
        for q in 0..parts {
            let _ = writeln!(s, "    S{r}_{q} = state[at + {}u];", 16 * r + q);
        }
    }
    s.push_str("}\nfn state_store(at: u32) {\n");
    for r in 0..rows {
        for q in 0..parts {
            let _ = writeln!(s, "    state[at + {}u] = S{r}_{q};", 16 * r + q);
        }
    }
    s.push_str("}\nstruct Tok {\n");
    for b in blocks {
        for q in 0..parts {
            let _ = writeln!(s, "    {b}{q}: vec4<f32>,");
        }
    }
    let _ = writeln!(s, "    v: {ty},\n}}");
    for k in 0..depth {
        let _ = writeln!(s, "var<private> NX{k}: Tok;");
    }
    s.push_str("fn fetch(at: u32, part: u32, i: u32) -> Tok {\n    var x: Tok;\n");
    for (n, b) in blocks.iter().enumerate() {
        for q in 0..parts {
            let _ = writeln!(
                s,
                "    x.{b}{q} = scan_in[at + {}u + part];",
                16 * n as u32 + q
            );
        }
    }
    // The rows' v lie in one vec4 (i is a multiple of `rows`), read as scalars unless they
    // fill it: a vec4 value indexed by a run-time component went through memory (a 2048-token
    // prompt's scan 27.5 -> 47.6 ms on an H200).
    let v = if rows == 4 {
        "scan_in[at + 80u + i / 4u]".to_string()
    } else {
        per_row(&|r| format!("scan_in[at + 80u + i / 4u][i % 4u + {r}u]"))
    };
    let _ = writeln!(s, "    x.v = {v};\n    return x;\n}}");
    // The walk: `rows` tokens, records from `at0` every `stride` vec4s, outputs y from post
    // word `out0` (row i; the lane's other rows follow) every `out_stride` (written by lane
    // 0 of the row: `write`).
    s.push_str(
        "fn scan_rows(at0: u32, stride: u32, rows: u32, part: u32, i: u32, out0: u32, \
         out_stride: u32, write: bool) {\n",
    );
    for k in 0..depth {
        let _ = writeln!(
            s,
            "    if {k}u < rows {{\n        NX{k} = fetch(at0 + {k}u * stride, part, i);\n    }}"
        );
    }
    let _ = writeln!(s, "    for (var n = 0u; n < rows; n += {depth}u) {{");
    for k in 0..depth {
        let mut stores = String::new();
        for r in 0..rows {
            let _ = writeln!(
                stores,
                "                post_in[out0 + {r}u + (n + {k}u) * out_stride] = y{};",
                row(r)
            );
        }
        let _ = writeln!(
            s,
            "        if n + {k}u < rows {{\n            let cur = NX{k};\n            \
             if n + {} < rows && (SCAN_PROBE & 2u) == 0u {{\n                \
             NX{k} = fetch(at0 + (n + {}u) * stride, part, i);\n            }}\n            \
             let y = scan_token(cur);\n            if write && (SCAN_PROBE & 4u) == 0u {{\n\
             {stores}            }}\n        }}",
            k + depth,
            k + depth
        );
    }
    s.push_str("    }\n}\n");
    let _ = writeln!(s, "fn lane_sum(x: {ty}) -> {ty} {{\n    var s = x;");
    let mut m = 1;
    while m < lanes {
        let _ = writeln!(
            s,
            "    if (SCAN_PROBE & 1u) == 0u {{\n        s += subgroupShuffleXor(s, {m}u);\n    }}"
        );
        m *= 2;
    }
    // Each row's sums run over its columns in order, as with one row per lane.
    let _ = writeln!(
        s,
        "    return s;\n}}\nfn scan_token(x: Tok) -> {ty} {{\n    var sa = {ty}(0.0);"
    );
    let comps = ["x", "y", "z", "w"];
    for q in 0..parts {
        for c in comps {
            let _ = writeln!(
                s,
                "    sa += x.a{q}.{c} * {};",
                per_row(&|r| format!("S{r}_{q}.{c}"))
            );
        }
    }
    let _ = writeln!(s, "    sa = lane_sum(sa);\n    var y = {ty}(0.0);");
    for q in 0..parts {
        for r in 0..rows {
            let (v, a) = (format!("x.v{}", row(r)), format!("sa{}", row(r)));
            let _ = writeln!(
                s,
                "    S{r}_{q} = S{r}_{q} * x.w{q} + {v} * x.k{q} + {a} * x.b{q};"
            );
        }
        for c in comps {
            let _ = writeln!(
                s,
                "    y += {} * x.r{q}.{c};",
                per_row(&|r| format!("S{r}_{q}.{c}"))
            );
        }
    }
    s.push_str("    return lane_sum(y);\n}\n");
    s
}

/// A compute pipeline for entry point `entry` of `module` (made from `source`), the layout
/// worked out from what the entry point uses; the driver compiles it on a worker thread
/// (rwkv-gpu's `Pipeline`).
pub fn pipeline_at(
    device: &wgpu::Device,
    label: &str,
    module: &wgpu::ShaderModule,
    source: &str,
    entry: &str,
) -> Pipeline {
    Pipeline::compile(
        device,
        &format!("{label} ({entry})"),
        module,
        source,
        entry,
        None,
    )
}

/// A compute pipeline of `source`'s entry point `main`.
pub fn pipeline(device: &wgpu::Device, label: &str, source: &str) -> Pipeline {
    let module = rwkv_gpu::shader_module(device, label, source);
    pipeline_at(device, label, &module, source, "main")
}

/// Binds `buffers` to bindings 0, 1, 2... of group 0, whole buffers.
pub fn bind(
    device: &wgpu::Device,
    pipeline: &Pipeline,
    label: &str,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let at: Vec<(u32, &wgpu::Buffer)> = (0..).zip(buffers.iter().copied()).collect();
    bind_at(device, pipeline, label, &at)
}

/// Binds each `(binding, buffer)` of group 0, whole buffers (for an entry point that uses
/// some of its module's bindings).
pub fn bind_at(
    device: &wgpu::Device,
    pipeline: &Pipeline,
    label: &str,
    buffers: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .map(|&(binding, b)| wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// A small uniform buffer holding `value`.
pub fn uniform<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, value: &T) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

/// A kernel launch prepared once: pipeline, bind group, and how to size its grid.
pub struct Launch {
    pub label: &'static str,
    pub pipeline: Pipeline,
    pub bind_group: wgpu::BindGroup,
}

impl Launch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, x: u32, y: u32) {
        if x == 0 || y == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_token_mix_shapes_fit_the_width_and_the_device() {
        // A GPU's own limits (an H200's: 1024 threads, 48 KB of workgroup memory).
        let gpu = wgpu::Limits {
            max_compute_invocations_per_workgroup: 1024,
            max_compute_workgroup_size_x: 1024,
            max_compute_workgroup_storage_size: 48 << 10,
            ..wgpu::Limits::default()
        };
        let shape = |dim, limits: &wgpu::Limits| {
            token_mix_long_shape(dim, limits).map(|s| (s.threads, s.per_thread))
        };
        // The most threads up to MIX_LONG_THREADS (320) that split the row's vec4s evenly in
        // multiples of 64 (a Q8_K block is 64 threads at one vec4 of theirs).
        assert_eq!(shape(2560, &gpu), Some((320, 2)));
        assert_eq!(shape(768, &gpu), Some((192, 1)));
        assert_eq!(shape(4096, &gpu), Some((256, 4)));
        assert_eq!(shape(1536, &gpu), Some((192, 2)));
        // Rows of partial Q8_K blocks, or none, take the tile kernel.
        assert_eq!(shape(0, &gpu), None);
        assert_eq!(shape(320, &gpu), None);
        // WebGPU's default limits (16 KB of workgroup memory): 2.9B's row (24 KB) does not
        // fit, a 768-wide one (8 KB) does.
        let web = wgpu::Limits::default();
        assert_eq!(shape(2560, &web), None);
        assert_eq!(shape(768, &web), Some((192, 1)));
        // Too few threads a workgroup for one Q8_K block.
        let narrow = wgpu::Limits {
            max_compute_invocations_per_workgroup: 32,
            ..gpu
        };
        assert_eq!(shape(2560, &narrow), None);
    }

    #[test]
    fn scan_lanes_fit_the_smallest_subgroup() {
        assert_eq!(scan_lanes(8, 32), 8);
        assert_eq!(scan_lanes(8, 8), 8);
        assert_eq!(scan_lanes(8, 4), 4);
        assert_eq!(scan_lanes(8, 0), 1);
        assert_eq!(scan_lanes(6, 64), 4);
        assert_eq!(scan_lanes(64, 64), 16);
        assert_eq!(scan_lanes(16, 8), 8);
        assert_eq!(scan_lanes(1, 32), 1);
    }

    /// Every kernel's layout is worked out from its WGSL, so that it compiles on a worker
    /// thread (a source this misses compiles on the loading thread, slowly).
    #[test]
    fn kernel_layouts_are_worked_out() {
        let ranks = [96, 96, 320, 64];
        let mut kernels: Vec<(String, &str)> = Vec::new();
        for subgroups in [true, false] {
            kernels.push((token_mix_wgsl(subgroups, None), "main"));
            kernels.push((token_mix_wgsl(subgroups, None), "main_few"));
            for (threads, per_thread) in [(64, 1), (64, 10), (640, 1)] {
                let shape = MixLongShape {
                    threads,
                    per_thread,
                };
                kernels.push((token_mix_wgsl(subgroups, Some(shape)), "main_long"));
            }
            kernels.push((round_wgsl(subgroups, false), "main"));
            kernels.push((round_wgsl(subgroups, true), "main_q8k"));
            kernels.push((layer_norm_wgsl(subgroups), "main"));
        }
        for f16 in [true, false] {
            for entry in ["main", "main_pre", "prep", "prep_pre", "post"] {
                kernels.push((wkv7_wgsl(ranks, f16), entry));
            }
        }
        for (lanes, rows) in [(16, 1), (16, 4), (8, 2), (1, 1)] {
            kernels.push((wkv7_scan_wgsl(lanes, 64, 2, rows, 64), "main"));
        }
        for entry in ["chunk_prep", "chunk_chain"] {
            kernels.push((wkv7_chunked_wgsl(64), entry));
        }
        kernels.push((include_str!("touch.wgsl").to_string(), "main"));
        kernels.push((Kernels::feed_sampled_wgsl(), "main"));
        for (source, entry) in &kernels {
            let entries = rwkv_gpu::bind_group0_entries(source, entry);
            assert!(
                entries.is_some_and(|e| !e.is_empty()),
                "{entry} of {}",
                &source[..80]
            );
        }
    }

    #[test]
    fn scan_code_has_one_shuffle_per_lane_bit() {
        for (lanes, shuffles) in [(1, 0), (2, 1), (4, 2), (8, 3), (16, 4)] {
            for rows in [1, 2, 4] {
                let code = scan_wgsl(lanes, 3, rows);
                assert_eq!(
                    code.matches("subgroupShuffleXor").count(),
                    shuffles,
                    "{lanes}"
                );
                let parts = (16 / lanes * rows) as usize;
                assert_eq!(code.matches("var<private> S").count(), parts);
                // One fetch per token slot before the walk and one in each unrolled step.
                assert_eq!(code.matches("= fetch(").count(), 6, "{lanes}");
                // Each row's y stored in each unrolled step.
                assert_eq!(code.matches("post_in[").count(), 3 * rows as usize);
            }
        }
    }
}
