// Q8_K staging for the integer path of matvec.wgsl (K-quant weights, whose vec_dot_type in
// ggml is Q8_K): x is quantized here exactly as the engine's rounding kernels round it (per
// 256 values, iscale = -127 / (the signed value of largest magnitude), q = min(round(iscale *
// x), 127), d = 1 / iscale), kept as packed signed bytes with the block's d and the sums of q
// per 16 values (for the K-quants' minimums).

// The tile's q as packed bytes (16 per vec4), its d per 256 values and sums of q per 16.
// Group k (values [16k, 16k + 16)) of the tile is staged by thread k % WG_SIZE. sh_bs
// first holds each group's signed value of largest magnitude (the first on ties).
var<workgroup> sh_q: array<vec4<u32>, TILE / 16u>;
var<workgroup> sh_dx: array<f32, TILE / 256u>;
var<workgroup> sh_bs: array<i32, TILE / 16u>;

// Columns [t0, t0 + len) of x, len a multiple of 256 (the rows of K-quant weights are).
fn stage(t: u32, x_base: u32, t0: u32, len: u32, mode: u32) {
    let groups = len / 16u;
    for (var k = t; k < groups; k += WG_SIZE) {
        let base = x_base + t0 + 16u * k;
        var m = 0.0;
        var best = 0.0;
        for (var j = 0u; j < 16u; j++) {
            let v = X[base + j];
            if abs(v) > best {
                best = abs(v);
                m = v;
            }
        }
        sh_bs[k] = bitcast<i32>(m);
    }
    workgroupBarrier();
    // Each thread finds the maxima of its groups' blocks before any group's sum replaces
    // its maximum.
    var iscales: array<f32, (TILE / 16u + WG_SIZE - 1u) / WG_SIZE>;
    var n = 0u;
    for (var k = t; k < groups; k += WG_SIZE) {
        let b = k / 16u;
        var bm = 0.0;
        var best = 0.0;
        for (var j = 0u; j < 16u; j++) {
            let c = bitcast<f32>(sh_bs[16u * b + j]);
            if abs(c) > best {
                best = abs(c);
                bm = c;
            }
        }
        iscales[n] = q8k_iscale(bm);
        if k % 16u == 0u {
            sh_dx[b] = q8k_scale(iscales[n]);
        }
        n++;
    }
    workgroupBarrier();
    n = 0u;
    for (var k = t; k < groups; k += WG_SIZE) {
        let iscale = iscales[n];
        let base = x_base + t0 + 16u * k;
        var words = vec4<u32>(0u);
        var sum = 0;
        for (var w = 0u; w < 4u; w++) {
            var packed = 0u;
            for (var e = 0u; e < 4u; e++) {
                let q = i32(q8k_code(iscale, X[base + 4u * w + e]));
                packed |= (bitcast<u32>(q) & 0xffu) << (8u * e);
                sum += q;
            }
            words[w] = packed;
        }
        sh_q[k] = words;
        sh_bs[k] = sum;
        n++;
    }
}

