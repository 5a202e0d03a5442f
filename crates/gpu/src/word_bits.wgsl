// Bit and word helpers of the kernels that read blocks which are not whole 16-byte units
// (Q4_1, Q5_0, Q5_1, Q2_K, Q3_K) through vec4 bindings: the direct matvec's unit files
// (matvec/words.wgsl) and the tensor-core product's block decoders (matmul_coop_words.wgsl).

// Words o .. o + 3 (o <= 4) of the eight words a, b.
fn w_shift(a: vec4<u32>, b: vec4<u32>, o: u32) -> vec4<u32> {
    let s1 = vec4<u32>(a.y, a.z, a.w, b.x);
    let s2 = vec4<u32>(a.z, a.w, b.x, b.y);
    let s3 = vec4<u32>(a.w, b.x, b.y, b.z);
    let lo = select(select(a, s1, o == 1u), s2, o == 2u);
    return select(lo, select(s3, b, o == 4u), o >= 3u);
}

// Word o (< 4) of a, without a dynamic vector index (which goes through memory on some
// drivers).
fn w_pick(a: vec4<u32>, o: u32) -> u32 {
    return select(select(a.x, a.y, o == 1u), select(a.z, a.w, o == 3u), o >= 2u);
}

// Bits 0-3 of n moved to bit 0 of bytes 0-3 (the four partial products land on disjoint
// bits, so the product is their union).
fn spread4(n: u32) -> u32 {
    return ((n & 15u) * 0x00204081u) & 0x01010101u;
}

// The 5th bits of a 32-value block's codes (Q5_0, Q5_1: bit j of qh for value j) for code
// bytes 4k .. 4k + 3 (low nibbles: values 4k.., high nibbles: values 16 + 4k..), at bit 4 of
// each byte.
fn q5_high(qh: u32, k: u32) -> vec2<u32> {
    return vec2<u32>(spread4(qh >> (4u * k)) << 4u, spread4(qh >> (16u + 4u * k)) << 4u);
}
