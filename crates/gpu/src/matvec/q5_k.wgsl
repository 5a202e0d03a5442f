// Q5_K x Q8_K input for direct.wgsl (with input_q8.wgsl). A block (176 bytes, 11 vec4) is
// uploaded as ggml writes it: [d | dmin, scales 0-3, 4-7, 8-11], qh (32 bytes, 2 vec4), then
// qs (128 bytes, 8 vec4). Unit s (of 8) is qs vec4 s: bytes 16s.., in chunk c = s / 2 of 32
// bytes, whose low nibbles are values 64c + l and high nibbles 64c + 32 + l, for l in
// [16 (s % 2), + 16), as Q4_K; their 5th bits are bits 2c and 2c + 1 of qh[l], the bytes of
// qh vec4 s % 2 (ggml's dequantize_row_q5_K). Codes 0..31, so with the 6-bit scale/min pair
// of sub-blocks 2c, 2c + 1 (get_scale_min_k4), as for Q4_K,
//   sum = d_x * (d * (sc_lo * isum_lo + sc_hi * isum_hi)
//                - dmin * (m_lo * qsum_lo + m_hi * qsum_hi)).

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

// A unit's weight-side terms, worked out once for all the step's tokens: its low and high
// 5-bit codes as packed bytes, the 6-bit scales and mins of its two sub-blocks, the block's
// d and dmin, and the offset in a token's row of its first input value.
struct Prep {
    lo: vec4<u32>,
    hi: vec4<u32>,
    sm: vec4<i32>,
    dm: vec2<f32>,
    v: u32,
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let h = d.h;
    let c = s / 2u;
    let m4 = 0x0f0f0f0fu;
    let m1 = 0x01010101u;
    // Scale bytes 2c, 2c + 1 (and 4 + .., 8 + ..) sit at bit 16 (c % 2) of their words.
    let sh = 16u * (c % 2u);
    let y = h.y >> sh;
    let z = h.z >> sh;
    let k = h.w >> sh;
    let low = c < 2u;
    let sc_lo = select((k & 15u) | (((y >> 6u) & 3u) << 4u), y & 63u, low);
    let sc_hi = select(((k >> 8u) & 15u) | (((y >> 14u) & 3u) << 4u), (y >> 8u) & 63u, low);
    let m_lo = select(((k >> 4u) & 15u) | (((z >> 6u) & 3u) << 4u), z & 63u, low);
    let m_hi = select(((k >> 12u) & 15u) | (((z >> 14u) & 3u) << 4u), (z >> 8u) & 63u, low);
    // Bit 2c (2c + 1) of each qh byte, moved to bit 4 of the same byte (2c + 1 < 8, so no
    // bit crosses a byte).
    let b_lo = ((d.qh >> vec4<u32>(2u * c)) & vec4<u32>(m1)) << vec4<u32>(4u);
    let b_hi = ((d.qh >> vec4<u32>(2u * c + 1u)) & vec4<u32>(m1)) << vec4<u32>(4u);
    return Prep(
        (d.q & vec4<u32>(m4)) | b_lo,
        ((d.q >> vec4<u32>(4u)) & vec4<u32>(m4)) | b_hi,
        vec4<i32>(i32(sc_lo), i32(sc_hi), i32(m_lo), i32(m_hi)),
        unpack2x16float(h.x),
        blk * 256u + 64u * c + 16u * (s % 2u),
    );
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let v = x0 + p.v;
    let xlo = x_codes(v);
    let xhi = x_codes(v + 32u);
    let isc = p.sm.x * dot16(p.lo, xlo) + p.sm.y * dot16(p.hi, xhi);
    let imn = p.sm.z * x_sum16(v) + p.sm.w * x_sum16(v + 32u);
    let dx = x_scale(v);
    return (dx * p.dm.x) * f32(isc) - (dx * p.dm.y) * f32(imn);
}
