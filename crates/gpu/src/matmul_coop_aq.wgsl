// The weight side of the tensor-core product for quantized blocks (matmul_coop.wgsl's
// `fetch_a` and `stage_a`), shared by the block decoders (matmul_coop_aq4_k.wgsl, _aq6_k,
// _aq8_0; composed after the generated `wq`): each thread takes units of 32 values of a
// row, the type's `fetch_unit(j, g, r, u, k0)` loads unit u (the thread's j-th) of part row
// r of matrix g for the chunk at column k0 into private registers, and its
// `stage_unit(j, u, k0)` decodes them into sh_a. Here: the loops, which rows a workgroup
// reads, the blocks' side scales, and the f16 quads the staging stores.

const F16_MAX: f32 = 65504.0;
// Every decoder's thread unit is 32 values of a row: QU per chunk, A_QT per thread.
const QU: u32 = BM * BK / 32u;
const A_QT: u32 = (QU + WG_SIZE - 1u) / WG_SIZE;

// The rows of a workgroup whose first row in the product is first_row: matrix g's (0
// outside a stack), from part row `first`, clamped to `last` (rows past the slice, or past a
// stacked matrix's rows, its padding, read the last row instead).
struct FusedRows {
    g: u32,
    first: u32,
    last: u32,
}

fn fused_rows(first_row: u32) -> FusedRows {
    let g = stack_matrix(first_row);
    let stacked = P.stack_ends.x != 0u;
    let last = select(P.rows, P.stack_rows[g], stacked) - 1u;
    return FusedRows(g, P.first_row + first_row - stack_start(g), P.first_row + last);
}

// Part row of the workgroup's row `r`.
fn fused_row(rows: FusedRows, r: u32) -> u32 {
    return min(rows.first + r, rows.last);
}

// The f16 d of block blk of part row `row` of matrix g, in the side array from word
// P.scale_base (the repacked types: Q6_K, Q8_0).
fn fused_side_d(g: u32, row: u32, blk: u32) -> f32 {
    let i = row * P.blocks_per_row + blk;
    let word = P.scale_base + i / 2u;
    let dh = unpack2x16float(wq(g, word / 4u)[word % 4u]);
    return select(dh.x, dh.y, (i & 1u) == 1u);
}

// Four values as an f16 quad, clamped to its finite range as matmul_coop_dequant.wgsl clamps
// them (both round to nearest). The decoders call it only for units whose scales allow
// values past that range (`fused_wide`; no real weights have them) and convert the others
// as they are, the same values without the per-value clamps, which cost 3-5% of a batch
// step on an H200.
fn fused_quad(v: vec4<f32>) -> Unit {
    return Unit(clamp(v, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
}

// A staged quad at unit `at` of sh_a: clamped to f16's range where the unit's scales allow
// wider values (`wide`: see fused_quad).
fn stage_quad(at: u32, v: vec4<f32>, wide: bool) {
    if wide {
        sh_a[at] = fused_quad(v);
    } else {
        sh_a[at] = Unit(v);
    }
}

// Whether a unit whose values are at most `bound` in magnitude needs `fused_quad`.
fn fused_wide(bound: f32) -> bool {
    return !(bound <= F16_MAX);
}

fn fetch_a(li: u32, first_row: u32, w_base: u32, cols: u32, k0: u32) {
    let rows = fused_rows(first_row);
    for (var j = 0u; j < A_QT; j++) {
        let u = li + j * WG_SIZE;
        fetch_unit(j, rows.g, fused_row(rows, u / (BK / 32u)), u, k0);
    }
}

fn stage_a(li: u32, k0: u32) {
    for (var j = 0u; j < A_QT; j++) {
        let u = li + j * WG_SIZE;
        if (u < QU) {
            stage_unit(j, u, k0);
        }
    }
}
