//! The direct matvec kernel (direct.wgsl): every thread reads the input from the caches
//! instead of each workgroup staging (and rounding) it in workgroup memory, so there is no
//! barrier before the final sum, and each row's threads walk consecutive 16-byte units.
//!
//! * K-quants (Q2_K to Q6_K) read their input quantized to Q8_K once per step, Q8_0, Q4_0,
//!   Q5_0, Q4_1 and Q5_1 to Q8_0 (as ggml's CPU backend quantizes activations for them; its
//!   Q8_1 for Q4_1 and Q5_1 is Q8_0's codes and scale with their sum, which those units work
//!   out): a [`Q8Input`] holds an
//!   f32 input's values as such blocks (codes, scales, and for Q8_K sums per 16), written by
//!   [`MatvecKernels::prepare_quantize`]'s dispatch (quantize_q8.wgsl) or by any kernel that
//!   writes the same layout; [`MatvecKernels::prepare_q8`] multiplies by it.
//! * F32, F16 and BF16 weights read the f32 input as it is, rounded to f16 or bf16 as it is
//!   read where ggml rounds it: [`MatvecKernels::prepare`] takes this kernel for them.
//!
//! The results equal those of the staging kernels up to f32 summation order.

use crate::pipeline::Pipeline;

use gguf::GgmlType;

use crate::context::GpuContext;
use crate::error::GpuError;

use super::MatvecKernels;

const DIRECT_WGSL: &str = include_str!("direct.wgsl");
const INPUT_Q8_WGSL: &str = include_str!("input_q8.wgsl");
const INPUT_F32_WGSL: &str = include_str!("input_f32.wgsl");
const QUANTIZE_WGSL: &str = include_str!("quantize_q8.wgsl");
/// The packing of 8-bit codes into [`Q8Input`]'s words, shared with the kernels that write a
/// [`Q8Input`] themselves (the engine's token mix).
pub const Q8_PACK_WGSL: &str = include_str!("q8_pack.wgsl");
/// Q6_K's codes as signed bytes, shared with the staging integer path.
pub(super) const Q6_K_CODES_WGSL: &str = include_str!("../quant_int/q6_k_codes.wgsl");
/// `dot16`, the unit files' packed-byte dot product.
pub(super) const INT_DOT_WGSL: &str = include_str!("int_dot.wgsl");

/// The 8-bit blocks of a [`Q8Input`]: ggml's activation quantization for a weight type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Q8Format {
    /// Q8_K: blocks of 256 with an f32 scale and the sums of the codes per 16 (K-quants).
    K,
    /// Q8_0: blocks of 32 with an f16 scale (Q8_0, Q4_0, Q5_0; Q4_1 and Q5_1 for ggml's Q8_1).
    Zero,
}

impl Q8Format {
    /// ggml's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Q8Format::K => "Q8_K",
            Q8Format::Zero => "Q8_0",
        }
    }

    /// Values per block (per scale).
    pub fn block(self) -> u32 {
        match self {
            Q8Format::K => 256,
            Q8Format::Zero => 32,
        }
    }

    /// The format ggml quantizes activations to for weights of type `ty` that the direct
    /// kernel reads that way.
    pub fn of(ty: GgmlType) -> Option<Q8Format> {
        match direct_unit(ty)?.1 {
            DirectInput::Q8(f) => Some(f),
            DirectInput::F32 => None,
        }
    }
}

/// What the direct kernel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum DirectInput {
    /// A [`Q8Input`] of this format.
    Q8(Q8Format),
    /// f32 values, rounded as read per the job's mode (0 none, 1 f16, 2 bf16).
    F32,
}

/// The units of Q4_K and Q5_K, which share their scales and their dot (k_prep.wgsl).
const Q4_K_UNIT_WGSL: &str = concat!(include_str!("k_prep.wgsl"), "\n", include_str!("q4_k.wgsl"));
const Q5_K_UNIT_WGSL: &str = concat!(include_str!("k_prep.wgsl"), "\n", include_str!("q5_k.wgsl"));
/// Q4_0's unit, whose dot Q5_0 shares (dot_0.wgsl; both read the input by 32-value blocks,
/// x_block.wgsl, as Q4_1 and Q5_1 do).
const Q4_0_UNIT_WGSL: &str = concat!(
    include_str!("x_block.wgsl"),
    "\n",
    include_str!("dot_0.wgsl"),
    "\n",
    include_str!("q4_0.wgsl")
);
/// The units of the types whose blocks are not whole 16-byte units, read by word
/// (word_bits.wgsl, words.wgsl); Q4_1 and Q5_1 share their dot with a min (dot_1.wgsl).
macro_rules! word_unit {
    ($($file:literal),+) => {
        concat!(
            include_str!("../word_bits.wgsl"),
            "\n",
            include_str!("words.wgsl"),
            $("\n", include_str!($file)),+
        )
    };
}
const Q4_1_UNIT_WGSL: &str = word_unit!("x_block.wgsl", "dot_1.wgsl", "q4_1.wgsl");
const Q5_1_UNIT_WGSL: &str = word_unit!("x_block.wgsl", "dot_1.wgsl", "q5_1.wgsl");
const Q5_0_UNIT_WGSL: &str = word_unit!("x_block.wgsl", "dot_0.wgsl", "q5_0.wgsl");
const Q2_K_UNIT_WGSL: &str = word_unit!("q2_k.wgsl");

/// The units of F16 and BF16 rows, which differ only in how a word widens (half_rows.wgsl).
const F16_UNIT_WGSL: &str = concat!(
    include_str!("f16.wgsl"),
    "\n",
    include_str!("half_rows.wgsl")
);
const BF16_UNIT_WGSL: &str = concat!(
    include_str!("bf16.wgsl"),
    "\n",
    include_str!("half_rows.wgsl")
);

/// The unit dot of a weight type for the direct kernel, with the input it reads.
pub(super) fn direct_unit(ty: GgmlType) -> Option<(&'static str, DirectInput)> {
    let (src, input) = match ty {
        GgmlType::Q4_K => (Q4_K_UNIT_WGSL, DirectInput::Q8(Q8Format::K)),
        GgmlType::Q5_K => (Q5_K_UNIT_WGSL, DirectInput::Q8(Q8Format::K)),
        GgmlType::Q6_K => (include_str!("q6_k.wgsl"), DirectInput::Q8(Q8Format::K)),
        GgmlType::Q8_0 => (include_str!("q8_0.wgsl"), DirectInput::Q8(Q8Format::Zero)),
        GgmlType::Q4_0 => (Q4_0_UNIT_WGSL, DirectInput::Q8(Q8Format::Zero)),
        GgmlType::Q4_1 => (Q4_1_UNIT_WGSL, DirectInput::Q8(Q8Format::Zero)),
        GgmlType::Q5_0 => (Q5_0_UNIT_WGSL, DirectInput::Q8(Q8Format::Zero)),
        GgmlType::Q5_1 => (Q5_1_UNIT_WGSL, DirectInput::Q8(Q8Format::Zero)),
        GgmlType::Q2_K => (Q2_K_UNIT_WGSL, DirectInput::Q8(Q8Format::K)),
        GgmlType::Q3_K => (include_str!("q3_k.wgsl"), DirectInput::Q8(Q8Format::K)),
        GgmlType::F32 => (include_str!("f32.wgsl"), DirectInput::F32),
        GgmlType::F16 => (F16_UNIT_WGSL, DirectInput::F32),
        GgmlType::BF16 => (BF16_UNIT_WGSL, DirectInput::F32),
        _ => return None,
    };
    Some((src, input))
}

/// Values per 16-byte unit of weights of type `ty` in the direct kernel.
pub(super) fn unit_values(ty: GgmlType) -> u32 {
    direct_unit(ty)
        .and_then(|(src, _)| super::wgsl_const(src, "UNIT_VALUES"))
        .unwrap_or(32)
}

/// The direct kernel's source for weight type `ty` after the generated header.
pub(super) fn direct_source(ty: GgmlType) -> Option<String> {
    let (unit, input) = direct_unit(ty)?;
    let input = match input {
        DirectInput::Q8(format) => format!(
            "const XQ_BLOCK: u32 = {}u;\n{INPUT_Q8_WGSL}",
            format.block()
        ),
        DirectInput::F32 => INPUT_F32_WGSL.to_string(),
    };
    // The type's helpers (Q6_K's byte codes) go in for every type: unused functions cost
    // nothing.
    Some(format!(
        "{}\n{}\n{}\n{Q6_K_CODES_WGSL}\n{INT_DOT_WGSL}\n{input}\n{unit}\n{DIRECT_WGSL}",
        super::MATVEC_JOBS_WGSL,
        super::ROUNDING_WGSL,
        crate::matmul::EPILOGUE_WGSL
    ))
}

/// An input vector (or several side by side) quantized to 8-bit blocks: `values` values (a
/// multiple of 256) in one buffer of u32 words laid out as quantize_q8.wgsl writes them: the
/// codes (four per word), the blocks' scales (f32; Q8_0's rounded to f16), then for Q8_K the
/// sums of the codes per 16 values.
pub struct Q8Input {
    pub buffer: wgpu::Buffer,
    values: u32,
    format: Q8Format,
}

impl Q8Input {
    /// Room for `values` quantized values (a multiple of 256) of Q8_K.
    pub fn new(ctx: &GpuContext, label: &str, values: u32) -> Result<Q8Input, GpuError> {
        Self::with_format(ctx, label, Q8Format::K, values)
    }

    /// Room for `values` quantized values (a multiple of 256) in `format`.
    pub fn with_format(
        ctx: &GpuContext,
        label: &str,
        format: Q8Format,
        values: u32,
    ) -> Result<Q8Input, GpuError> {
        if values == 0 || !values.is_multiple_of(256) {
            return Err(GpuError::InvalidArgument(format!(
                "8-bit input '{label}': {values} values is not a positive multiple of 256"
            )));
        }
        let words = values / 4 + values / format.block() + values / 16;
        let buffer = ctx.create_buffer_checked(
            label,
            words.next_multiple_of(4) as u64 * 4,
            wgpu::BufferUsages::STORAGE,
            None,
        )?;
        Ok(Q8Input {
            buffer,
            values,
            format,
        })
    }

    pub fn values(&self) -> u32 {
        self.values
    }

    pub fn format(&self) -> Q8Format {
        self.format
    }

    /// Word offset of the block scales (after the codes, four per word).
    pub fn d_base(&self) -> u32 {
        self.values / 4
    }

    /// Word offset of the sums per 16 values (after the scales; Q8_K only).
    pub fn bs_base(&self) -> u32 {
        self.d_base() + self.values / self.format.block()
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QuantizeParams {
    n: u32,
    d_base: u32,
    bs_base: u32,
    seg_len: u32,
    seg_stride: u32,
    row_stride: u32,
    rows_cap: u32,
    format: u32,
}

/// The quantization of an f32 buffer's first values into a [`Q8Input`], prepared once and
/// recorded every step.
pub struct QuantizeCall {
    pipeline: Pipeline,
    bind_group: wgpu::BindGroup,
    /// Blocks per row times segments.
    blocks: u32,
    rows_cap: u32,
    _params: wgpu::Buffer,
}

impl QuantizeCall {
    /// Records the quantization of the first `rows` rows of each segment (at most the
    /// `rows_cap` it was prepared with; 1 for [`MatvecKernels::prepare_quantize`]).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, rows: u32) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.blocks, rows.clamp(1, self.rows_cap), 1);
    }
}

impl MatvecKernels {
    /// Prepares the quantization of `x`'s first `xq.values()` f32 values into `xq`.
    pub fn prepare_quantize(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        xq: &Q8Input,
    ) -> Result<QuantizeCall, GpuError> {
        self.prepare_quantize_segments(ctx, x, xq, xq.values, xq.values, xq.values, 1)
    }

    /// Prepares the quantization into `xq` of rows of `x`: segments `seg_stride` values apart,
    /// each with up to `rows_cap` rows of `seg_len` values `row_stride` apart (all multiples
    /// of 256), row t of segment b stored as row `b * rows_cap + t` of `xq` (`xq` holds
    /// segments x rows_cap x seg_len values). E.g. the first rows of each block of an
    /// activation laid out `[blocks][rows][cols]`: `seg_len` cols, `row_stride` cols,
    /// `seg_stride` rows x cols. A step records how many rows it has.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_quantize_segments(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        xq: &Q8Input,
        seg_len: u32,
        seg_stride: u32,
        row_stride: u32,
        rows_cap: u32,
    ) -> Result<QuantizeCall, GpuError> {
        let per_segment = seg_len as u64 * rows_cap as u64;
        let aligned = seg_len > 0
            && rows_cap > 0
            && [seg_len, seg_stride, row_stride]
                .iter()
                .all(|v| v.is_multiple_of(256))
            && (rows_cap == 1 || row_stride >= seg_len)
            && seg_stride as u64 >= (rows_cap as u64 - 1) * row_stride as u64 + seg_len as u64
            && (xq.values as u64).is_multiple_of(per_segment);
        let segments = xq.values as u64 / per_segment.max(1);
        let end = (segments.max(1) - 1) * seg_stride as u64
            + (rows_cap.max(1) as u64 - 1) * row_stride as u64
            + seg_len as u64;
        if !aligned || end > x.size() / 4 {
            return Err(GpuError::InvalidArgument(format!(
                "8-bit quantization: {} values in rows of {seg_len} ({rows_cap} per segment, \
                 {row_stride} apart; segments {seg_stride} apart) do not fit an input of {} \
                 values in whole blocks",
                xq.values,
                x.size() / 4
            )));
        }
        let pipeline = {
            let mut slot = self
                .quantize
                .lock()
                .map_err(|_| GpuError::InvalidArgument("pipeline lock poisoned".into()))?;
            match &*slot {
                Some(p) => p.clone(),
                None => {
                    let source =
                        format!("{}\n{Q8_PACK_WGSL}\n{QUANTIZE_WGSL}", super::ROUNDING_WGSL);
                    let p =
                        crate::shader::compute_pipeline(&ctx.device, "quantize q8", &source, None)?;
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        let params = QuantizeParams {
            n: xq.values,
            d_base: xq.d_base(),
            bs_base: xq.bs_base(),
            seg_len,
            seg_stride,
            row_stride,
            rows_cap,
            format: match xq.format {
                Q8Format::K => 0,
                Q8Format::Zero => 1,
            },
        };
        let params = ctx.create_buffer_checked(
            "quantize q8 params",
            std::mem::size_of::<QuantizeParams>() as u64,
            wgpu::BufferUsages::UNIFORM,
            Some(bytemuck::bytes_of(&params)),
        )?;
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("quantize q8"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: x.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: xq.buffer.as_entire_binding(),
                },
            ],
        });
        Ok(QuantizeCall {
            pipeline,
            bind_group,
            blocks: (segments * (seg_len as u64 / 256)) as u32,
            rows_cap,
            _params: params,
        })
    }
}

/// Threads per row of the direct kernel for a dispatch of `rows` rows of `cols` values in
/// `units` units of 16 bytes: about four units per thread (two steps of two), and half or a
/// quarter of that for tall matrices, whose many rows keep the memory busy with fewer, longer
/// threads; `WEB_RWKV_MATVEC_TPR` overrides it (for measurements). Measured on an H200
/// (`matvec_bench`, Q4_K/Q6_K, threads per row 8/16/32/64): 2560x2560 best at 32 (8.7 us per
/// dependent call), 10240x2560 at 16 (12.7), 2560x10240 at 64 (11-12; Q6_K 14.6), the
/// 65536x2560 head at 8 (49 us, 2.8 TB/s).
pub(super) fn direct_threads_per_row(rows: u32, cols: u32, units: u32) -> u32 {
    let fixed = crate::env::env_parse::<u32>("WEB_RWKV_MATVEC_TPR")
        .filter(|t| t.is_power_of_two() && (4..=256).contains(t));
    fixed.unwrap_or_else(|| {
        let base = (units / 4).next_power_of_two().clamp(4, 64);
        let tall = if rows >= 16 * cols {
            4
        } else if rows >= 4 * cols {
            2
        } else {
            1
        };
        (base / tall).max(4)
    })
}

/// Threads per row and tokens per workgroup (its accumulators per thread; the grid covers
/// the step's groups of them) of the direct kernel for `rows` rows of `cols` values of type
/// `ty` in steps of `tokens` tokens.
pub(super) fn direct_shape(ty: GgmlType, rows: u32, cols: u32, tokens: u32) -> (u32, u32) {
    let tpr = direct_threads_per_row(rows, cols, cols / unit_values(ty));
    let nt = tokens.next_power_of_two().min(direct_token_group(ty));
    (tpr, nt)
}

/// Tokens per workgroup of the direct kernel for weights of type `ty` in steps of several
/// tokens; a step of more runs one workgroup per group of that many tokens for each
/// workgroup of rows. Measured on an H200 (`matvec_bench`'s matvec_tokens_time, 2560x10240,
/// time per call at 8 / 16 tokens with the weight-side terms prepared once per unit, groups
/// of 4 against all tokens in one workgroup): Q4_K 33.2 / 60.3 us against 35.5 / 63.4, Q6_K
/// 33.5 / 58.6 against 42.4 / 71.2, Q8_0 26.8 / 47.4 against 24.6 / 41.5. In the whole 2.9B
/// Q4_K_M model, batch 8 and 16: 1,124 / 1,348 tok/s with all tokens in one workgroup,
/// 1,200 / 1,381 with Q4_K in groups of 4, 1,173 / 1,344 with Q6_K too (its 65536-row head);
/// Q8_0 1,359 / 1,526 against 1,357 / 1,485 in groups of 4, F16 batch 8 695 against 689. So
/// Q4_K takes groups of 4 and the others all of a step's tokens at once.
/// `WEB_RWKV_DIRECT_GROUP` (a power of two up to 16) sets it for every type, for
/// measurements.
pub(super) fn direct_token_group(ty: GgmlType) -> u32 {
    crate::env::env_parse::<u32>(DIRECT_GROUP_ENV)
        .filter(|g| g.is_power_of_two() && *g <= super::MAX_TOKENS)
        .unwrap_or(match ty {
            GgmlType::Q4_K => 4,
            _ => super::MAX_TOKENS,
        })
}

/// Environment variable overriding [`direct_token_group`].
pub(super) const DIRECT_GROUP_ENV: &str = "WEB_RWKV_DIRECT_GROUP";
