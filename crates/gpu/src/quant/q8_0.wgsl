// Q8_0 (block_q8_0, 34 bytes / 32 values: d f16, qs[32] i8), repacked: body = qs (8 words),
// d in the side array. y = q * d (ggml dequantize_row_q8_0). Two units of 16 values.

const BLOCK_ELEMS: u32 = 32u;
const BLOCK_WORDS: u32 = 8u;
const UNITS: u32 = 2u;

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk) + 4u * u;
    let d = side_d(row, blk);
    let c = col + 16u * u;
    for (var k = 0u; k < 4u; k++) {
        emit4(vec4<f32>(sbytes4(W[b + k])) * d, c + 4u * k);
    }
}
