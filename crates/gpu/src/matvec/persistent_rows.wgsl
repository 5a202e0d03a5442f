// One matvec phase of a persistent kernel (persistent.rs), composed once per phase with
// every name of the weight type's unit file (and of this file) suffixed by the phase: the
// workgroups share out steps of PWG_SIZE / TPR rows (TPR threads per row, walking its
// 16-byte units as direct.wgsl does), the input from the kernel's words `xq_word(i)` and
// `xq_vec4(i)` (words i..i + 4, i a multiple of 4) (its
// codes, scales and sums per 16 from words XQ_CODES, XQ_D and XQ_BS), and call the kernel's
// `store(row, sum)` once per row. The words are written in the same dispatch: plain loads are
// safe because no workgroup reads these words before the barrier after which they are
// final (see the engine's layer_tail.wgsl).

@group(0) @binding(WBINDING) var<storage, read> W: array<vec4<u32>>;

var<private> SCALE_BASE: u32;

fn wl(i: u32) -> vec4<u32> {
    return W[i];
}

fn w_word(wi: u32) -> u32 {
    let q = wl(wi / 4u);
    let k = wi % 4u;
    return select(select(q.x, q.y, k == 1u), select(q.z, q.w, k == 3u), k >= 2u);
}

fn side_scale(side: u32, blk: u32) -> f32 {
    let i = side + blk;
    let dh = unpack2x16float(w_word(SCALE_BASE + i / 2u));
    return select(dh.x, dh.y, (i & 1u) == 1u);
}

fn x_codes(v: u32) -> vec4<u32> {
    return xq_vec4(XQ_CODES + v / 4u);
}

fn x_scale(v: u32) -> f32 {
    return bitcast<f32>(xq_word(XQ_D + v / XQ_BLOCK));
}

fn x_sum16(v: u32) -> i32 {
    return bitcast<i32>(xq_word(XQ_BS + v / 16u));
}

// This thread's share of the dot products of rows `ra` and `rb` (both valid), two units of
// each row in flight at a time.
fn rows_dot(ra: u32, rb: u32, lane: u32, m: PhaseMatrix) -> vec2<f32> {
    let units = m.blocks_per_row * UNITS;
    let wa = ra * (m.row_words / 4u);
    let wb = rb * (m.row_words / 4u);
    let sa = ra * m.blocks_per_row;
    let sb = rb * m.blocks_per_row;
    var acc = vec2<f32>(0.0, 0.0);
    for (var u = lane; u < units; u += 2u * TPR) {
        let u2 = min(u + TPR, units - 1u);
        let a1 = prep_unit(load_unit(wa, sa, u / UNITS, u % UNITS), u / UNITS, u % UNITS);
        let a2 = prep_unit(load_unit(wa, sa, u2 / UNITS, u2 % UNITS), u2 / UNITS, u2 % UNITS);
        let b1 = prep_unit(load_unit(wb, sb, u / UNITS, u % UNITS), u / UNITS, u % UNITS);
        let b2 = prep_unit(load_unit(wb, sb, u2 / UNITS, u2 % UNITS), u2 / UNITS, u2 % UNITS);
        let second = u + TPR < units;
        acc.x += prep_x(a1, 0u) + select(0.0, prep_x(a2, 0u), second);
        acc.y += prep_x(b1, 0u) + select(0.0, prep_x(b2, 0u), second);
    }
    return acc;
}

// This thread's share of the dot product of row `r`, two units in flight at a time.
fn row_dot(r: u32, lane: u32, m: PhaseMatrix) -> f32 {
    let units = m.blocks_per_row * UNITS;
    let w = r * (m.row_words / 4u);
    let side = r * m.blocks_per_row;
    var acc = 0.0;
    for (var u = lane; u < units; u += 2u * TPR) {
        let u2 = min(u + TPR, units - 1u);
        let a1 = prep_unit(load_unit(w, side, u / UNITS, u % UNITS), u / UNITS, u % UNITS);
        let a2 = prep_unit(load_unit(w, side, u2 / UNITS, u2 % UNITS), u2 / UNITS, u2 % UNITS);
        acc += prep_x(a1, 0u) + select(0.0, prep_x(a2, 0u), u + TPR < units);
    }
    return acc;
}

// Workgroup `wg` of `nwg` takes row steps wg, wg + nwg, ... (PWG_SIZE / TPR rows per step),
// one at a time (PAIRED = false) or two (each thread then has four units in flight).
fn phase_rows(wg: u32, nwg: u32, t: u32, m: PhaseMatrix) {
    let lr = t / TPR;
    let lane = t % TPR;
    let rpw = PWG_SIZE / TPR;
    let steps = (m.rows + rpw - 1u) / rpw;
    SCALE_BASE = m.scale_base;
    if !PAIRED {
        for (var s = wg; s < steps; s += nwg) {
            let row = s * rpw + lr;
            let total = px_row_sum(t, lane, TPR, row_dot(min(row, m.rows - 1u), lane, m));
            if lane == 0u && row < m.rows {
                store(row, total);
            }
        }
        return;
    }
    for (var s = wg; s < steps; s += 2u * nwg) {
        let row_a = s * rpw + lr;
        let row_b = (s + nwg) * rpw + lr;
        // Rows past the matrix compute the last row again, unstored.
        let acc = rows_dot(min(row_a, m.rows - 1u), min(row_b, m.rows - 1u), lane, m);
        let total_a = px_row_sum(t, lane, TPR, acc.x);
        let total_b = px_row_sum(t, lane, TPR, acc.y);
        if lane == 0u && row_a < m.rows {
            store(row_a, total_a);
        }
        if lane == 0u && row_b < m.rows {
            store(row_b, total_b);
        }
    }
}
