// Matrix x vector for one token, several matrices ("jobs") per dispatch:
//   y[job.y_offset + r] (op)= sum_c W_job[r][c] * round(x[job.x_offset + c])
// where round() is the activation rounding of ggml's CPU backend for the weight type (done
// here, per workgroup, so no separate rounding pass is needed).
//
// Composed (matvec.rs) as: generated header (WG_SIZE = RPW rows x TPR threads per row, TILE
// columns of x staged at a time, the weight bindings W0.. and `wl`, the loader that picks
// one), matvec_jobs.wgsl (the Job structs), rounding.wgsl, then either the float path (common helpers, the format's
// decode_unit, matvec_float.wgsl) or the integer path (matvec_int.wgsl and the type's
// dot_unit), then this file. Both paths define
//   fn prefetch(row, lane, cols)         start loading this thread's first weights (or not)
//   fn stage(t, x_base, t0, len, mode)   stage columns [t0, t0 + len) of x in workgroup memory
//   fn accumulate(row, t0, len, lane)    add this thread's units of those columns for `row`
// A job is one part of one matrix; jobs are laid out along the grid by their first
// workgroup (`wg_start`), RPW rows each.

@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

var<workgroup> sh_red: array<f32, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let w = wg.y * nwg.x + wg.x;
    let job = job_of(w);
    let first_row = (w - job.wg_start) * RPW;
    if first_row >= job.rows {
        return;
    }
    WSEL = job.binding;
    P.rows = job.rows;
    P.cols = job.cols;
    P.blocks_per_row = job.blocks_per_row;
    P.row_words = job.row_words;
    P.scale_base = job.scale_base;

    let lr = t / TPR;
    let lane = t % TPR;
    let row = first_row + lr;
    let live = row < job.rows;
    ACC = 0.0;
    if live && PROBE != 2u {
        prefetch(row, lane, job.cols);
    }
    for (var t0 = 0u; t0 < job.cols; t0 += TILE) {
        let len = min(TILE, job.cols - t0);
        if PROBE != 1u {
            stage(t, job.x_offset, t0, len, job.mode);
        }
        workgroupBarrier();
        if live && PROBE != 2u {
            accumulate(row, t0, len, lane);
        }
        workgroupBarrier();
    }
    sh_red[t] = ACC;
    workgroupBarrier();
    if live && lane == 0u {
        var s = 0.0;
        for (var k = 0u; k < TPR; k++) {
            s += sh_red[lr * TPR + k];
        }
        let i = job.y_offset + row;
        Y[i] = epilogue_of(job.epilogue, s, i);
    }
}
