// Q3_K x Q8_K input for direct.wgsl (with input_q8.wgsl). A block is padded at upload to
// 112 bytes (weights.rs), 7 vec4: hmask[32] (vec4 0-1), qs[64] (2-5), scales[12] and d
// (6: words x, y, z and the low half of w). Unit s (of 4) is half n = s / 2 of qs, vec4
// 2 + 2n + h (h = s % 2), with hmask vec4 h: value 128n + 32j + 16h + l (j < 4, l < 16) has
// its low two bits at bits 2j of qs byte 32n + 16h + l and its high bit at bit 4n + j of
// hmask byte 16h + l (clear means -4), under 6-bit scale 8n + 2j + h stored +32: its low 4
// bits nibble n of scale byte 2j + h, its top 2 at bit 2(2n + j / 2) of byte 8 + (2j + h) % 4
// (ggml's dequantize_row_q3_K). Codes q3 = low | high << 2 (0..7), values q3 - 4:
//   sum = (d_x * d) * sum_j (sc_j - 32) * (isum_j - 4 xsum_j)
// where isum_j is the packed-byte dot product of sub-block j's codes with the input's and
// xsum_j the sum of those input codes (Q8_K's sums per 16), as ggml's vec_dot_q3_K_q8_K.

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 4u;
const UNIT_VALUES: u32 = 64u;

struct Unit {
    q: vec4<u32>,
    hm: vec4<u32>,
    sc: vec4<u32>,
    d: f32,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let b = rb + blk * 7u;
    let h = s % 2u;
    let sc = wl(b + 6u);
    return Unit(wl(b + 2u + 2u * (s / 2u) + h), wl(b + h), sc, unpack2x16float(sc.w).x);
}

// A unit's four sub-blocks' codes q3 as bytes, their scales (sub-block j's in component j,
// less 32), the block's d and the offset in a token's row of its first input value.
struct Prep {
    c0: vec4<u32>,
    c1: vec4<u32>,
    c2: vec4<u32>,
    c3: vec4<u32>,
    sc: vec4<i32>,
    d: f32,
    v: u32,
}

// Sub-block j's codes: the low bits of q at 2j, the high bit of hm at 4n + j.
fn q3k_codes(q: vec4<u32>, hm: vec4<u32>, j: u32, n: u32) -> vec4<u32> {
    let low = (q >> vec4<u32>(2u * j)) & vec4<u32>(0x03030303u);
    let high = (hm >> vec4<u32>(4u * n + j)) & vec4<u32>(0x01010101u);
    return low | (high << vec4<u32>(2u));
}

// Scale 8n + 2j + h of the block (scale words w), less 32.
fn q3k_scale(w: vec4<u32>, n: u32, h: u32, j: u32) -> i32 {
    let k = 2u * j + h;
    let lo = (select(w.x, w.y, k >= 4u) >> (8u * (k % 4u) + 4u * n)) & 15u;
    let hi = (w.z >> (8u * (k % 4u) + 2u * (2u * n + j / 2u))) & 3u;
    return i32(lo | (hi << 4u)) - 32;
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let n = s / 2u;
    let h = s % 2u;
    return Prep(
        q3k_codes(d.q, d.hm, 0u, n),
        q3k_codes(d.q, d.hm, 1u, n),
        q3k_codes(d.q, d.hm, 2u, n),
        q3k_codes(d.q, d.hm, 3u, n),
        vec4<i32>(
            q3k_scale(d.sc, n, h, 0u),
            q3k_scale(d.sc, n, h, 1u),
            q3k_scale(d.sc, n, h, 2u),
            q3k_scale(d.sc, n, h, 3u),
        ),
        d.d,
        blk * 256u + 128u * n + 16u * h,
    );
}

// Sub-block j's term: its codes' dot with the input's, less 4 x the input's sum.
fn q3k_isum(c: vec4<u32>, v: u32) -> i32 {
    return dot16(c, x_codes(v)) - 4 * x_sum16(v);
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let v = x0 + p.v;
    let isum = p.sc.x * q3k_isum(p.c0, v) + p.sc.y * q3k_isum(p.c1, v + 32u)
        + p.sc.z * q3k_isum(p.c2, v + 64u) + p.sc.w * q3k_isum(p.c3, v + 96u);
    return (x_scale(v) * p.d) * f32(isum);
}
