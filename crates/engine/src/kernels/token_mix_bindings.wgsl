// The token mixes' parameters and bindings (token_mix.wgsl, token_mix_long.wgsl). The
// activations' element types are the module's: `MixVal` f32 and `MixWord` u32 (f16 pairs) for
// token_mix.wgsl, vec4<f32> and vec2<u32> for token_mix_long.wgsl (four columns a thread, so
// that its loads and stores are whole 16- and 8-byte units).

struct Params {
    dim: u32,
    n_mix: u32,
    // Elements between consecutive mixes in the outputs.
    mix_stride: u32,
    // Elements between the two halves of the shift state ([2][slots][dim]).
    half_stride: u32,
    eps: f32,
    // Rows per mix of xq (0: no xq): steps of up to that many rows write the Q8_K mixes of
    // target a to it too; its scales and sums per 16 values start at words xq_d and xq_bs.
    q8k: u32,
    xq_d: u32,
    xq_bs: u32,
    // Rounding of target a / b per mix: 0 f32, 1 f16, 2 bf16, 3 Q8_0, 4 Q8_K, 255 none.
    mode_a: array<vec4<u32>, 2>,
    mode_b: array<vec4<u32>, 2>,
    // Bits: 1 target a, 2 target b also written as f16 pairs to x16_a / x16_b (the
    // tensor-core products' input copies, same layout; the dim is even), in steps of
    // several rows.
    x16: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<MixVal>;
@group(0) @binding(3) var<storage, read> norm_w: array<MixVal>;
@group(0) @binding(4) var<storage, read> norm_b: array<MixVal>;
@group(0) @binding(5) var<storage, read> mu: array<MixVal>;
@group(0) @binding(6) var<storage, read_write> shift_state: array<MixVal>;
@group(0) @binding(7) var<storage, read> rows: array<Row>;
@group(0) @binding(8) var<storage, read_write> out_a: array<MixVal>;
@group(0) @binding(9) var<storage, read_write> out_b: array<MixVal>;
@group(0) @binding(10) var<storage, read_write> xq: array<u32>;
@group(0) @binding(11) var<storage, read_write> x16_a: array<MixWord>;
@group(0) @binding(12) var<storage, read_write> x16_b: array<MixWord>;

fn mode_of(modes: array<vec4<u32>, 2>, m: u32) -> u32 {
    return modes[m / 4u][m % 4u];
}
