// The tensor-core product's weight tiles decoded from Q4_0 blocks as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`). Same
// values as matmul_coop_dequant.wgsl's decode (quant/q4_0.wgsl: (q - 8) * d in f32, rounded
// to the nearest f16).
//
// Q4_0 is repacked at upload: per row, blocks of 4 words (16 code bytes: value i < 16 in
// the low nibble of byte i, value 16 + i in its high nibble), and the f16 d of every block
// in the side array from word P.scale_base (row-major over the part's blocks). A chunk of BK
// columns is BK / 32 blocks per row. Thread unit u: row u / (BK / 32), block u % (BK / 32)
// of the chunk: one 16-byte load and the block's d.
//
// In range by construction (built unchecked): the private arrays by j < A_QT; a unit
// u < QU = BM * BK / 32 goes to row u / (BK / 32) < BM and writes units 8 b + k (k < 8) of
// its row, b < BK / 32, so at most BK / 4 - 1 < ROW_UNITS < SU. Rows past the slice or a
// stacked matrix's rows read its last row instead.

// This thread's block and its scale, for the next chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> da: array<f32, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let blk = k0 / 32u + u % (BK / 32u);
    qa[j] = wq(g, (r * P.row_words) / 4u + blk);
    da[j] = fused_side_d(g, r, blk);
}

// The values of code word w's low nibbles (shift 0) or high nibbles (shift 4): (q - 8) d.
fn q4_0_values(w: u32, shift: u32, d: f32) -> vec4<f32> {
    let q = (vec4<u32>(w) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(shift))) & vec4<u32>(15u);
    return (vec4<f32>(q) - vec4<f32>(8.0)) * d;
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let base = (u / (BK / 32u)) * SU + 8u * (u % (BK / 32u));
    let d = da[j];
    // (Codes -8..7: values at most 8 |d|.)
    if fused_wide(8.0 * abs(d)) {
        for (var k = 0u; k < 4u; k++) {
            sh_a[base + k] = fused_quad(q4_0_values(qa[j][k], 0u, d));
            sh_a[base + 4u + k] = fused_quad(q4_0_values(qa[j][k], 4u, d));
        }
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        sh_a[base + k] = Unit(q4_0_values(qa[j][k], 0u, d));
        sh_a[base + 4u + k] = Unit(q4_0_values(qa[j][k], 4u, d));
    }
}
