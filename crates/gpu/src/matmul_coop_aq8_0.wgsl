// The tensor-core product's weight tiles decoded from Q8_0 blocks as they are staged
// (matmul_coop.wgsl's `fetch_a` and `stage_a`; see matmul_coop_aq4_k.wgsl for why and for
// `wq`). Same values as matmul_coop_dequant.wgsl's decode (quant/q8_0.wgsl: q * d in f32,
// rounded to the nearest f16).
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

const QU: u32 = BM * BK / 32u;
const A_QT: u32 = (QU + WG_SIZE - 1u) / WG_SIZE;
const F16_MAX: f32 = 65504.0;

// This thread's block (its two halves) and its scale, for the next chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> qb: array<vec4<u32>, A_QT>;
var<private> da: array<f32, A_QT>;

fn fetch_a(li: u32, first_row: u32, w_base: u32, cols: u32, k0: u32) {
    let g = stack_matrix(first_row);
    let stacked = P.stack_ends.x != 0u;
    let last = select(P.rows, P.stack_rows[g], stacked) - 1u;
    let first = P.first_row + first_row - stack_start(g);
    for (var j = 0u; j < A_QT; j++) {
        let u = li + j * WG_SIZE;
        let r = min(first + u / (BK / 32u), P.first_row + last);
        let blk = k0 / 32u + u % (BK / 32u);
        let body = (r * P.row_words) / 4u + 2u * blk;
        qa[j] = wq(g, body);
        qb[j] = wq(g, body + 1u);
        let i = r * P.blocks_per_row + blk;
        let word = P.scale_base + i / 2u;
        let dh = unpack2x16float(wq(g, word / 4u)[word % 4u]);
        da[j] = select(dh.x, dh.y, (i & 1u) == 1u);
    }
}

// Four signed bytes times d, as an f16 quad.
fn q8_0_quad(w: u32, d: f32) -> Unit {
    let b = bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    return Unit(clamp(vec4<f32>(b) * d, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
}

fn stage_a(li: u32, k0: u32) {
    for (var j = 0u; j < A_QT; j++) {
        let u = li + j * WG_SIZE;
        if (u < QU) {
            let base = (u / (BK / 32u)) * SU + 8u * (u % (BK / 32u));
            let d = da[j];
            for (var k = 0u; k < 4u; k++) {
                sh_a[base + k] = q8_0_quad(qa[j][k], d);
                sh_a[base + 4u + k] = q8_0_quad(qb[j][k], d);
            }
        }
    }
}
