// The tensor-core product's weight tiles converted from BF16 rows as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`), instead
// of an f16 copy written by matmul_coop_dequant.wgsl just before: the same values (a
// bfloat16 widened to f32 exactly, rounded to the nearest f16, clamped to its finite range).
//
// BF16 rows are kept native, two values per word, lower half first, P.row_words words per
// row (a multiple of 4). Thread unit u: row u / (BK / 32), values 32 (u % (BK / 32)).. of the
// chunk: 16 words, four 16-byte loads.
//
// In range by construction (built unchecked): the private arrays by j < A_QT; a unit
// u < QU = BM * BK / 32 goes to row u / (BK / 32) < BM and writes units 8 b + k (k < 8) of
// its row, b < BK / 32, so at most BK / 4 - 1 < ROW_UNITS < SU. Rows past the slice or a
// stacked matrix's rows read its last row instead.

// This thread's 32 values (16 words), for the next chunk.
var<private> wa: array<array<vec4<u32>, 4>, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let at = (r * P.row_words + (k0 + 32u * (u % (BK / 32u))) / 2u) / 4u;
    for (var k = 0u; k < 4u; k++) {
        wa[j][k] = wq(g, at + k);
    }
}

// Four values from two words.
fn bf16_quad(w0: u32, w1: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(w0 << 16u, w0 & 0xffff0000u, w1 << 16u, w1 & 0xffff0000u));
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let base = (u / (BK / 32u)) * SU + 8u * (u % (BK / 32u));
    // The largest magnitude's bits (a bfloat16's are the top half of its f32's; NaNs compare
    // above infinity).
    var m = vec4<u32>(0u);
    for (var k = 0u; k < 4u; k++) {
        let w = wa[j][k];
        m = max(m, max((w << vec4<u32>(16u)) & vec4<u32>(0x7fffffffu), w & vec4<u32>(0x7fff0000u)));
    }
    if fused_wide(bitcast<f32>(max(max(m.x, m.y), max(m.z, m.w)))) {
        for (var k = 0u; k < 4u; k++) {
            let w = wa[j][k];
            sh_a[base + 2u * k] = fused_quad(bf16_quad(w.x, w.y));
            sh_a[base + 2u * k + 1u] = fused_quad(bf16_quad(w.z, w.w));
        }
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        let w = wa[j][k];
        sh_a[base + 2u * k] = Unit(bf16_quad(w.x, w.y));
        sh_a[base + 2u * k + 1u] = Unit(bf16_quad(w.z, w.w));
    }
}
