// Q4_0 x Q8_0 input for direct.wgsl (with input_q8.wgsl). A repacked block is its 16
// code bytes (one vec4: value j < 16 in the low nibble of byte j, value j + 16 in its high
// nibble) with d in the side array (weights.rs); one unit per block:
//   sum = (d_x * d) * (sum of (code - 8) * x code)
// as ggml's vec_dot_q4_0_q8_0 computes each block; the codes go into the packed dot products
// as they are (0..15) and 8 x (the sum of the input codes) is taken off after.

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 32u;

struct Unit {
    q: vec4<u32>,
    d: f32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    return Unit(wl(rb + blk), side_scale(side, blk));
}

// A unit's codes as low and high nibbles (0..15 as bytes), its d and the offset in a token's
// row of its first input value.
struct Prep {
    lo: vec4<u32>,
    hi: vec4<u32>,
    d: f32,
    v: u32,
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let m4 = vec4<u32>(0x0f0f0f0fu);
    return Prep(d.q & m4, (d.q >> vec4<u32>(4u)) & m4, d.d, blk * 32u);
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let v = x0 + p.v;
    let x0c = x_codes(v);
    let x1c = x_codes(v + 16u);
    let ones = vec4<u32>(0x01010101u);
    let sx = dot16(ones, x0c) + dot16(ones, x1c);
    return (x_scale(v) * p.d) * f32(dot16(p.lo, x0c) + dot16(p.hi, x1c) - 8 * sx);
}
