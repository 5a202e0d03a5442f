// Q5_K (block_q5_K, 176 bytes / 256 values: d f16, dmin f16, scales[12], qh[32], qs[128]),
// uploaded as is (44 words). As Q4_K, plus a 5th bit: bit 2c of qh[l] for value 64c + l,
// bit 2c + 1 for value 64c + 32 + l; y = (d * sc) * q - (dmin * m)
// (ggml dequantize_row_q5_K). Unit (c, g): 16 qs bytes and 16 qh bytes -> 32 values.

const BLOCK_ELEMS: u32 = 256u;
const BLOCK_WORDS: u32 = 44u;
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
    let qw = b + 12u + 8u * c + 4u * g;
    let hw = b + 4u + 4u * g;
    let c0 = col + 64u * c + 16u * g;
    for (var k = 0u; k < 4u; k++) {
        let w = W[qw + k];
        let hb = bytes4(W[hw + k]);
        let h1 = ((hb >> vec4<u32>(2u * c)) & vec4<u32>(1u)) << vec4<u32>(4u);
        let h2 = ((hb >> vec4<u32>(2u * c + 1u)) & vec4<u32>(1u)) << vec4<u32>(4u);
        emit4(d1 * vec4<f32>(lo_nibbles(w) + h1) - m1, c0 + 4u * k);
        emit4(d2 * vec4<f32>(hi_nibbles(w) + h2) - m2, c0 + 32u + 4u * k);
    }
}
