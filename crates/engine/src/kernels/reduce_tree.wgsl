// Workgroup-wide reductions over 256 threads for token_mix.wgsl and round_activations.wgsl
// (the Q8_K roundings' signed-maximum search, the layer norm's sums) for devices without
// subgroup operations: trees over workgroup memory (see reduce_subgroup.wgsl for the
// version used where subgroups exist).

struct Lane {
    @builtin(local_invocation_index) tid: u32,
}

var<workgroup> argmax_m: array<f32, 256>;
var<workgroup> argmax_i: array<u32, 256>;

// Index of the largest |v| over the 256 threads of the workgroup (every thread calls it),
// the lowest on ties, as a sequential scan finds it.
fn argmax_abs_256(lane: Lane, v: f32) -> u32 {
    let tid = lane.tid;
    argmax_m[tid] = abs(v);
    argmax_i[tid] = tid;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if tid < s {
            let a = argmax_m[tid];
            let b = argmax_m[tid + s];
            if b > a || (b == a && argmax_i[tid + s] < argmax_i[tid]) {
                argmax_m[tid] = b;
                argmax_i[tid] = argmax_i[tid + s];
            }
        }
        workgroupBarrier();
    }
    let at = argmax_i[0];
    workgroupBarrier();
    return at;
}

// The sum of v over the 256 threads of the workgroup (every thread calls it): halves added
// pairwise.
fn sum_256(lane: Lane, v: f32) -> f32 {
    let tid = lane.tid;
    argmax_m[tid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if tid < s {
            argmax_m[tid] = argmax_m[tid] + argmax_m[tid + s];
        }
        workgroupBarrier();
    }
    let total = argmax_m[0];
    workgroupBarrier();
    return total;
}
