// Q6_K x Q8_K input for direct.wgsl (with input_q8.wgsl). A repacked block (weights.rs) is
// 13 vec4: ql (8), qh (4), the 16 signed scales (1), with d in the side array. Unit s (of
// 8) is ql vec4 s: half n = s / 4 of the block, ql bytes 64n + o.. with o = 16 (s % 4). For
// o < 32 its low nibbles are values 128n + o + l (qh bits 0-1 of qh[32n + o + l]) and its
// high nibbles 128n + 64 + o + l (bits 4-5); for o >= 32, with o' = o - 32, values 128n +
// 32 + o' + l (bits 2-3) and 128n + 96 + o' + l (bits 6-7); l < 16. Codes are q - 32 as
// signed bytes, and
//   sum = d_x * d * (sc_lo * isum_lo + sc_hi * isum_hi).

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 8u;
const UNIT_VALUES: u32 = 32u;

// (centred and sbyte: quant_int/q6_k_codes.wgsl, prepended.)

struct Unit {
    ql: vec4<u32>,
    qh: vec4<u32>,
    sc: vec4<u32>,
    d: f32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let b = rb + blk * 13u;
    let n = s / 4u;
    return Unit(wl(b + s), wl(b + 8u + 2u * n + s % 2u), wl(b + 12u), side_scale(side, blk));
}

// A unit's weight-side terms, worked out once for all the step's tokens: its low and high
// codes as packed signed bytes (q - 32), the scales of their sub-blocks, the block's d and
// the offset in a token's row of its first input value.
struct Prep {
    lo: vec4<u32>,
    hi: vec4<u32>,
    sc: vec2<i32>,
    d: f32,
    v: u32,
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let n = s / 4u;
    let hp = (s / 2u) % 2u;
    let lq = 16u * (s % 2u);
    let ql = d.ql;
    let qh = d.qh;
    let sc = d.sc;
    let m4 = 0x0f0f0f0fu;
    let m2 = 0x03030303u;
    let slo = 2u * hp;
    let shi = 4u + 2u * hp;
    let lo = vec4<u32>(
        centred((ql.x & m4) | (((qh.x >> slo) & m2) << 4u)),
        centred((ql.y & m4) | (((qh.y >> slo) & m2) << 4u)),
        centred((ql.z & m4) | (((qh.z >> slo) & m2) << 4u)),
        centred((ql.w & m4) | (((qh.w >> slo) & m2) << 4u)),
    );
    let hi = vec4<u32>(
        centred(((ql.x >> 4u) & m4) | (((qh.x >> shi) & m2) << 4u)),
        centred(((ql.y >> 4u) & m4) | (((qh.y >> shi) & m2) << 4u)),
        centred(((ql.z >> 4u) & m4) | (((qh.z >> shi) & m2) << 4u)),
        centred(((ql.w >> 4u) & m4) | (((qh.w >> shi) & m2) << 4u)),
    );
    // Scales 8n + lq / 16 + 2 hp (low nibbles) and that + 4: byte lq / 16 + 2 hp of words
    // 2n and 2n + 1.
    let j = lq / 16u + 2u * hp;
    let lo_word = select(sc.x, sc.z, n == 1u);
    let hi_word = select(sc.y, sc.w, n == 1u);
    return Prep(
        lo,
        hi,
        vec2<i32>(sbyte(lo_word, j), sbyte(hi_word, j)),
        d.d,
        blk * 256u + 128u * n + 32u * hp + lq,
    );
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let v = x0 + p.v;
    let xlo = x_codes(v);
    let xhi = x_codes(v + 64u);
    return (x_scale(v) * p.d) * f32(p.sc.x * dot16(p.lo, xlo) + p.sc.y * dot16(p.hi, xhi));
}
