// The tensor-core product's weight tiles decoded from Q5_0 blocks as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`; after
// matmul_coop_words.wgsl). Same values as matmul_coop_dequant.wgsl's decode
// (quant/q5_0.wgsl: (q - 16) * d in f32, rounded to the nearest f16).
//
// Q5_0 is repacked at upload: per row, blocks of 5 words (qh, then 16 code bytes: value
// i < 16 in the low nibble of byte i, value 16 + i in its high nibble, bit i of qh the 5th
// bit of value i), so rows are whole words, not vec4s, and the f16 d of every block in the
// side array from word P.scale_base. A chunk of BK columns is BK / 32 blocks per row. Thread
// unit u: row u / (BK / 32), block u % (BK / 32) of the chunk.
//
// In range by construction (built unchecked): the private arrays by j < A_QT; a unit
// u < QU = BM * BK / 32 goes to row u / (BK / 32) < BM and writes units 8 b + k (k < 8) of
// its row, b < BK / 32, so at most BK / 4 - 1 < ROW_UNITS < SU. Rows past the slice or a
// stacked matrix's rows read its last row instead.

// This thread's code bytes, qh and d, for the next chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> ha: array<u32, A_QT>;
var<private> da: array<f32, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let blk = k0 / 32u + u % (BK / 32u);
    let b = r * P.row_words + blk * 5u;
    let a = wq(g, b / 4u);
    let c = wq(g, b / 4u + 1u);
    qa[j] = w_shift(a, c, b % 4u + 1u);
    ha[j] = w_pick(a, b % 4u);
    da[j] = fused_side_d(g, r, blk);
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let base = (u / (BK / 32u)) * SU + 8u * (u % (BK / 32u));
    let d = da[j];
    let q = qa[j];
    // (Codes -16..15: values at most 16 |d|.)
    let wide = fused_wide(16.0 * abs(d));
    for (var k = 0u; k < 4u; k++) {
        // Codes 4k.. and 16 + 4k.. with their 5th bits.
        let c = q5_bytes(q[k], ha[j], k);
        let v0 = vec4<f32>(vec4<i32>(word_bytes(c.x)) - vec4<i32>(16)) * d;
        let v1 = vec4<f32>(vec4<i32>(word_bytes(c.y)) - vec4<i32>(16)) * d;
        stage_quad(base + k, v0, wide);
        stage_quad(base + 4u + k, v1, wide);
    }
}
