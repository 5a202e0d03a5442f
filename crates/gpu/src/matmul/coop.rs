//! The tensor-core path of the matrix kernels (`matmul_coop*.wgsl`), for devices with wgpu's
//! cooperative matrices (16x16x16, f16 x f16 -> f32): per call the inputs are converted to
//! f16 once, then per slice of weight rows the weights are decoded to an f16 scratch and
//! multiplied. The shaders are composed in the parent module with the other matrix kernels.

use crate::pipeline::Pipeline;
use std::collections::HashMap;

use gguf::GgmlType;

use super::{
    coop_fused_wgsl, format_wgsl, params_buffer, poisoned, split_grid, Epilogue, Kernel,
    MatmulKernels, Params, StackItem, STACK_WEIGHT_BINDINGS,
};
use crate::context::GpuContext;
use crate::error::GpuError;
use crate::weights::{GpuMatrix, MatrixPart, StackedF16};

/// The tensor-core path (`matmul_coop*.wgsl`): the most bytes of f16 weight rows decoded at
/// a time (larger matrices are multiplied in slices of rows, so the scratch stays small).
pub(super) const COOP_SCRATCH_BYTES: u64 = 64 << 20;

/// The tensor-core product's workgroup: `sgr` x `sgc` subgroups, each with 2 x 2
/// accumulators of 16 x 16 (so 32 `sgr` rows x 32 `sgc` tokens per workgroup), `k` columns
/// staged per chunk.
///
/// (Measured on an H200 with the accumulators in arrays, so that their count per subgroup
/// could vary: 4x2, 2x4 and 4x4 per subgroup were no faster than 2x2, and the arrays cost a
/// third of the speed against four named accumulators, so the kernel keeps those and
/// varies the number of subgroups instead.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopShape {
    pub sgr: u32,
    pub sgc: u32,
    pub k: u32,
    /// A timing probe instead of the products (0: none; see [`COOP_PROBE_ENV`]).
    pub probe: u32,
    /// f16 values per staging load and store (4 or 2; the most the inputs' alignment
    /// allows, see `CoopShape::for_input`). Not 8: naga types a cooperative load by the
    /// scalar its pointer points to, so the staged arrays hold f16 vectors, at most 4 wide.
    pub unit: u32,
    /// Workgroups numbered with the token groups varying fastest (1) or the row groups (0).
    pub tokens_first: u32,
    /// Whole tiles of plain sums stored straight from the accumulators (1) or through
    /// workgroup memory (0; see matmul_coop.wgsl and [`COOP_DIRECT_STORE_ENV`]).
    pub direct_store: u32,
}

/// Environment variable for measurements of the tensor-core product's direct stores: `0`
/// turns them off (every tile through workgroup memory), `2` is a timing probe (the tiles
/// they do not take are not written at all: results wrong).
pub const COOP_DIRECT_STORE_ENV: &str = "WEB_RWKV_COOP_DIRECT_STORE";

/// Steps of at most this many tokens take [`CoopShape::for_few_tokens`].
pub(super) const COOP_FEW_TOKENS: u32 = 64;

/// Environment variable turning `CoopShape::for_few_tokens`'s 32-column chunks on (`1`;
/// for measurements).
pub const COOP_FEW_K_ENV: &str = "WEB_RWKV_COOP_FEW_K";

/// Environment variable choosing the tensor-core product's workgroup order (`rows`: row
/// groups vary fastest; `tokens`: token groups; for measurements).
pub const COOP_ORDER_ENV: &str = "WEB_RWKV_COOP_ORDER";

/// Environment variable capping the tensor-core product's staging unit (4 or 2 f16 values
/// per load and store; for measurements).
pub const COOP_UNIT_ENV: &str = "WEB_RWKV_COOP_UNIT";

/// Environment variable making the tensor-core product a timing probe with wrong results
/// (for measurements only): `nostage` (no loads into workgroup memory), `nomma` (no
/// products), `mmaonly` (products of fragments loaded once).
pub const COOP_PROBE_ENV: &str = "WEB_RWKV_COOP_PROBE";

/// Environment variable overriding the tensor-core product's shape, `SGRxSGCxK` (subgroups
/// along rows and tokens, columns per chunk; for measurements, an invalid shape is
/// ignored).
pub const COOP_SHAPE_ENV: &str = "WEB_RWKV_COOP_SHAPE";

impl CoopShape {
    pub const DEFAULT: CoopShape = CoopShape {
        sgr: 2,
        sgc: 2,
        k: 64,
        probe: 0,
        unit: 4,
        tokens_first: 1,
        direct_store: 1,
    };

    /// `SGRxSGCxK`: 1 to 4 subgroups each way, K one of 32, 64, 128.
    pub fn parse(text: &str) -> Option<CoopShape> {
        let v: Vec<u32> = text
            .split('x')
            .map(|p| p.trim().parse().ok())
            .collect::<Option<_>>()?;
        let &[sgr, sgc, k] = v.as_slice() else {
            return None;
        };
        let ok = (1..=4).contains(&sgr) && (1..=4).contains(&sgc) && matches!(k, 32 | 64 | 128);
        ok.then_some(CoopShape {
            sgr,
            sgc,
            k,
            ..CoopShape::DEFAULT
        })
    }

    /// This shape for inputs at `offset` with rows `stride` apart (f16 values): the largest
    /// staging unit, at most this shape's, that divides both.
    pub(super) fn for_input(self, offset: u32, stride: u32) -> CoopShape {
        let mut unit = self.unit;
        while unit > 2 && !(offset.is_multiple_of(unit) && stride.is_multiple_of(unit)) {
            unit /= 2;
        }
        CoopShape { unit, ..self }
    }

    /// The shape for steps of at most [`COOP_FEW_TOKENS`] tokens: this shape, or with
    /// `WEB_RWKV_COOP_FEW_K=1` chunks of 32 columns instead of 64. The 32-column chunks
    /// were 3-5% faster at batch 32-64 (2.9B Q4_K_M on an H200) while the product kept
    /// naga's bounds checks; without them (shader.rs) the 64-column chunks are 9% faster
    /// there, so the narrow chunks are only a knob now.
    pub(super) fn for_few_tokens(self) -> CoopShape {
        let on = std::env::var(COOP_FEW_K_ENV).as_deref() == Ok("1");
        if self.k == 64 && on {
            CoopShape { k: 32, ..self }
        } else {
            self
        }
    }

    /// The WGSL type of a staging unit.
    pub(super) fn unit_wgsl(&self) -> &'static str {
        match self.unit {
            4 => "vec4<f16>",
            _ => "vec2<f16>",
        }
    }

    /// This shape for rows of `cols` values: chunks of 32 columns where `k` does not
    /// divide them and 32 does (the rank-96 LoRA matrices, with the default 64).
    pub(super) fn for_cols(self, cols: usize) -> CoopShape {
        if !cols.is_multiple_of(self.k as usize) && cols.is_multiple_of(32) {
            CoopShape { k: 32, ..self }
        } else {
            self
        }
    }

    pub fn rows(&self) -> u32 {
        32 * self.sgr
    }

    pub fn tokens(&self) -> u32 {
        32 * self.sgc
    }

    pub fn subgroups(&self) -> u32 {
        self.sgr * self.sgc
    }

    /// Workgroup memory: both staged tiles (rows padded by 8 values), the epilogue tiles
    /// and the token count.
    pub fn workgroup_bytes(&self) -> u32 {
        (self.rows() + self.tokens()) * (self.k + 8) * 2 + self.subgroups() * 1024 + 16
    }

    /// Whether both staged tiles split evenly over the threads (subgroups of `subgroup`).
    pub(super) fn splits_evenly(&self, subgroup: u32) -> bool {
        let threads = self.subgroups() * subgroup;
        [self.rows(), self.tokens()]
            .iter()
            .all(|n| (n * self.k / self.unit).is_multiple_of(threads))
    }

    pub(super) fn from_env() -> CoopShape {
        let shape = std::env::var(COOP_SHAPE_ENV)
            .ok()
            .and_then(|v| CoopShape::parse(&v))
            .unwrap_or(CoopShape::DEFAULT);
        let probe = match std::env::var(COOP_PROBE_ENV).as_deref() {
            Ok("nostage") => 1,
            Ok("nomma") => 2,
            Ok("mmaonly") => 3,
            _ => 0,
        };
        let unit = match std::env::var(COOP_UNIT_ENV).as_deref() {
            Ok("2") => 2,
            _ => 4,
        };
        let tokens_first = match std::env::var(COOP_ORDER_ENV).as_deref() {
            Ok("rows") => 0,
            _ => 1,
        };
        let direct_store = match std::env::var(COOP_DIRECT_STORE_ENV).as_deref() {
            Ok("0") => 0,
            Ok("2") => 2,
            _ => 1,
        };
        CoopShape {
            probe,
            unit,
            tokens_first,
            direct_store,
            ..shape
        }
    }
}

/// When the tensor-core product splits its columns into parts (see `matmul_coop.wgsl`): a
/// small grid (a 2560-row matrix at 64 tokens is 40 workgroups of 64 x 64, each walking
/// every column chunk in turn) leaves most of the GPU idle, so a call is split into up to
/// `max_parts` parts (2, 3, 4, 6, 8, 12 or 16) of at least `min_chunks` column chunks each,
/// and a second kernel adds the parts: in steps of up to 256 tokens into the most parts that
/// keep its grid within `target_groups` / 2 times half its token groups, in longer ones when
/// its grid has fewer than `target_groups` workgroups (see `CoopCall::split_for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopSplit {
    pub max_parts: u32,
    pub min_chunks: u32,
    pub target_groups: u32,
}

/// Environment variable asking for resident f16 weights in the tensor-core path (`1`; see
/// [`MatmulKernels::with_coop_f16_weights`]).
pub const COOP_F16_WEIGHTS_ENV: &str = "WEB_RWKV_COOP_F16_WEIGHTS";

/// Environment variable overriding [`CoopSplit`] for measurements: `MAX` or
/// `MAXxTARGET` (most parts, target workgroups; 1 turns splitting off).
pub const COOP_SPLIT_ENV: &str = "WEB_RWKV_COOP_SPLIT";

/// The part counts a split may use (3, 6 and 12 too: on an H200 with 2.9B Q4_K_M, batch 128
/// 7,513-7,543 -> 7,835-7,850 tok/s, its 2560-row products in 6 parts instead of 4).
const SPLIT_PARTS: [u32; 7] = [2, 3, 4, 6, 8, 12, 16];

/// Bytes of the shared partial-sum scratch, at most ([token][part][row] f32 sums).
const COOP_PART_BYTES: u64 = 32 << 20;

impl CoopSplit {
    pub const DEFAULT: CoopSplit = CoopSplit {
        max_parts: 16,
        min_chunks: 4,
        target_groups: 512,
    };

    pub(super) fn from_env() -> CoopSplit {
        std::env::var(COOP_SPLIT_ENV)
            .ok()
            .and_then(|v| CoopSplit::parse(&v))
            .unwrap_or(CoopSplit::DEFAULT)
    }

    /// `MAX` or `MAXxTARGET` (see [`COOP_SPLIT_ENV`]).
    pub fn parse(text: &str) -> Option<CoopSplit> {
        let v: Vec<u32> = text
            .split('x')
            .map(|p| p.trim().parse().ok())
            .collect::<Option<_>>()?;
        let (max_parts, target_groups) = match *v.as_slice() {
            [m] => (m, CoopSplit::DEFAULT.target_groups),
            [m, t] => (m, t),
            _ => return None,
        };
        Some(CoopSplit {
            max_parts,
            target_groups,
            ..CoopSplit::DEFAULT
        })
    }

    /// The part counts worth preparing for `chunks` column chunks: each part keeps at
    /// least `min_chunks` chunks, and none is empty.
    fn candidates(&self, chunks: u32) -> Vec<u32> {
        let mut out: Vec<u32> = SPLIT_PARTS
            .iter()
            .filter(|&&s| s <= self.max_parts)
            .filter_map(|&s| {
                let per_part = chunks.div_ceil(s);
                let parts = chunks.div_ceil(per_part);
                (per_part >= self.min_chunks.max(1) && parts > 1).then_some(parts)
            })
            .collect();
        out.dedup();
        out
    }
}

/// Token count from which the tensor-core path takes a product: every step the direct
/// matvec does not take on such a device (up to [`crate::matvec::DIRECT_TOKENS_COOP`] = 8
/// tokens for the types it reads, [`crate::matvec::DIRECT_TOKENS_F16_COOP`] = 4 for F16),
/// the tiled kernel's range included (on an H200, batch 64 of 2.9B Q4_K_M ran at 1,115
/// tok/s with it and 975 without, though every step then decoded all the weights to f16),
/// and the few-token steps of the types the direct matvec does not read (row kernel
/// before). [`COOP_FROM_ENV`] changes it.
pub(super) const COOP_FROM_TOKENS: u32 = crate::matvec::DIRECT_TOKENS_F16_COOP + 1;
/// The fewest tokens [`MatmulKernels::with_coop_from`] accepts: the product handles any
/// count (tokens past a step's are zeros, never written), one token has the matvecs.
pub(super) const COOP_MIN_TOKENS: u32 = 2;
/// Token count from which matrices shorter than the tiled kernels' minimum (the LoRA
/// products) take the tensor-core path (on an H200 with 2.9B Q4_K_M: from 512 before the
/// products could be split over their columns; from 64 since, batch 256 6,074 -> 6,401
/// tok/s, while from 16 batch 16 lost 2.5%).
pub(super) const COOP_SHORT_FROM_TOKENS: u32 = 64;
/// Steps of at most this many tokens split the tensor-core products by the fit rule of
/// [`CoopCall::split_for`] (longer ones: prompts, whose grids fill the GPU anyway).
pub(super) const COOP_FIT_TOKENS: u32 = 256;
/// Steps of at most this many tokens decode the weights of the types that allow it inside
/// the product ([`Kernel::CoopFused`]), where each weight is multiplied by one or two token
/// groups per step: the f16 copy's write and read (4 bytes per weight) cost more there than
/// decoding in the staging. On an H200 with 2.9B Q4_K_M: batch 32 2,205 -> 3,000 tok/s, 64
/// 4,090 -> 5,507, 128 6,197 -> 7,134, 256 +1%; prompts of 512 tokens -9%.
pub(super) const COOP_FUSED_TOKENS: u32 = 256;
/// Environment variable overriding `COOP_FUSED_TOKENS` (0: never; for measurements).
pub const COOP_FUSED_ENV: &str = "WEB_RWKV_COOP_FUSED";
/// Environment variable overriding `COOP_SHORT_FROM_TOKENS` (for measurements).
pub const COOP_SHORT_FROM_ENV: &str = "WEB_RWKV_COOP_SHORT_FROM";
/// Environment variable overriding `COOP_FROM_TOKENS` (for measurements).
pub const COOP_FROM_ENV: &str = "WEB_RWKV_COOP_FROM";

/// Scratch buffers of the tensor-core path: weight rows (`w16`, at most
/// [`COOP_SCRATCH_BYTES`]) and inputs (`x16`) in f16. Every call's copies go through the same
/// two buffers (the dispatches of a pass run in order, and wgpu puts barriers between a
/// write and the next read); a call needing more than the current buffer gets a larger one,
/// which later calls share.
#[derive(Default)]
pub(super) struct CoopScratch {
    w16: Option<wgpu::Buffer>,
    x16: Option<wgpu::Buffer>,
    /// Partial sums of split products.
    part: Option<wgpu::Buffer>,
    /// Resident f16 copies of quantized weight parts, by the part's buffer.
    resident: HashMap<wgpu::Buffer, wgpu::Buffer>,
}

impl CoopScratch {
    pub(super) fn bytes(&self) -> u64 {
        let scratch = [&self.w16, &self.x16, &self.part];
        scratch
            .iter()
            .flat_map(|b| b.as_ref())
            .map(|b| b.size())
            .sum::<u64>()
            + self.resident.values().map(|b| b.size()).sum::<u64>()
    }
}

/// The tensor-core path for one matrix: the inputs to f16 once, then per slice of rows the
/// weights to f16 and the product.
pub(super) struct CoopCall {
    /// The conversion of this call's inputs to f16 (None: it reads a shared copy).
    convert: Option<Convert>,
    dequant: Pipeline,
    product: Pipeline,
    /// The product for steps of at most [`COOP_FEW_TOKENS`] tokens, if another kernel
    /// (see [`CoopShape::for_few_tokens`]).
    product_few: Option<Pipeline>,
    /// Adds the parts of a split product (with the epilogue).
    sum: Pipeline,
    /// The product decoding the weights as it stages them, for steps of at most
    /// `fused_upto` tokens (slices with a [`Fused`] form).
    fused: Option<Pipeline>,
    fused_upto: u32,
    shape: CoopShape,
    slices: Vec<CoopSlice>,
    split: CoopSplit,
    /// Size of the partial-sum scratch the split bind groups use.
    part_bytes: u64,
}

/// A conversion of inputs to f16 (`matmul_coop_x.wgsl`): `blocks` blocks of up to `rows`
/// tokens of `cols` values.
struct Convert {
    pipeline: Pipeline,
    group: wgpu::BindGroup,
    cols: u32,
    rows: u32,
    blocks: u32,
    _params: wgpu::Buffer,
}

impl Convert {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>, n: u32, bn: u32) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.group, &[]);
        let rows = n.next_multiple_of(bn).min(self.rows);
        // (matmul_coop_x.wgsl: a pair of columns per thread.)
        pass.dispatch_workgroups(self.cols.div_ceil(512), rows, self.blocks);
    }
}

/// An activation's f16 copy that several tensor-core products read (see
/// [`MatmulKernels::prepare_convert`]): token t of a product's input is at `offset + t *
/// stride` (f16 values; both even). The product reads whole token groups, so the buffer
/// holds one group more than the activation ([`MatmulKernels::shared_x16_bytes`]).
#[derive(Clone, Copy)]
pub struct X16Input<'a> {
    pub buf: &'a wgpu::Buffer,
    pub offset: u32,
    pub stride: u32,
}

/// The conversion of a whole activation (`blocks` x `[rows][cols]`) to the f16 copy its
/// products share, recorded once before them ([`MatmulKernels::prepare_convert`]).
pub struct ConvertCall {
    convert: Convert,
    bn: u32,
}

impl ConvertCall {
    /// Records the conversion of the step's `n_tokens` tokens (per block).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        if n_tokens > 0 {
            self.convert.record(pass, n_tokens, self.bn);
        }
    }
}

struct CoopSlice {
    /// The weight decodes into the scratch (none: the product reads resident f16 rows; one
    /// per matrix of a stack).
    decodes: Vec<Decode>,
    product_group: wgpu::BindGroup,
    rows: u32,
    /// The product split over columns, one entry per part count.
    splits: Vec<SplitCall>,
    /// The slice's product reading its quantized rows (see [`CoopCall::fused`]).
    fused: Option<Fused>,
    _params: wgpu::Buffer,
}

/// A slice's product bound to its weight part's blocks instead of the f16 scratch.
struct Fused {
    product_group: wgpu::BindGroup,
    splits: Vec<SplitCall>,
}

/// One weight decode into the f16 scratch, with its decode units (one thread each).
struct Decode {
    group: wgpu::BindGroup,
    units: u32,
    _params: Option<wgpu::Buffer>,
}

/// A slice's product split in `parts` parts: the product into the partial-sum scratch and
/// their sum into the output.
struct SplitCall {
    parts: u32,
    product_group: wgpu::BindGroup,
    sum_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
}

/// What a conversion to f16 reads: `blocks` blocks of `rows` tokens of `cols` values, token t
/// of block b at `x_offset + (b * rows + t) * x_stride`.
struct ConvertAt<'a> {
    x: &'a wgpu::Buffer,
    x_offset: u32,
    x_stride: u32,
    cols: u32,
    rows: u32,
    blocks: u32,
}

/// The buffers and layout of one call's input and output (as [`MatmulKernels::prepare`]
/// takes them), for [`MatmulKernels::prepare_coop`].
pub(super) struct CoopIo<'a> {
    pub(super) x: &'a wgpu::Buffer,
    pub(super) x_offset: u32,
    pub(super) x_stride: u32,
    pub(super) y: &'a wgpu::Buffer,
    pub(super) y_offset: u32,
    pub(super) y_stride: u32,
    pub(super) step_params: &'a wgpu::Buffer,
    pub(super) max_tokens: u32,
    /// A shared f16 copy of the inputs, converted before the call.
    pub(super) x16: Option<X16Input<'a>>,
}

impl MatmulKernels {
    /// The tensor-core path for `w` (see [`CoopCall`]): bind groups over the shared f16
    /// scratch buffers, grown here if this matrix needs more.
    pub(super) fn prepare_coop(
        &self,
        ctx: &GpuContext,
        w: &GpuMatrix,
        io: &CoopIo<'_>,
        epilogue: Epilogue,
        subgroup: u32,
    ) -> Result<CoopCall, GpuError> {
        let cols = w.cols as u32;
        let shape = self.coop_shape.for_cols(w.cols);
        let (bm, bn) = (shape.rows(), shape.tokens());
        let dequant = self.pipeline(ctx, w.ty, Kernel::CoopDequant)?;
        // Per part, f16 rows the product can read whole (the weights themselves for F16, a
        // resident copy if asked for), or None: decoded every call, slice by slice, into the
        // shared scratch.
        let resident = w
            .parts
            .iter()
            .map(|part| self.resident_f16(ctx, w, part, &dequant))
            .collect::<Result<Vec<_>, _>>()?;
        // Weight rows per slice: as many as the scratch holds, in whole workgroups of rows.
        let cap = self.coop_scratch_bytes.min(ctx.max_binding_bytes());
        let slice_rows = ((cap / (2 * w.cols as u64)) as u32 / bm * bm).max(bm);
        let rows_of = |sliced: bool| {
            w.parts
                .iter()
                .zip(&resident)
                .filter(|(_, r)| r.is_none() == sliced)
                .map(|(p, _)| p.rows as u32)
                .max()
                .unwrap_or(0)
        };
        let w16_rows = slice_rows.min(rows_of(true).next_multiple_of(bm));
        let w16_bytes = w16_rows as u64 * w.cols as u64 * 2;
        let x16_bytes = match io.x16 {
            Some(_) => 0,
            None => io.max_tokens.next_multiple_of(bn) as u64 * w.cols as u64 * 2,
        };
        let candidates = self.coop_split.candidates(cols / shape.k);
        let most_rows = w16_rows.max(rows_of(false));
        let part_bytes = part_scratch_bytes(ctx, &candidates, io.max_tokens, most_rows);
        let (w16, x16, part_scratch) = {
            let mut scratch = self.coop_scratch.lock().map_err(poisoned)?;
            let grow = |buf: &mut Option<wgpu::Buffer>, bytes: u64, label: &str| {
                grow_scratch(ctx, buf, bytes, label)
            };
            (
                grow(&mut scratch.w16, w16_bytes, "rwkv-gpu coop weights f16")?,
                grow(&mut scratch.x16, x16_bytes, "rwkv-gpu coop inputs f16")?,
                grow(&mut scratch.part, part_bytes, "rwkv-gpu coop partial sums")?,
            )
        };
        // The inputs in f16: this call's own copy (converted before its products; token t at
        // t * cols), or the shared one.
        let (convert, x16, x16_at) = match (io.x16, x16) {
            (Some(shared), _) => (None, shared.buf.clone(), (shared.offset, shared.stride)),
            (None, Some(own)) => {
                let at = ConvertAt {
                    x: io.x,
                    x_offset: io.x_offset,
                    x_stride: io.x_stride,
                    cols,
                    rows: io.max_tokens.next_multiple_of(bn),
                    blocks: 1,
                };
                let convert =
                    self.convert(ctx, &w.name, &at, &own, io.step_params, io.max_tokens)?;
                (Some(convert), own, (0, cols))
            }
            (None, None) => return Err(GpuError::InvalidArgument("empty matrix".into())),
        };
        let staged = shape.for_input(x16_at.0, x16_at.1);
        // Decoded slices also get the product that decodes as it stages, where it applies.
        let fused = self.fuses(w, staged);
        // One slice of `rows` rows from `first` of `part`, multiplied from `src` (f16 rows
        // from the slice's first; decoded there first if `decode`).
        let slice = |part: &MatrixPart, first: u32, rows: u32, src: &wgpu::Buffer, decode: bool| {
            let slice_params = Params {
                rows,
                cols,
                blocks_per_row: w.blocks_per_row as u32,
                row_words: w.row_words as u32,
                scale_base: part.scale_base as u32,
                row_start: part.row_start as u32 + first,
                in_offset: x16_at.0,
                in_stride: x16_at.1,
                out_offset: io.y_offset,
                out_stride: io.y_stride,
                max_tokens: io.max_tokens,
                first_row: first,
                ..Params::default()
            };
            let params = params_buffer(ctx, &slice_params)?;
            let dequant_group = decode.then(|| {
                self.bind_group(
                    ctx,
                    &w.name,
                    [&part.buffer, &params, io.x, src, io.step_params],
                )
            });
            let units = decode_units(w, rows).ok_or_else(|| too_large(w))?;
            let decodes = dequant_group
                .map(|group| Decode {
                    group,
                    units,
                    _params: None,
                })
                .into_iter()
                .collect();
            let product_group =
                self.bind_group(ctx, &w.name, [src, &params, &x16, io.y, io.step_params]);
            let splits = self.split_calls(
                ctx,
                &w.name,
                &slice_params,
                &candidates,
                [src, &x16, io.y, io.step_params],
                part_scratch.as_ref(),
                None,
            )?;
            let fused = match decode && fused {
                true => {
                    let blocks = &part.buffer;
                    Some(Fused {
                        product_group: self.bind_group(
                            ctx,
                            &w.name,
                            [blocks, &params, &x16, io.y, io.step_params],
                        ),
                        splits: self.split_calls(
                            ctx,
                            &w.name,
                            &slice_params,
                            &candidates,
                            [blocks, &x16, io.y, io.step_params],
                            part_scratch.as_ref(),
                            None,
                        )?,
                    })
                }
                false => None,
            };
            Ok::<_, GpuError>(CoopSlice {
                decodes,
                product_group,
                rows,
                splits,
                fused,
                _params: params,
            })
        };
        let mut slices = Vec::new();
        for (part, resident) in w.parts.iter().zip(&resident) {
            if let Some(src) = resident {
                slices.push(slice(part, 0, part.rows as u32, src, false)?);
                continue;
            }
            let w16 = w16.as_ref().ok_or_else(|| {
                GpuError::InvalidArgument(format!("matrix '{}': no f16 scratch", w.name))
            })?;
            let mut first = 0u32;
            while first < part.rows as u32 {
                let rows = slice_rows.min(part.rows as u32 - first);
                slices.push(slice(part, first, rows, w16, true)?);
                first += rows;
            }
        }
        self.coop_call(
            ctx,
            w.ty,
            convert,
            shape,
            staged,
            slices,
            part_bytes,
            epilogue,
            subgroup,
            fused.then_some(false),
        )
    }

    /// A [`CoopCall`] of prepared slices: the pipelines of weight type `ty`'s decode, the
    /// product for `staged` (its staging unit settled; and for few-token steps), the sum,
    /// and with `fused` the product decoding `ty`'s blocks itself (of a stack if true).
    #[allow(clippy::too_many_arguments)]
    fn coop_call(
        &self,
        ctx: &GpuContext,
        ty: GgmlType,
        convert: Option<Convert>,
        shape: CoopShape,
        staged: CoopShape,
        slices: Vec<CoopSlice>,
        part_bytes: u64,
        epilogue: Epilogue,
        subgroup: u32,
        fused: Option<bool>,
    ) -> Result<CoopCall, GpuError> {
        let f16_key = GgmlType::F16;
        let product = |shape| {
            self.pipeline(
                ctx,
                f16_key,
                Kernel::Coop {
                    epilogue,
                    subgroup,
                    shape,
                },
            )
        };
        // Steps of few tokens take narrower column chunks where that is a different
        // kernel (same tiles, grid and splits: only the chunk width differs).
        let few = staged.for_few_tokens();
        let product_few = if few != staged {
            Some(product(few)?)
        } else {
            None
        };
        let fused = match fused {
            Some(stack) => Some(self.pipeline(
                ctx,
                ty,
                Kernel::CoopFused {
                    epilogue,
                    subgroup,
                    shape: staged,
                    stack,
                },
            )?),
            None => None,
        };
        Ok(CoopCall {
            convert,
            fused,
            fused_upto: coop_fused_wgsl(ty).map_or(0, |f| f.1.min(self.coop_fused_upto)),
            dequant: self.pipeline(ctx, ty, Kernel::CoopDequant)?,
            product: product(staged)?,
            product_few,
            sum: self.pipeline(ctx, f16_key, Kernel::CoopSum { epilogue })?,
            shape,
            slices,
            split: self.coop_split,
            part_bytes,
        })
    }

    /// The tensor-core path for a stack of matrices read from one shared f16 input copy
    /// (`io.x16`) and written to one output, as a single product (see `quant/params.wgsl`'s
    /// stack fields) instead of a product and a sum per matrix. Its f16 rows are `source`'s,
    /// or each matrix decoded every step into its own rows of the f16 scratch. Matrix g
    /// reads input block `x_offset / block` and writes its rows from `y_offset`, with its
    /// own epilogue. None where the stack does not qualify: 2 to 4 matrices reading whole
    /// input blocks; from `source`, every matrix starting at a multiple of the product's row
    /// tile, its width a multiple of its column chunk, the inputs it reads (its width from
    /// its offset) inside the f16 copy; decoded, matrices of one type and shape whose rows
    /// fill whole row tiles, one part each, not F16 weights nor resident copies, all fitting
    /// the scratch.
    pub(super) fn prepare_coop_stacked(
        &self,
        ctx: &GpuContext,
        items: &[StackItem<'_>],
        block: u32,
        io: &CoopIo<'_>,
        subgroup: u32,
        source: Option<&StackedF16>,
    ) -> Result<Option<CoopCall>, GpuError> {
        let (Some(first), Some(shared)) = (items.first(), io.x16) else {
            return Ok(None);
        };
        let w0 = first.w;
        let inputs_fit = (2..=4).contains(&items.len())
            && block > 0
            && items
                .iter()
                .all(|it| it.x_offset.is_multiple_of(block) && it.x_offset / block < 256);
        if !inputs_fit {
            return Ok(None);
        }
        // The product's shape (column chunks dividing every matrix's width); per matrix its
        // first row in the product's rows, its rows written, its width and its first f16
        // element in the product's weights; the product's rows.
        let (shape, layout, stack_rows) = match source {
            Some(s) => {
                let n = items.len();
                let shape = s
                    .cols
                    .iter()
                    .fold(self.coop_shape, |sh, &c| sh.for_cols(c as usize));
                let (bm, bn) = (shape.rows(), shape.tokens());
                let few_k = shape.for_few_tokens().k;
                let ends = s.starts.iter().skip(1).copied().chain([u32::MAX]);
                let x16_elems = shared.buf.size() / 2;
                let last_token = io.max_tokens.next_multiple_of(bn) as u64 - 1;
                let fits = [s.rows.len(), s.cols.len(), s.bases.len(), s.starts.len()] == [n; 4]
                    && s.starts[0] == 0
                    && s.gpu_bytes() <= ctx.max_binding_bytes()
                    && items.iter().enumerate().all(|(g, it)| {
                        let (start, cols) = (s.starts[g], s.cols[g]);
                        start.is_multiple_of(bm)
                            && cols.is_multiple_of(shape.k)
                            && cols.is_multiple_of(few_k)
                            && it.w.rows == s.rows[g] as usize
                            && it.w.cols <= cols as usize
                            // The inputs the product reads for its last token group.
                            && it.x_offset as u64 + last_token * shared.stride as u64
                                + cols as u64
                                <= x16_elems
                    })
                    && s.starts
                        .iter()
                        .zip(&s.rows)
                        .zip(ends)
                        .all(|((&a, &r), b)| a + r <= b);
                if !fits {
                    return Ok(None);
                }
                let layout: Vec<[u32; 4]> = (0..n)
                    .map(|g| [s.starts[g], s.rows[g], s.cols[g], s.bases[g]])
                    .collect();
                (shape, layout, s.product_rows())
            }
            None => {
                let shape = self.coop_shape.for_cols(w0.cols);
                let (rows, cols) = (w0.rows as u32, w0.cols as u32);
                let matrix_bytes = rows as u64 * cols as u64 * 2;
                let offset_alignment =
                    ctx.device.limits().min_storage_buffer_offset_alignment as u64;
                let cap = self.coop_scratch_bytes.min(ctx.max_binding_bytes());
                // Each matrix is decoded into its rows of the scratch, bound from there (its
                // decode writes rows 0.. of its binding), so those rows must start at a
                // binding offset.
                let fits = rows.is_multiple_of(shape.rows())
                    && matrix_bytes.is_multiple_of(offset_alignment)
                    && !dense_f16(w0)
                    && !self.coop_f16_weights
                    && items.len() as u64 * matrix_bytes <= cap
                    && items.iter().all(|it| {
                        it.w.ty == w0.ty
                            && (it.w.rows, it.w.cols) == (w0.rows, w0.cols)
                            && it.w.parts.len() == 1
                    });
                if !fits {
                    return Ok(None);
                }
                let layout = (0..items.len() as u32)
                    .map(|g| [g * rows, rows, cols, g * rows * cols])
                    .collect();
                (shape, layout, items.len() as u32 * rows)
            }
        };
        let cols = layout.iter().map(|l| l[2]).max().unwrap_or(0);
        let candidates = self.coop_split.candidates(cols / shape.k);
        let part_bytes = part_scratch_bytes(ctx, &candidates, io.max_tokens, stack_rows);
        let decoded_bytes = match source {
            Some(_) => 0,
            None => stack_rows as u64 * cols as u64 * 2,
        };
        let (w16, part_scratch) = {
            let mut scratch = self.coop_scratch.lock().map_err(poisoned)?;
            let grow = |buf: &mut Option<wgpu::Buffer>, bytes: u64, label: &str| {
                grow_scratch(ctx, buf, bytes, label)
            };
            (
                grow(&mut scratch.w16, decoded_bytes, "rwkv-gpu coop weights f16")?,
                grow(&mut scratch.part, part_bytes, "rwkv-gpu coop partial sums")?,
            )
        };
        let (src, decodes) = match (source, w16) {
            (Some(s), _) => (s.buffer.clone(), Vec::new()),
            (None, Some(w16)) => {
                let decodes = items
                    .iter()
                    .zip(&layout)
                    .map(|(it, l)| self.stack_decode(ctx, it.w, &w16, l[0], io))
                    .collect::<Result<Vec<_>, _>>()?;
                (w16, decodes)
            }
            (None, None) => return Ok(None),
        };
        let mut stack_ends = [u32::MAX; 4];
        let (mut stack_shift, mut stack_rows_of) = ([0u32; 4], [0u32; 4]);
        let (mut stack_cols, mut stack_base) = ([0u32; 4], [0u32; 4]);
        let mut stack_in = 0u32;
        let mut stack_epilogues = 0u32;
        for (g, (it, &[start, rows, cols, base])) in items.iter().zip(&layout).enumerate() {
            if let Some(next) = layout.get(g + 1) {
                stack_ends[g] = next[0];
            }
            stack_shift[g] = it.y_offset.wrapping_sub(start);
            (stack_rows_of[g], stack_cols[g], stack_base[g]) = (rows, cols, base);
            stack_in |= (it.x_offset / block) << (8 * g);
            stack_epilogues |= it.epilogue.id() << (4 * g);
        }
        let product_params = Params {
            rows: stack_rows,
            cols,
            // (Read by the product that decodes as it stages: the matrices share both.)
            blocks_per_row: w0.blocks_per_row as u32,
            row_words: w0.row_words as u32,
            scale_base: w0.parts[0].scale_base as u32,
            in_offset: 0,
            in_stride: shared.stride,
            out_stride: io.y_stride,
            max_tokens: io.max_tokens,
            stack_in,
            stack_block: block,
            stack_epilogues,
            stack_ends,
            stack_shift,
            stack_rows: stack_rows_of,
            stack_cols,
            stack_base,
            ..Params::default()
        };
        let params = params_buffer(ctx, &product_params)?;
        let x16 = shared.buf;
        let label = &w0.name;
        let product_group = self.bind_group(ctx, label, [&src, &params, x16, io.y, io.step_params]);
        let splits = self.split_calls(
            ctx,
            label,
            &product_params,
            &candidates,
            [&src, x16, io.y, io.step_params],
            part_scratch.as_ref(),
            None,
        )?;
        // Every matrix's input offset must allow the staging unit.
        let staged = items
            .iter()
            .fold(shape, |s, it| s.for_input(it.x_offset, shared.stride));
        // A decoded stack also gets the product that decodes as it stages, each matrix's
        // blocks in their own binding, where it applies.
        let fused = source.is_none()
            && self.fuses(w0, staged)
            && items.len() <= 1 + STACK_WEIGHT_BINDINGS.len();
        let fused = match fused {
            true => {
                let blocks: Vec<&wgpu::Buffer> =
                    items.iter().map(|it| &it.w.parts[0].buffer).collect();
                let (first, others) = (blocks[0], &blocks[1..]);
                Some(Fused {
                    product_group: self.bind_stack(
                        ctx,
                        label,
                        [first, &params, x16, io.y, io.step_params],
                        others,
                    ),
                    splits: self.split_calls(
                        ctx,
                        label,
                        &product_params,
                        &candidates,
                        [first, x16, io.y, io.step_params],
                        part_scratch.as_ref(),
                        Some(others),
                    )?,
                })
            }
            false => None,
        };
        let stack_fused = fused.is_some().then_some(true);
        let slices = vec![CoopSlice {
            decodes,
            product_group,
            rows: stack_rows,
            splits,
            fused,
            _params: params,
        }];
        // (The stack's grid is split by the same target as one matrix's: scaling the target
        // with the stack split 512-token prompts and lost 1-2% there and at 256 sequences.)
        // The epilogues are the stack's own (the pipeline's is not used).
        self.coop_call(
            ctx,
            w0.ty,
            None,
            shape,
            staged,
            slices,
            part_bytes,
            Epilogue::Store,
            subgroup,
            stack_fused,
        )
        .map(Some)
    }

    /// Whether the product of `w` with tiles `staged` can decode `w`'s blocks as it stages
    /// them ([`Kernel::CoopFused`]): a type that has such a decoder, the decode not turned
    /// off, and tiles that suit it (whole 64-value groups per chunk, f16 quads, rows of whole
    /// 16-byte aligned blocks, or of words for the decoders that read words).
    fn fuses(&self, w: &GpuMatrix, staged: CoopShape) -> bool {
        self.coop_fused_upto > 0
            && coop_fused_wgsl(w.ty).is_some()
            && staged.unit == 4
            && staged.k.is_multiple_of(64)
            && (w.row_words.is_multiple_of(4) || reads_words(w.ty))
            && whole_blocks(w)
    }

    /// The decode of matrix `w` of a stack into its rows of the f16 scratch `w16`, from row
    /// `start` (bound from there: its decode writes rows 0.. of its binding).
    fn stack_decode(
        &self,
        ctx: &GpuContext,
        w: &GpuMatrix,
        w16: &wgpu::Buffer,
        start: u32,
        io: &CoopIo<'_>,
    ) -> Result<Decode, GpuError> {
        let part = &w.parts[0];
        let (rows, cols) = (w.rows as u32, w.cols as u32);
        let matrix_bytes = rows as u64 * cols as u64 * 2;
        let params = params_buffer(ctx, &decode_params(w, part))?;
        let target = wgpu::BufferBinding {
            buffer: w16,
            offset: start as u64 * cols as u64 * 2,
            size: wgpu::BufferSize::new(matrix_bytes),
        };
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&w.name),
            layout: &self.layout,
            entries: &[
                super::entry(0, &part.buffer),
                super::entry(1, &params),
                super::entry(2, io.x),
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: wgpu::BindingResource::Buffer(target),
                },
                super::entry(4, io.step_params),
            ],
        });
        let units = decode_units(w, rows).ok_or_else(|| too_large(w))?;
        Ok(Decode {
            group,
            units,
            _params: Some(params),
        })
    }

    /// The split forms of a product with parameters `base`, one per part count of
    /// `candidates`: the product into the partial sums `part_buf` and their sum into `y`
    /// (`[src, x16, y, step]`: its f16 weights, f16 inputs, output and step parameters).
    #[allow(clippy::too_many_arguments)]
    fn split_calls(
        &self,
        ctx: &GpuContext,
        label: &str,
        base: &Params,
        candidates: &[u32],
        [src, x16, y, step]: [&wgpu::Buffer; 4],
        part_buf: Option<&wgpu::Buffer>,
        stack: Option<&[&wgpu::Buffer]>,
    ) -> Result<Vec<SplitCall>, GpuError> {
        let Some(part_buf) = part_buf else {
            return Ok(Vec::new());
        };
        candidates
            .iter()
            .map(|&parts| {
                let params = params_buffer(
                    ctx,
                    &Params {
                        k_split: parts,
                        ..*base
                    },
                )?;
                let product = [src, &params, x16, part_buf, step];
                let product_group = match stack {
                    Some(others) => self.bind_stack(ctx, label, product, others),
                    None => self.bind_group(ctx, label, product),
                };
                Ok(SplitCall {
                    parts,
                    product_group,
                    // Binding 0 is unused by the sum.
                    sum_group: self.bind_group(ctx, label, [src, &params, part_buf, y, step]),
                    _params: params,
                })
            })
            .collect()
    }

    /// A conversion to f16 into `x16` of the inputs `at` describes.
    fn convert(
        &self,
        ctx: &GpuContext,
        label: &str,
        at: &ConvertAt<'_>,
        x16: &wgpu::Buffer,
        step_params: &wgpu::Buffer,
        max_tokens: u32,
    ) -> Result<Convert, GpuError> {
        // matmul_coop_x.wgsl converts pairs of columns.
        if !at.cols.is_multiple_of(2) {
            return Err(GpuError::InvalidArgument(format!(
                "{label}: f16 copy of rows of {} values (an odd count)",
                at.cols
            )));
        }
        let params = params_buffer(
            ctx,
            &Params {
                cols: at.cols,
                rows: at.rows,
                in_offset: at.x_offset,
                in_stride: at.x_stride,
                max_tokens,
                ..Params::default()
            },
        )?;
        // Binding 0 is unused by the conversion; any storage buffer fills it.
        let group = self.bind_group(ctx, label, [step_params, &params, at.x, x16, step_params]);
        Ok(Convert {
            pipeline: self.pipeline(ctx, GgmlType::F16, Kernel::CoopX)?,
            group,
            cols: at.cols,
            rows: at.rows,
            blocks: at.blocks,
            _params: params,
        })
    }

    /// Bytes of the shared f16 copy of an activation of `blocks` blocks of `[rows][cols]`
    /// values ([`MatmulKernels::prepare_convert`]): one token group more than the
    /// activation, for the last group of its last block to read.
    pub fn shared_x16_bytes(&self, blocks: u32, rows: u32, cols: u32) -> u64 {
        (blocks as u64 * rows as u64 + self.coop_shape.tokens() as u64) * cols as u64 * 2
    }

    /// The conversion of a whole activation, `blocks` blocks of `[rows][cols]` f32 values in
    /// `x`, to f16 in `x16` (same layout), for the tensor-core products that read it
    /// ([`X16Input`], [`MatmulKernels::prepare_shared`]) to share: recorded once before them,
    /// in steps where they take the tensor-core path (`step_params` holds the step's token
    /// count, as for [`MatmulKernels::prepare`]). None on a device without that path.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_convert(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        x16: &wgpu::Buffer,
        blocks: u32,
        rows: u32,
        cols: u32,
        step_params: &wgpu::Buffer,
    ) -> Result<Option<ConvertCall>, GpuError> {
        if ctx.coop_subgroup_size().is_none() {
            return Ok(None);
        }
        let values = blocks as u64 * rows as u64 * cols as u64;
        if values == 0
            || !cols.is_multiple_of(2)
            || x.size() < values * 4
            || x16.size() < self.shared_x16_bytes(blocks, rows, cols)
        {
            return Err(GpuError::InvalidArgument(format!(
                "f16 copy of {blocks} x {rows} x {cols} values: buffers of {} and {} bytes",
                x.size(),
                x16.size()
            )));
        }
        let at = ConvertAt {
            x,
            x_offset: 0,
            x_stride: cols,
            cols,
            rows,
            blocks,
        };
        let convert = self.convert(
            ctx,
            "rwkv-gpu shared f16 inputs",
            &at,
            x16,
            step_params,
            rows,
        )?;
        Ok(Some(ConvertCall {
            convert,
            bn: self.coop_shape.tokens(),
        }))
    }

    /// The f16 rows of `part` the product can read as they are: F16 weights themselves
    /// (their rows are whole blocks, so they are dense), or with f16 weights asked for
    /// ([`MatmulKernels::with_coop_f16_weights`]) a copy decoded now, once per part and
    /// shared by every call on it. None where the copy would not fit one binding.
    fn resident_f16(
        &self,
        ctx: &GpuContext,
        w: &GpuMatrix,
        part: &MatrixPart,
        dequant: &wgpu::ComputePipeline,
    ) -> Result<Option<wgpu::Buffer>, GpuError> {
        if dense_f16(w) {
            return Ok(Some(part.buffer.clone()));
        }
        let bytes = part.rows as u64 * w.cols as u64 * 2;
        if !self.coop_f16_weights || bytes > ctx.max_binding_bytes() {
            return Ok(None);
        }
        let mut scratch = self.coop_scratch.lock().map_err(poisoned)?;
        if let Some(b) = scratch.resident.get(&part.buffer) {
            return Ok(Some(b.clone()));
        }
        let Some(units) = decode_units(w, part.rows as u32) else {
            return Ok(None);
        };
        let copy = ctx.create_buffer_checked(
            "rwkv-gpu coop resident weights f16",
            bytes.next_multiple_of(16),
            wgpu::BufferUsages::STORAGE,
            None,
        )?;
        let params = params_buffer(ctx, &decode_params(w, part))?;
        // Bindings 2 and 4 are unused by the decode; the weights fill them.
        let b = &part.buffer;
        let group = self.bind_group(ctx, &w.name, [b, &params, b, &copy, b]);
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("rwkv-gpu coop resident weights"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rwkv-gpu coop resident weights"),
                timestamp_writes: None,
            });
            pass.set_pipeline(dequant);
            pass.set_bind_group(0, &group, &[]);
            let max = ctx.limits.max_compute_workgroups_per_dimension.max(1);
            let (x, y) = split_grid(units.div_ceil(256), max);
            pass.dispatch_workgroups(x, y, 1);
        }
        // Queue order puts the decode before every later submission.
        ctx.queue.submit([enc.finish()]);
        scratch.resident.insert(part.buffer.clone(), copy.clone());
        Ok(Some(copy))
    }
}

/// The fit rule of [`CoopCall::split_for`]: of the part counts `parts`, the most that keep a
/// grid of `groups` workgroups (`token_groups` of them along the tokens) within half the
/// `target` times half its token groups (at least one half); None if none does.
fn fit_parts(
    parts: impl IntoIterator<Item = u32>,
    groups: u32,
    token_groups: u32,
    target: u32,
) -> Option<u32> {
    let cap = (target / 2).max(1) as u64 * (token_groups / 2).max(1) as u64;
    parts
        .into_iter()
        .filter(|&p| groups as u64 * p as u64 <= cap)
        .max()
}

/// Whether `w`'s rows are whole blocks of its format, without padding (what the tensor-core
/// weight decode writes out as one run per workgroup).
pub(super) fn whole_blocks(w: &GpuMatrix) -> bool {
    format_wgsl(w.ty)
        .and_then(|f| crate::matvec::wgsl_const(f, "BLOCK_ELEMS"))
        .is_some_and(|b| w.blocks_per_row * b as usize == w.cols)
}

/// Whether the staging decoder of type `ty` reads its blocks by word (their rows need not
/// be whole vec4s: matmul_coop_words.wgsl).
fn reads_words(ty: GgmlType) -> bool {
    coop_fused_wgsl(ty).is_some_and(|(src, _)| src.contains("fn wq_words4"))
}

/// Whether `w`'s rows are plain f16 values the product can read as they are.
fn dense_f16(w: &GpuMatrix) -> bool {
    w.ty == GgmlType::F16 && w.row_words * 2 == w.cols
}

/// Threads of the weight decode (`matmul_coop_dequant.wgsl`, one per decode unit) for `rows`
/// rows of `w`; None past what a u32 counts.
fn decode_units(w: &GpuMatrix, rows: u32) -> Option<u32> {
    let per_block = format_wgsl(w.ty)
        .and_then(|f| crate::matvec::wgsl_const(f, "UNITS"))
        .unwrap_or(1);
    u32::try_from(rows as u64 * w.blocks_per_row as u64 * per_block as u64).ok()
}

/// The parameters of the weight decode (`matmul_coop_dequant.wgsl`) of all of `part`'s rows
/// of `w`, from its first.
fn decode_params(w: &GpuMatrix, part: &MatrixPart) -> Params {
    Params {
        rows: part.rows as u32,
        cols: w.cols as u32,
        blocks_per_row: w.blocks_per_row as u32,
        row_words: w.row_words as u32,
        scale_base: part.scale_base as u32,
        ..Params::default()
    }
}

fn too_large(w: &GpuMatrix) -> GpuError {
    GpuError::InvalidArgument(format!("matrix '{}' is too large", w.name))
}

/// `buf`, replaced by a larger buffer if it holds fewer than `bytes` (None for 0 bytes).
fn grow_scratch(
    ctx: &GpuContext,
    buf: &mut Option<wgpu::Buffer>,
    bytes: u64,
    label: &str,
) -> Result<Option<wgpu::Buffer>, GpuError> {
    match buf {
        Some(b) if b.size() >= bytes => Ok(Some(b.clone())),
        _ if bytes == 0 => Ok(None),
        _ => {
            let b = ctx.create_buffer_checked(
                label,
                bytes.next_multiple_of(16),
                wgpu::BufferUsages::STORAGE,
                None,
            )?;
            *buf = Some(b.clone());
            Ok(Some(b))
        }
    }
}

/// Bytes of partial sums a product of `rows` rows may need: its most parts for `max_tokens`
/// tokens, within the scratch's cap (splits are chosen for small grids only, so their
/// partial sums stay small).
fn part_scratch_bytes(ctx: &GpuContext, candidates: &[u32], max_tokens: u32, rows: u32) -> u64 {
    match candidates.last() {
        Some(&most) => (most as u64 * max_tokens as u64 * rows as u64 * 4)
            .min(COOP_PART_BYTES)
            .min(ctx.max_binding_bytes()),
        None => 0,
    }
}

impl CoopCall {
    pub(super) fn record(&self, pass: &mut wgpu::ComputePass<'_>, n: u32, max_groups: u32) {
        let (bm, bn) = (self.shape.rows(), self.shape.tokens());
        let token_groups = n.div_ceil(bn);
        if let Some(convert) = &self.convert {
            convert.record(pass, n, bn);
        }
        for slice in &self.slices {
            let group = match self.fused_for(slice, n) {
                Some((pipeline, fused)) => {
                    pass.set_pipeline(pipeline);
                    &fused.product_group
                }
                None => {
                    for decode in &slice.decodes {
                        pass.set_pipeline(&self.dequant);
                        pass.set_bind_group(0, &decode.group, &[]);
                        let (x, y) = split_grid(decode.units.div_ceil(256), max_groups);
                        pass.dispatch_workgroups(x, y, 1);
                    }
                    match &self.product_few {
                        Some(few) if n <= COOP_FEW_TOKENS => pass.set_pipeline(few),
                        _ => pass.set_pipeline(&self.product),
                    }
                    &slice.product_group
                }
            };
            let (x, y) = split_grid(slice.rows.div_ceil(bm), max_groups);
            match self.split_for(slice, n, max_groups) {
                Some(split) => {
                    pass.set_bind_group(0, &split.product_group, &[]);
                    pass.dispatch_workgroups(x, y, token_groups * split.parts);
                    pass.set_pipeline(&self.sum);
                    pass.set_bind_group(0, &split.sum_group, &[]);
                    pass.dispatch_workgroups(slice.rows.div_ceil(256), n, 1);
                }
                None => {
                    pass.set_bind_group(0, group, &[]);
                    pass.dispatch_workgroups(x, y, token_groups);
                }
            }
        }
    }

    /// The fused product and `slice`'s bindings for it, where a step of `n` tokens takes it.
    fn fused_for<'a>(
        &'a self,
        slice: &'a CoopSlice,
        n: u32,
    ) -> Option<(&'a wgpu::ComputePipeline, &'a Fused)> {
        match (&self.fused, &slice.fused) {
            (Some(p), Some(f)) if n <= self.fused_upto => Some((p, f)),
            _ => None,
        }
    }

    /// The split of `slice`'s product (the fused one where the step takes it) for `n`
    /// tokens, if its grid is small: the most parts that keep the grid within the target,
    /// the grid dimensions and the scratch (rounded up to the next part count allowed).
    /// In steps of at most [`COOP_FIT_TOKENS`] tokens a product takes the most parts whose
    /// whole grid stays within half the target times half its token groups (at least one
    /// half), none if two parts do not fit: two workgroups per SM of an H100/H200 (132 SMs)
    /// for up to three token groups, four for four. On an H200 with 2.9B Q4_K_M (products
    /// decoding as they stage), against the earlier rule (for those, a quarter of the target
    /// for one token group, the whole target for more, the parts rounded up): batch 24 / 32
    /// / 64 2,633-2,641 / 3,389-3,401 / 6,212-6,224 -> 2,750-2,781 / 3,568-3,581 /
    /// 6,563-6,618 tok/s (grids of at most 132 or 396 workgroups: -9-12%); batch 96 / 128 /
    /// 192 / 256 6,152-6,185 / 7,795-7,813 / 8,748-8,811 / 9,133-9,191 -> 6,428-6,527 /
    /// 8,080-8,153 / 9,005-9,024 with 264 workgroups, and 9,637-9,643 at 256 with 528 (264
    /// there: 8,813-8,840). 2.9B F16 (f16 rows, the whole target before): batch 16 / 32 /
    /// 64 / 128 / 256 1,677-1,684 / 3,196-3,206 / 5,896-5,912 / 8,443-8,454 /
    /// 10,395-10,451 -> 1,874-1,885 / 3,664-3,672 / 6,658-6,675 / 8,883-8,953 /
    /// 10,911-11,017.
    fn split_for<'a>(
        &'a self,
        slice: &'a CoopSlice,
        n: u32,
        max_groups: u32,
    ) -> Option<&'a SplitCall> {
        let rows = slice.rows;
        let groups = rows.div_ceil(self.shape.rows()) * n.div_ceil(self.shape.tokens());
        let target = self.split.target_groups;
        if n > max_groups {
            return None;
        }
        let fits = |s: &&SplitCall| {
            s.parts as u64 * n as u64 * rows as u64 * 4 <= self.part_bytes
                && n.div_ceil(self.shape.tokens()) * s.parts <= max_groups
        };
        let splits = match self.fused_for(slice, n) {
            Some((_, fused)) => &fused.splits,
            None => &slice.splits,
        };
        if n <= COOP_FIT_TOKENS {
            let fitting = splits.iter().filter(fits).map(|s| s.parts);
            let parts = fit_parts(fitting, groups, n.div_ceil(self.shape.tokens()), target)?;
            return splits.iter().find(|s| s.parts == parts);
        }
        if groups >= target {
            return None;
        }
        let want = target.div_ceil(groups);
        let mut fitting = splits.iter().filter(fits);
        let first = fitting.next()?;
        Some(fitting.fold(first, |best, s| if s.parts <= want { s } else { best }))
    }

    pub(super) fn n_dispatches(&self, n: u32, max_groups: u32) -> usize {
        let split = |s: &CoopSlice| self.split_for(s, n, max_groups).is_some() as usize;
        let decode = |s: &CoopSlice| match self.fused_for(s, n) {
            Some(_) => 0,
            None => s.decodes.len(),
        };
        let convert = self.convert.is_some() as usize;
        convert
            + self
                .slices
                .iter()
                .map(|s| 1 + decode(s) + split(s))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coop_splits_parse_and_keep_whole_parts() {
        let s = CoopSplit::parse("8x256").unwrap();
        assert_eq!((s.max_parts, s.target_groups), (8, 256));
        assert_eq!(CoopSplit::parse("4").unwrap().target_groups, 512);
        for bad in ["", "x", "8x", "8x256x1", "a"] {
            assert_eq!(CoopSplit::parse(bad), None, "{bad}");
        }
        let d = CoopSplit::DEFAULT;
        // 2560 columns in chunks of 64: 40 chunks, 4 or more per part (12 parts of 4 chunks
        // would leave the last ones empty: 10).
        assert_eq!(d.candidates(40), vec![2, 3, 4, 6, 8, 10]);
        // 160 chunks (10240 columns): every count.
        assert_eq!(d.candidates(160), vec![2, 3, 4, 6, 8, 12, 16]);
        // 10 chunks in 4 parts would be 3 + 3 + 3 + 1: fewer chunks than the minimum.
        assert_eq!(d.candidates(10), vec![2, 3]);
        assert!(d.candidates(6).is_empty());
        // With one chunk per part allowed, 6 chunks in "8" parts are 6 parts of one.
        let all = CoopSplit { min_chunks: 1, ..d };
        assert_eq!(all.candidates(6), vec![2, 3, 6]);
        assert!(CoopSplit { max_parts: 1, ..d }.candidates(160).is_empty());
    }

    #[test]
    fn small_steps_take_the_most_parts_that_fit() {
        let parts = [2, 3, 4, 6, 8, 10];
        // One token group (batch 64) of a 2560-row product, 40 workgroups: 6 parts (240 of
        // 256); the r/k/v stack (120): 2; a 10240-row product (160): none.
        assert_eq!(fit_parts(parts, 40, 1, 512), Some(6));
        assert_eq!(fit_parts(parts, 120, 1, 512), Some(2));
        assert_eq!(fit_parts(parts, 160, 1, 512), None);
        // Two and three token groups keep the cap of one; four double it.
        assert_eq!(fit_parts(parts, 80, 2, 512), Some(3));
        assert_eq!(fit_parts(parts, 120, 3, 512), Some(2));
        assert_eq!(fit_parts(parts, 160, 4, 512), Some(3));
        // A tiny matrix takes the most parts allowed; none offered, none taken.
        assert_eq!(fit_parts(parts, 5, 1, 512), Some(10));
        assert_eq!(fit_parts([], 5, 1, 512), None);
        assert_eq!(fit_parts(parts, u32::MAX, 4, u32::MAX), None);
    }

    #[test]
    fn coop_shapes_parse_and_split() {
        let s = CoopShape::parse("4x2x32").unwrap();
        assert_eq!((s.rows(), s.tokens(), s.subgroups(), s.k), (128, 64, 8, 32));
        assert_eq!(CoopShape::parse("2x2x64"), Some(CoopShape::DEFAULT));
        for bad in [
            "", "2x2", "0x2x64", "5x2x64", "2x2x48", "2x2x64x1", "ax2x64",
        ] {
            assert_eq!(CoopShape::parse(bad), None, "{bad}");
        }
        // 64 rows x 32 column pairs = 2048 pairs per tile: even over 128 or 256 threads.
        assert!(CoopShape::DEFAULT.splits_evenly(32));
        assert!(CoopShape::DEFAULT.splits_evenly(64));
        // 3 x 1 subgroups of 64 (192 threads): the 32-token tile's 512 pairs do not split.
        assert!(!CoopShape::parse("3x1x32").unwrap().splits_evenly(64));
        assert_eq!(CoopShape::DEFAULT.for_cols(96).k, 32);
        // Few-token steps keep the shape unless WEB_RWKV_COOP_FEW_K=1 (not set in tests).
        assert_eq!(CoopShape::DEFAULT.for_few_tokens(), CoopShape::DEFAULT);
        // Quads where the input allows, else pairs.
        assert_eq!(CoopShape::DEFAULT.for_input(2560, 2560).unit, 4);
        assert_eq!(CoopShape::DEFAULT.for_input(2562, 2560).unit, 2);
        assert_eq!(CoopShape::DEFAULT.for_input(0, 98).unit, 2);
        assert_eq!(CoopShape::DEFAULT.for_cols(2560), CoopShape::DEFAULT);
        assert_eq!(CoopShape::DEFAULT.for_cols(100), CoopShape::DEFAULT);
        // Both f16 tiles, padded rows, the epilogue tiles and the token count.
        assert_eq!(
            CoopShape::DEFAULT.workgroup_bytes(),
            128 * 72 * 2 + 4 * 1024 + 16
        );
    }
}
