// The tensor-core product's weight tiles decoded from Q5_K blocks as they are staged
// (`fetch_unit` and `stage_unit`; see matmul_coop_aq4_k.wgsl for why, and for `wq`). Same
// values as matmul_coop_dequant.wgsl's decode (quant/q5_k.wgsl's expression in f32, rounded
// to the nearest f16), so the products are the same.
//
// Q5_K blocks are uploaded as they are: 44 words (11 vec4), d and dmin, 12 scale bytes
// (matmul_coop_k_scales.wgsl, composed before this file), qh (32 bytes), qs (128 bytes).
// As Q4_K, a group c of 64 values is 32 qs bytes (low nibbles the group's first 32 values,
// high nibbles the next 32) under two scale/min pairs; the 5th bits are bits 2c and 2c + 1
// of qh[l] for the bytes' position l < 32. Thread unit u: row u / (BK / 32), group
// (u % (BK / 32)) / 2, half g = u % 2: 16 qs bytes at l = 16 g, the 16 qh bytes there and
// the block's first 16 bytes, three 16-byte loads.
//
// In range by construction (built unchecked, see the product's header): qa, qb and ha by
// j < A_QT (matmul_coop_aq.wgsl's loops); a unit u < QU = BM * BK / 32 goes to row
// u / (BK / 32) < BM and writes units col / 4 + k and col / 4 + 8 + k (k < 4), col = 64
// group + 16 g, at most (BK - 64 + 16 + 32) / 4 + 3 < ROW_UNITS < SU. Rows past the slice or
// a stacked matrix's rows read its last row instead.

// This thread's qs bytes, qh bytes and their block's first 16 bytes, for the next chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> qb: array<vec4<u32>, A_QT>;
var<private> ha: array<vec4<u32>, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let col = k0 + 64u * ((u % (BK / 32u)) / 2u);
    // Block col / 256 of the row (44 words, 11 vec4), its group (col % 256) / 64.
    let block = (r * P.row_words) / 4u + (col / 256u) * 11u;
    ha[j] = wq(g, block);
    qb[j] = wq(g, block + 1u + u % 2u);
    qa[j] = wq(g, block + 3u + 2u * ((col % 256u) / 64u) + u % 2u);
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let grp = (u % (BK / 32u)) / 2u;
    let g = u % 2u;
    let c = ((k0 + 64u * grp) % 256u) / 64u;
    let q = qa[j];
    let qh = qb[j];
    let sc = k_pairs(ha[j], c);
    let base = (u / (BK / 32u)) * SU + (64u * grp + 16u * g) / 4u;
    // (Codes 0..31: values at most 31 |d| + |m|.)
    if fused_wide(31.0 * max(abs(sc.x), abs(sc.z)) + max(abs(sc.y), abs(sc.w))) {
        for (var k = 0u; k < 4u; k++) {
            let v = q5k_values(q[k], qh[k], c, sc);
            sh_a[base + k] = fused_quad(v[0]);
            sh_a[base + 8u + k] = fused_quad(v[1]);
        }
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        let v = q5k_values(q[k], qh[k], c, sc);
        sh_a[base + k] = Unit(v[0]);
        sh_a[base + 8u + k] = Unit(v[1]);
    }
}

// The values of code word w's low nibbles with bit 2c of qh word hw's bytes on top (scale
// sc.x, min sc.y) and high nibbles with bit 2c + 1 (sc.z, sc.w).
fn q5k_values(w: u32, hw: u32, c: u32, sc: vec4<f32>) -> array<vec4<f32>, 2> {
    let shifts = vec4<u32>(0u, 8u, 16u, 24u);
    let hb = vec4<u32>(hw) >> shifts;
    let lo = ((vec4<u32>(w) >> shifts) & vec4<u32>(15u)) | (((hb >> vec4<u32>(2u * c)) & vec4<u32>(1u)) << vec4<u32>(4u));
    let hi = ((vec4<u32>(w) >> (shifts + vec4<u32>(4u))) & vec4<u32>(15u)) | (((hb >> vec4<u32>(2u * c + 1u)) & vec4<u32>(1u)) << vec4<u32>(4u));
    return array<vec4<f32>, 2>(sc.x * vec4<f32>(lo) - sc.y, sc.z * vec4<f32>(hi) - sc.w);
}
