// Matrix x vector for one token with the input pre-quantized to Q8_K (quantize_q8k.wgsl),
// for weights ggml multiplies with Q8_K activations (Q4_K, Q6_K):
//   y[job.y_offset + r] (op)= sum_c W_job[r][c] * q8k(x)[job.x_offset + c]
// Unlike matvec.wgsl, no workgroup stages or rounds x: every thread reads the input's codes
// and scales from XQ (a few KB, shared by all workgroups through the caches), so a
// workgroup starts streaming its weights at once and has no barrier until the final sum.
// The threads of a row (TPR) walk it in "units" of 16 weight bytes (32 values), consecutive
// lanes on consecutive units, so each load instruction of a row covers contiguous memory;
// every thread keeps two units in flight.
//
// Composed (matvec.rs) as: generated header (WG_SIZE, TPR, RPW, MAX_JOBS, the weight
// bindings W0.. as vec4<u32> and `wl`), epilogue.wgsl, the type's file (q8k_q4_k.wgsl or
// q8k_q6_k.wgsl: UNITS per block of 256 values and `unit_dot`), then this file.

struct Job {
    rows: u32,
    cols: u32,
    blocks_per_row: u32,
    row_words: u32,
    scale_base: u32,
    wg_start: u32,
    x_offset: u32,
    y_offset: u32,
    epilogue: u32,
    mode: u32,
    binding: u32,
    _pad: u32,
}

struct Jobs {
    n: u32,
    // Word offsets in XQ of the block scales and of the sums per 16 values.
    xq_d: u32,
    xq_bs: u32,
    _c: u32,
    j: array<Job, MAX_JOBS>,
}

@group(0) @binding(0) var<uniform> JOBS: Jobs;
// The codes of the quantized input, 16 per vec4; XQS: the same buffer as words.
@group(0) @binding(1) var<storage, read> XQ4: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(7) var<storage, read> XQS: array<u32>;

var<workgroup> sh_red: array<f32, WG_SIZE>;
// Word index of the side array of scales in the job's weight binding.
var<private> SCALE_BASE: u32;

// d of the input block holding value v.
fn x_scale(v: u32) -> f32 {
    return bitcast<f32>(XQS[JOBS.xq_d + v / 256u]);
}

// Sum of the input codes of values [v, v + 16).
fn x_sum16(v: u32) -> i32 {
    return bitcast<i32>(XQS[JOBS.xq_bs + v / 16u]);
}

// The 16 codes of values [v, v + 16) (v a multiple of 16).
fn x_codes(v: u32) -> vec4<u32> {
    return XQ4[v / 16u];
}

// Word `wi` of the weights read as vec4 (for side arrays), without a dynamic vector index.
fn w_word(wi: u32) -> u32 {
    let q = wl(wi / 4u);
    let k = wi % 4u;
    return select(select(q.x, q.y, k == 1u), select(q.z, q.w, k == 3u), k >= 2u);
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let w = wg.y * nwg.x + wg.x;
    var ji = 0u;
    for (var k = 1u; k < JOBS.n; k++) {
        if JOBS.j[k].wg_start <= w {
            ji = k;
        }
    }
    let job = JOBS.j[ji];
    let first_row = (w - job.wg_start) * RPW;
    if first_row >= job.rows {
        return;
    }
    WSEL = job.binding;
    let lr = t / TPR;
    let lane = t % TPR;
    let row = first_row + lr;
    var acc = 0.0;
    if row < job.rows {
        let units = job.blocks_per_row * UNITS;
        let rb = row * (job.row_words / 4u);
        // The row's first block in the side array of scales (types that have one).
        let side = row * job.blocks_per_row;
        SCALE_BASE = job.scale_base;
        // Two units per step, the second clamped and masked so that both loads issue
        // together in straight-line code.
        for (var u = lane; u < units; u += 2u * TPR) {
            let u2 = min(u + TPR, units - 1u);
            let a = unit_dot(rb, side, u / UNITS, u % UNITS, job.x_offset);
            let b = unit_dot(rb, side, u2 / UNITS, u2 % UNITS, job.x_offset);
            acc += a + select(0.0, b, u + TPR < units);
        }
    }
    sh_red[t] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            sh_red[t] += sh_red[t + s];
        }
        workgroupBarrier();
    }
    if row < job.rows && lane == 0u {
        let i = job.y_offset + row;
        Y[i] = epilogue_of(job.epilogue, sh_red[t], i);
    }
}
