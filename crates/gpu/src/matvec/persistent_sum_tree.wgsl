// The sum of v over the `tpr` threads of each row (consecutive threads; every thread calls
// it, in uniform control flow), returned to all of them: a tree in workgroup memory.
fn px_row_sum(t: u32, lane: u32, tpr: u32, v: f32) -> f32 {
    PX_ROWSUM[t] = v;
    workgroupBarrier();
    for (var s = tpr / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            PX_ROWSUM[t] += PX_ROWSUM[t + s];
        }
        workgroupBarrier();
    }
    let total = PX_ROWSUM[t - lane];
    workgroupBarrier();
    return total;
}
