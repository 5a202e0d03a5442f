// Matrix x vectors: y[t][row_start + r] (op)= sum_c W[r][c] * x[t][c] for one part of a
// GpuMatrix, for the tokens t < n (n = STEP[N_TOKENS_WORD], clamped to P.max_tokens).
//
// Header constants (from matmul.rs): WG_SIZE threads = RPW rows x TPR threads per row;
// TT tokens per workgroup; EPILOGUE; N_TOKENS_WORD.
// Grid: x, y = row groups of RPW rows (linearised: wg.y * num_workgroups.x + wg.x, a 2-D grid
// so more than 65535 groups fit), z = token groups of TT tokens.
//
// The TPR threads of a row stride over its work units (adjacent threads read adjacent
// words), decode each unit once in registers and use every decoded value for all TT tokens,
// accumulating in f32. Partial sums meet in workgroup memory; lane t of each row then adds
// its row's TPR partials for token t and applies the epilogue.

// X (binding 2) and load_x4 / load_x1 come from matmul_x1.wgsl or matmul_x4.wgsl.
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> STEP: array<u32>;

var<private> acc: array<f32, TT>;
// X index of the first token's row of this workgroup, and how many tokens it has (<= TT).
var<private> x_base: u32;
var<private> n_here: u32;

var<workgroup> partial: array<f32, WG_SIZE * TT>;

fn emit4(w: vec4<f32>, col: u32) {
    for (var t = 0u; t < TT; t++) {
        if (t < n_here) {
            let i = x_base + t * P.in_stride + col;
            acc[t] += dot(w, load_x4(i));
        }
    }
}

fn emit1(w: f32, col: u32) {
    for (var t = 0u; t < TT; t++) {
        if (t < n_here) {
            acc[t] += w * load_x1(x_base + t * P.in_stride + col);
        }
    }
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n_tok = min(STEP[N_TOKENS_WORD], P.max_tokens);
    let t0 = wg.z * TT;
    let first_row = (wg.y * nwg.x + wg.x) * RPW;
    if (t0 >= n_tok || first_row >= P.rows) {
        return;
    }
    n_here = min(TT, n_tok - t0);
    x_base = P.in_offset + t0 * P.in_stride;
    let lr = li / TPR;
    let lane = li % TPR;
    let row = first_row + lr;
    for (var t = 0u; t < TT; t++) {
        acc[t] = 0.0;
    }
    if (row < P.rows) {
        let units = P.blocks_per_row * UNITS;
        for (var i = lane; i < units; i += TPR) {
            let blk = i / UNITS;
            decode_unit(row, blk, i % UNITS, blk * BLOCK_ELEMS);
        }
    }
    for (var t = 0u; t < TT; t++) {
        partial[(lr * TT + t) * TPR + lane] = acc[t];
    }
    workgroupBarrier();
    if (row < P.rows && lane < n_here) {
        var s = 0.0;
        let p = (lr * TT + lane) * TPR;
        for (var k = 0u; k < TPR; k++) {
            s += partial[p + k];
        }
        let i = P.out_offset + (t0 + lane) * P.out_stride + P.row_start + row;
        Y[i] = epilogue_of(EPILOGUE, s, i);
    }
}
