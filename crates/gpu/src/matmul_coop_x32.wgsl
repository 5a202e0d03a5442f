// The tensor-core product's inputs (see matmul_coop.wgsl) read from the f32 input x and
// converted as matmul_coop_x.wgsl converts them (clamped to f16's finite range, zeros for
// tokens past the step's n), for steps of few tokens: no conversion dispatch before the
// product.

@group(0) @binding(2) var<storage, read> X: array<f32>;

const X_F16_MAX: f32 = 65504.0;

// Values 2k and 2k + 1 of token t as an f16 pair.
fn x_pair(t: u32, k: u32, n: u32) -> u32 {
    if (t >= n) {
        return 0u;
    }
    let i = P.in_offset + t * P.in_stride + 2u * k;
    let v = vec2<f32>(X[i], X[i + 1u]);
    return pack2x16float(clamp(v, vec2<f32>(-X_F16_MAX), vec2<f32>(X_F16_MAX)));
}
