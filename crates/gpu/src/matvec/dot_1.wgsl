// The dot of a 32-value block with a min (Q4_1, Q5_1: value = d * code + m) and the Q8_0
// input ggml's Q8_1 holds the same codes and d of (for direct.wgsl, composed before q4_1.wgsl
// and q5_1.wgsl, with input_q8.wgsl):
//   sum = (d_x * d) * (sum of code * x code) + m * (d_x * sum of x codes)
// as ggml's vec_dot_q4_1_q8_1 / _q5_1_q8_1 compute each block, with Q8_1's s (d_x times the
// sum of the codes) worked out here.

// A unit's codes as bytes (lo: values 0..15, hi: 16..31), its d and m, and the offset in a
// token's row of its first input value.
struct Prep {
    lo: vec4<u32>,
    hi: vec4<u32>,
    dm: vec2<f32>,
    v: u32,
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let x = x_block(x0 + p.v);
    return (x.d * p.dm.x) * f32(dot16(p.lo, x.lo) + dot16(p.hi, x.hi)) + p.dm.y * (x.d * f32(x.sum));
}
