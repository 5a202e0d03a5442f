// Q6_K (block_q6_K, 210 bytes / 256 values: ql[128], qh[64], scales[16] i8, d f16),
// repacked: body = ql, qh, scales (52 words), d in the side array. Half n < 2 uses
// ql[64n..+64], qh[32n..+32], scales[8n..+8]: for l < 32 values 128n + l, +32, +64, +96 are
// the low/low/high/high nibbles of ql[64n + l], ql[64n + l + 32], ql[64n + l],
// ql[64n + l + 32] with bits 0-1/2-3/4-5/6-7 of qh[32n + l] on top, minus 32, under scales
// 8n + l/16 + 0/2/4/6; y = (d * sc) * q (ggml dequantize_row_q6_K).
// Unit (n, g): l in 16g..16g + 16 -> 64 values under 4 scales.

const BLOCK_ELEMS: u32 = 256u;
const BLOCK_WORDS: u32 = 52u;
const UNITS: u32 = 4u;

fn q6_scale(b: u32, s: u32) -> f32 {
    return f32(sbytes4(W[b + 48u + s / 4u])[s % 4u]);
}

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let n = u / 2u;
    let g = u % 2u;
    let d = side_d(row, blk);
    let s = 8u * n + g;
    let d1 = d * q6_scale(b, s);
    let d2 = d * q6_scale(b, s + 2u);
    let d3 = d * q6_scale(b, s + 4u);
    let d4 = d * q6_scale(b, s + 6u);
    let la = b + 16u * n + 4u * g;
    let hw = b + 32u + 8u * n + 4u * g;
    let c0 = col + 128u * n + 16u * g;
    for (var k = 0u; k < 4u; k++) {
        let wa = W[la + k];
        let wb = W[la + 8u + k];
        let hb = bytes4(W[hw + k]);
        let m = vec4<u32>(3u);
        let q1 = vec4<i32>(lo_nibbles(wa) | ((hb & m) << vec4<u32>(4u))) - vec4<i32>(32);
        let q2 = vec4<i32>(lo_nibbles(wb) | (((hb >> vec4<u32>(2u)) & m) << vec4<u32>(4u))) - vec4<i32>(32);
        let q3 = vec4<i32>(hi_nibbles(wa) | (((hb >> vec4<u32>(4u)) & m) << vec4<u32>(4u))) - vec4<i32>(32);
        let q4 = vec4<i32>(hi_nibbles(wb) | (((hb >> vec4<u32>(6u)) & m) << vec4<u32>(4u))) - vec4<i32>(32);
        emit4(d1 * vec4<f32>(q1), c0 + 4u * k);
        emit4(d2 * vec4<f32>(q2), c0 + 32u + 4u * k);
        emit4(d3 * vec4<f32>(q3), c0 + 64u + 4u * k);
        emit4(d4 * vec4<f32>(q4), c0 + 96u + 4u * k);
    }
}
