// The Prep and dot of a 32-value block of codes stored with an offset (value = code - ZERO,
// the unit file's: Q4_0 8, Q5_0 16) and a Q8_0 input, for direct.wgsl (composed before
// q4_0.wgsl and q5_0.wgsl, with input_q8.wgsl):
//   sum = (d_x * d) * (sum of (code - ZERO) * x code)
// as ggml's vec_dot_q4_0_q8_0 / _q5_0_q8_0 compute each block; the codes go into the packed
// dot products as they are and ZERO x (the sum of the input codes) is taken off after.

// A unit's codes as bytes (lo: values 0..15, hi: 16..31), its d and the offset in a token's
// row of its first input value.
struct Prep {
    lo: vec4<u32>,
    hi: vec4<u32>,
    d: f32,
    v: u32,
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let x = x_block(x0 + p.v);
    return (x.d * p.d) * f32(dot16(p.lo, x.lo) + dot16(p.hi, x.hi) - ZERO * x.sum);
}
