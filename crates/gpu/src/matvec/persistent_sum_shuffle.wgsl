// The sum of v over the `tpr` threads of each row (consecutive threads, within one subgroup:
// persistent.rs caps tpr at the subgroup size; every thread calls it, in uniform control
// flow), returned to all of them: a butterfly of subgroup shuffles, no barrier.
fn px_row_sum(t: u32, lane: u32, tpr: u32, v: f32) -> f32 {
    var s = v;
    for (var m = tpr / 2u; m > 0u; m >>= 1u) {
        s += subgroupShuffleXor(s, m);
    }
    return s;
}
