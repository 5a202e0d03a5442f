// Word reads of the weights for the tensor-core product's decoders of blocks that are not
// whole 16-byte units (matmul_coop_aq4_1.wgsl, _aq5_0, _aq5_1, _aq2_k; after
// word_bits.wgsl): their rows need not be whole vec4s either, so they address words.

// Words wi .. wi + 3 of matrix g's blocks (two 16-byte loads).
fn wq_words4(g: u32, wi: u32) -> vec4<u32> {
    return w_shift(wq(g, wi / 4u), wq(g, wi / 4u + 1u), wi % 4u);
}

// Word wi of matrix g's blocks.
fn wq_word(g: u32, wi: u32) -> u32 {
    return w_pick(wq(g, wi / 4u), wi % 4u);
}

// The four bytes of a word, lowest first.
fn word_bytes(w: u32) -> vec4<u32> {
    return (vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
}
