//! Matrix x vector for one token (decode), with the activation rounding done in the kernel
//! and several matrices in one dispatch.
//!
//! [`MatvecKernels::prepare`] takes a list of [`MatvecJob`]s (a matrix, where its input and
//! output lie, an epilogue) that read the same input buffer and write the same output
//! buffer, and packs them into as few dispatches as it can: jobs whose matrices share a
//! type and row length go together, up to [`MAX_BINDINGS`] weight buffers per dispatch. The
//! dispatches of one call do not depend on each other.
//!
//! Every workgroup stages the input in workgroup memory, rounded as ggml's CPU backend
//! rounds activations for the weight type (`mode`: 0 none, 1 f16, 2 bf16, 3 Q8_0, 4 Q8_K,
//! as the engine's rounding kernels number them), so no rounding pass runs before it. Two
//! kernel bodies (matvec.wgsl with matvec_float.wgsl or matvec_int.wgsl):
//!
//! * the float path, for any weight type: the format's `decode_unit` (ggml's dequantization)
//!   dotted with the rounded input in f32;
//! * the integer path, for Q4_K and Q6_K with Q8_K activations and for Q8_0 and Q4_0 with
//!   Q8_0 activations (off with [`INT_Q8_0_ENV`]` = 0`): the input
//!   quantized to packed signed bytes, multiplied by the weight codes with packed integer dot
//!   products (`dot4I8Packed`) and scaled per block part, as ggml's Q*_K x Q8_K, Q8_0 x Q8_0
//!   and Q4_0 x Q8_0 kernels do.

mod direct;
mod persistent;

use crate::pipeline::Pipeline;
use std::collections::HashMap;
use std::sync::Mutex;

use gguf::GgmlType;

use crate::context::GpuContext;
use crate::env::{env_on, env_parse};
use crate::error::GpuError;
use crate::matmul::{format_wgsl, Epilogue, COMMON_WGSL, EPILOGUE_WGSL};
use crate::weights::GpuMatrix;

use direct::DirectInput;
pub use direct::{Q8Format, Q8Input, QuantizeCall, Q8_PACK_WGSL};
pub use persistent::{
    persistent_format, persistent_phase, persistent_prelude, PhaseMatrix, XqRegion,
    PERSISTENT_WG_SIZE,
};

/// Weight buffers one dispatch can bind.
pub const MAX_BINDINGS: usize = 4;

/// The direct kernel's binding of a buffer it binds read-only and never reads
/// (direct.wgsl's ALSO_READ; see [`MatvecCall::binds_also`]).
pub const ALSO_READ_BINDING: u32 = 4 + MAX_BINDINGS as u32;
/// Jobs (matrix parts) one dispatch can hold (mirrors MAX_JOBS in the shader header).
const MAX_JOBS: usize = 8;
/// Columns of x staged per pass: f32 values (float path) or bytes (integer path).
const TILE_FLOAT: u32 = 3072;
const TILE_INT: u32 = 10240;

/// The 8-bit input format of an activation rounding mode (3: Q8_0, 4: Q8_K).
pub fn q8_format_of_mode(mode: u32) -> Option<Q8Format> {
    [Q8Format::K, Q8Format::Zero]
        .into_iter()
        .find(|f| f.rounding_mode() == mode)
}

impl Q8Format {
    /// The activation rounding mode (in the engine's numbering) this format quantizes to.
    pub fn rounding_mode(self) -> u32 {
        match self {
            Q8Format::K => ROUND_Q8_K,
            Q8Format::Zero => ROUND_Q8_0,
        }
    }
}

/// The most tokens a [`TokensCall`] takes in one step.
pub const MAX_TOKENS: u32 = 16;

/// The default of [`MatvecKernels::max_tokens`]. Measured on an H200, 2.9B Q4_K_M, steps of
/// 16 sequences: 15.3 ms with the direct kernel against 19.2 with the tensor cores (before
/// the tensor-core product decoded quantized blocks itself; see [`DIRECT_TOKENS_COOP`]).
pub const DIRECT_TOKENS: u32 = 16;

/// [`DIRECT_TOKENS`] on a device with the tensor-core path ([`MatvecKernels::for_context`]):
/// steps of 9 tokens or more take the tensor cores. On an H200 (2.9B Q4_K_M; session 12,
/// run 2) batch 10 / 12 / 14 ran at 1,112 / 1,298 / 1,314 tok/s on the direct kernel and
/// 1,263 / 1,471-1,475 / 1,697-1,699 on the tensor cores, while batch 8 keeps the direct
/// kernel (1,338 against 1,039-1,043). (15 before; batch 16 took the tensor cores already.)
pub const DIRECT_TOKENS_COOP: u32 = 8;

/// The most tokens of a step F16 weights take the direct kernel for: every token reads 32
/// bytes of f32 input per 16 bytes of weights from the caches. On an H200 (2.9B F16), steps
/// of 8 sequences take 11.9 ms with it (12.1 with the row kernel), steps of 16 30.0 (13.4
/// with the tensor cores).
pub const DIRECT_TOKENS_F16: u32 = 8;

/// [`DIRECT_TOKENS_F16`] for matrices of at least [`F16_TALL_ROWS`] rows on a device with
/// the tensor-core path, which takes the larger steps (from 5 tokens on, see
/// `COOP_FROM_TOKENS`). On an H200 (2.9B F16; session 12, run 4): batch 5 / 6 / 8 493-497 /
/// 583-584 / 737-738 tok/s on the direct kernel, 751-752 / 900-902 / 1,171-1,172 on the
/// tensor cores; batch 3 / 4 par (472 against 477-481, 613-614 against 601-604).
pub const DIRECT_TOKENS_F16_COOP: u32 = 4;

/// F16 matrices with fewer rows keep [`DIRECT_TOKENS_F16`] everywhere: the tensor-core path
/// takes such short matrices (the first LoRA products) only from 64 tokens on, so below
/// that they would fall to the row kernel. (In models whose big matrices are F16 or BF16 that
/// pays all the same: [`MatvecKernels::with_f16_tall_rows`].)
pub const F16_TALL_ROWS: usize = 1024;

/// Environment variable overriding [`F16_TALL_ROWS`] (for measurements; 0: every F16
/// matrix).
pub const F16_TALL_ROWS_ENV: &str = "WEB_RWKV_F16_TALL_ROWS";

/// Activation rounding modes of Q8_0 and Q8_K (the integer paths), in the numbering of the
/// engine's kernels.
pub const ROUND_Q8_0: u32 = 3;
pub const ROUND_Q8_K: u32 = 4;

/// Environment variable turning off (`0`) the integer path for the weights ggml reads with
/// Q8_0 activations, Q8_0 and Q4_0. On by default: on an H200 it decodes 2.9B Q8_0 at 146
/// tok/s against 90 for the float path, Q4_0 at 178 against 106.
pub const INT_Q8_0_ENV: &str = "WEB_RWKV_INT_Q8_0";

/// Environment variable turning off (`0`) the one-token matvecs' reading of inputs quantized
/// to Q8_K once per step ([`MatvecKernels::q8k_input`]); on by default.
pub const Q8K_INPUT_ENV: &str = "WEB_RWKV_Q8K_INPUT";

/// Environment variable turning off (`0`) the direct kernel for F32, F16 and BF16 weights (the
/// staging float kernel instead); on by default.
pub const DIRECT_F16_ENV: &str = "WEB_RWKV_DIRECT_F16";

/// Environment variable setting the most tokens of a step that callers give the direct
/// matvec ([`MatvecKernels::max_tokens`]; 0 or 1: none; at most [`MAX_TOKENS`]).
pub const DIRECT_TOKENS_ENV: &str = "WEB_RWKV_DIRECT_TOKENS";

/// The WGSL rounding helpers (`round_f16`, `round_bf16`, the 8-bit blocks'), shared with the
/// engine's kernels.
pub const ROUNDING_WGSL: &str = concat!(
    include_str!("round_half.wgsl"),
    "\n",
    include_str!("rounding.wgsl")
);

const MATVEC_WGSL: &str = include_str!("matvec.wgsl");
/// The jobs of a matvec dispatch (uniform binding 0), shared by the staging kernels and the
/// direct one.
const MATVEC_JOBS_WGSL: &str = include_str!("matvec_jobs.wgsl");
const MATVEC_FLOAT_WGSL: &str = include_str!("matvec_float.wgsl");
const MATVEC_INT_WGSL: &str = include_str!("matvec_int.wgsl");
const STAGE_Q8_K_WGSL: &str = include_str!("matvec_int_q8k.wgsl");
const STAGE_Q8_0_WGSL: &str = include_str!("matvec_int_q8_0.wgsl");

/// The integer path of a weight type: its dot with 8-bit activations, how W is read, the
/// staging of x, and the activation rounding mode it implements.
struct IntPath {
    dot: &'static str,
    wtype: &'static str,
    stage: &'static str,
    mode: u32,
}

/// `int_q8_0`: whether Q8_0 and Q4_0 have one (see [`MatvecKernels::with_int_q8_0`]).
fn int_path(ty: GgmlType, int_q8_0: bool) -> Option<IntPath> {
    let (dot, wtype, stage, mode) = match ty {
        GgmlType::Q4_K => (
            include_str!("quant_int/q4_k.wgsl"),
            "vec4<u32>",
            STAGE_Q8_K_WGSL,
            ROUND_Q8_K,
        ),
        GgmlType::Q6_K => (
            concat!(
                include_str!("quant_int/q6_k_codes.wgsl"),
                include_str!("quant_int/q6_k.wgsl")
            ),
            "u32",
            STAGE_Q8_K_WGSL,
            ROUND_Q8_K,
        ),
        GgmlType::Q8_0 if int_q8_0 => (
            include_str!("quant_int/q8_0.wgsl"),
            "vec4<u32>",
            STAGE_Q8_0_WGSL,
            ROUND_Q8_0,
        ),
        GgmlType::Q4_0 if int_q8_0 => (
            include_str!("quant_int/q4_0.wgsl"),
            "vec4<u32>",
            STAGE_Q8_0_WGSL,
            ROUND_Q8_0,
        ),
        _ => return None,
    };
    Some(IntPath {
        dot,
        wtype,
        stage,
        mode,
    })
}

/// A `const NAME: u32 = Nu;` of a WGSL source.
pub(crate) fn wgsl_const(source: &str, name: &str) -> Option<u32> {
    let at = source.find(&format!("const {name}: u32 = "))?;
    let rest = &source[at..];
    let value = rest.split('=').nth(1)?.trim_start();
    value
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Rewrites every `W[expr]` of a decoder source as `wl(expr)` (the loader that picks the
/// dispatch's weight binding).
fn route_weight_loads(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let mut closers: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let ident_before = i > 0 && {
            let p = bytes[i - 1] as char;
            p.is_ascii_alphanumeric() || p == '_' || p == '.'
        };
        if c == 'W' && !ident_before && bytes.get(i + 1) == Some(&b'[') {
            out.push_str("wl(");
            depth += 1;
            closers.push(depth);
            i += 2;
            continue;
        }
        if c == '[' {
            depth += 1;
        } else if c == ']' {
            if closers.last() == Some(&depth) {
                closers.pop();
                depth -= 1;
                out.push(')');
                i += 1;
                continue;
            }
            depth = depth.saturating_sub(1);
        }
        out.push(c);
        i += 1;
    }
    out
}

/// common.wgsl without its weight binding (the matvec header declares `P` as a
/// per-workgroup private copy of the job's parameters, instead of quant/params.wgsl), loads
/// routed through `wl`.
fn common_helpers() -> String {
    let mut s = COMMON_WGSL.to_string();
    if let (Some(a), Some(b)) = (
        s.find("// (quant/params.wgsl"),
        s.find("// Word index of block"),
    ) {
        s.replace_range(a..b, "");
    }
    route_weight_loads(&s)
}

fn epilogue_id(e: Epilogue) -> u32 {
    match e {
        Epilogue::Store => 0,
        Epilogue::Add => 1,
        Epilogue::ReluSquare => 2,
        Epilogue::Tanh => 3,
        Epilogue::Sigmoid => 4,
        Epilogue::ReluSquareF16 => 5,
        Epilogue::ReluSquareBf16 => 6,
    }
}

/// One matrix of a matvec: `y[y_offset + r] (op)= Σ_c W[r][c] · round(x[x_offset + c])`.
#[derive(Clone)]
pub struct MatvecJob<'a> {
    pub w: &'a GpuMatrix,
    pub x_offset: u32,
    pub y_offset: u32,
    pub epilogue: Epilogue,
    /// Values between consecutive tokens' rows of x and of y, for calls of several tokens
    /// ([`MatvecKernels::prepare_tokens`]; unused by one-token calls).
    pub x_stride: u32,
    pub y_stride: u32,
}

impl<'a> MatvecJob<'a> {
    /// A one-token job.
    pub fn new(w: &'a GpuMatrix, x_offset: u32, y_offset: u32, epilogue: Epilogue) -> Self {
        MatvecJob {
            w,
            x_offset,
            y_offset,
            epilogue,
            x_stride: 0,
            y_stride: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    ty: GgmlType,
    int: bool,
    bindings: u32,
    tpr: u32,
    rpw: u32,
    probe: u32,
    /// The direct kernel (direct.wgsl) and what it reads, instead of the staging ones.
    direct: Option<DirectInput>,
    /// Tokens per call the direct kernel is built for (its accumulators per thread).
    nt: u32,
}

/// Compiled matvec pipelines, created on first use and cached.
pub struct MatvecKernels {
    cache: Mutex<HashMap<Key, Pipeline>>,
    /// The Q8_K quantization kernel (direct.rs).
    quantize: Mutex<Option<Pipeline>>,
    int_q8_0: bool,
    q8k_input: bool,
    direct_f16: bool,
    max_tokens: u32,
    /// The most tokens for F16 matrices of `f16_tall_rows` rows or more.
    f16_tall_tokens: u32,
    f16_tall_rows: usize,
}

/// What a matvec reads: f32 values (rounded as the kernel reads them) or values quantized to
/// 8-bit blocks beforehand.
#[derive(Clone, Copy)]
pub enum MatvecInput<'a> {
    F32(&'a wgpu::Buffer),
    Q8(&'a Q8Input),
}

impl MatvecInput<'_> {
    fn buffer(&self) -> &wgpu::Buffer {
        match self {
            MatvecInput::F32(b) => b,
            MatvecInput::Q8(q) => &q.buffer,
        }
    }

    fn values(&self) -> u64 {
        match self {
            MatvecInput::F32(b) => b.size() / 4,
            MatvecInput::Q8(q) => q.values() as u64,
        }
    }
}

/// `Job` of matvec.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct JobParams {
    rows: u32,
    cols: u32,
    blocks_per_row: u32,
    row_words: u32,
    scale_base: u32,
    wg_start: u32,
    x_offset: u32,
    y_offset: u32,
    epilogue: u32,
    mode: u32,
    binding: u32,
    x_stride: u32,
    y_stride: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct JobsUniform {
    n: u32,
    /// Word offsets of the scales and the sums per 16 values of a [`Q8Input`].
    xq_d: u32,
    xq_bs: u32,
    n_tokens: u32,
    jobs: [JobParams; MAX_JOBS],
}

struct Dispatch {
    pipeline: Pipeline,
    bind_group: wgpu::BindGroup,
    groups: (u32, u32),
    /// Whether the dispatch binds the `also` buffer it was prepared with.
    binds_also: bool,
    _jobs: wgpu::Buffer,
}

impl Dispatch {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, 1);
    }
}

/// Matvec dispatches prepared once for fixed buffers, recorded every step.
pub struct MatvecCall {
    dispatches: Vec<Dispatch>,
}

impl MatvecCall {
    /// Whether every dispatch binds the read-only `also` buffer it was prepared with
    /// (the `also` of `prepare`, `prepare_q8`, `prepare_tokens`): the direct kernel does (binding
    /// `ALSO_READ_BINDING`, never read), so wgpu moves that buffer to the read-only state
    /// at the first dispatch's barrier and a later dispatch that only reads it needs none.
    pub fn binds_also(&self) -> bool {
        self.dispatches.iter().all(|d| d.binds_also)
    }

    /// Records the dispatches into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.record(pass);
        }
    }

    pub fn n_dispatches(&self) -> usize {
        self.dispatches.len()
    }
}

/// Matvec dispatches for steps of 2 to `max_tokens` tokens ([`MatvecKernels::prepare_tokens`]).
pub struct TokensCall {
    /// The dispatches of n tokens at n - 2.
    per_n: Vec<Vec<Dispatch>>,
}

impl TokensCall {
    /// Whether every dispatch binds the `also` buffer it was prepared with
    /// ([`MatvecCall::binds_also`]).
    pub fn binds_also(&self) -> bool {
        self.per_n.iter().flatten().all(|d| d.binds_also)
    }

    /// The most tokens a step can have (at least 1: `n_tokens` of 1 records nothing).
    pub fn max_tokens(&self) -> u32 {
        self.per_n.len() as u32 + 1
    }

    /// Records the dispatches of `n_tokens` tokens (2..=max_tokens) into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        if let Some(ds) = (n_tokens as usize)
            .checked_sub(2)
            .and_then(|i| self.per_n.get(i))
        {
            for d in ds {
                d.record(pass);
            }
        }
    }

    pub fn n_dispatches(&self, n_tokens: u32) -> usize {
        (n_tokens as usize)
            .checked_sub(2)
            .and_then(|i| self.per_n.get(i))
            .map_or(0, Vec::len)
    }
}

/// One part of one job's matrix.
struct PartJob<'a> {
    buffer: &'a wgpu::Buffer,
    ty: GgmlType,
    params: JobParams,
}

impl Default for MatvecKernels {
    fn default() -> Self {
        Self::new()
    }
}

impl MatvecKernels {
    pub fn new() -> Self {
        Self::with_direct_tokens(DIRECT_TOKENS)
    }

    /// The kernels for `ctx`'s device: the direct kernel up to `DIRECT_TOKENS_COOP` tokens
    /// where the device has the tensor-core path, else up to `DIRECT_TOKENS` (either way
    /// unless `DIRECT_TOKENS_ENV` says otherwise).
    pub fn for_context(ctx: &GpuContext) -> Self {
        match ctx.coop_subgroup_size() {
            Some(_) => MatvecKernels {
                f16_tall_tokens: DIRECT_TOKENS_F16_COOP,
                ..Self::with_direct_tokens(DIRECT_TOKENS_COOP)
            },
            None => Self::new(),
        }
    }

    fn with_direct_tokens(direct: u32) -> Self {
        MatvecKernels {
            f16_tall_tokens: DIRECT_TOKENS_F16,
            f16_tall_rows: env_parse(F16_TALL_ROWS_ENV).unwrap_or(F16_TALL_ROWS),
            cache: Mutex::new(HashMap::new()),
            quantize: Mutex::new(None),
            int_q8_0: env_on(INT_Q8_0_ENV),
            q8k_input: env_on(Q8K_INPUT_ENV),
            direct_f16: env_on(DIRECT_F16_ENV),
            max_tokens: env_parse(DIRECT_TOKENS_ENV)
                .unwrap_or(direct)
                .min(MAX_TOKENS),
        }
    }

    /// F16 and BF16 matrices of `rows` rows or more leave the direct kernel after
    /// [`DIRECT_TOKENS_F16_COOP`] tokens on a device with tensor cores ([`F16_TALL_ROWS`]
    /// unless set; [`F16_TALL_ROWS_ENV`], where given, wins). Models whose big matrices are
    /// F16 or BF16 take 0 (every such matrix): on an H200 (2.9B; session 13, run 9), F16 batch
    /// 5 / 6 / 8 707-715 / 839-849 / 1,153-1,166 -> 753-754 / 902-903 / 1,250-1,253 tok/s,
    /// BF16 606-612 / 718-725 / 994-1,005 -> 632-633 / 755-756 / 1,059-1,061; where only the
    /// LoRA matrices are F16 (quantized models) that cost 1-2% (session 12).
    pub fn with_f16_tall_rows(mut self, rows: usize) -> Self {
        self.f16_tall_rows = env_parse(F16_TALL_ROWS_ENV).unwrap_or(rows);
        self
    }

    /// The most tokens of a step callers should give [`MatvecKernels::prepare_tokens`] where
    /// it applies (`DIRECT_TOKENS`, or `DIRECT_TOKENS_COOP` for the kernels of a device
    /// with tensor cores, unless `DIRECT_TOKENS_ENV` says otherwise; 1: none).
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens.max(1)
    }

    /// Whether callers should quantize Q8_K inputs once and use [`MatvecKernels::prepare_q8`]
    /// (default: on unless [`Q8K_INPUT_ENV`] is `0`).
    pub fn q8k_input(&self) -> bool {
        self.q8k_input
    }

    /// Whether Q8_0 and Q4_0 weights with Q8_0 activations take the integer path (default:
    /// on unless the [`INT_Q8_0_ENV`] variable is `0`).
    pub fn with_int_q8_0(mut self, on: bool) -> Self {
        self.int_q8_0 = on;
        self
    }

    /// Whether the kernels can run `w` with activation rounding `mode`.
    pub fn supports(w: &GpuMatrix, mode: u32) -> bool {
        format_wgsl(w.ty).is_some()
            && match mode {
                3 => w.cols.is_multiple_of(32),
                4 => w.cols.is_multiple_of(256),
                m => m <= 2,
            }
    }

    fn pipeline(&self, ctx: &GpuContext, key: Key) -> Result<Pipeline, GpuError> {
        let poisoned = |_| GpuError::InvalidArgument("pipeline cache lock poisoned".into());
        if let Some(p) = self.cache.lock().map_err(poisoned)?.get(&key) {
            return Ok(p.clone());
        }
        let label = format!(
            "matvec {} {} x{} tpr={} rpw={}",
            key.ty,
            if key.direct.is_some() {
                "direct"
            } else if key.int {
                "int"
            } else {
                "float"
            },
            key.bindings,
            key.tpr,
            key.rpw
        );
        let source = compose(&key).ok_or_else(|| GpuError::UnsupportedType {
            name: label.clone(),
            ty: key.ty,
        })?;
        let pipeline = crate::shader::compute_pipeline(&ctx.device, &label, &source, None)?;
        self.cache
            .lock()
            .map_err(poisoned)?
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Prepares the jobs, reading `x` and writing `y` (distinct STORAGE buffers, f32), with
    /// activation rounding `mode` for every job; the direct-kernel dispatches also bind
    /// `also` read-only where given (see [`MatvecCall::binds_also`]).
    pub fn prepare(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        mode: u32,
        jobs: &[MatvecJob],
        also: Option<&wgpu::Buffer>,
    ) -> Result<MatvecCall, GpuError> {
        let dispatches = self.prepare_input(ctx, MatvecInput::F32(x), y, mode, jobs, 1, also)?;
        Ok(MatvecCall { dispatches })
    }

    /// The most tokens of a step callers should give [`MatvecKernels::prepare_tokens`] for
    /// `w`: [`MatvecKernels::max_tokens`], for F32, F16 and BF16 at most [`DIRECT_TOKENS_F16`] (at most
    /// [`DIRECT_TOKENS_F16_COOP`] for matrices of [`F16_TALL_ROWS`] rows or more where the
    /// device has tensor cores).
    pub fn max_tokens_for(&self, w: &GpuMatrix) -> u32 {
        match direct::direct_unit(w.ty) {
            Some((_, DirectInput::F32)) if w.rows >= self.f16_tall_rows => {
                self.max_tokens().min(self.f16_tall_tokens)
            }
            Some((_, DirectInput::F32)) => self.max_tokens().min(DIRECT_TOKENS_F16),
            _ => self.max_tokens(),
        }
    }

    /// Whether the direct kernel reads f32 inputs (rounded with `mode`) for rows of `cols`
    /// values of type `ty` (F32, F16 and BF16, whole vec4s of x per unit); the input offsets must
    /// be whole vec4s too.
    fn direct_f32(&self, ty: GgmlType, mode: u32, cols: usize) -> bool {
        self.direct_f16
            && direct::direct_unit(ty).is_some_and(|(_, i)| i == DirectInput::F32)
            && mode <= 2
            && cols.is_multiple_of(8)
    }

    /// Whether [`MatvecKernels::prepare_tokens`] takes `w` with rounding `mode` (the direct
    /// kernel): the K-quants from a Q8_K [`Q8Input`], the 32-value block types from a Q8_0 one (`q8`:
    /// rounding modes 4 and 3, input offsets of whole blocks of 256), F32, F16 and BF16 from f32
    /// values rounded to f16 or bf16 or not, at an input offset of whole vec4s.
    pub fn supports_tokens(&self, w: &GpuMatrix, q8: bool, mode: u32, x_offset: u32) -> bool {
        if q8 {
            Self::q8_format(w).is_some_and(|f| Some(f) == q8_format_of_mode(mode))
                && x_offset.is_multiple_of(256)
        } else {
            self.direct_f32(w.ty, mode, w.cols) && x_offset.is_multiple_of(4)
        }
    }

    /// Prepares the jobs for steps of 2 to `max_tokens` (at most [`MAX_TOKENS`]) tokens with
    /// the direct kernel, which reads each weight once for all the step's tokens: token t
    /// reads x at `x_offset + t * x_stride` and writes y at `y_offset + t * y_stride`. Every
    /// job must be one [`MatvecKernels::supports_tokens`] takes. The dispatches also bind
    /// `also` read-only where given (see [`MatvecCall::binds_also`]).
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_tokens(
        &self,
        ctx: &GpuContext,
        input: MatvecInput,
        y: &wgpu::Buffer,
        mode: u32,
        jobs: &[MatvecJob],
        max_tokens: u32,
        also: Option<&wgpu::Buffer>,
    ) -> Result<TokensCall, GpuError> {
        let q8 = matches!(input, MatvecInput::Q8(_));
        if let Some(j) = jobs
            .iter()
            .find(|j| !self.supports_tokens(j.w, q8, mode, j.x_offset))
        {
            return Err(GpuError::InvalidArgument(format!(
                "matvec: '{}' ({}, rows of {}) with rounding mode {mode} at input offset {} \
                 has no kernel for several tokens",
                j.w.name, j.w.ty, j.w.cols, j.x_offset
            )));
        }
        let max_tokens = max_tokens.min(MAX_TOKENS);
        let mut per_n = Vec::new();
        for n in 2..=max_tokens {
            per_n.push(self.prepare_input(ctx, input, y, mode, jobs, n, also)?);
        }
        Ok(TokensCall { per_n })
    }

    /// The 8-bit input [`MatvecKernels::prepare_q8`] takes `w` with, if any: Q8_K for Q4_K
    /// and the other K-quants, Q8_0 for the 32-value block types (rows of whole blocks of 256).
    pub fn q8_format(w: &GpuMatrix) -> Option<Q8Format> {
        Q8Format::of(w.ty).filter(|_| w.cols.is_multiple_of(256))
    }

    /// Prepares the jobs (matrices whose [`MatvecKernels::q8_format`] is `xq`'s, inputs at
    /// multiples of 256 values) reading the quantized input `xq` and writing `y`: the same
    /// results as [`MatvecKernels::prepare`] with the matching rounding of the f32 values `xq`
    /// was quantized from. The dispatches also bind `also` read-only where given (see
    /// [`MatvecCall::binds_also`]).
    pub fn prepare_q8(
        &self,
        ctx: &GpuContext,
        xq: &Q8Input,
        y: &wgpu::Buffer,
        jobs: &[MatvecJob],
        also: Option<&wgpu::Buffer>,
    ) -> Result<MatvecCall, GpuError> {
        for job in jobs {
            if Self::q8_format(job.w) != Some(xq.format()) || !job.x_offset.is_multiple_of(256) {
                return Err(GpuError::InvalidArgument(format!(
                    "matvec: '{}' ({}, rows of {}) at input offset {} cannot read a {} input",
                    job.w.name,
                    job.w.ty,
                    job.w.cols,
                    job.x_offset,
                    xq.format().name()
                )));
            }
        }
        let mode = xq.format().rounding_mode();
        let dispatches = self.prepare_input(ctx, MatvecInput::Q8(xq), y, mode, jobs, 1, also)?;
        Ok(MatvecCall { dispatches })
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_input(
        &self,
        ctx: &GpuContext,
        input: MatvecInput,
        y: &wgpu::Buffer,
        mode: u32,
        jobs: &[MatvecJob],
        n_tokens: u32,
        also: Option<&wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let x = input.buffer();
        if x == y {
            return Err(GpuError::InvalidArgument(
                "matvec: y must be a different buffer from x".into(),
            ));
        }
        let x_len = input.values();
        let y_len = y.size() / 4;
        let mut parts: Vec<PartJob> = Vec::new();
        for job in jobs {
            let w = job.w;
            if !Self::supports(w, mode) {
                return Err(GpuError::InvalidArgument(format!(
                    "matvec: '{}' ({}, rows of {}) with rounding mode {mode} is not supported",
                    w.name, w.ty, w.cols
                )));
            }
            let last = n_tokens.max(1) as u64 - 1;
            if job.x_offset as u64 + last * job.x_stride as u64 + w.cols as u64 > x_len
                || job.y_offset as u64 + last * job.y_stride as u64 + w.rows as u64 > y_len
            {
                return Err(GpuError::InvalidArgument(format!(
                    "matvec: '{}' reads or writes past the end of its buffers",
                    w.name
                )));
            }
            for part in &w.parts {
                parts.push(PartJob {
                    buffer: &part.buffer,
                    ty: w.ty,
                    params: JobParams {
                        rows: part.rows as u32,
                        cols: w.cols as u32,
                        blocks_per_row: w.blocks_per_row as u32,
                        row_words: w.row_words as u32,
                        scale_base: part.scale_base as u32,
                        x_offset: job.x_offset,
                        y_offset: job.y_offset + part.row_start as u32,
                        epilogue: epilogue_id(job.epilogue),
                        mode,
                        x_stride: job.x_stride,
                        y_stride: job.y_stride,
                        ..JobParams::default()
                    },
                });
            }
        }
        // Group by (type, row length), in order of first appearance, then fill dispatches.
        let mut groups: Vec<Vec<PartJob>> = Vec::new();
        for p in parts {
            match groups
                .iter_mut()
                .find(|g| g[0].ty == p.ty && g[0].params.cols == p.params.cols)
            {
                Some(g) => g.push(p),
                None => groups.push(vec![p]),
            }
        }
        let mut dispatches = Vec::new();
        for group in groups {
            let mut batch: Vec<PartJob> = Vec::new();
            for p in group {
                let buffers = distinct_buffers(&batch, p.buffer);
                if batch.len() == MAX_JOBS || buffers > MAX_BINDINGS {
                    let batch = std::mem::take(&mut batch);
                    dispatches.push(self.dispatch(ctx, input, y, batch, n_tokens, also)?);
                }
                batch.push(p);
            }
            if !batch.is_empty() {
                dispatches.push(self.dispatch(ctx, input, y, batch, n_tokens, also)?);
            }
        }
        Ok(dispatches)
    }

    fn dispatch(
        &self,
        ctx: &GpuContext,
        input: MatvecInput,
        y: &wgpu::Buffer,
        mut batch: Vec<PartJob>,
        n_tokens: u32,
        also: Option<&wgpu::Buffer>,
    ) -> Result<Dispatch, GpuError> {
        let x = input.buffer();
        let ty = batch[0].ty;
        let cols = batch[0].params.cols;
        let mode = batch[0].params.mode;
        // The direct kernel for 8-bit inputs, and for F32, F16 and BF16 weights whose rows and
        // inputs allow whole vec4 reads of x (rounding none, f16 or bf16).
        let direct = match input {
            MatvecInput::Q8(q) => Some(DirectInput::Q8(q.format())),
            MatvecInput::F32(_)
                if self.direct_f32(ty, mode, cols as usize)
                    && batch.iter().all(|p| p.params.x_offset.is_multiple_of(4)) =>
            {
                Some(DirectInput::F32)
            }
            MatvecInput::F32(_) => None,
        };
        if n_tokens > 1 && direct.is_none() {
            return Err(GpuError::InvalidArgument(format!(
                "matvec: {ty} rows of {cols} with rounding mode {mode} have no kernel for \
                 several tokens"
            )));
        }
        let int_path = int_path(ty, self.int_q8_0).filter(|p| p.mode == mode);
        let int = int_path.is_some();
        let rows: u32 = batch.iter().map(|p| p.params.rows).sum();
        let (tpr, nt) = match direct {
            Some(_) => direct::direct_shape(ty, rows, cols, n_tokens),
            None => (
                staging_threads_per_row(ty, int_path.as_ref(), rows, cols),
                n_tokens.next_power_of_two(),
            ),
        };
        let rpw = 256 / tpr;
        let mut buffers: Vec<&wgpu::Buffer> = Vec::new();
        let mut wg = 0u32;
        for p in &mut batch {
            let b = match buffers.iter().position(|b| *b == p.buffer) {
                Some(b) => b,
                None => {
                    buffers.push(p.buffer);
                    buffers.len() - 1
                }
            };
            p.params.binding = b as u32;
            p.params.wg_start = wg;
            wg += p.params.rows.div_ceil(rpw);
        }
        let key = Key {
            ty,
            int,
            bindings: buffers.len() as u32,
            tpr,
            rpw,
            probe: probe(),
            direct,
            nt,
        };
        let pipeline = self.pipeline(ctx, key)?;
        let (xq_d, xq_bs) = match input {
            MatvecInput::Q8(q) => (q.d_base(), q.bs_base()),
            MatvecInput::F32(_) => (0, 0),
        };
        let mut uniform = JobsUniform {
            n: batch.len() as u32,
            xq_d,
            xq_bs,
            n_tokens,
            jobs: [JobParams::default(); MAX_JOBS],
        };
        for (i, p) in batch.iter().enumerate() {
            uniform.jobs[i] = p.params;
        }
        let jobs = ctx.create_buffer_checked(
            "matvec jobs",
            std::mem::size_of::<JobsUniform>() as u64,
            wgpu::BufferUsages::UNIFORM,
            Some(bytemuck::bytes_of(&uniform)),
        )?;
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: jobs.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: x.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: y.as_entire_binding(),
            },
        ];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: 3 + i as u32,
                resource: b.as_entire_binding(),
            });
        }
        if matches!(direct, Some(DirectInput::Q8(_))) {
            // The quantized input's scales and sums, read as words (input_q8.wgsl's XQS).
            entries.push(wgpu::BindGroupEntry {
                binding: 3 + MAX_BINDINGS as u32,
                resource: x.as_entire_binding(),
            });
        }
        if direct.is_some() {
            // direct.wgsl's ALSO_READ: `also`, or x again.
            entries.push(wgpu::BindGroupEntry {
                binding: ALSO_READ_BINDING,
                resource: also.unwrap_or(x).as_entire_binding(),
            });
        }
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("matvec"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        // The direct kernel runs each workgroup of rows once per group of nt tokens.
        let wg = match direct {
            Some(_) => wg * n_tokens.div_ceil(nt).max(1),
            None => wg,
        };
        let max_dim = ctx.limits.max_compute_workgroups_per_dimension.max(1);
        let gx = wg.clamp(1, max_dim);
        let gy = wg.div_ceil(gx);
        if gy > max_dim {
            return Err(GpuError::InvalidArgument(format!(
                "matvec: {wg} workgroups do not fit the grid"
            )));
        }
        Ok(Dispatch {
            pipeline,
            bind_group,
            groups: (gx, gy),
            binds_also: direct.is_some() && also.is_some(),
            _jobs: jobs,
        })
    }
}

/// Threads per row of the staging kernels: about `units_per_thread` units of work each.
fn staging_threads_per_row(ty: GgmlType, int_path: Option<&IntPath>, rows: u32, cols: u32) -> u32 {
    let unit_values = if let Some(p) = int_path {
        let block = wgsl_const(p.dot, "BLOCK_VALUES").unwrap_or(256);
        (block / wgsl_const(p.dot, "UNITS").unwrap_or(1)).max(1)
    } else {
        let f = format_wgsl(ty).unwrap_or_default();
        let be = wgsl_const(f, "BLOCK_ELEMS").unwrap_or(32);
        (be / wgsl_const(f, "UNITS").unwrap_or(1)).max(1)
    };
    let int = int_path.is_some();
    let tile = if int { TILE_INT } else { TILE_FLOAT };
    let units = cols.min(tile).div_ceil(unit_values);
    let per_thread =
        units_per_thread().unwrap_or_else(|| default_units_per_thread(ty, int, rows, cols));
    units.div_ceil(per_thread).next_power_of_two().clamp(4, 64)
}

/// Units of work a thread takes per row and tile (threads per row follow from it), when the
/// `WEB_RWKV_MATVEC_UNITS` environment variable sets it (for measurements).
fn units_per_thread() -> Option<u32> {
    env_parse("WEB_RWKV_MATVEC_UNITS").filter(|&u: &u32| u > 0)
}

/// Units per thread by the matrix's shape (all jobs of the dispatch together). Each
/// workgroup stages the whole input row, so tall and wide matrices do better with fewer,
/// fuller workgroups (less staging per weight read); near-square ones need the workgroups to
/// keep the memory busy. Measured with `matvec_bench` on an H200 (Vulkan), in each type's
/// own units (Q4_K 64 values, Q6_K 32): 2560x2560 Q4_K best at 5 (12.6 us; 2: 16.9,
/// 10: 19.2), 10240x2560 and 2560x10240 Q4_K at 10 (22.7 and 32.2 us; 5: 26.2 and 37.6),
/// 2560x10240 Q6_K at 20 (51 us; 5: 76), the 65536x2560 Q6_K head at 20 (134 us; 10: 173).
/// The float path was measured on near-square F16 matrices only, where more units lose.
fn default_units_per_thread(ty: GgmlType, int: bool, rows: u32, cols: u32) -> u32 {
    let tall = rows >= 4 * cols;
    let wide = cols >= 4 * rows;
    match (int, tall, wide) {
        (true, true, _) if rows >= 16 * cols => 20,
        (true, _, true) if ty != GgmlType::Q4_K => 20,
        (_, true, _) | (true, _, true) => 10,
        _ => 5,
    }
}

/// Measurement probe (`WEB_RWKV_MATVEC_PROBE`): for the staging kernels 1 (`nostage`)
/// skips the staging of x, 2 (`noacc`) the weight reads and dot products; for the direct
/// kernel 1 (`noinput`) replaces the input's loads by values made from their indices, 2
/// (`onetoken`) multiplies only a step's first token, 3 (`stream`) only reads the weights
/// (every 16 bytes of each row, two loads in flight per thread, no dot products). A
/// benchmark can so time the parts; the results are then wrong. 0 (the default) runs the
/// kernel whole.
fn probe() -> u32 {
    let probe = match std::env::var("WEB_RWKV_MATVEC_PROBE").as_deref() {
        Ok("nostage") | Ok("noinput") => 1,
        Ok("noacc") | Ok("onetoken") => 2,
        Ok("stream") => 3,
        _ => 0,
    };
    if probe != 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!("warning: WEB_RWKV_MATVEC_PROBE is set: matrix-vector results are wrong")
        });
    }
    probe
}

/// Weight buffers a dispatch holding `batch` and then `next` binds.
fn distinct_buffers(batch: &[PartJob], next: &wgpu::Buffer) -> usize {
    let mut seen: Vec<&wgpu::Buffer> = Vec::new();
    for b in batch.iter().map(|p| p.buffer).chain(std::iter::once(next)) {
        if !seen.contains(&b) {
            seen.push(b);
        }
    }
    seen.len()
}

/// The WGSL of the direct matvec kernel as the matvec calls compose it for `rows` rows of
/// `cols` values of type `ty` in `bindings` weight buffers, in steps of `tokens` tokens (for
/// tools that inspect the compiled kernels, e.g. the `pipeline_stats` example).
pub fn direct_kernel_wgsl(
    ty: GgmlType,
    rows: u32,
    cols: u32,
    tokens: u32,
    bindings: u32,
) -> Option<String> {
    let (_, input) = direct::direct_unit(ty)?;
    let (tpr, nt) = direct::direct_shape(ty, rows, cols, tokens);
    compose(&Key {
        ty,
        int: false,
        bindings,
        tpr,
        rpw: 256 / tpr,
        probe: 0,
        direct: Some(input),
        nt,
    })
}

/// Generated header + rounding + path + body.
fn compose(key: &Key) -> Option<String> {
    let (path, wtype) = if key.direct.is_some() {
        (direct::direct_source(key.ty)?, "vec4<u32>")
    } else if key.int {
        let p = int_path(key.ty, true)?;
        (
            format!("{}\n{MATVEC_INT_WGSL}\n{}", p.stage, p.dot),
            p.wtype,
        )
    } else {
        let format = format_wgsl(key.ty)?;
        (
            format!(
                "{}\n{}\n{MATVEC_FLOAT_WGSL}",
                common_helpers(),
                route_weight_loads(format)
            ),
            "u32",
        )
    };
    let mut header = format!(
        "// matvec {:?} (generated by rwkv-gpu matvec.rs)\n\
         const WG_SIZE: u32 = {}u;\n\
         const TPR: u32 = {}u;\n\
         const RPW: u32 = {}u;\n\
         const TILE: u32 = {}u;\n\
         const MAX_JOBS: u32 = {MAX_JOBS}u;\n\
         const PROBE: u32 = {}u;\n\
         const NT: u32 = {}u;\n\
         struct Params {{ rows: u32, cols: u32, blocks_per_row: u32, row_words: u32, scale_base: u32 }}\n\
         var<private> P: Params;\n\
         var<private> ACC: f32;\n\
         var<private> WSEL: u32;\n",
        key,
        key.tpr * key.rpw,
        key.tpr,
        key.rpw,
        if key.int { TILE_INT } else { TILE_FLOAT },
        key.probe,
        key.nt,
    );
    for i in 0..key.bindings {
        header.push_str(&format!(
            "@group(0) @binding({}) var<storage, read> W{i}: array<{wtype}>;\n",
            3 + i
        ));
    }
    header.push_str(&format!(
        "fn wl(i: u32) -> {wtype} {{\n    switch WSEL {{\n"
    ));
    for i in 1..key.bindings {
        header.push_str(&format!("        case {i}u: {{ return W{i}[i]; }}\n"));
    }
    header.push_str("        default: { return W0[i]; }\n    }\n}\n");
    if key.direct.is_some() {
        return Some(format!("{header}\n{path}"));
    }
    Some(format!(
        "{header}\n{MATVEC_JOBS_WGSL}\n{ROUNDING_WGSL}\n{EPILOGUE_WGSL}\n{path}\n{MATVEC_WGSL}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct kernels' layouts are worked out from their WGSL (so they compile on worker
    /// threads), for every type, token count and weight binding count.
    #[test]
    fn direct_kernel_layouts_are_worked_out() {
        // Every type the GPU holds has the direct kernel (its decode path).
        let types: Vec<GgmlType> = GgmlType::ALL
            .into_iter()
            .filter(|&t| crate::weights::GpuFormat::of(t).is_some())
            .collect();
        assert_eq!(types.len(), 13);
        for ty in types {
            let (_, input) = direct::direct_unit(ty).unwrap_or_else(|| panic!("{ty}"));
            for (nt, bindings) in [(1, 1), (4, 3), (16, 4)] {
                let key = Key {
                    ty,
                    int: false,
                    bindings,
                    tpr: 32,
                    rpw: 8,
                    probe: 0,
                    direct: Some(input),
                    nt,
                };
                let source = compose(&key).unwrap();
                let entries = crate::bind_group0_entries(&source, "main");
                assert!(entries.is_some_and(|e| e.len() >= 4), "{key:?}");
            }
        }
    }

    #[test]
    fn weight_loads_are_routed() {
        assert_eq!(
            route_weight_loads("let a = W[b + k]; let h = f(W[P.scale_base + i / 2u]);"),
            "let a = wl(b + k); let h = f(wl(P.scale_base + i / 2u));"
        );
        assert_eq!(route_weight_loads("x[W[i]] + NW[j]"), "x[wl(i)] + NW[j]");
        assert_eq!(route_weight_loads("W[a[i] + 1]"), "wl(a[i] + 1)");
    }

    #[test]
    fn constants_are_read() {
        let f = format_wgsl(GgmlType::Q4_K).unwrap();
        assert_eq!(wgsl_const(f, "BLOCK_ELEMS"), Some(256));
        assert_eq!(wgsl_const(f, "UNITS"), Some(8));
    }
}
