// The tensor-core product's weight tiles decoded from Q6_K blocks as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`). Same
// values as matmul_coop_dequant.wgsl's decode (quant/q6_k.wgsl's expression in f32, rounded
// to the nearest f16).
//
// Q6_K is repacked at upload: per row, blocks of 52 words (ql 128 bytes, qh 64, 16 signed
// scale bytes), and the f16 d of every block in the side array from word P.scale_base.
// Values 128 n + 32 p + l (half n, quarter p, l < 32) come from the low (p = 0, 1) or high
// (p = 2, 3) nibbles of ql[64 n + l + 32 (p % 2)] with bits 2 p, 2 p + 1 of qh[32 n + l] on
// top, minus 32, under scale 8 n + l / 16 + 2 p. A chunk of BK columns (a multiple of 64)
// is BK / 64 groups of 64 values per row: a group is quarters p and p + 1 of a half (p = 0
// or 2). Thread unit u: row u / (BK / 32), group (u % (BK / 32)) / 2, l in 16 g .. + 16 for
// g = u % 2: the 16 bytes of ql at l, at l + 32, of qh at l, and the block's scales, four
// 16-byte loads, and the block's d.
//
// In range by construction (built unchecked): the private arrays by j < A_QT; a unit
// u < QU = BM * BK / 32 goes to row u / (BK / 32) < BM and writes units col / 4 + k and
// col / 4 + 8 + k (k < 4), col = 64 group + 16 g, at most (BK - 64 + 16 + 32) / 4 + 3 <
// ROW_UNITS < SU. Rows past the slice or a stacked matrix's rows read its last row instead.

// This thread's ql bytes at l and l + 32, qh bytes, the block's scales and d.
var<private> la: array<vec4<u32>, A_QT>;
var<private> lb: array<vec4<u32>, A_QT>;
var<private> ha: array<vec4<u32>, A_QT>;
var<private> sa: array<vec4<u32>, A_QT>;
var<private> da: array<f32, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let col = k0 + 64u * ((u % (BK / 32u)) / 2u);
    let blk = col / 256u;
    let n = (col % 256u) / 128u;
    // Block blk of the row (52 words, 13 vec4): ql at vec4 4 n + g (+ 2 for l + 32),
    // qh at 8 + 2 n + g, the scales at 12.
    let b = (r * P.row_words) / 4u + 13u * blk;
    let h = u % 2u;
    la[j] = wq(g, b + 4u * n + h);
    lb[j] = wq(g, b + 4u * n + 2u + h);
    ha[j] = wq(g, b + 8u + 2u * n + h);
    sa[j] = wq(g, b + 12u);
    da[j] = fused_side_d(g, r, blk);
}

// Signed scale byte s < 16 of a block's scales.
fn q6k_scale(sc: vec4<u32>, s: u32) -> f32 {
    let w = sc[s / 4u];
    return f32(bitcast<i32>(w << (24u - 8u * (s % 4u))) >> 24u);
}

// The codes (minus 32) of four values of quarters p and p + 1: ql words wa (l) and wb
// (l + 32), qh word hq, shift 4 (p / 2) selecting the nibbles.
fn q6k_codes(wa: u32, wb: u32, hq: u32, p: u32, shift: vec4<u32>) -> array<vec4<f32>, 2> {
    let m = vec4<u32>(3u);
    let ba = vec4<u32>(wa) >> vec4<u32>(0u, 8u, 16u, 24u);
    let bb = vec4<u32>(wb) >> vec4<u32>(0u, 8u, 16u, 24u);
    let hb = (vec4<u32>(hq) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
    let h1 = ((hb >> vec4<u32>(2u * p)) & m) << vec4<u32>(4u);
    let h2 = ((hb >> vec4<u32>(2u * p + 2u)) & m) << vec4<u32>(4u);
    let q1 = vec4<i32>(((ba >> shift) & vec4<u32>(15u)) | h1) - vec4<i32>(32);
    let q2 = vec4<i32>(((bb >> shift) & vec4<u32>(15u)) | h2) - vec4<i32>(32);
    return array<vec4<f32>, 2>(vec4<f32>(q1), vec4<f32>(q2));
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let grp = (u % (BK / 32u)) / 2u;
    let h = u % 2u;
    let o = (k0 + 64u * grp) % 256u;
    let n = o / 128u;
    // Quarters p and p + 1: the low nibbles and qh bits 0-3 (p = 0), or the high
    // nibbles and qh bits 4-7 (p = 2).
    let p = 2u * ((o % 128u) / 64u);
    let s = 8u * n + h + 2u * p;
    let d1 = da[j] * q6k_scale(sa[j], s);
    let d2 = da[j] * q6k_scale(sa[j], s + 2u);
    let shift = vec4<u32>(4u * (p / 2u));
    let base = (u / (BK / 32u)) * SU + (64u * grp + 16u * h) / 4u;
    // (Codes -32..31: values at most 32 |d|.)
    if fused_wide(32.0 * max(abs(d1), abs(d2))) {
        for (var k = 0u; k < 4u; k++) {
            let q = q6k_codes(la[j][k], lb[j][k], ha[j][k], p, shift);
            sh_a[base + k] = fused_quad(d1 * q[0]);
            sh_a[base + 8u + k] = fused_quad(d2 * q[1]);
        }
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        let q = q6k_codes(la[j][k], lb[j][k], ha[j][k], p, shift);
        sh_a[base + k] = Unit(d1 * q[0]);
        sh_a[base + 8u + k] = Unit(d2 * q[1]);
    }
}
