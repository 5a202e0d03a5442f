// Q4_K x Q8_K input for direct.wgsl (after k_prep.wgsl, with input_q8.wgsl). A block (144
// bytes, 9 vec4) is its header [d | dmin, scales 0-3, 4-7, 8-11] then qs; unit s (of 8) is
// qs vec4 s: bytes 16s.., in chunk c = s / 2 of 32 bytes, whose low nibbles are values
// 64c + l and high nibbles 64c + 32 + l, for l in [16 (s % 2), + 16) (codes 0..15).

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 8u;
const UNIT_VALUES: u32 = 32u;

struct Unit {
    h: vec4<u32>,
    q: vec4<u32>,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let hb = rb + blk * 9u;
    return Unit(wl(hb), wl(hb + 1u + s));
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let m4 = vec4<u32>(0x0f0f0f0fu);
    return k_prep(d.h, d.q & m4, (d.q >> vec4<u32>(4u)) & m4, blk, s);
}
