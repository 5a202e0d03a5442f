// The f32 input of direct.wgsl, rounded as it is read per the job's mode (0 none, 1 f16, 2
// bf16: ggml's rounding of activations for F16 and BF16 weights).

@group(0) @binding(1) var<storage, read> X4: array<vec4<f32>>;

// Values [v, v + 4) (v a multiple of 4), rounded.
fn x_values(v: u32) -> vec4<f32> {
    let x = X4[v / 4u];
    if MODE == 1u {
        return vec4<f32>(round_f16(x.x), round_f16(x.y), round_f16(x.z), round_f16(x.w));
    }
    if MODE == 2u {
        return vec4<f32>(round_bf16(x.x), round_bf16(x.y), round_bf16(x.z), round_bf16(x.w));
    }
    return x;
}
