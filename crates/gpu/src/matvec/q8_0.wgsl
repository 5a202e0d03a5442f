// Q8_0 x Q8_0 input for direct.wgsl (with input_q8.wgsl). A repacked block is its 32
// codes (two vec4) with d in the side array (weights.rs); unit s (of 2) is codes [16s, +16):
//   sum = (d_x * d) * (the packed-byte dot product of the codes with the input's)
// as ggml's vec_dot_q8_0_q8_0 computes each block (there per 32 values, here per 16).

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 2u;
const UNIT_VALUES: u32 = 16u;

struct Unit {
    q: vec4<u32>,
    d: f32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    return Unit(wl(rb + blk * 2u + s), side_scale(side, blk));
}

// A unit with the offset in a token's row of its first input value (nothing else to work
// out once per step).
struct Prep {
    q: vec4<u32>,
    d: f32,
    v: u32,
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    return Prep(d.q, d.d, blk * 32u + 16u * s);
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let v = x0 + p.v;
    return (x_scale(v) * p.d) * f32(dot16(p.q, x_codes(v)));
}
