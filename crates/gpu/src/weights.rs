//! Weight matrices kept in their GGUF (ggml) encoding on the GPU.
//!
//! Nothing is dequantized at load. WGSL storage buffers are arrays of `u32`, so each row is
//! laid out as whole 32-bit words:
//!
//! * Blocks whose size is a multiple of 4 bytes (Q4_1 20, Q5_1 24, Q2_K 84, Q4_K 144,
//!   Q5_K 176) are uploaded byte for byte.
//! * Blocks whose size is not (Q8_0 34, Q4_0 18, Q5_0 22, Q6_K 210) are repacked: the
//!   block's 2-byte f16 `d` field (first for the 32-blocks, last for Q6_K) is moved to a side
//!   array of f16 scales (two per `u32`, one per block in row-major order), leaving a body of
//!   32, 16, 20 and 208 bytes. The other bytes keep their order, so the decoders read every
//!   field at its ggml offset minus the moved 2 bytes.
//! * Q3_K blocks (110 bytes) are padded with two zero bytes to 112, seven whole 16-byte
//!   units, so that the fast kernels read them with aligned 16-byte loads (d stays last).
//! * F32 rows are used as they are (padded with zeros to a multiple of 4 values); F16 and
//!   BF16 rows likewise, padded to a multiple of 8 values (so odd-length rows work). BF16 is
//!   kept native: the kernel widens it with `bitcast<f32>(bits << 16)`, which is exact.
//!
//! The side arrays and the Q3_K padding are the only load-time transformations of quantized
//! data.
//!
//! A part's buffer holds its rows' bodies (`row_words` words each) followed by the side
//! scales (starting at word `rows * row_words`), zero-padded to a multiple of 16 bytes.
//! Matrices larger than the device's largest storage binding are split by rows into several
//! parts, each its own buffer; the matmul records one dispatch per part.

use gguf::GgmlType;

use crate::context::GpuContext;
use crate::error::GpuError;

/// How a ggml type is laid out on the GPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GpuFormat {
    /// Values per GPU block (the ggml block; for float types a group of 4 or 8 values).
    pub block_elems: usize,
    /// Body words per GPU block (without the side scale).
    pub block_words: usize,
    /// Byte offset in the ggml block of the f16 `d` moved to the side array, if any.
    pub side_d_at: Option<usize>,
    /// Whether each ggml block is followed by zero bytes up to `block_words` words.
    pub padded: bool,
}

impl GpuFormat {
    pub(crate) fn of(ty: GgmlType) -> Option<GpuFormat> {
        use GgmlType::*;
        let plain = |block_elems, block_words| GpuFormat {
            block_elems,
            block_words,
            side_d_at: None,
            padded: false,
        };
        let side = |ty: GgmlType, at| GpuFormat {
            block_elems: ty.block_elements(),
            block_words: (ty.block_bytes() - 2) / 4,
            side_d_at: Some(at),
            padded: false,
        };
        Some(match ty {
            F32 => plain(4, 4),
            F16 | BF16 => plain(8, 4),
            Q4_1 | Q5_1 | Q2_K | Q4_K | Q5_K => plain(ty.block_elements(), ty.block_bytes() / 4),
            Q8_0 | Q4_0 | Q5_0 => side(ty, 0),
            Q3_K => GpuFormat {
                padded: true,
                ..plain(
                    ty.block_elements(),
                    ty.block_bytes().next_multiple_of(16) / 4,
                )
            },
            Q6_K => side(ty, 208),
            _ => return None,
        })
    }

    /// Whether the ggml block is itself the GPU block (quantized types).
    fn is_block_type(&self, ty: GgmlType) -> bool {
        ty.block_elements() > 1
    }
}

/// One buffer of a matrix: rows `row_start..row_start + rows`.
#[derive(Debug)]
pub(crate) struct MatrixPart {
    pub buffer: wgpu::Buffer,
    pub row_start: usize,
    pub rows: usize,
    /// Word index of the side scales in `buffer` (= `rows * row_words`).
    pub scale_base: usize,
}

/// A weight matrix `rows x cols` (row-major, each row `cols` values) in its ggml encoding.
#[derive(Debug)]
pub struct GpuMatrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// GPU blocks per row.
    pub(crate) blocks_per_row: usize,
    /// Body words per row.
    pub(crate) row_words: usize,
    pub(crate) parts: Vec<MatrixPart>,
}

impl GpuMatrix {
    /// Upload a tensor's raw ggml bytes (`rows x cols` values, row-major, each row
    /// `cols / block_elements` blocks), split into parts no larger than the device's
    /// largest storage binding.
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<GpuMatrix, GpuError> {
        Self::upload_with_max_part_bytes(ctx, name, ty, rows, cols, bytes, u64::MAX)
    }

    /// [`GpuMatrix::upload`] with parts of at most `max_part_bytes` (also capped by the
    /// device's binding limit); used to test splitting.
    pub fn upload_with_max_part_bytes(
        ctx: &GpuContext,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        max_part_bytes: u64,
    ) -> Result<GpuMatrix, GpuError> {
        let fmt = GpuFormat::of(ty).ok_or_else(|| GpuError::UnsupportedType {
            name: name.to_string(),
            ty,
        })?;
        let bad = |message: String| GpuError::BadTensor {
            name: name.to_string(),
            ty,
            rows,
            cols,
            message,
        };
        if rows == 0 || cols == 0 {
            return Err(bad("empty matrix".into()));
        }
        if !cols.is_multiple_of(ty.block_elements()) {
            return Err(bad(format!(
                "rows of {cols} values are not whole blocks of {}",
                ty.block_elements()
            )));
        }
        let n = (rows as u64).checked_mul(cols as u64);
        let want = n.and_then(|n| ty.bytes_for(n));
        if want != Some(bytes.len() as u64) {
            return Err(bad(format!(
                "{} bytes given, the shape needs {}",
                bytes.len(),
                want.map_or("more than u64".to_string(), |w| w.to_string())
            )));
        }

        let blocks_per_row = cols.div_ceil(fmt.block_elems);
        let row_words = blocks_per_row * fmt.block_words;
        let src_row_bytes = cols / ty.block_elements() * ty.block_bytes();
        let has_side = fmt.side_d_at.is_some();
        let part_bytes = |r: usize| -> u64 {
            let side_words = if has_side {
                (r * blocks_per_row).div_ceil(2)
            } else {
                0
            };
            // Whole 16-byte units, so that kernels may bind the buffer as vec4<u32>s and still
            // reach the last side scales.
            (((r * row_words + side_words) * 4) as u64).next_multiple_of(16)
        };
        // Keep word indices comfortably inside u32 whatever the device allows.
        let max_part = max_part_bytes
            .min(ctx.max_binding_bytes())
            .min(u32::MAX as u64 / 2);
        let mut per_part = (max_part / part_bytes(1).max(1)) as usize;
        while per_part > 0 && part_bytes(per_part) > max_part {
            per_part -= 1;
        }
        if per_part == 0 {
            return Err(GpuError::TooLarge {
                label: name.to_string(),
                bytes: part_bytes(1),
                limit: max_part,
            });
        }
        let per_part = per_part.min(rows);

        let mut parts = Vec::with_capacity(rows.div_ceil(per_part));
        let mut row_start = 0;
        while row_start < rows {
            let n_rows = per_part.min(rows - row_start);
            let src = &bytes[row_start * src_row_bytes..(row_start + n_rows) * src_row_bytes];
            let label = if rows == n_rows {
                name.to_string()
            } else {
                format!("{name}[{row_start}..{}]", row_start + n_rows)
            };
            let size = part_bytes(n_rows);
            let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
            let direct = !has_side
                && !fmt.padded
                && (fmt.is_block_type(ty) || row_words * 4 == src_row_bytes);
            let buffer = if direct {
                ctx.create_buffer_checked(&label, size, usage, Some(src))?
            } else {
                let packed = repack(ty, &fmt, src, n_rows, src_row_bytes, row_words);
                debug_assert_eq!(packed.len().next_multiple_of(16) as u64, size);
                ctx.create_buffer_checked(&label, size, usage, Some(&packed))?
            };
            parts.push(MatrixPart {
                buffer,
                row_start,
                rows: n_rows,
                scale_base: n_rows * row_words,
            });
            row_start += n_rows;
        }
        Ok(GpuMatrix {
            name: name.to_string(),
            ty,
            rows,
            cols,
            blocks_per_row,
            row_words,
            parts,
        })
    }

    /// Bytes the matrix takes on the GPU (all parts).
    pub fn gpu_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buffer.size()).sum()
    }

    /// Number of buffers the matrix is split into.
    pub fn n_parts(&self) -> usize {
        self.parts.len()
    }
}

/// Lay out `n_rows` rows of ggml data (`src_row_bytes` each) as GPU rows of `row_words`
/// words, moving side scales out (see the module docs), padding blocks or padding float rows.
fn repack(
    ty: GgmlType,
    fmt: &GpuFormat,
    src: &[u8],
    n_rows: usize,
    src_row_bytes: usize,
    row_words: usize,
) -> Vec<u8> {
    let row_bytes = row_words * 4;
    match fmt.side_d_at {
        None if fmt.padded => {
            // Each block in the first bytes of its padded slot.
            let (bb, slot) = (ty.block_bytes(), fmt.block_words * 4);
            let mut out = vec![0u8; n_rows * row_bytes];
            for (dst, block) in out.chunks_exact_mut(slot).zip(src.chunks_exact(bb)) {
                dst[..bb].copy_from_slice(block);
            }
            out
        }
        None => {
            // Float rows padded with zeros.
            let mut out = vec![0u8; n_rows * row_bytes];
            for (dst, s) in out
                .chunks_exact_mut(row_bytes)
                .zip(src.chunks_exact(src_row_bytes))
            {
                dst[..src_row_bytes].copy_from_slice(s);
            }
            out
        }
        Some(at) => {
            let bb = ty.block_bytes();
            let n_blocks = n_rows * (src_row_bytes / bb);
            let body_bytes = bb - 2;
            let side_start = n_blocks * body_bytes;
            let mut out = vec![0u8; side_start + n_blocks.div_ceil(2) * 4];
            for (i, block) in src.chunks_exact(bb).enumerate() {
                let body = &mut out[i * body_bytes..(i + 1) * body_bytes];
                body[..at].copy_from_slice(&block[..at]);
                body[at..].copy_from_slice(&block[at + 2..]);
                out[side_start + 2 * i..side_start + 2 * i + 2].copy_from_slice(&block[at..at + 2]);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repacked_bodies_are_whole_words() {
        for ty in GgmlType::ALL {
            if let Some(f) = GpuFormat::of(ty) {
                assert!(ty.is_supported(), "{ty}");
                if let Some(at) = f.side_d_at {
                    assert_eq!(f.block_words * 4 + 2, ty.block_bytes(), "{ty}");
                    assert!(at + 2 <= ty.block_bytes());
                } else if f.padded {
                    assert_eq!(
                        f.block_words * 4,
                        ty.block_bytes().next_multiple_of(16),
                        "{ty}"
                    );
                } else if ty.block_elements() > 1 {
                    assert_eq!(f.block_words * 4, ty.block_bytes(), "{ty}");
                }
            } else {
                assert!(!ty.is_supported(), "{ty}");
            }
        }
    }

    #[test]
    fn repack_moves_d_to_the_side() {
        // Two Q4_0 blocks: d = [1,2] and [3,4], qs = 16 bytes of 10.., 30..
        let mut src = vec![1u8, 2];
        src.extend(10..26);
        src.extend([3u8, 4]);
        src.extend(30..46);
        let fmt = GpuFormat::of(GgmlType::Q4_0).unwrap();
        let out = repack(GgmlType::Q4_0, &fmt, &src, 1, 36, 8);
        let mut want: Vec<u8> = (10..26).chain(30..46).collect();
        want.extend([1, 2, 3, 4]);
        assert_eq!(out, want);
    }
}

/// Several F16 matrices in one buffer, for a stacked tensor-core product to read as they are
/// ([`crate::MatmulKernels::prepare_stacked`]) instead of one product per matrix. Matrix g
/// is `rows[g]` rows of `cols[g]` values from f16 element `bases[g]`, its rows and its width
/// padded with zeros to multiples of the alignment (so that a product's row tile holds one
/// matrix's rows and its column chunks divide every width); in the product's rows it starts
/// at row `starts[g]`.
#[derive(Debug)]
pub struct StackedF16 {
    pub buffer: wgpu::Buffer,
    pub starts: Vec<u32>,
    pub rows: Vec<u32>,
    pub cols: Vec<u32>,
    pub bases: Vec<u32>,
}

impl StackedF16 {
    /// Uploads `mats` (raw F16 bytes of `rows x cols` values each, row-major: `(bytes, rows,
    /// cols)`) one after the other, each padded to multiples of `align` rows and columns.
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        mats: &[(&[u8], usize, usize)],
        align: usize,
    ) -> Result<StackedF16, GpuError> {
        let align = align.max(2);
        let too_many = || GpuError::InvalidArgument(format!("{name}: too large to stack"));
        let mut halves: Vec<u16> = Vec::new();
        let (mut starts, mut row_counts, mut widths, mut bases) = (vec![], vec![], vec![], vec![]);
        let mut row = 0usize;
        for &(m, rows, cols) in mats {
            if m.len() != rows * cols * 2 || rows == 0 || cols == 0 {
                return Err(GpuError::InvalidArgument(format!(
                    "{name}: {} bytes for {rows} F16 rows of {cols} values",
                    m.len()
                )));
            }
            let (padded_rows, width) = (rows.next_multiple_of(align), cols.next_multiple_of(align));
            let values: Vec<u16> = bytemuck::pod_collect_to_vec(m);
            starts.push(u32::try_from(row).map_err(|_| too_many())?);
            bases.push(u32::try_from(halves.len()).map_err(|_| too_many())?);
            row_counts.push(u32::try_from(rows).map_err(|_| too_many())?);
            widths.push(u32::try_from(width).map_err(|_| too_many())?);
            for r in 0..padded_rows {
                let row_values = values.get(r * cols..(r + 1) * cols).unwrap_or(&[]);
                halves.extend_from_slice(row_values);
                halves.resize(halves.len() + width - row_values.len(), 0);
            }
            row += padded_rows;
        }
        u32::try_from(halves.len()).map_err(|_| too_many())?;
        Ok(StackedF16 {
            buffer: ctx.create_storage_buffer(name, bytemuck::cast_slice(&halves))?,
            starts,
            rows: row_counts,
            cols: widths,
            bases,
        })
    }

    /// Rows of the product over the stack (every matrix's padded rows).
    pub fn product_rows(&self) -> u32 {
        let last = self.rows.len().saturating_sub(1);
        match (self.starts.get(last), self.rows.get(last)) {
            (Some(&s), Some(&r)) => s + r,
            _ => 0,
        }
    }

    /// Bytes on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.buffer.size()
    }
}
