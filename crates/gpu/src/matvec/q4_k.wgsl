// Q4_K x Q8_K input for direct.wgsl (with input_q8k.wgsl). A block (144 bytes, 9 vec4) is
// its header [d | dmin, scales 0-3, 4-7, 8-11] then qs; unit s (of 8) is qs vec4 s: bytes
// 16s.., in chunk c = s / 2 of 32 bytes, whose low nibbles are values 64c + l and high
// nibbles 64c + 32 + l, for l in [16 (s % 2), + 16). With the 6-bit scale/min pair of
// sub-blocks 2c, 2c + 1 (ggml's get_scale_min_k4),
//   sum = d_x * (d * (sc_lo * isum_lo + sc_hi * isum_hi)
//                - dmin * (m_lo * qsum_lo + m_hi * qsum_hi))
// where isum are packed-byte dot products of the codes with the input's and qsum the sums
// of those input codes.

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

// The unit's dot with the input values of block blk starting at x0 (a token's row).
fn unit_x(d: Unit, blk: u32, s: u32, x0: u32) -> f32 {
    let h = d.h;
    let q = d.q;
    let c = s / 2u;
    let v = x0 + blk * 256u + 64u * c + 16u * (s % 2u);
    let xlo = x_codes(v);
    let xhi = x_codes(v + 32u);
    let m4 = 0x0f0f0f0fu;
    let ilo = dot4I8Packed(q.x & m4, xlo.x) + dot4I8Packed(q.y & m4, xlo.y)
        + dot4I8Packed(q.z & m4, xlo.z) + dot4I8Packed(q.w & m4, xlo.w);
    let ihi = dot4I8Packed((q.x >> 4u) & m4, xhi.x) + dot4I8Packed((q.y >> 4u) & m4, xhi.y)
        + dot4I8Packed((q.z >> 4u) & m4, xhi.z) + dot4I8Packed((q.w >> 4u) & m4, xhi.w);
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
    let isc = i32(sc_lo) * ilo + i32(sc_hi) * ihi;
    let imn = i32(m_lo) * x_sum16(v) + i32(m_hi) * x_sum16(v + 32u);
    let dm = unpack2x16float(h.x);
    let dx = x_scale(v);
    return (dx * dm.x) * f32(isc) - (dx * dm.y) * f32(imn);
}
