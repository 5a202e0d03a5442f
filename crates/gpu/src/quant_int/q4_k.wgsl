// Q4_K x Q8_K for the integer matvec path. W is read as vec4<u32>: a block (144 bytes) is
// nine of them: [d | dmin, scales 0-3, 4-7, 8-11], then qs. Unit c (of 4) takes
// qs[32c ..][..32] (two vec4): low nibbles are values 64c + l (sub-block 2c), high nibbles
// values 64c + 32 + l (sub-block 2c + 1), l < 32; with the 6-bit scale/min pairs of ggml's
// get_scale_min_k4,
//   sum = d_x * (d * (sc_lo * isum_lo + sc_hi * isum_hi) - dmin * (m_lo * qsum_lo + m_hi * qsum_hi))
// where isum are the integer dot products of the codes with the Q8_K bytes and qsum the
// sums of those bytes. A unit spans both sub-blocks of one scale pair so that the scales
// are decoded once per 64 weights (halving that work against 32-weight units measured
// faster on an H200).

const BLOCK_VALUES: u32 = 256u;
const UNITS: u32 = 4u;
// Units loaded ahead of the staging of x (see matvec_int.wgsl): 4 x 48 bytes.
const PF: u32 = 4u;

fn scale_byte(h: vec4<u32>, k: u32) -> u32 {
    return (h[1u + k / 4u] >> (8u * (k % 4u))) & 0xffu;
}

// ggml get_scale_min_k4 for pair j of the 12 scale bytes in h.yzw.
fn scale_min(h: vec4<u32>, j: u32) -> vec2<u32> {
    if j < 4u {
        return vec2<u32>(scale_byte(h, j) & 63u, scale_byte(h, j + 4u) & 63u);
    }
    let sc = (scale_byte(h, j + 4u) & 15u) | ((scale_byte(h, j - 4u) >> 6u) << 4u);
    let m = (scale_byte(h, j + 4u) >> 4u) | ((scale_byte(h, j) >> 6u) << 4u);
    return vec2<u32>(sc, m);
}

struct Unit {
    h: vec4<u32>,
    q0: vec4<u32>,
    q1: vec4<u32>,
}

fn load_unit(row: u32, blk: u32, c: u32) -> Unit {
    let b = (row * P.row_words + blk * 36u) / 4u;
    return Unit(wl(b), wl(b + 1u + 2u * c), wl(b + 2u + 2u * c));
}

fn dot_unit(d: Unit, c: u32, lb: u32) -> f32 {
    let h = d.h;
    // Q8_K bytes of values 64c.., 64c + 16.., 64c + 32.., 64c + 48.. of this block.
    let xi = lb * 16u + 4u * c;
    let x0 = sh_q[xi];
    let x1 = sh_q[xi + 1u];
    let x2 = sh_q[xi + 2u];
    let x3 = sh_q[xi + 3u];
    let m4 = 0x0f0f0f0fu;
    var ilo = 0;
    var ihi = 0;
    for (var k = 0u; k < 4u; k++) {
        ilo += dot4I8Packed(d.q0[k] & m4, x0[k]) + dot4I8Packed(d.q1[k] & m4, x1[k]);
        ihi += dot4I8Packed((d.q0[k] >> 4u) & m4, x2[k]) + dot4I8Packed((d.q1[k] >> 4u) & m4, x3[k]);
    }
    let s_lo = scale_min(h, 2u * c);
    let s_hi = scale_min(h, 2u * c + 1u);
    let isc = i32(s_lo.x) * ilo + i32(s_hi.x) * ihi;
    let imn = i32(s_lo.y) * (sh_bs[xi] + sh_bs[xi + 1u]) + i32(s_hi.y) * (sh_bs[xi + 2u] + sh_bs[xi + 3u]);
    let dm = unpack2x16float(h.x);
    let dx = sh_dx[lb];
    return (dx * dm.x) * f32(isc) - (dx * dm.y) * f32(imn);
}
