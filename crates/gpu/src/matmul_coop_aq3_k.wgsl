// The tensor-core product's weight tiles decoded from Q3_K blocks as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`). Same values as matmul_coop_dequant.wgsl's decode
// (quant/q3_k.wgsl: (d * (s - 32)) * (q - 4 or q) in f32, rounded to the nearest f16).
//
// Q3_K blocks are padded at upload to 112 bytes, 7 vec4: hmask[32] (vec4 0-1), qs[64] (2-5),
// scales[12] and d (6: words x, y, z and the low half of w). Value 128n + 32j + 16h + l
// (n < 2, j < 4, h < 2, l < 16) has its low two bits at bits 2j of qs byte 32n + 16h + l and
// its high bit at bit 4n + j of hmask byte 16h + l (clear means -4), under 6-bit scale 8n +
// 2j + h stored +32: its low 4 bits nibble n of scale byte 2j + h, its top 2 at bit 2 (2n +
// j / 2) of byte 8 + (2j + h) % 4. Thread unit u: row u / (BK / 32), the 32 values 32 (u %
// (BK / 32)) of the chunk: column group q = n * 4 + j of its block, qs vec4s 2 + 2n, 3 + 2n,
// both hmask vec4s and the scales.
//
// In range by construction (built unchecked): the private arrays by j < A_QT; a unit
// u < QU = BM * BK / 32 goes to row u / (BK / 32) < BM and writes units 8 b + k (k < 8) of
// its row, b < BK / 32, so at most BK / 4 - 1 < ROW_UNITS < SU. Rows past the slice or a
// stacked matrix's rows read its last row instead.

// This thread's code vec4s and hmask vec4s (h = 0, 1) and the scales vec4, for the next
// chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> qb: array<vec4<u32>, A_QT>;
var<private> ma: array<vec4<u32>, A_QT>;
var<private> mb: array<vec4<u32>, A_QT>;
var<private> sa: array<vec4<u32>, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let col = k0 + 32u * (u % (BK / 32u));
    let b = (r * P.row_words) / 4u + (col / 256u) * 7u;
    let n = (col % 256u) / 128u;
    qa[j] = wq(g, b + 2u + 2u * n);
    qb[j] = wq(g, b + 3u + 2u * n);
    ma[j] = wq(g, b);
    mb[j] = wq(g, b + 1u);
    sa[j] = wq(g, b + 6u);
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let base = (u / (BK / 32u)) * SU + 8u * (u % (BK / 32u));
    let q = ((k0 + 32u * (u % (BK / 32u))) % 256u) / 32u;
    let n = q / 4u;
    let jj = q % 4u;
    let sh = vec4<u32>(0u, 8u, 16u, 24u);
    for (var h = 0u; h < 2u; h++) {
        // Scale byte 2 (jj % 2) + h of scale words jj / 2 (nibble n) and 2 (bits
        // 2 (2n + jj / 2)).
        let at = 8u * (2u * (jj % 2u) + h);
        let lo = (select(sa[j].x, sa[j].y, jj >= 2u) >> (at + 4u * n)) & 15u;
        let hi = (sa[j].z >> (at + 2u * (2u * n + jj / 2u))) & 3u;
        let dl = unpack2x16float(sa[j].w).x * f32(i32(lo | (hi << 4u)) - 32);
        let words = select(qa[j], qb[j], h == 1u);
        let hm = select(ma[j], mb[j], h == 1u);
        // (Codes -4..3: values at most 4 |dl|.)
        let wide = fused_wide(4.0 * abs(dl));
        for (var k = 0u; k < 4u; k++) {
            let low = vec4<i32>((vec4<u32>(words[k]) >> (sh + vec4<u32>(2u * jj))) & vec4<u32>(3u));
            let high = ((vec4<u32>(hm[k]) >> (sh + vec4<u32>(4u * n + jj))) & vec4<u32>(1u)) == vec4<u32>(1u);
            let v = dl * vec4<f32>(low - select(vec4<i32>(4), vec4<i32>(0), high));
            stage_quad(base + 4u * h + k, v, wide);
        }
    }
}
