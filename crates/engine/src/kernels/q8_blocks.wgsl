// The largest |v| of each block of 32 consecutive threads of a 256-thread workgroup (Q8_0's
// blocks), for token_mix.wgsl and round_activations.wgsl: one barrier, then every thread
// reads its block's 32 values (the maximum is exact in any order).

var<workgroup> block_abs: array<f32, 256>;

// Every thread calls it, in uniform control flow.
fn block_amax_32(tid: u32, v: f32) -> f32 {
    block_abs[tid] = abs(v);
    workgroupBarrier();
    let first = tid / 32u * 32u;
    var m = 0.0;
    for (var j = 0u; j < 32u; j++) {
        m = max(m, block_abs[first + j]);
    }
    // The array is reused by the next call.
    workgroupBarrier();
    return m;
}
