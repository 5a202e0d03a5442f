// Input x as scalars: any element offset and stride.
@group(0) @binding(2) var<storage, read> X: array<f32>;

fn load_x4(i: u32) -> vec4<f32> {
    return vec4<f32>(X[i], X[i + 1u], X[i + 2u], X[i + 3u]);
}

fn load_x1(i: u32) -> f32 {
    return X[i];
}
