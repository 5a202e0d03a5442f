// The input of direct.wgsl quantized beforehand to Q8_K or Q8_0 (quantize_q8.wgsl, or a
// kernel writing the same layout): the codes, 16 per vec4 (XQ4), and the same buffer as words
// (XQS) for the scales per XQ_BLOCK values (256 for Q8_K; 32 for Q8_0, f16 values stored as
// f32) and, for Q8_K, the sums of the codes per 16. XQ_BLOCK is prepended (direct.rs).

@group(0) @binding(1) var<storage, read> XQ4: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> XQS: array<u32>;

// d of the input block holding value v.
fn x_scale(v: u32) -> f32 {
    if PROBE == 1u {
        return f32(v);
    }
    return bitcast<f32>(XQS[JOBS.xq_d + v / XQ_BLOCK]);
}

// Sum of the input codes of values [v, v + 16) (Q8_K only).
fn x_sum16(v: u32) -> i32 {
    if PROBE == 1u {
        return i32(v);
    }
    return bitcast<i32>(XQS[JOBS.xq_bs + v / 16u]);
}

// The 16 codes of values [v, v + 16) (v a multiple of 16).
fn x_codes(v: u32) -> vec4<u32> {
    if PROBE == 1u {
        return vec4<u32>(v, v + 1u, v + 2u, v + 3u);
    }
    return XQ4[v / 16u];
}
