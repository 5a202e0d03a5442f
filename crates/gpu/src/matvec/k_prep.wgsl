// The weight-side terms and the dot of a Q4_K or Q5_K unit for direct.wgsl (composed before
// q4_k.wgsl or q5_k.wgsl, with input_q8.wgsl): both blocks start with [d | dmin, scales 0-3,
// 4-7, 8-11], and a unit is 32 codes of chunk c (64 values) under the 6-bit scale/min pairs
// of sub-blocks 2c, 2c + 1 (ggml's get_scale_min_k4):
//   sum = d_x * (d * (sc_lo * isum_lo + sc_hi * isum_hi)
//                - dmin * (m_lo * qsum_lo + m_hi * qsum_hi))
// where isum are packed-byte dot products of the codes with the input's and qsum the sums
// of those input codes.

// A unit's weight-side terms, worked out once for all the step's tokens: its low and high
// codes as packed bytes, the 6-bit scales and mins of its two sub-blocks, the block's d and
// dmin, and the offset in a token's row of its first input value.
struct Prep {
    lo: vec4<u32>,
    hi: vec4<u32>,
    sm: vec4<i32>,
    dm: vec2<f32>,
    v: u32,
}

// The Prep of a unit whose block's first 16 bytes are `h`, chunk c, half s % 2 of it.
fn k_prep(h: vec4<u32>, lo: vec4<u32>, hi: vec4<u32>, blk: u32, s: u32) -> Prep {
    let c = s / 2u;
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
    return Prep(
        lo,
        hi,
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
