// Integer path of matvec.wgsl, for weights read with 8-bit activations as ggml's CPU backend
// reads them (its vec_dot_type: Q8_K for the K-quants, Q8_0 for Q8_0). A staging file
// (matvec_int_q8k.wgsl or matvec_int_q8_0.wgsl: sh_q, the x codes as packed signed bytes, 16
// per vec4; sh_dx, their scales per block of x; fn stage) quantizes x in workgroup
// memory; the type's file (quant_int/) defines the weight unit (UNITS per block of
// BLOCK_VALUES values, load_unit, dot_unit, PF) whose dot_unit multiplies weight codes by
// those bytes with packed integer dot products and applies the scales in f32, as ggml's
// kernels do per block. The result equals the float path's sum of (decoded weight) x
// (rounded x) up to f32 rounding.

// The first PF units of this thread's row (PF: set by the type's file), loaded before x
// is staged so that their memory latency overlaps the staging.
var<private> PF_UNITS: array<Unit, PF>;

fn q_word(i: u32) -> u32 {
    return sh_q[i / 4u][i % 4u];
}

// Loads this thread's first PF units of the first tile (units lane, lane + TPR, ...).
fn prefetch(row: u32, lane: u32, cols: u32) {
    let units = (min(cols, TILE) / BLOCK_VALUES) * UNITS;
    for (var k = 0u; k < PF; k++) {
        let i = lane + k * TPR;
        if i < units {
            PF_UNITS[k] = load_unit(row, i / UNITS, i % UNITS);
        }
    }
}

fn accumulate(row: u32, t0: u32, len: u32, lane: u32) {
    let b0 = t0 / BLOCK_VALUES;
    let units = (len / BLOCK_VALUES) * UNITS;
    // The first PF units (prefetched in the first tile), then the rest.
    for (var k = 0u; k < PF; k++) {
        let i = lane + k * TPR;
        if i < units {
            var d = PF_UNITS[k];
            if t0 != 0u {
                d = load_unit(row, b0 + i / UNITS, i % UNITS);
            }
            ACC += dot_unit(d, i % UNITS, i / UNITS);
        }
    }
    for (var i = lane + PF * TPR; i < units; i += TPR) {
        ACC += dot_unit(load_unit(row, b0 + i / UNITS, i % UNITS), i % UNITS, i / UNITS);
    }
}
