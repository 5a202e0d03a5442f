// The tensor-core product's weight tiles decoded from Q4_K blocks as they are staged
// (`fetch_unit` and `stage_unit`, which matmul_coop_aq.wgsl's `fetch_a` and `stage_a` call
// for matmul_coop.wgsl), instead of read from an f16 copy that
// matmul_coop_dequant.wgsl wrote just before: for steps of one token group, where each
// weight is multiplied once per step and the copy's write and read cost more than the
// decode. Same values as that decode (quant/q4_k.wgsl's expression in f32, rounded to the
// nearest f16), so the products are the same.
//
// `wq(g, i)` reads vec4 i of the weight part of matrix g (generated with the bindings: g is
// 0 outside a stack; in a stack, matmul_coop.wgsl's stack fields place each matrix's rows,
// of P.row_words words each, and each matrix has its own binding). Q4_K blocks are uploaded
// as they are: 36 words, d and dmin, 12 scale bytes, 128 bytes of 4-bit codes; P.row_words
// is a multiple of 4, which the host checks.
// A chunk of BK columns (a multiple of 64) is BK / 64 groups of 64 values per row; a group
// is 32 code bytes (low nibbles the group's first 32 values, high nibbles the next 32)
// under two scale/min pairs. Thread unit u: row u / (BK / 32), group (u % (BK / 32)) / 2,
// half g = u % 2 of the group's code bytes: 16 bytes, 32 values, fetched as one 16-byte
// load with its block's first 16 bytes (d, dmin, scales).
//
// In range by construction (built unchecked, see the product's header): qa and ha by
// j < A_QT (matmul_coop_aq.wgsl's loops); a unit u < QU = BM * BK / 32 goes to row
// u / (BK / 32) < BM and writes units col / 4 + k and col / 4 + 8 + k (k < 4) of its row,
// with col = 64 group + 16 g, so at most (BK - 64 + 16 + 32) / 4 + 3 < ROW_UNITS < SU. Rows
// past the slice (a partial last tile) or past a stacked matrix's rows (its padding) read its
// last row instead.

// This thread's code bytes and their block's first 16 bytes, for the next chunk.
var<private> qa: array<vec4<u32>, A_QT>;
var<private> ha: array<vec4<u32>, A_QT>;

fn fetch_unit(j: u32, g: u32, r: u32, u: u32, k0: u32) {
    let col = k0 + 64u * ((u % (BK / 32u)) / 2u);
    // Block col / 256 of the row (36 words, 9 vec4), its group (col % 256) / 64.
    let block = (r * P.row_words) / 4u + (col / 256u) * 9u;
    ha[j] = wq(g, block);
    qa[j] = wq(g, block + 1u + 2u * ((col % 256u) / 64u) + u % 2u);
}

fn stage_unit(j: u32, u: u32, k0: u32) {
    let grp = (u % (BK / 32u)) / 2u;
    let g = u % 2u;
    let c = ((k0 + 64u * grp) % 256u) / 64u;
    let q = qa[j];
    let sc = k_pairs(ha[j], c);
    let base = (u / (BK / 32u)) * SU + (64u * grp + 16u * g) / 4u;
    // (Codes 0..15: values at most 15 |d| + |m|.)
    if fused_wide(15.0 * max(abs(sc.x), abs(sc.z)) + max(abs(sc.y), abs(sc.w))) {
        for (var k = 0u; k < 4u; k++) {
            let v = q4k_values(q[k], sc);
            sh_a[base + k] = fused_quad(v[0]);
            sh_a[base + 8u + k] = fused_quad(v[1]);
        }
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        let v = q4k_values(q[k], sc);
        sh_a[base + k] = Unit(v[0]);
        sh_a[base + 8u + k] = Unit(v[1]);
    }
}

// The values of code word w's low nibbles (scale sc.x, min sc.y) and high nibbles (sc.z,
// sc.w).
fn q4k_values(w: u32, sc: vec4<f32>) -> array<vec4<f32>, 2> {
    let lo = (vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u);
    let hi = (vec4<u32>(w) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u);
    return array<vec4<f32>, 2>(sc.x * vec4<f32>(lo) - sc.y, sc.z * vec4<f32>(hi) - sc.w);
}
