// Q4_K (block_q4_K, 144 bytes / 256 values: d f16, dmin f16, scales[12], qs[128]), uploaded
// as is (36 words). Chunk c < 4 (64 values) uses qs[32c..32c + 32]: low nibbles are values
// 64c + l with scale/min pair 2c, high nibbles values 64c + 32 + l with pair 2c + 1 (6-bit
// pairs unpacked as ggml's get_scale_min_k4); y = (d * sc) * q - (dmin * m)
// (ggml dequantize_row_q4_K). Unit (c, g): qs[32c + 16g..+16] (4 words) -> 32 values.

const BLOCK_ELEMS: u32 = 256u;
const BLOCK_WORDS: u32 = 36u;
const UNITS: u32 = 8u;
// (scale_min_k4 comes from k_scale_min.wgsl, prepended.)

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let c = u / 2u;
    let g = u % 2u;
    let dm = unpack2x16float(W[b]);
    let sm1 = scale_min_k4(b + 1u, 2u * c);
    let sm2 = scale_min_k4(b + 1u, 2u * c + 1u);
    let d1 = dm.x * f32(sm1.x);
    let m1 = dm.y * f32(sm1.y);
    let d2 = dm.x * f32(sm2.x);
    let m2 = dm.y * f32(sm2.y);
    let qw = b + 4u + 8u * c + 4u * g;
    let c0 = col + 64u * c + 16u * g;
    for (var k = 0u; k < 4u; k++) {
        let w = W[qw + k];
        emit4(d1 * vec4<f32>(lo_nibbles(w)) - m1, c0 + 4u * k);
        emit4(d2 * vec4<f32>(hi_nibbles(w)) - m2, c0 + 32u + 4u * k);
    }
}
