// Q2_K x Q8_K input for direct.wgsl (after words.wgsl, with input_q8.wgsl). A block (84
// bytes, 21 words, uploaded as ggml writes it) is scales[16] (4 words), qs[64] (16 words),
// then [d | dmin]. Unit s (of 4) is half n = s / 2 of qs, bytes 32n + 16h.. (h = s % 2): bits
// 2j..2j + 2 of byte 32n + 16h + l are value 128n + 32j + 16h + l (j < 4, l < 16, codes
// 0..3) under scale byte 8n + 2j + h (low nibble its scale, high nibble its min; ggml's
// dequantize_row_q2_K):
//   sum = (d_x * d) * sum_j sc_j * isum_j - (d_x * dmin) * sum_j m_j * xsum_j
// where isum_j is the packed-byte dot product of sub-block j's codes with the input's and
// xsum_j the sum of those input codes (Q8_K's sums per 16), as ggml's vec_dot_q2_K_q8_K.

const UNITS: u32 = 4u;
const UNIT_VALUES: u32 = 64u;

struct Unit {
    q: vec4<u32>,
    sc: vec2<u32>,
    dm: vec2<f32>,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let b = rb + blk * 21u;
    let n = s / 2u;
    let sw = w_words4(b);
    let q = w_words4(b + 4u + 8u * n + 4u * (s % 2u));
    return Unit(q, select(sw.xy, sw.zw, n == 1u), unpack2x16float(w_word(b + 20u)));
}

// A unit's four sub-blocks' codes as bytes, their scale bytes (sub-block j's in byte j), the
// block's d and dmin, and the offset in a token's row of its first input value.
struct Prep {
    c0: vec4<u32>,
    c1: vec4<u32>,
    c2: vec4<u32>,
    c3: vec4<u32>,
    sc: u32,
    dm: vec2<f32>,
    v: u32,
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    let h = s % 2u;
    let m2 = vec4<u32>(0x03030303u);
    // Scale bytes 8n + 2j + h: bytes h and 2 + h of the half's two scale words.
    let sh = 8u * h;
    let lo = (d.sc.x >> sh) & 0x00ff00ffu;
    let hi = (d.sc.y >> sh) & 0x00ff00ffu;
    let sc = (lo & 0xffu) | ((lo >> 8u) & 0xff00u) | ((hi & 0xffu) << 16u) | ((hi >> 16u) << 24u);
    return Prep(
        d.q & m2,
        (d.q >> vec4<u32>(2u)) & m2,
        (d.q >> vec4<u32>(4u)) & m2,
        (d.q >> vec4<u32>(6u)) & m2,
        sc,
        d.dm,
        blk * 256u + 128u * (s / 2u) + 16u * h,
    );
}

// Sub-block j's integer terms: its scale times its dot, its min times the input's sum.
fn q2k_terms(c: vec4<u32>, sc: u32, j: u32, v: u32) -> vec2<i32> {
    let b = (sc >> (8u * j)) & 0xffu;
    return vec2<i32>(i32(b & 15u) * dot16(c, x_codes(v)), i32(b >> 4u) * x_sum16(v));
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let v = x0 + p.v;
    let t = q2k_terms(p.c0, p.sc, 0u, v) + q2k_terms(p.c1, p.sc, 1u, v + 32u)
        + q2k_terms(p.c2, p.sc, 2u, v + 64u) + q2k_terms(p.c3, p.sc, 3u, v + 96u);
    let dx = x_scale(v);
    return (dx * p.dm.x) * f32(t.x) - (dx * p.dm.y) * f32(t.y);
}
