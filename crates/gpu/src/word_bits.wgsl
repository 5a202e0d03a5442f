// Bit and word helpers of the kernels that read blocks which are not whole 16-byte units
// (Q4_1, Q5_0, Q5_1, Q2_K) through vec4 bindings: the direct matvec's unit files
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

// Code word k of a 32-value block with 5th bits (Q5_0, Q5_1): its low nibbles (values 4k..)
// and high nibbles (values 16 + 4k..) as bytes 0..31, bit j of qh the 5th bit of value j.
fn q5_bytes(q: u32, qh: u32, k: u32) -> vec2<u32> {
    let h = q5_high(qh, k);
    return vec2<u32>((q & 0x0f0f0f0fu) | h.x, ((q >> 4u) & 0x0f0f0f0fu) | h.y);
}

// The block's 32 codes (code words q, 5th bits qh) as bytes: values 0..15, then 16..31.
fn q5_units(q: vec4<u32>, qh: u32) -> array<vec4<u32>, 2> {
    let c0 = q5_bytes(q.x, qh, 0u);
    let c1 = q5_bytes(q.y, qh, 1u);
    let c2 = q5_bytes(q.z, qh, 2u);
    let c3 = q5_bytes(q.w, qh, 3u);
    return array<vec4<u32>, 2>(vec4<u32>(c0.x, c1.x, c2.x, c3.x), vec4<u32>(c0.y, c1.y, c2.y, c3.y));
}
