// The dot of a 32-value block with a min (Q4_1, Q5_1: value = d * code + m) and the Q8_0
// input ggml's Q8_1 holds the same codes and d of (for direct.wgsl, composed before q4_1.wgsl
// and q5_1.wgsl, with input_q8.wgsl):
//   sum = (d_x * d) * (sum of code * x code) + m * (d_x * sum of x codes)
// as ggml's vec_dot_q4_1_q8_1 / _q5_1_q8_1 compute each block, with Q8_1's s (d_x times the
// sum of the codes) worked out here.

// The block's dot: codes 0..15 (lo) and 16..31 (hi) as bytes, (d, m), its first input value v.
fn q_1_dot(lo: vec4<u32>, hi: vec4<u32>, dm: vec2<f32>, v: u32) -> f32 {
    let x0c = x_codes(v);
    let x1c = x_codes(v + 16u);
    let ones = vec4<u32>(0x01010101u);
    let sx = dot16(ones, x0c) + dot16(ones, x1c);
    let dx = x_scale(v);
    return (dx * dm.x) * f32(dot16(lo, x0c) + dot16(hi, x1c)) + dm.y * (dx * f32(sx));
}

