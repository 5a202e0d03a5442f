// F16 x f32 input for direct.wgsl (before half_rows.wgsl): f16 -> f32 widening is exact.

fn widen(w: u32) -> vec2<f32> {
    return unpack2x16float(w);
}
