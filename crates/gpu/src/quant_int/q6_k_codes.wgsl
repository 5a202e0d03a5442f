// Q6_K's 6-bit codes for packed-byte dot products (quant_int/q6_k.wgsl, matvec/q6_k.wgsl).

// Packed 6-bit codes q (bytes 0..63) as signed bytes q - 32.
fn centred(q: u32) -> u32 {
    let u = q ^ 0x20202020u;
    let s = u & 0x20202020u;
    return u | (s << 1u) | (s << 2u);
}

// Byte k of w as a signed value.
fn sbyte(w: u32, k: u32) -> i32 {
    return (bitcast<i32>(w) << (24u - 8u * k)) >> 24u;
}
