// Q5_0 x Q8_0 input for direct.wgsl (after words.wgsl and dot_0.wgsl, with
// input_q8.wgsl). A repacked block (weights.rs) is qh then 16 code bytes (5 words), with d in
// the side array: nibbles as Q4_0, and bit j of qh the 5th bit of value j (ggml's
// dequantize_row_q5_0); one unit per block, its dot dot_0.wgsl's with codes 0..31 less 16.

const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 32u;
const ZERO: i32 = 16;

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

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let c = q5_units(d.q, d.qh);
    return Prep(c[0], c[1], d.d, blk * 32u);
}
