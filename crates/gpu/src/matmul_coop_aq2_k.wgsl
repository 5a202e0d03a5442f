// The tensor-core product's weight tiles decoded from Q2_K blocks as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`; after
// matmul_coop_words.wgsl). Same values as matmul_coop_dequant.wgsl's decode
// (quant/q2_k.wgsl: (d * sc) * q - (dmin * m) in f32, rounded to the nearest f16).
//
// Q2_K blocks are uploaded as ggml writes them: 21 words (scales[16], qs[64], [d | dmin]),
// so rows are whole words, not vec4s. Value 128n + 32j + 16h + l (n < 2, j < 4, h < 2,
// l < 16) is bits 2j..2j + 2 of qs byte 32n + 16h + l under scale byte 8n + 2j + h (low
// nibble the scale, high nibble the min). Thread unit u: row u / (BK / 32), the 32 values
// 32 (u % (BK / 32)) of the chunk: column group q = n * 4 + j of its block, qs bytes 32n..
// (eight words) and scale bytes 8n + 2j, 8n + 2j + 1 (one word).
//
// In range by construction (built unchecked): the private arrays by j < A_QT; a unit
// u < QU = BM * BK / 32 goes to row u / (BK / 32) < BM and writes units 8 b + k (k < 8) of
// its row, b < BK / 32, so at most BK / 4 - 1 < ROW_UNITS < SU. Rows past the slice or a
// stacked matrix's rows read its last row instead.

// This thread's code words (h = 0, 1), scale word and [d | dmin], for the next chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> qb: array<vec4<u32>, A_QT>;
var<private> sa: array<vec2<u32>, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let col = k0 + 32u * (u % (BK / 32u));
    let b = r * P.row_words + (col / 256u) * 21u;
    let q = (col % 256u) / 32u;
    let n = q / 4u;
    qa[j] = wq_words4(g, b + 4u + 8u * n);
    qb[j] = wq_words4(g, b + 8u + 8u * n);
    sa[j] = vec2<u32>(wq_word(g, b + 2u * n + (q % 4u) / 2u), wq_word(g, b + 20u));
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let base = (u / (BK / 32u)) * SU + 8u * (u % (BK / 32u));
    let q = ((k0 + 32u * (u % (BK / 32u))) % 256u) / 32u;
    let jj = q % 4u;
    let dm = unpack2x16float(sa[j].y);
    // Scale bytes 2 (jj % 2) + h of the word.
    let sw = sa[j].x >> (16u * (jj % 2u));
    let sh = vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(2u * jj);
    for (var h = 0u; h < 2u; h++) {
        let sc = (sw >> (8u * h)) & 0xffu;
        let dl = dm.x * f32(sc & 15u);
        let ml = dm.y * f32(sc >> 4u);
        let words = select(qa[j], qb[j], h == 1u);
        // (Codes 0..3: values at most 3 |dl| + |ml|.)
        let wide = fused_wide(3.0 * abs(dl) + abs(ml));
        for (var k = 0u; k < 4u; k++) {
            let v = dl * vec4<f32>((vec4<u32>(words[k]) >> sh) & vec4<u32>(3u)) - ml;
            stage_quad(base + 4u * h + k, v, wide);
        }
    }
}
