// Workgroup-wide reductions over 256 threads for token_mix.wgsl and round_activations.wgsl
// (the Q8_K roundings' signed-maximum search, the layer norm's sums) with subgroup
// operations: one workgroup barrier instead of a tree of eight. Composed in where the device
// has subgroups; reduce_tree.wgsl is the other version (same maxima; sums in another
// order).

struct Lane {
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(num_subgroups) n_sg: u32,
}

var<workgroup> argmax_m: array<f32, 256>;
var<workgroup> argmax_i: array<u32, 256>;

// Index of the largest |v| over the 256 threads of the workgroup (every thread calls it,
// in uniform control flow), the lowest on ties, as a sequential scan finds it.
fn argmax_abs_256(lane: Lane, v: f32) -> u32 {
    let a = abs(v);
    let m = subgroupMax(a);
    let i = subgroupMin(select(0xffffffffu, lane.tid, a == m));
    if lane.sg_lane == 0u {
        argmax_m[lane.sg] = m;
        argmax_i[lane.sg] = i;
    }
    workgroupBarrier();
    var best = argmax_m[0];
    var at = argmax_i[0];
    for (var s = 1u; s < lane.n_sg; s++) {
        let m2 = argmax_m[s];
        let i2 = argmax_i[s];
        if m2 > best || (m2 == best && i2 < at) {
            best = m2;
            at = i2;
        }
    }
    // The arrays are reused by the next call.
    workgroupBarrier();
    return at;
}

// The sum of v over the 256 threads of the workgroup (every thread calls it, in uniform
// control flow): subgroup sums, then those in subgroup order.
fn sum_256(lane: Lane, v: f32) -> f32 {
    let s = subgroupAdd(v);
    if lane.sg_lane == 0u {
        argmax_m[lane.sg] = s;
    }
    workgroupBarrier();
    var total = argmax_m[0];
    for (var k = 1u; k < lane.n_sg; k++) {
        total += argmax_m[k];
    }
    workgroupBarrier();
    return total;
}
