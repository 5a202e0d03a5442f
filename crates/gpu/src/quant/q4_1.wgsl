// Q4_1 (block_q4_1, 20 bytes / 32 values: d f16, m f16, qs[16]), uploaded as is (5 words).
// Nibbles as Q4_0; y = q * d + m (ggml dequantize_row_q4_1).

const BLOCK_ELEMS: u32 = 32u;
const BLOCK_WORDS: u32 = 5u;
const UNITS: u32 = 1u;

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let dm = unpack2x16float(W[b]);
    for (var k = 0u; k < 4u; k++) {
        let w = W[b + 1u + k];
        emit4(vec4<f32>(lo_nibbles(w)) * dm.x + dm.y, col + 4u * k);
        emit4(vec4<f32>(hi_nibbles(w)) * dm.x + dm.y, col + 16u + 4u * k);
    }
}
