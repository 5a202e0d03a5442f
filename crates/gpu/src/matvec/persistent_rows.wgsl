// One matvec phase of a persistent kernel (persistent.rs), composed once per phase with
// every name of the weight type's unit file (and of this file) suffixed by the phase: the
// workgroups share out steps of PWG_SIZE / TPR rows (TPR threads per row, walking its
// 16-byte units as direct.wgsl does, two in flight), the input from the PX arrays
// (persistent_input.wgsl), and call the kernel's `store(row, sum)` once per row.

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
    let i = v / 4u;
    return vec4<u32>(PX_CODES[i], PX_CODES[i + 1u], PX_CODES[i + 2u], PX_CODES[i + 3u]);
}

fn x_scale(v: u32) -> f32 {
    return PX_D[v / XQ_BLOCK];
}

fn x_sum16(v: u32) -> i32 {
    return PX_SUM[v / 16u];
}

fn phase_rows(wg: u32, nwg: u32, t: u32, m: PhaseMatrix) {
    let lr = t / TPR;
    let lane = t % TPR;
    let rpw = PWG_SIZE / TPR;
    let steps = (m.rows + rpw - 1u) / rpw;
    SCALE_BASE = m.scale_base;
    let units = m.blocks_per_row * UNITS;
    for (var s = wg; s < steps; s += nwg) {
        let row = s * rpw + lr;
        var acc = 0.0;
        if row < m.rows {
            let rb = row * (m.row_words / 4u);
            let side = row * m.blocks_per_row;
            for (var u = lane; u < units; u += 2u * TPR) {
                let u2 = min(u + TPR, units - 1u);
                let da = prep_unit(load_unit(rb, side, u / UNITS, u % UNITS), u / UNITS, u % UNITS);
                let db = prep_unit(load_unit(rb, side, u2 / UNITS, u2 % UNITS), u2 / UNITS, u2 % UNITS);
                acc += prep_x(da, 0u) + select(0.0, prep_x(db, 0u), u + TPR < units);
            }
        }
        let total = px_row_sum(t, lane, TPR, acc);
        if lane == 0u && row < m.rows {
            store(row, total);
        }
    }
}
