// Q8_0 staging for the integer path of matvec.wgsl (Q8_0 weights, whose vec_dot_type in ggml
// is Q8_0): x is quantized here exactly as the engine's rounding kernels round it (per 32
// values, d = amax / 127, q = round(x / d), d kept as its f16 rounding), as packed signed
// bytes with d per block.

// The tile's q as packed bytes (16 per vec4) and d (f16-rounded) per 32 values. Block k
// (values [32k, 32k + 32)) is staged by thread k % WG_SIZE.
var<workgroup> sh_q: array<vec4<u32>, TILE / 16u>;
var<workgroup> sh_dx: array<f32, TILE / 32u>;

// The weight types read with these activations (Q8_0, Q4_0) are repacked with their codes
// in whole vec4s of W and d in the side array (see weights.rs): a unit is one vec4 of codes
// with its block's d.
struct Unit {
    q: vec4<u32>,
    d: f32,
}

// The block's d from the side array of f16 pairs (word scale_base + i / 2).
fn side_d(row: u32, blk: u32) -> f32 {
    let i = row * P.blocks_per_row + blk;
    let word = P.scale_base + i / 2u;
    let h = unpack2x16float(wl(word / 4u)[word % 4u]);
    return select(h.x, h.y, (i & 1u) == 1u);
}

// Columns [t0, t0 + len) of x, len a multiple of 32 (the rows of Q8_0 weights are).
fn stage(t: u32, x_base: u32, t0: u32, len: u32, mode: u32) {
    for (var k = t; k < len / 32u; k += WG_SIZE) {
        let base = x_base + t0 + 32u * k;
        var amax = 0.0;
        for (var j = 0u; j < 32u; j++) {
            amax = max(amax, abs(X[base + j]));
        }
        let d = q8_0_scale(amax);
        let id = q8_0_inverse(d);
        sh_dx[k] = round_f16(d);
        for (var h = 0u; h < 2u; h++) {
            var words = vec4<u32>(0u);
            for (var w = 0u; w < 4u; w++) {
                var packed = 0u;
                for (var e = 0u; e < 4u; e++) {
                    let q = i32(round(X[base + 16u * h + 4u * w + e] * id));
                    packed |= (bitcast<u32>(q) & 0xffu) << (8u * e);
                }
                words[w] = packed;
            }
            sh_q[2u * k + h] = words;
        }
    }
}
