// Q4_0 x Q8_0 input for direct.wgsl (with input_q8_0.wgsl). A repacked block is its 16
// code bytes (one vec4: value j < 16 in the low nibble of byte j, value j + 16 in its high
// nibble) with d in the side array (weights.rs); one unit per block:
//   sum = (d_x * d) * (sum of (code - 8) * x code)
// as ggml's vec_dot_q4_0_q8_0 computes each block; the codes go into the packed dot products
// as they are (0..15) and 8 x (the sum of the input codes) is taken off after.

const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 32u;

struct Unit {
    q: vec4<u32>,
    d: f32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    return Unit(wl(rb + blk), side_scale(side, blk));
}

// The unit's dot with the input values of block blk starting at x0 (a token's row).
fn unit_x(d: Unit, blk: u32, s: u32, x0: u32) -> f32 {
    let v = x0 + blk * 32u;
    let x0c = x_codes(v);
    let x1c = x_codes(v + 16u);
    let q = d.q;
    let m4 = 0x0f0f0f0fu;
    let ones = 0x01010101u;
    let s_lo = dot4I8Packed(q.x & m4, x0c.x) + dot4I8Packed(q.y & m4, x0c.y)
        + dot4I8Packed(q.z & m4, x0c.z) + dot4I8Packed(q.w & m4, x0c.w);
    let s_hi = dot4I8Packed((q.x >> 4u) & m4, x1c.x) + dot4I8Packed((q.y >> 4u) & m4, x1c.y)
        + dot4I8Packed((q.z >> 4u) & m4, x1c.z) + dot4I8Packed((q.w >> 4u) & m4, x1c.w);
    let sx = dot4I8Packed(ones, x0c.x) + dot4I8Packed(ones, x0c.y) + dot4I8Packed(ones, x0c.z)
        + dot4I8Packed(ones, x0c.w) + dot4I8Packed(ones, x1c.x) + dot4I8Packed(ones, x1c.y)
        + dot4I8Packed(ones, x1c.z) + dot4I8Packed(ones, x1c.w);
    return (x_scale(v) * d.d) * f32(s_lo + s_hi - 8 * sx);
}
