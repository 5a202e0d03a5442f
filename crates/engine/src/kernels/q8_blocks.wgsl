// ggml's 8-bit block roundings of activations (quantized and decoded back to f32), and the
// f16 pairs of the tensor-core products' input copies, for token_mix.wgsl and
// round_activations.wgsl: each thread of a 256-thread workgroup rounds one value; every
// thread calls these together, in uniform control flow. (The Lane struct and argmax_abs_256
// come from reduce_subgroup.wgsl or reduce_tree.wgsl.)

var<workgroup> block_abs: array<f32, 256>;
var<workgroup> block_vals: array<f32, 256>;

const F16_MAX: f32 = 65504.0;
// A tile's values, paired up for the f16 copies.
var<workgroup> pair_vals: array<f32, 256>;

// The values of threads 2 tid and 2 tid + 1 as an f16 pair (clamped to f16's finite range),
// for the thread that writes word tid of a tile's f16 copy (tid < 128; the others get an
// unused pair). The first barrier lets the previous call's reads finish.
fn f16_pair(tid: u32, v: f32) -> u32 {
    workgroupBarrier();
    pair_vals[tid] = v;
    workgroupBarrier();
    let c = min(2u * tid, 254u);
    return pack_f16_pair(vec2<f32>(pair_vals[c], pair_vals[c + 1u]));
}

// Two values as one word of f16s (the first in the low half), clamped to f16's finite range.
fn pack_f16_pair(v: vec2<f32>) -> u32 {
    return pack2x16float(clamp(v, vec2<f32>(-F16_MAX), vec2<f32>(F16_MAX)));
}

// The first of v's components of largest magnitude (0 if all are 0): a thread's part of a
// block's maximum search over its values in order.
fn first_max4(v: vec4<f32>) -> f32 {
    var best = v.x;
    if abs(v.y) > abs(best) {
        best = v.y;
    }
    if abs(v.z) > abs(best) {
        best = v.z;
    }
    if abs(v.w) > abs(best) {
        best = v.w;
    }
    return best;
}

// v rounded to the Q8_K grid of a block whose value of largest magnitude is m (signed), and
// to the Q8_0 grid of a block whose largest magnitude is amax: four values of a thread.
fn round_q8k4(v: vec4<f32>, m: f32) -> vec4<f32> {
    let iscale = q8k_iscale(m);
    let codes = vec4<f32>(
        q8k_code(iscale, v.x),
        q8k_code(iscale, v.y),
        q8k_code(iscale, v.z),
        q8k_code(iscale, v.w),
    );
    return codes * q8k_scale(iscale);
}

fn round_q8_0_4(v: vec4<f32>, amax: f32) -> vec4<f32> {
    let d = q8_0_scale(amax);
    return round(v * q8_0_inverse(d)) * round_f16(d);
}

// The largest |v| of each block of 32 consecutive threads (Q8_0's blocks): one barrier, then
// every thread reads its block's 32 values (the maximum is exact in any order).
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

// Q8_0 (blocks of 32): d = amax / 127, stored as f16.
fn round_q8_0(tid: u32, v: f32) -> f32 {
    let d = q8_0_scale(block_amax_32(tid, v));
    return round(v * q8_0_inverse(d)) * round_f16(d);
}

// Q8_K (one block of 256): the signed value of largest magnitude maps to -127.
fn round_q8_k(lane: Lane, v: f32) -> f32 {
    block_vals[lane.tid] = v;
    let iscale = q8k_iscale(block_vals[argmax_abs_256(lane, v)]);
    // Every thread has read the block's maximum before the array is reused by the next call.
    workgroupBarrier();
    return q8k_code(iscale, v) * q8k_scale(iscale);
}
