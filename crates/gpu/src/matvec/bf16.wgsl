// BF16 x f32 input for direct.wgsl (before half_rows.wgsl): a bfloat16 is the top half of an
// f32, so widening is exact.

fn widen(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}
