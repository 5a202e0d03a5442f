// Input x as vec4s (one load per four values): used when the offset and the stride are
// multiples of 4, so every load_x4 index is a multiple of 4.
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;

fn load_x4(i: u32) -> vec4<f32> {
    return X[i / 4u];
}

fn load_x1(i: u32) -> f32 {
    return X[i / 4u][i % 4u];
}
