//! Exact CPU decoders for ggml's tensor block formats.
//!
//! Each decoder is a transcription of ggml's reference `dequantize_row_*` function
//! (`ggml/src/ggml-quants.c`): the same f32 operations in the same order, each rounded
//! separately (no fused multiply-add), so the decoded floats are bit-identical to ggml's.
//! The block layouts follow the `block_*` structs of `ggml/src/ggml-common.h`; all fields are
//! little-endian and read byte by byte, so the data may sit at any alignment.
//!
//! Every quantized format stores `block_elements` values in `block_bytes` bytes (see
//! [`GgmlType`]). `ggml_half` fields are IEEE half floats; `QK_K` is 256.

use crate::error::{GgufError, Result};
use crate::types::GgmlType;

/// Elements in a K-quant super-block.
const QK_K: usize = 256;

/// Decode `out.len()` values of type `ty` from `data`.
///
/// `data.len()` must equal `ty.bytes_for(out.len())`, otherwise the result is
/// [`GgufError::BadBlockData`]; a type without a decoder gives
/// [`GgufError::UndecodableType`]. Never panics.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    // Check the type first: an undecodable type is the more useful error.
    if !ty.is_supported() {
        return Err(GgufError::UndecodableType(ty));
    }
    if ty.bytes_for(out.len() as u64) != Some(data.len() as u64) {
        return Err(GgufError::BadBlockData {
            ty,
            bytes: data.len(),
            elements: out.len(),
        });
    }
    match ty {
        GgmlType::F32 => decode_blocks(data, out, dequantize_f32),
        GgmlType::F16 => decode_blocks(data, out, dequantize_f16),
        GgmlType::BF16 => decode_blocks(data, out, dequantize_bf16),
        GgmlType::Q4_0 => decode_blocks(data, out, dequantize_block_q4_0),
        GgmlType::Q4_1 => decode_blocks(data, out, dequantize_block_q4_1),
        GgmlType::Q5_0 => decode_blocks(data, out, dequantize_block_q5_0),
        GgmlType::Q5_1 => decode_blocks(data, out, dequantize_block_q5_1),
        GgmlType::Q8_0 => decode_blocks(data, out, dequantize_block_q8_0),
        GgmlType::Q2_K => decode_blocks(data, out, dequantize_block_q2_k),
        GgmlType::Q3_K => decode_blocks(data, out, dequantize_block_q3_k),
        GgmlType::Q4_K => decode_blocks(data, out, dequantize_block_q4_k),
        GgmlType::Q5_K => decode_blocks(data, out, dequantize_block_q5_k),
        GgmlType::Q6_K => decode_blocks(data, out, dequantize_block_q6_k),
        _ => return Err(GgufError::UndecodableType(ty)),
    }
    Ok(())
}

/// Convenience: decode `n` values of type `ty` from `data` into a new `Vec`.
///
/// Same contract as [`dequantize`]; the length is checked before anything is allocated.
pub fn dequantize_to_vec(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    if !ty.is_supported() {
        return Err(GgufError::UndecodableType(ty));
    }
    if ty.bytes_for(n as u64) != Some(data.len() as u64) {
        return Err(GgufError::BadBlockData {
            ty,
            bytes: data.len(),
            elements: n,
        });
    }
    let mut out = vec![0.0f32; n];
    dequantize(ty, data, &mut out)?;
    Ok(out)
}

/// Run a block decoder over every block. The caller has checked that `data` holds exactly
/// `out.len() / E` blocks of `B` bytes.
#[inline]
fn decode_blocks<const B: usize, const E: usize>(
    data: &[u8],
    out: &mut [f32],
    decode: fn(&[u8; B], &mut [f32; E]),
) {
    debug_assert_eq!(data.len() / B, out.len() / E);
    for (x, y) in data.chunks_exact(B).zip(out.chunks_exact_mut(E)) {
        // `chunks_exact` yields slices of exactly B and E items, so these conversions
        // always succeed; the `if let` only keeps the code free of panicking paths.
        if let (Ok(x), Ok(y)) = (<&[u8; B]>::try_from(x), <&mut [f32; E]>::try_from(y)) {
            decode(x, y);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Field readers
// ---------------------------------------------------------------------------------------

/// An IEEE half at `b[at..at + 2]`, as ggml's `GGML_FP16_TO_FP32` (exact).
#[inline]
fn read_f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// A little-endian u32 at `b[at..at + 4]` (ggml's `memcpy(&qh, x[i].qh, 4)`).
#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Scale and min number `j` (0..8) of a Q4_K/Q5_K block's 12 packed 6-bit `scales` bytes,
/// as ggml's `get_scale_min_k4`: bytes 0..4 hold scales 0..3 in their low 6 bits, bytes
/// 4..8 mins 0..3; scales/mins 4..7 have their low 4 bits in bytes 8..12 (scale low nibble,
/// min high nibble) and their top 2 bits in the top bits of bytes 0..4 / 4..8.
#[inline]
fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 12 packed scale bytes at `b[at..at + 12]`.
#[inline]
fn read_scales12(b: &[u8], at: usize) -> [u8; 12] {
    let mut s = [0u8; 12];
    s.copy_from_slice(&b[at..at + 12]);
    s
}

// ---------------------------------------------------------------------------------------
// Float formats (one value per "block")
// ---------------------------------------------------------------------------------------

/// F32: one little-endian IEEE single.
#[inline]
fn dequantize_f32(x: &[u8; 4], y: &mut [f32; 1]) {
    y[0] = f32::from_le_bytes(*x);
}

/// F16: one little-endian IEEE half (`ggml_fp16_t`).
#[inline]
fn dequantize_f16(x: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = read_f16(x, 0);
}

/// BF16: one little-endian bfloat16, the top half of an f32 (`GGML_BF16_TO_FP32`: bits << 16).
#[inline]
fn dequantize_bf16(x: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = f32::from_bits((u16::from_le_bytes(*x) as u32) << 16);
}

// ---------------------------------------------------------------------------------------
// Blocks of 32
// ---------------------------------------------------------------------------------------

/// `block_q4_0` (18 bytes, 32 values): `d: ggml_half`, `qs: [u8; 16]`.
/// Value `j` (< 16) is the low nibble of `qs[j]`, value `j + 16` the high nibble;
/// `y = (q - 8) * d`.
fn dequantize_block_q4_0(x: &[u8; 18], y: &mut [f32; 32]) {
    let d = read_f16(x, 0);
    let qs = &x[2..18];
    for j in 0..16 {
        let x0 = (qs[j] & 0x0F) as i32 - 8;
        let x1 = (qs[j] >> 4) as i32 - 8;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// `block_q4_1` (20 bytes, 32 values): `d: ggml_half`, `m: ggml_half`, `qs: [u8; 16]`.
/// Nibbles as in Q4_0; `y = q * d + m`.
fn dequantize_block_q4_1(x: &[u8; 20], y: &mut [f32; 32]) {
    let d = read_f16(x, 0);
    let m = read_f16(x, 2);
    let qs = &x[4..20];
    for j in 0..16 {
        let x0 = (qs[j] & 0x0F) as i32;
        let x1 = (qs[j] >> 4) as i32;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

/// `block_q5_0` (22 bytes, 32 values): `d: ggml_half`, `qh: [u8; 4]` (a little-endian u32
/// holding the 5th bit of value `j` in bit `j`), `qs: [u8; 16]` (nibbles as in Q4_0);
/// `y = (q - 16) * d`.
fn dequantize_block_q5_0(x: &[u8; 22], y: &mut [f32; 32]) {
    let d = read_f16(x, 0);
    let qh = read_u32(x, 2);
    let qs = &x[6..22];
    for j in 0..16 {
        let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
        let x0 = ((qs[j] & 0x0F) | xh_0) as i32 - 16;
        let x1 = ((qs[j] >> 4) | xh_1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// `block_q5_1` (24 bytes, 32 values): `d: ggml_half`, `m: ggml_half`, `qh: [u8; 4]`,
/// `qs: [u8; 16]` (bits as in Q5_0); `y = q * d + m`.
fn dequantize_block_q5_1(x: &[u8; 24], y: &mut [f32; 32]) {
    let d = read_f16(x, 0);
    let m = read_f16(x, 2);
    let qh = read_u32(x, 4);
    let qs = &x[8..24];
    for j in 0..16 {
        let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
        let x0 = ((qs[j] & 0x0F) | xh_0) as i32;
        let x1 = ((qs[j] >> 4) | xh_1) as i32;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

/// `block_q8_0` (34 bytes, 32 values): `d: ggml_half`, `qs: [i8; 32]`; `y = q * d`.
fn dequantize_block_q8_0(x: &[u8; 34], y: &mut [f32; 32]) {
    let d = read_f16(x, 0);
    for j in 0..32 {
        y[j] = (x[2 + j] as i8) as f32 * d;
    }
}

// ---------------------------------------------------------------------------------------
// K-quants: super-blocks of QK_K = 256
// ---------------------------------------------------------------------------------------

/// `block_q2_K` (84 bytes, 256 values): `scales: [u8; 16]` (low nibble: scale, high
/// nibble: min, one pair per 16 values), `qs: [u8; 64]` (2-bit quants), `d: ggml_half`,
/// `dmin: ggml_half`. Each 128-value half uses 32 `qs` bytes: bits `2s..2s+2` of
/// `qs[l]` / `qs[l + 16]` give values `32s + l` / `32s + 16 + l`;
/// `y = d * sc * q - dmin * m`.
fn dequantize_block_q2_k(x: &[u8; 84], y: &mut [f32; QK_K]) {
    let scales = &x[0..16];
    let qs = &x[16..80];
    let d = read_f16(x, 80);
    let min = read_f16(x, 82);

    let mut is = 0;
    let mut out = 0;
    for n in 0..QK_K / 128 {
        let q = &qs[32 * n..32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                for l in 0..16 {
                    let qv = ((q[l + 16 * half] >> shift) & 3) as i8;
                    y[out] = dl * qv as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

/// Unpack the 16 signed 6-bit scales of a Q3_K block (stored +32) exactly as ggml does,
/// with the `kmask1`/`kmask2` trick on the 12 scale bytes read as three little-endian u32s.
/// Byte `j` (< 8) holds the low 4 bits of scales `j` (low nibble) and `j + 8` (high
/// nibble); bytes 8..12 hold the top 2 bits, scale `j` in bits `2(j/4)..` of byte `8 + j%4`.
#[inline]
fn q3_k_scales(s: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let mut aux = [read_u32(s, 0), read_u32(s, 4), read_u32(s, 8), 0];
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
    aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    // ggml reads `aux` through an `int8_t *` on a little-endian host.
    let mut scales = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, b) in a.to_le_bytes().into_iter().enumerate() {
            scales[4 * i + k] = b as i8;
        }
    }
    scales
}

/// `block_q3_K` (110 bytes, 256 values): `hmask: [u8; 32]` (high bit, clear means -4),
/// `qs: [u8; 64]` (low 2 bits), `scales: [u8; 12]` (16 6-bit scales, see [`q3_k_scales`]),
/// `d: ggml_half`. Bit `b` of `hmask[l]` belongs to value `32b + l`;
/// `y = d * (sc - 32) * (q - (high ? 0 : 4))`.
fn dequantize_block_q3_k(x: &[u8; 110], y: &mut [f32; QK_K]) {
    let hm = &x[0..32];
    let qs = &x[32..96];
    let scales = q3_k_scales(&read_scales12(x, 96));
    let d_all = read_f16(x, 108);

    let mut m: u8 = 1;
    let mut is = 0;
    let mut out = 0;
    for n in 0..QK_K / 128 {
        let q = &qs[32 * n..32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let lo = ((q[l + 16 * half] >> shift) & 3) as i8 as i32;
                    let hi = if hm[l + 16 * half] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (lo - hi) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// `block_q4_K` (144 bytes, 256 values): `d: ggml_half`, `dmin: ggml_half`,
/// `scales: [u8; 12]` (8 6-bit scales and mins, see [`get_scale_min_k4`]),
/// `qs: [u8; 128]`. Each 64-value chunk uses 32 `qs` bytes, low nibbles first then high
/// nibbles, with scale/min pair `2c` and `2c + 1`; `y = d * sc * q - dmin * m`.
fn dequantize_block_q4_k(x: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = read_f16(x, 0);
    let min = read_f16(x, 2);
    let scales = read_scales12(x, 4);
    let qs = &x[16..144];

    for c in 0..QK_K / 64 {
        let q = &qs[32 * c..32 * c + 32];
        let (sc, m) = get_scale_min_k4(2 * c, &scales);
        let d1 = d * sc as f32;
        let m1 = min * m as f32;
        let (sc, m) = get_scale_min_k4(2 * c + 1, &scales);
        let d2 = d * sc as f32;
        let m2 = min * m as f32;
        let y = &mut y[64 * c..64 * c + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0xF) as f32 - m1;
        }
        for l in 0..32 {
            y[32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// `block_q5_K` (176 bytes, 256 values): `d: ggml_half`, `dmin: ggml_half`,
/// `scales: [u8; 12]` (as Q4_K), `qh: [u8; 32]` (5th bits), `qs: [u8; 128]` (low nibbles
/// as Q4_K). Bit `b` of `qh[l]` is the 5th bit of value `32b + l`;
/// `y = d * sc * q - dmin * m`.
fn dequantize_block_q5_k(x: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = read_f16(x, 0);
    let min = read_f16(x, 2);
    let scales = read_scales12(x, 4);
    let qh = &x[16..48];
    let qs = &x[48..176];

    let mut u1: u8 = 1;
    let mut u2: u8 = 2;
    for c in 0..QK_K / 64 {
        let ql = &qs[32 * c..32 * c + 32];
        let (sc, m) = get_scale_min_k4(2 * c, &scales);
        let d1 = d * sc as f32;
        let m1 = min * m as f32;
        let (sc, m) = get_scale_min_k4(2 * c + 1, &scales);
        let d2 = d * sc as f32;
        let m2 = min * m as f32;
        let y = &mut y[64 * c..64 * c + 64];
        for l in 0..32 {
            let q = (ql[l] & 0xF) as i32 + if qh[l] & u1 != 0 { 16 } else { 0 };
            y[l] = d1 * q as f32 - m1;
        }
        for l in 0..32 {
            let q = (ql[l] >> 4) as i32 + if qh[l] & u2 != 0 { 16 } else { 0 };
            y[32 + l] = d2 * q as f32 - m2;
        }
        u1 <<= 2;
        u2 <<= 2;
    }
}

/// `block_q6_K` (210 bytes, 256 values): `ql: [u8; 128]` (low 4 bits), `qh: [u8; 64]`
/// (high 2 bits), `scales: [i8; 16]` (one per 16 values), `d: ggml_half`. Each 128-value
/// half uses 64 `ql` bytes, 32 `qh` bytes and 8 scales: for `l < 32`, values `l`, `l + 32`,
/// `l + 64`, `l + 96` are the low/low/high/high nibbles of `ql[l]`, `ql[l + 32]`, `ql[l]`,
/// `ql[l + 32]` with bits 0-1/2-3/4-5/6-7 of `qh[l]` on top; `y = d * sc * (q - 32)`.
fn dequantize_block_q6_k(x: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = read_f16(x, 208);
    for n in 0..QK_K / 128 {
        let ql = &x[64 * n..64 * n + 64];
        let qh = &x[128 + 32 * n..128 + 32 * n + 32];
        let sc = &x[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_bits().to_le_bytes()
    }

    #[test]
    fn block_geometry_matches_types() {
        // The decoders' array sizes are the ggml struct sizes; they must agree with types.rs.
        let geometry: [(GgmlType, usize, usize); 13] = [
            (GgmlType::F32, 4, 1),
            (GgmlType::F16, 2, 1),
            (GgmlType::BF16, 2, 1),
            (GgmlType::Q4_0, 18, 32),
            (GgmlType::Q4_1, 20, 32),
            (GgmlType::Q5_0, 22, 32),
            (GgmlType::Q5_1, 24, 32),
            (GgmlType::Q8_0, 34, 32),
            (GgmlType::Q2_K, 84, QK_K),
            (GgmlType::Q3_K, 110, QK_K),
            (GgmlType::Q4_K, 144, QK_K),
            (GgmlType::Q5_K, 176, QK_K),
            (GgmlType::Q6_K, 210, QK_K),
        ];
        for (ty, bytes, elems) in geometry {
            assert_eq!(ty.block_bytes(), bytes, "{ty}");
            assert_eq!(ty.block_elements(), elems, "{ty}");
            // Every supported type decodes a zeroed block without error.
            let out = dequantize_to_vec(ty, &vec![0u8; 3 * bytes], 3 * elems).unwrap();
            assert!(out.iter().all(|&v| v == 0.0), "{ty}");
        }
        let decodable = GgmlType::ALL.iter().filter(|t| t.is_supported()).count();
        assert_eq!(decodable, geometry.len());
    }

    #[test]
    fn wrong_length_is_an_error() {
        for ty in GgmlType::ALL.into_iter().filter(|t| t.is_supported()) {
            let bb = ty.block_bytes();
            let be = ty.block_elements();
            // One byte short, one byte long, and an element count that is not whole blocks.
            for (bytes, n) in [(bb - 1, be), (bb + 1, be), (2 * bb, 2 * be - 1), (0, be)] {
                let err = dequantize_to_vec(ty, &vec![0u8; bytes], n).unwrap_err();
                match err {
                    GgufError::BadBlockData {
                        ty: t,
                        bytes: b,
                        elements: e,
                    } => assert_eq!((t, b, e), (ty, bytes, n)),
                    other => panic!("{ty}: unexpected error {other}"),
                }
            }
            let mut out = vec![0.0; be];
            assert!(matches!(
                dequantize(ty, &vec![0u8; bb + 1], &mut out),
                Err(GgufError::BadBlockData { .. })
            ));
        }
        // Empty input with no values is fine.
        assert_eq!(
            dequantize_to_vec(GgmlType::Q4_K, &[], 0).unwrap(),
            Vec::<f32>::new()
        );
        // A huge element count does not allocate or overflow.
        assert!(matches!(
            dequantize_to_vec(GgmlType::F32, &[0u8; 4], usize::MAX),
            Err(GgufError::BadBlockData { .. })
        ));
    }

    #[test]
    fn unsupported_types_are_undecodable() {
        for ty in GgmlType::ALL.into_iter().filter(|t| !t.is_supported()) {
            let bytes = vec![0u8; ty.block_bytes()];
            let n = ty.block_elements();
            assert!(matches!(
                dequantize_to_vec(ty, &bytes, n),
                Err(GgufError::UndecodableType(t)) if t == ty
            ));
            let mut out = vec![0.0; n];
            assert!(matches!(
                dequantize(ty, &bytes, &mut out),
                Err(GgufError::UndecodableType(t)) if t == ty
            ));
        }
        assert!(matches!(
            dequantize_to_vec(GgmlType::IQ2_XXS, &[0u8; 66], 256),
            Err(GgufError::UndecodableType(GgmlType::IQ2_XXS))
        ));
    }

    #[test]
    fn q8_0_by_hand() {
        let mut block = [0u8; 34];
        block[..2].copy_from_slice(&f16_bytes(0.5));
        let qs: [i8; 32] = core::array::from_fn(|j| (j as i8 - 16) * 8 + 1);
        for (j, q) in qs.iter().enumerate() {
            block[2 + j] = *q as u8;
        }
        block[2] = 0x80; // -128
        block[3] = 0x7F; // 127
        let out = dequantize_to_vec(GgmlType::Q8_0, &block, 32).unwrap();
        assert_eq!(out[0], -64.0);
        assert_eq!(out[1], 63.5);
        for j in 2..32 {
            assert_eq!(out[j], qs[j] as f32 * 0.5, "value {j}");
        }
        assert_eq!(out[16], 0.5); // (0 * 8 + 1) * 0.5
    }

    #[test]
    fn q4_0_by_hand() {
        // Two blocks, at an odd offset to check unaligned reads.
        let mut data = vec![0xAAu8];
        let mut block = [0u8; 18];
        block[..2].copy_from_slice(&f16_bytes(0.25));
        for j in 0..16 {
            // low nibble j, high nibble 15 - j
            block[2 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        data.extend_from_slice(&block);
        block[..2].copy_from_slice(&f16_bytes(-2.0));
        data.extend_from_slice(&block);
        let out = dequantize_to_vec(GgmlType::Q4_0, &data[1..], 64).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.25);
            assert_eq!(out[j + 16], (7.0 - j as f32) * 0.25);
            assert_eq!(out[32 + j], (j as f32 - 8.0) * -2.0);
            assert_eq!(out[48 + j], (7.0 - j as f32) * -2.0);
        }
        assert_eq!(out[0], -2.0);
        assert_eq!(out[16], 1.75);
        assert_eq!(out[32], 16.0);
    }

    #[test]
    fn q5_0_high_bits() {
        let mut block = [0u8; 22];
        block[..2].copy_from_slice(&f16_bytes(1.0));
        // 5th bit set for values 0 and 31 only.
        block[2..6].copy_from_slice(&(1u32 | (1 << 31)).to_le_bytes());
        for j in 0..16 {
            block[6 + j] = 0x3 | (0x4 << 4);
        }
        let out = dequantize_to_vec(GgmlType::Q5_0, &block, 32).unwrap();
        assert_eq!(out[0], (0x13 - 16) as f32);
        assert_eq!(out[1], (0x03 - 16) as f32);
        assert_eq!(out[16], (0x04 - 16) as f32);
        assert_eq!(out[31], (0x14 - 16) as f32);
    }

    #[test]
    fn float_formats() {
        let vals = [1.5f32, -0.0, f32::INFINITY, 65504.0];
        let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            dequantize_to_vec(GgmlType::F32, &f32_bytes, 4).unwrap(),
            vals.to_vec()
        );
        let f16_bytes: Vec<u8> = vals.iter().flat_map(|&v| f16_bytes(v)).collect();
        let out = dequantize_to_vec(GgmlType::F16, &f16_bytes, 4).unwrap();
        assert_eq!(
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            vals.map(f32::to_bits)
        );
        // bf16 is the top 16 bits of an f32.
        let bf: Vec<u8> = [0x3FC0u16, 0x8000, 0x7F80, 0xFFC1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let out = dequantize_to_vec(GgmlType::BF16, &bf, 4).unwrap();
        assert_eq!(out[0], 1.5);
        assert_eq!(out[1].to_bits(), 0x8000_0000);
        assert_eq!(out[2], f32::INFINITY);
        assert_eq!(out[3].to_bits(), 0xFFC1_0000);
        // NaN halves just decode.
        let nan = dequantize_to_vec(GgmlType::F16, &0x7E00u16.to_le_bytes(), 1).unwrap();
        assert!(nan[0].is_nan());
    }

    #[test]
    fn q3_k_scale_unpacking() {
        // Scales packed the way quantize_row_q3_K_ref packs them must unpack to themselves.
        let want: [i8; 16] = core::array::from_fn(|j| (j as i8 * 4 + 1) % 64);
        let mut packed = [0u8; 12];
        for (j, &l) in want.iter().enumerate() {
            let l = l as u8;
            if j < 8 {
                packed[j] = l & 0xF;
            } else {
                packed[j - 8] |= (l & 0xF) << 4;
            }
            packed[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
        }
        assert_eq!(q3_k_scales(&packed), want);
    }

    #[test]
    fn k4_scale_min_unpacking() {
        // Pack as quantize_row_q4_K_ref does and unpack.
        let ls: [u8; 8] = [0, 63, 17, 42, 5, 63, 32, 48];
        let lm: [u8; 8] = [63, 0, 33, 1, 62, 16, 47, 31];
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = ls[j];
                s[j + 4] = lm[j];
            } else {
                s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
                s[j - 4] |= (ls[j] >> 4) << 6;
                s[j] |= (lm[j] >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &s), (ls[j], lm[j]), "pair {j}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random bytes, including NaN/Inf halves, for every type.
        let mut state = 0x1234_5678_9abc_def0u64;
        let bytes: Vec<u8> = (0..210 * 8)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        for ty in GgmlType::ALL {
            let bb = ty.block_bytes();
            let n = (bytes.len() / bb) * ty.block_elements();
            let r = dequantize_to_vec(ty, &bytes[..bytes.len() / bb * bb], n);
            assert_eq!(r.is_ok(), ty.is_supported(), "{ty}");
            let _ = dequantize_to_vec(ty, &bytes, n + 1);
        }
    }
}
