// Q4_1 x Q8_0 input for direct.wgsl (after words.wgsl and dot_1.wgsl, with
// input_q8.wgsl). A block (20 bytes, 5 words, uploaded as ggml writes it) is [d | m] then 16
// code bytes (value j < 16 in the low nibble of byte j, value j + 16 in its high nibble);
// one unit per block, its dot dot_1.wgsl's.

const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 32u;

struct Unit {
    q: vec4<u32>,
    dm: vec2<f32>,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let b = rb + blk * 5u;
    let a = wl(b / 4u);
    let c = wl(b / 4u + 1u);
    return Unit(w_shift(a, c, b % 4u + 1u), unpack2x16float(w_pick(a, b % 4u)));
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let m4 = vec4<u32>(0x0f0f0f0fu);
    return Prep(d.q & m4, (d.q >> vec4<u32>(4u)) & m4, d.dm, blk * 32u);
}
