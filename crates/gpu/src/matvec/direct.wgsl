// Matrix x vector for one token, reading its input directly (no workgroup stages or rounds
// it): every thread reads the input from the caches (a few KB, shared by all workgroups), so
// a workgroup starts streaming its weights at once and has no barrier until the final sum.
//   y[job.y_offset + r] (op)= sum_c W_job[r][c] * x[job.x_offset + c]
// The threads of a row (TPR) walk it in "units" of 16 weight bytes, consecutive lanes on
// consecutive units, so each load instruction of a row covers contiguous memory; every
// thread keeps two units in flight. A unit's weights are loaded once for NT tokens (a
// generated constant: 1, 2, 4, 8 or 16) with NT accumulators per thread; a step of more of
// the JOBS.n_tokens tokens (rows of x x_stride apart, of y y_stride apart) runs one
// workgroup per group of NT tokens for each workgroup of rows, side by side, which read the
// same weights, mostly from the caches (Q4_K: groups of 4; see direct_token_group in
// direct.rs).
//
// Composed (matvec.rs) as: generated header (WG_SIZE, TPR, RPW, MAX_JOBS, the weight
// bindings W0.. as vec4<u32> and `wl`), matvec_jobs.wgsl (the Job structs), rounding.wgsl,
// epilogue.wgsl, quant_int/q6_k_codes.wgsl, int_dot.wgsl, the input's file (input_q8.wgsl: x
// quantized to Q8_K or Q8_0 beforehand; input_f32.wgsl: f32 x, rounded here per job.mode),
// the weight type's unit (direct.rs's `direct_unit`: e.g. q4_k.wgsl, q3_k.wgsl with Q8_K
// input, q8_0.wgsl, q4_1.wgsl with Q8_0 input, f16.wgsl with f32 input; the types whose
// blocks are not whole 16-byte units after words.wgsl: RB_WORDS, the words per step of the
// row base `load_unit` takes, UNITS per block, UNIT_VALUES per unit, the Unit struct and
// `load_unit`, the Prep struct, `prep_unit` (the weight-side terms, worked out once per unit
// for all of a step's tokens) and `prep_x` (a prepared unit's dot with one token's input)),
// then this file.

@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
// A buffer bound read-only and never read (matvec.rs's ALSO_READ_BINDING): wgpu moves it to
// the read-only state at this dispatch's barrier, so a later dispatch that only reads it
// needs no barrier of its own (the engine's LoRA products beside the r/k/v products).
@group(0) @binding(8) var<storage, read> ALSO_READ: array<u32>;

// The threads' sums, token k's at [k * WG_SIZE + thread].
var<workgroup> sh_red: array<f32, NT * WG_SIZE>;
// Word index of the side array of scales in the job's weight binding.
var<private> SCALE_BASE: u32;
// The job's activation rounding (input_f32.wgsl).
var<private> MODE: u32;

// The f16 scale of block blk of a row whose first block is `side` in the job's side array
// (the types with one: Q6_K, Q8_0, Q4_0).
fn side_scale(side: u32, blk: u32) -> f32 {
    let i = side + blk;
    let dh = unpack2x16float(w_word(SCALE_BASE + i / 2u));
    return select(dh.x, dh.y, (i & 1u) == 1u);
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
    // Consecutive workgroups take the same rows for successive groups of NT tokens, so
    // that the later groups read the weights from the caches.
    let groups = (JOBS.n_tokens + NT - 1u) / NT;
    let id = wg.y * nwg.x + wg.x;
    let w = id / groups;
    let job = job_of(w);
    let first_row = (w - job.wg_start) * RPW;
    if first_row >= job.rows {
        return;
    }
    WSEL = job.binding;
    let lr = t / TPR;
    let lane = t % TPR;
    let row = first_row + lr;
    // This workgroup's tokens: t0 .. t0 + NT (those past the step's repeat its last token
    // and are never stored).
    let t0 = (id % groups) * NT;
    var acc: array<f32, NT>;
    if row < job.rows {
        let units = job.blocks_per_row * UNITS;
        // The row's first vec4 (or word: RB_WORDS, the unit file's).
        let rb = row * (job.row_words / RB_WORDS);
        // The row's first block in the side array of scales (types that have one).
        let side = row * job.blocks_per_row;
        SCALE_BASE = job.scale_base;
        MODE = job.mode;
        let last = JOBS.n_tokens - 1u;
        // (PROBE 3, timing only: the row's bytes streamed, nothing computed.)
        if PROBE == 3u {
            let n4 = job.row_words / 4u;
            let r4 = row * n4;
            for (var u = lane; u < n4; u += 2u * TPR) {
                let a = wl(r4 + u);
                let b = wl(r4 + min(u + TPR, n4 - 1u));
                acc[0] += f32((a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w) & 1u);
            }
        }
        // Two units per step, the second clamped and masked so that both loads issue
        // together in straight-line code.
        for (var u = select(lane, units, PROBE == 3u); u < units; u += 2u * TPR) {
            let u2 = min(u + TPR, units - 1u);
            let second = u + TPR < units;
            let da = prep_unit(load_unit(rb, side, u / UNITS, u % UNITS), u / UNITS, u % UNITS);
            let db = prep_unit(load_unit(rb, side, u2 / UNITS, u2 % UNITS), u2 / UNITS, u2 % UNITS);
            // (PROBE 2, timing only: the first token alone.)
            for (var k = 0u; k < select(NT, 1u, PROBE == 2u); k++) {
                // Rows past the step's tokens repeat the last one (never stored).
                let x0 = job.x_offset + min(t0 + k, last) * job.x_stride;
                let a = prep_x(da, x0);
                let b = prep_x(db, x0);
                acc[k] += a + select(0.0, b, second);
            }
        }
    }
    for (var k = 0u; k < NT; k++) {
        sh_red[k * WG_SIZE + t] = acc[k];
    }
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            for (var k = 0u; k < NT; k++) {
                sh_red[k * WG_SIZE + t] += sh_red[k * WG_SIZE + t + s];
            }
        }
        workgroupBarrier();
    }
    // (Never true: a static use that keeps ALSO_READ in the pipeline's layout.)
    if JOBS.n_tokens == 0u {
        Y[0] = bitcast<f32>(ALSO_READ[0]);
    }
    if row < job.rows {
        for (var k = lane; k < NT && t0 + k < JOBS.n_tokens; k += TPR) {
            let i = job.y_offset + (t0 + k) * job.y_stride + row;
            Y[i] = epilogue_of(job.epilogue, sh_red[k * WG_SIZE + lr * TPR], i);
        }
    }
}
