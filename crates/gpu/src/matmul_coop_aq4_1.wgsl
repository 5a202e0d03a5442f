// The tensor-core product's weight tiles decoded from Q4_1 and Q5_1 blocks as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`; after
// matmul_coop_words.wgsl, with Q5_1 set by the generated header's QH_BITS: 0 for Q4_1, 1
// for Q5_1). Same values as matmul_coop_dequant.wgsl's decode (quant/q4_1.wgsl and
// quant/q5_1.wgsl: q * d + m in f32, rounded to the nearest f16).
//
// Blocks are uploaded as ggml writes them: Q4_1 5 words ([d | m], 16 code bytes), Q5_1 6
// ([d | m], qh, 16 code bytes; bit i of qh is the 5th bit of value i), so rows are whole
// words, not vec4s. A chunk of BK columns is BK / 32 blocks per row. Thread unit u: row
// u / (BK / 32), block u % (BK / 32) of the chunk.
//
// In range by construction (built unchecked): the private arrays by j < A_QT; a unit
// u < QU = BM * BK / 32 goes to row u / (BK / 32) < BM and writes units 8 b + k (k < 8) of
// its row, b < BK / 32, so at most BK / 4 - 1 < ROW_UNITS < SU. Rows past the slice or a
// stacked matrix's rows read its last row instead.

const Q_1_WORDS: u32 = 5u + QH_BITS;

// This thread's code bytes, [d | m] and qh (Q5_1), for the next chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> ma: array<vec2<u32>, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let blk = k0 / 32u + u % (BK / 32u);
    let b = r * P.row_words + blk * Q_1_WORDS;
    let a = wq(g, b / 4u);
    let c = wq(g, b / 4u + 1u);
    // (Q5_1: b % 4 is 0 or 2, so [d | m] and qh are both in a.)
    let o = b % 4u;
    qa[j] = w_shift(a, c, o + 1u + QH_BITS);
    ma[j] = vec2<u32>(w_pick(a, o), select(0u, w_pick(a, min(o + 1u, 3u)), QH_BITS == 1u));
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let base = (u / (BK / 32u)) * SU + 8u * (u % (BK / 32u));
    let dm = unpack2x16float(ma[j].x);
    let qh = ma[j].y;
    let q = qa[j];
    // (Codes 0..15 or 0..31: values at most 31 |d| + |m|.)
    let wide = fused_wide(f32(15u + 16u * QH_BITS) * abs(dm.x) + abs(dm.y));
    for (var k = 0u; k < 4u; k++) {
        // Codes 4k.. and 16 + 4k.. with their 5th bits (none for Q4_1).
        let c = q5_bytes(q[k], qh, k);
        let v0 = vec4<f32>(word_bytes(c.x)) * dm.x + dm.y;
        let v1 = vec4<f32>(word_bytes(c.y)) * dm.x + dm.y;
        stage_quad(base + k, v0, wide);
        stage_quad(base + 4u + k, v1, wide);
    }
}
