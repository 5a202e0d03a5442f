// Q3_K (block_q3_K, 110 bytes / 256 values: hmask[32], qs[64], scales[12], d f16),
// padded to 112 bytes (28 words: hmask, qs, scales, then d in the low half of word 27).
// Value 128n + 32j + 16h + l (n < 2, j < 4, h < 2, l < 16): low 2 bits are bits 2j..2j+2 of
// qs[32n + 16h + l], the high bit is bit 4n + j of hmask[16h + l] (clear means -4), scale
// s = 8n + 2j + h is 6 bits: low 4 in byte s % 8 (nibble s / 8) of scales, top 2 in byte
// 8 + s % 4 (bits 2(s / 4)..), stored +32 (ggml's kmask1/kmask2 unpacking);
// y = (d * (s - 32)) * (q - (high ? 0 : 4)) (ggml dequantize_row_q3_K).
// Unit (n, h): 16 qs bytes and 16 hmask bytes -> 64 values under 4 scales.

const BLOCK_ELEMS: u32 = 256u;
const BLOCK_WORDS: u32 = 28u;
const UNITS: u32 = 4u;

fn q3_scale(b: u32, s: u32) -> i32 {
    let lo = (byte_at(b + 24u, s % 8u) >> (4u * (s / 8u))) & 15u;
    let hi = (byte_at(b + 24u, 8u + s % 4u) >> (2u * (s / 4u))) & 3u;
    return i32(lo | (hi << 4u)) - 32;
}

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let n = u / 2u;
    let h = u % 2u;
    let d_all = f16_lo(W[b + 27u]);
    let qw = b + 8u + 8u * n + 4u * h;
    let hw = b + 4u * h;
    let q = array<u32, 4>(W[qw], W[qw + 1u], W[qw + 2u], W[qw + 3u]);
    let hm = array<u32, 4>(W[hw], W[hw + 1u], W[hw + 2u], W[hw + 3u]);
    for (var j = 0u; j < 4u; j++) {
        let dl = d_all * f32(q3_scale(b, 8u * n + 2u * j + h));
        let c = col + 128u * n + 32u * j + 16u * h;
        let bit = vec4<u32>(4u * n + j);
        for (var k = 0u; k < 4u; k++) {
            let lo = vec4<i32>((bytes4(q[k]) >> vec4<u32>(2u * j)) & vec4<u32>(3u));
            let high = ((bytes4(hm[k]) >> bit) & vec4<u32>(1u)) == vec4<u32>(1u);
            let v = lo - select(vec4<i32>(4), vec4<i32>(0), high);
            emit4(dl * vec4<f32>(v), c + 4u * k);
        }
    }
}
