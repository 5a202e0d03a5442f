// The tensor-core product's weight tiles decoded from Q8_0 blocks as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`). Same
// values as matmul_coop_dequant.wgsl's decode (quant/q8_0.wgsl: q * d in f32, rounded to
// the nearest f16).
//
// Q8_0 is repacked at upload: per row, blocks of 8 words (32 signed bytes), and the f16 d of
// every block in the side array from word P.scale_base (row-major over the part's blocks).
// A chunk of BK columns is BK / 32 blocks per row. Thread unit u: row u / (BK / 32), block
// u % (BK / 32) of the chunk: two 16-byte loads and the block's d.
//
// In range by construction (built unchecked): the private arrays by j < A_QT; a unit
// u < QU = BM * BK / 32 goes to row u / (BK / 32) < BM and writes units 8 b + k (k < 8) of
// its row, b < BK / 32, so at most BK / 4 - 1 < ROW_UNITS < SU. Rows past the slice or a
// stacked matrix's rows read its last row instead.

// This thread's block (its two halves) and its scale, for the next chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> qb: array<vec4<u32>, A_QT>;
var<private> da: array<f32, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let blk = k0 / 32u + u % (BK / 32u);
    let body = (r * P.row_words) / 4u + 2u * blk;
    qa[j] = wq(g, body);
    qb[j] = wq(g, body + 1u);
    da[j] = fused_side_d(g, r, blk);
}

// Four signed bytes times d.
fn q8_0_values(w: u32, d: f32) -> vec4<f32> {
    let b = bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    return vec4<f32>(b) * d;
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let base = (u / (BK / 32u)) * SU + 8u * (u % (BK / 32u));
    let d = da[j];
    // (Codes -128..127: values at most 128 |d|.)
    if fused_wide(128.0 * abs(d)) {
        for (var k = 0u; k < 4u; k++) {
            sh_a[base + k] = fused_quad(q8_0_values(qa[j][k], d));
            sh_a[base + 4u + k] = fused_quad(q8_0_values(qb[j][k], d));
        }
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        sh_a[base + k] = Unit(q8_0_values(qa[j][k], d));
        sh_a[base + 4u + k] = Unit(q8_0_values(qb[j][k], d));
    }
}
