// The jobs of a matvec dispatch (matvec.wgsl, direct.wgsl): each one part of one matrix,
// laid out along the grid by its first workgroup (`wg_start`). Mirrors JobsUniform in
// matvec.rs.

struct Job {
    rows: u32,
    cols: u32,
    blocks_per_row: u32,
    row_words: u32,
    scale_base: u32,
    wg_start: u32,
    x_offset: u32,
    y_offset: u32,
    // Epilogue: 0 store, 1 add, 2 relu^2, 3 tanh, 4 sigmoid.
    epilogue: u32,
    // Activation rounding: 0 none, 1 f16, 2 bf16, 3 Q8_0, 4 Q8_K.
    mode: u32,
    // Which weight binding (W0, W1, ...) holds this job's matrix part.
    binding: u32,
    // Values between the rows of consecutive tokens in x and y (the direct kernel's steps of
    // several tokens).
    x_stride: u32,
    y_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Jobs {
    n: u32,
    // Word offsets in an 8-bit input (the direct kernel's input_q8.wgsl)
    // of the block scales and of the sums per 16 values.
    xq_d: u32,
    xq_bs: u32,
    // Tokens of the step (the direct kernel; 1 for the others).
    n_tokens: u32,
    j: array<Job, MAX_JOBS>,
}

@group(0) @binding(0) var<uniform> JOBS: Jobs;

// The job workgroup w works on.
fn job_of(w: u32) -> Job {
    var ji = 0u;
    for (var k = 1u; k < JOBS.n; k++) {
        if JOBS.j[k].wg_start <= w {
            ji = k;
        }
    }
    return JOBS.j[ji];
}
