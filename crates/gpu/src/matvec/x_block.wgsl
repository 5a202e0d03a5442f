// The unit files' read of a 32-value block of a Q8_0 input (Q4_0, Q5_0, Q4_1, Q5_1; composed
// before dot_0.wgsl or dot_1.wgsl, with the input's `x_codes` and `x_scale`).

// The block from value v: its codes (values v.. and v + 16..),
// their sum and the block's d.
struct XBlock {
    lo: vec4<u32>,
    hi: vec4<u32>,
    sum: i32,
    d: f32,
}

fn x_block(v: u32) -> XBlock {
    let lo = x_codes(v);
    let hi = x_codes(v + 16u);
    let ones = vec4<u32>(0x01010101u);
    return XBlock(lo, hi, dot16(ones, lo) + dot16(ones, hi), x_scale(v));
}
