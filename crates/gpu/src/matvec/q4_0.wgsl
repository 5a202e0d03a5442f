// Q4_0 x Q8_0 input for direct.wgsl (after dot_0.wgsl, with input_q8.wgsl). A repacked
// block is its 16 code bytes (one vec4: value j < 16 in the low nibble of byte j, value j + 16
// in its high nibble) with d in the side array (weights.rs); one unit per block, its dot
// dot_0.wgsl's with codes 0..15 less 8.

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 32u;
const ZERO: i32 = 8;

struct Unit {
    q: vec4<u32>,
    d: f32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    return Unit(wl(rb + blk), side_scale(side, blk));
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let m4 = vec4<u32>(0x0f0f0f0fu);
    return Prep(d.q & m4, (d.q >> vec4<u32>(4u)) & m4, d.d, blk * 32u);
}
