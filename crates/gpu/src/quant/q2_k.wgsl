// Q2_K (block_q2_K, 84 bytes / 256 values: scales[16], qs[64], d f16, dmin f16), uploaded as
// is (21 words). Value 128n + 32j + 16h + l (n < 2, j < 4, h < 2, l < 16) is bits 2j..2j+2
// of qs[32n + 16h + l] with scale byte 8n + 2j + h (low nibble: scale, high: min);
// y = (d * sc) * q - (dmin * m) (ggml dequantize_row_q2_K).
// Unit (n, h): 16 qs bytes (4 words) -> 64 values under 4 scale bytes.

const BLOCK_ELEMS: u32 = 256u;
const BLOCK_WORDS: u32 = 21u;
const UNITS: u32 = 4u;

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let n = u / 2u;
    let h = u % 2u;
    let dm = unpack2x16float(W[b + 20u]);
    let qw = b + 4u + 8u * n + 4u * h;
    let q = array<u32, 4>(W[qw], W[qw + 1u], W[qw + 2u], W[qw + 3u]);
    for (var j = 0u; j < 4u; j++) {
        let sc = byte_at(b, 8u * n + 2u * j + h);
        let dl = dm.x * f32(sc & 15u);
        let ml = dm.y * f32(sc >> 4u);
        let c = col + 128u * n + 32u * j + 16u * h;
        for (var k = 0u; k < 4u; k++) {
            let v = vec4<f32>((bytes4(q[k]) >> vec4<u32>(2u * j)) & vec4<u32>(3u));
            emit4(dl * v - ml, c + 4u * k);
        }
    }
}
