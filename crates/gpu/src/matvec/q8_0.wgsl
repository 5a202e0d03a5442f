// Q8_0 x Q8_0 input for direct.wgsl (with input_q8_0.wgsl). A repacked block is its 32
// codes (two vec4) with d in the side array (weights.rs); unit s (of 2) is codes [16s, +16):
//   sum = (d_x * d) * (the packed-byte dot product of the codes with the input's)
// as ggml's vec_dot_q8_0_q8_0 computes each block (there per 32 values, here per 16).

const UNITS: u32 = 2u;
const UNIT_VALUES: u32 = 16u;

struct Unit {
    q: vec4<u32>,
    d: f32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    return Unit(wl(rb + blk * 2u + s), side_scale(side, blk));
}

// The unit's dot with the input values of block blk starting at x0 (a token's row).
fn unit_x(d: Unit, blk: u32, s: u32, x0: u32) -> f32 {
    let v = x0 + blk * 32u + 16u * s;
    let x = x_codes(v);
    let q = d.q;
    let isum = dot4I8Packed(q.x, x.x) + dot4I8Packed(q.y, x.y) + dot4I8Packed(q.z, x.z)
        + dot4I8Packed(q.w, x.w);
    return (x_scale(v) * d.d) * f32(isum);
}
