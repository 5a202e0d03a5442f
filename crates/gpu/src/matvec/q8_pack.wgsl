// A workgroup's 256 8-bit codes (one per thread, in q8_codes) as the words of rwkv-gpu's
// Q8Input layout: shared by quantize_q8.wgsl and the engine's token mix, which write the
// same blocks.

var<workgroup> q8_codes: array<i32, 256>;

// Word k: codes 4k .. 4k + 3 as signed bytes, the first in the low byte.
fn q8_word(k: u32) -> u32 {
    var word = 0u;
    for (var e = 0u; e < 4u; e++) {
        word |= (bitcast<u32>(q8_codes[4u * k + e]) & 0xffu) << (8u * e);
    }
    return word;
}

// The sum of codes 16g .. 16g + 15 (Q8_K's sums per 16 values).
fn q8_sum16(g: u32) -> i32 {
    var sum = 0;
    for (var e = 0u; e < 16u; e++) {
        sum += q8_codes[16u * g + e];
    }
    return sum;
}
