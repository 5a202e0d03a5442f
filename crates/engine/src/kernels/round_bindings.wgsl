// The rounding ops' parameters and bindings (round_activations.wgsl, round_q8k.wgsl). The
// activations' element types are the module's: `RoundVal` f32 and `RoundWord` u32 (an f16
// pair) for round_activations.wgsl, vec4<f32> and vec2<u32> for round_q8k.wgsl (four values
// a thread, so that its loads and stores are whole 16- and 8-byte units).

struct Params {
    cols: u32,
    // Elements between consecutive blocks of rows.
    block_stride: u32,
    // 1: f16, 2: bf16, 3: Q8_0 (and Q8_1), 4: Q8_K.
    mode: u32,
    // 0: count rows with step.n_rows, 1: with step.n_out.
    count_out: u32,
    // 1: also write x16 (cols is even).
    write_x16: u32,
    // Steps of at least this many rows (0: none) round the ReLU² of the input: the product
    // that wrote it stored its plain sums there (the channel mix's key, whose ReLU² is left
    // to this op, the value product's only reader of it in such steps).
    relu_from: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> input: array<RoundVal>;
@group(0) @binding(3) var<storage, read_write> output: array<RoundVal>;
// The f16 copy, pairs of values per word (a small unused buffer unless p.write_x16).
@group(0) @binding(4) var<storage, read_write> x16: array<RoundWord>;

const WG: u32 = 256u;

// The rows of the step this op rounds: its token rows or its logits rows.
fn row_count() -> u32 {
    return select(step.n_rows, step.n_out, p.count_out == 1u);
}

// Element i of the input, as this step rounds it (see p.relu_from; max(v, 0)², as the
// products' ReLU² epilogue computes it, so the same bits).
fn round_input(i: u32) -> RoundVal {
    let v = input[i];
    if p.relu_from != 0u && row_count() >= p.relu_from {
        let r = max(v, RoundVal(0.0));
        return r * r;
    }
    return v;
}
