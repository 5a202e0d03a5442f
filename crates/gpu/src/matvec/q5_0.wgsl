// Q5_0 x Q8_0 input for direct.wgsl (after words.wgsl, with input_q8.wgsl). A repacked block
// (weights.rs) is qh then 16 code bytes (5 words), with d in the side array: nibbles as
// Q4_0, and bit j of qh the 5th bit of value j (ggml's dequantize_row_q5_0); one unit per
// block:
//   sum = (d_x * d) * (sum of (code - 16) * x code)
// as ggml's vec_dot_q5_0_q8_0 computes each block; the codes go into the packed dot products
// as they are (0..31) and 16 x (the sum of the input codes) is taken off after.

const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 32u;

struct Unit {
    q: vec4<u32>,
    qh: u32,
    d: f32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let b = rb + blk * 5u;
    let a = wl(b / 4u);
    let c = wl(b / 4u + 1u);
    return Unit(w_shift(a, c, b % 4u + 1u), w_pick(a, b % 4u), side_scale(side, blk));
}

// A unit's codes as low and high 5-bit values (0..31 as bytes), its d and the offset in a
// token's row of its first input value.
struct Prep {
    lo: vec4<u32>,
    hi: vec4<u32>,
    d: f32,
    v: u32,
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let m4 = vec4<u32>(0x0f0f0f0fu);
    let h0 = q5_high(d.qh, 0u);
    let h1 = q5_high(d.qh, 1u);
    let h2 = q5_high(d.qh, 2u);
    let h3 = q5_high(d.qh, 3u);
    let lo = (d.q & m4) | vec4<u32>(h0.x, h1.x, h2.x, h3.x);
    let hi = ((d.q >> vec4<u32>(4u)) & m4) | vec4<u32>(h0.y, h1.y, h2.y, h3.y);
    return Prep(lo, hi, d.d, blk * 32u);
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let v = x0 + p.v;
    let x0c = x_codes(v);
    let x1c = x_codes(v + 16u);
    let ones = vec4<u32>(0x01010101u);
    let sx = dot16(ones, x0c) + dot16(ones, x1c);
    return (x_scale(v) * p.d) * f32(dot16(p.lo, x0c) + dot16(p.hi, x1c) - 16 * sx);
}
