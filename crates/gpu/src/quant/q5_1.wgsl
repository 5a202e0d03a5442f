// Q5_1 (block_q5_1, 24 bytes / 32 values: d f16, m f16, qh u32, qs[16]), uploaded as is
// (6 words). Bits as Q5_0; y = q * d + m (ggml dequantize_row_q5_1).

const BLOCK_ELEMS: u32 = 32u;
const BLOCK_WORDS: u32 = 6u;
const UNITS: u32 = 1u;

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let dm = unpack2x16float(W[b]);
    let qh = vec4<u32>(W[b + 1u]);
    for (var k = 0u; k < 4u; k++) {
        let w = W[b + 2u + k];
        let sh = vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(4u * k);
        let h0 = ((qh >> sh) & vec4<u32>(1u)) << vec4<u32>(4u);
        let h1 = ((qh >> (sh + vec4<u32>(16u))) & vec4<u32>(1u)) << vec4<u32>(4u);
        emit4(vec4<f32>(lo_nibbles(w) | h0) * dm.x + dm.y, col + 4u * k);
        emit4(vec4<f32>(hi_nibbles(w) | h1) * dm.x + dm.y, col + 16u + 4u * k);
    }
}
