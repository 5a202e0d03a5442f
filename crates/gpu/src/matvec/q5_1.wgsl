// Q5_1 x Q8_0 input for direct.wgsl (after words.wgsl and dot_1.wgsl, with
// input_q8.wgsl). A block (24 bytes, 6 words, uploaded as ggml writes it) is [d | m], qh,
// then 16 code bytes: nibbles as Q4_1, and bit j of qh the 5th bit of value j (ggml's
// dequantize_row_q5_1); one unit per block, its dot dot_1.wgsl's. Codes 0..31.

const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 32u;

struct Unit {
    q: vec4<u32>,
    dm: vec2<f32>,
    qh: u32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let b = rb + blk * 6u;
    let a = wl(b / 4u);
    let c = wl(b / 4u + 1u);
    // b % 4 is 0 or 2 (blocks of 6 words in rows of whole vec4s): [d | m] and qh are in a.
    let o = b % 4u;
    let dm = unpack2x16float(w_pick(a, o));
    return Unit(w_shift(a, c, o + 2u), dm, w_pick(a, o + 1u));
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let c = q5_units(d.q, d.qh);
    return Prep(c[0], c[1], d.dm, blk * 32u);
}
