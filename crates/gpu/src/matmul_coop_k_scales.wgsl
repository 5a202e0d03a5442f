// The 6-bit scale/min pairs of a K-quant block's 12 scale bytes (Q4_K and Q5_K share their
// layout), for the tensor-core product's block decoders (matmul_coop_aq4_k.wgsl,
// matmul_coop_aq5_k.wgsl, each composed after this file). `h` is the block's first 16
// bytes: d and dmin, then the scale bytes in words y, z, w.

// Byte k < 12 of the scales (words y, z, w of the block's first 16 bytes).
fn k_scale_byte(h: vec4<u32>, k: u32) -> u32 {
    let w = select(select(h.y, h.z, k >= 4u), h.w, k >= 8u);
    return (w >> (8u * (k % 4u))) & 0xffu;
}

// ggml get_scale_min_k4: (scale, min) pair j.
fn k_scale_min(h: vec4<u32>, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(k_scale_byte(h, j) & 63u), f32(k_scale_byte(h, j + 4u) & 63u));
    }
    let sc = (k_scale_byte(h, j + 4u) & 15u) | ((k_scale_byte(h, j - 4u) >> 6u) << 4u);
    let m = (k_scale_byte(h, j + 4u) >> 4u) | ((k_scale_byte(h, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// The scales and mins of chunk c's two sub-blocks (64 values: 2c, 2c + 1), times the block's
// d and dmin: (d1, m1, d2, m2), each value d * code - m.
fn k_pairs(h: vec4<u32>, c: u32) -> vec4<f32> {
    let dm = unpack2x16float(h.x);
    let sm1 = k_scale_min(h, 2u * c);
    let sm2 = k_scale_min(h, 2u * c + 1u);
    return vec4<f32>(dm.x * sm1.x, dm.y * sm1.y, dm.x * sm2.x, dm.y * sm2.y);
}
