//! The tensor-core path of the matrix kernels (`matmul_coop*.wgsl`), for devices with wgpu's
//! cooperative matrices (16x16x16, f16 x f16 -> f32): per call the inputs are converted to
//! f16 once, then per slice of weight rows the weights are decoded to an f16 scratch and
//! multiplied. The shaders are composed in the parent module with the other matrix kernels.

use std::sync::Arc;

use gguf::GgmlType;

use super::{
    format_wgsl, params_buffer, poisoned, split_grid, Epilogue, Kernel, MatmulKernels, Params,
    TILED_FROM_TOKENS,
};
use crate::context::GpuContext;
use crate::error::GpuError;
use crate::weights::GpuMatrix;

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
}

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
            probe: 0,
        })
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
            .all(|n| (n * self.k / 2).is_multiple_of(threads))
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
        CoopShape { probe, ..shape }
    }
}

/// Token count from which the tensor-core path replaces the tiled kernel: all of its range
/// (on an H200, batch 64 of 2.9B Q4_K_M ran at 1,115 tok/s with it and 975 without, though
/// every step decodes all the weights to f16). [`COOP_FROM_ENV`] raises it.
pub(super) const COOP_FROM_TOKENS: u32 = TILED_FROM_TOKENS;
/// Token count from which matrices shorter than the tiled kernels' minimum (the LoRA
/// products) take the tensor-core path.
pub(super) const COOP_SHORT_FROM_TOKENS: u32 = 512;
/// Environment variable overriding [`COOP_FROM_TOKENS`] (for measurements).
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
}

/// The tensor-core path for one matrix: the inputs to f16 once, then per slice of rows the
/// weights to f16 and the product.
pub(super) struct CoopCall {
    convert: Arc<wgpu::ComputePipeline>,
    convert_group: wgpu::BindGroup,
    cols: u32,
    dequant: Arc<wgpu::ComputePipeline>,
    product: Arc<wgpu::ComputePipeline>,
    shape: CoopShape,
    slices: Vec<CoopSlice>,
    _convert_params: wgpu::Buffer,
}

struct CoopSlice {
    dequant_group: wgpu::BindGroup,
    product_group: wgpu::BindGroup,
    rows: u32,
    /// Decode units of the slice (one thread each).
    units: u32,
    _params: wgpu::Buffer,
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
        let shape = self.coop_shape;
        let (bm, bn) = (shape.rows(), shape.tokens());
        let units_per_block = format_wgsl(w.ty)
            .and_then(|f| crate::matvec::wgsl_const(f, "UNITS"))
            .unwrap_or(1);
        // Weight rows per slice: as many as the scratch holds, in whole workgroups of rows.
        let cap = self.coop_scratch_bytes.min(ctx.max_binding_bytes());
        let slice_rows = ((cap / (2 * w.cols as u64)) as u32 / bm * bm).max(bm);
        let largest_part = w.parts.iter().map(|p| p.rows as u32).max().unwrap_or(0);
        let w16_rows = slice_rows.min(largest_part.next_multiple_of(bm));
        let w16_bytes = w16_rows as u64 * w.cols as u64 * 2;
        let x16_bytes = io.max_tokens.next_multiple_of(bn) as u64 * w.cols as u64 * 2;
        let (w16, x16) = {
            let mut scratch = self.coop_scratch.lock().map_err(poisoned)?;
            let grow = |buf: &mut Option<wgpu::Buffer>, bytes: u64, label: &str| match buf {
                Some(b) if b.size() >= bytes => Ok(b.clone()),
                _ => {
                    let b = ctx.create_buffer_checked(
                        label,
                        bytes.next_multiple_of(16),
                        wgpu::BufferUsages::STORAGE,
                        None,
                    )?;
                    *buf = Some(b.clone());
                    Ok::<_, GpuError>(b)
                }
            };
            (
                grow(&mut scratch.w16, w16_bytes, "rwkv-gpu coop weights f16")?,
                grow(&mut scratch.x16, x16_bytes, "rwkv-gpu coop inputs f16")?,
            )
        };
        let convert_params = params_buffer(
            ctx,
            &Params {
                cols,
                in_offset: io.x_offset,
                in_stride: io.x_stride,
                max_tokens: io.max_tokens,
                ..Params::default()
            },
        )?;
        // Binding 0 is unused by the conversion; any storage buffer fills it.
        let convert_group = self.bind_group(
            ctx,
            &w.name,
            [io.step_params, &convert_params, io.x, &x16, io.step_params],
        );
        let mut slices = Vec::new();
        for part in &w.parts {
            let mut first = 0u32;
            while first < part.rows as u32 {
                let rows = slice_rows.min(part.rows as u32 - first);
                let params = params_buffer(
                    ctx,
                    &Params {
                        rows,
                        cols,
                        blocks_per_row: w.blocks_per_row as u32,
                        row_words: w.row_words as u32,
                        scale_base: part.scale_base as u32,
                        row_start: part.row_start as u32 + first,
                        out_offset: io.y_offset,
                        out_stride: io.y_stride,
                        max_tokens: io.max_tokens,
                        first_row: first,
                        ..Params::default()
                    },
                )?;
                let dequant_group = self.bind_group(
                    ctx,
                    &w.name,
                    [&part.buffer, &params, io.x, &w16, io.step_params],
                );
                let product_group =
                    self.bind_group(ctx, &w.name, [&w16, &params, &x16, io.y, io.step_params]);
                let units = rows as u64 * w.blocks_per_row as u64 * units_per_block as u64;
                let units = u32::try_from(units).map_err(|_| {
                    GpuError::InvalidArgument(format!("matrix '{}' is too large", w.name))
                })?;
                slices.push(CoopSlice {
                    dequant_group,
                    product_group,
                    rows,
                    units,
                    _params: params,
                });
                first += rows;
            }
        }
        let f16_key = GgmlType::F16;
        Ok(CoopCall {
            convert: self.pipeline(ctx, f16_key, Kernel::CoopX)?,
            convert_group,
            cols,
            dequant: self.pipeline(ctx, w.ty, Kernel::CoopDequant)?,
            product: self.pipeline(
                ctx,
                f16_key,
                Kernel::Coop {
                    epilogue,
                    subgroup,
                    shape,
                },
            )?,
            shape,
            slices,
            _convert_params: convert_params,
        })
    }
}

/// Whether `w`'s rows are whole blocks of its format, without padding (what the tensor-core
/// weight decode writes out as one run per workgroup).
pub(super) fn whole_blocks(w: &GpuMatrix) -> bool {
    format_wgsl(w.ty)
        .and_then(|f| crate::matvec::wgsl_const(f, "BLOCK_ELEMS"))
        .is_some_and(|b| w.blocks_per_row * b as usize == w.cols)
}

impl CoopCall {
    pub(super) fn record(&self, pass: &mut wgpu::ComputePass<'_>, n: u32, max_groups: u32) {
        let (bm, bn) = (self.shape.rows(), self.shape.tokens());
        let token_groups = n.div_ceil(bn);
        pass.set_pipeline(&self.convert);
        pass.set_bind_group(0, &self.convert_group, &[]);
        pass.dispatch_workgroups(self.cols.div_ceil(256), token_groups * bn, 1);
        for slice in &self.slices {
            pass.set_pipeline(&self.dequant);
            pass.set_bind_group(0, &slice.dequant_group, &[]);
            let (x, y) = split_grid(slice.units.div_ceil(256), max_groups);
            pass.dispatch_workgroups(x, y, 1);
            pass.set_pipeline(&self.product);
            pass.set_bind_group(0, &slice.product_group, &[]);
            let (x, y) = split_grid(slice.rows.div_ceil(bm), max_groups);
            pass.dispatch_workgroups(x, y, token_groups);
        }
    }

    pub(super) fn n_dispatches(&self) -> usize {
        1 + 2 * self.slices.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Both f16 tiles, padded rows, the epilogue tiles and the token count.
        assert_eq!(
            CoopShape::DEFAULT.workgroup_bytes(),
            128 * 72 * 2 + 4 * 1024 + 16
        );
    }
}
