// Q5_0 (block_q5_0, 22 bytes / 32 values: d f16, qh u32, qs[16]), repacked: body = qh, qs
// (5 words), d in the side array. Bit j of qh is the 5th bit of value j; nibbles as Q4_0;
// y = (q - 16) * d (ggml dequantize_row_q5_0).

const BLOCK_ELEMS: u32 = 32u;
const BLOCK_WORDS: u32 = 5u;
const UNITS: u32 = 1u;

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let d = side_d(row, blk);
    let qh = vec4<u32>(W[b]);
    for (var k = 0u; k < 4u; k++) {
        let w = W[b + 1u + k];
        let sh = vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(4u * k);
        let h0 = ((qh >> sh) & vec4<u32>(1u)) << vec4<u32>(4u);
        let h1 = ((qh >> (sh + vec4<u32>(16u))) & vec4<u32>(1u)) << vec4<u32>(4u);
        let q0 = vec4<i32>(lo_nibbles(w) | h0) - vec4<i32>(16);
        let q1 = vec4<i32>(hi_nibbles(w) | h1) - vec4<i32>(16);
        emit4(vec4<f32>(q0) * d, col + 4u * k);
        emit4(vec4<f32>(q1) * d, col + 16u + 4u * k);
    }
}
