// Q4_0 (block_q4_0, 18 bytes / 32 values: d f16, qs[16]), repacked: body = qs (4 words),
// d in the side array. Value j < 16 is the low nibble of qs[j], value j + 16 the high one;
// y = (q - 8) * d (ggml dequantize_row_q4_0).

const BLOCK_ELEMS: u32 = 32u;
const BLOCK_WORDS: u32 = 4u;
const UNITS: u32 = 1u;

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let d = side_d(row, blk);
    for (var k = 0u; k < 4u; k++) {
        let w = W[b + k];
        emit4(vec4<f32>(vec4<i32>(lo_nibbles(w)) - vec4<i32>(8)) * d, col + 4u * k);
        emit4(vec4<f32>(vec4<i32>(hi_nibbles(w)) - vec4<i32>(8)) * d, col + 16u + 4u * k);
    }
}
