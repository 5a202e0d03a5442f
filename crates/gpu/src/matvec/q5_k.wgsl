// Q5_K x Q8_K input for direct.wgsl (after k_prep.wgsl, with input_q8.wgsl). A block (176
// bytes, 11 vec4) is uploaded as ggml writes it: [d | dmin, scales 0-3, 4-7, 8-11], qh (32
// bytes, 2 vec4), then qs (128 bytes, 8 vec4). Unit s (of 8) is qs vec4 s: bytes 16s.., in
// chunk c = s / 2 of 32 bytes, whose low nibbles are values 64c + l and high nibbles 64c +
// 32 + l, for l in [16 (s % 2), + 16), as Q4_K; their 5th bits are bits 2c and 2c + 1 of
// qh[l], the bytes of qh vec4 s % 2 (ggml's dequantize_row_q5_K). Codes 0..31.

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 8u;
const UNIT_VALUES: u32 = 32u;

struct Unit {
    h: vec4<u32>,
    qh: vec4<u32>,
    q: vec4<u32>,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let hb = rb + blk * 11u;
    return Unit(wl(hb), wl(hb + 1u + s % 2u), wl(hb + 3u + s));
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let c = s / 2u;
    let m4 = vec4<u32>(0x0f0f0f0fu);
    let m1 = vec4<u32>(0x01010101u);
    // Bit 2c (2c + 1) of each qh byte, moved to bit 4 of the same byte (2c + 1 < 8, so no
    // bit crosses a byte).
    let b_lo = ((d.qh >> vec4<u32>(2u * c)) & m1) << vec4<u32>(4u);
    let b_hi = ((d.qh >> vec4<u32>(2u * c + 1u)) & m1) << vec4<u32>(4u);
    return k_prep(d.h, (d.q & m4) | b_lo, ((d.q >> vec4<u32>(4u)) & m4) | b_hi, blk, s);
}
