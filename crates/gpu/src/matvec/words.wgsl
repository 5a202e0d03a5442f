// Word-addressed loads for the direct kernel's unit files of types whose blocks are not whole
// 16-byte units (Q4_1 20 bytes, Q5_0 20 and Q5_1 24, Q2_K 84): their
// `load_unit` takes the row's first word (RB_WORDS = 1) and reads fields at any word through
// the vec4 binding, two 16-byte loads for four consecutive words (the lanes of a row still
// cover its bytes contiguously, so the loads stay coalesced). Composed after word_bits.wgsl,
// before the unit file.

const RB_WORDS: u32 = 1u;

// Words wi .. wi + 3 of the weights.
fn w_words4(wi: u32) -> vec4<u32> {
    return w_shift(wl(wi / 4u), wl(wi / 4u + 1u), wi % 4u);
}
