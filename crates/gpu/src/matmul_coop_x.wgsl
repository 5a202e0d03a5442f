// Converts the tokens' inputs to f16 for the tensor-core product (matmul_coop.wgsl), block by
// block: X16[(b * P.rows + t) * P.cols + c] = x[P.in_offset + b * P.rows * P.in_stride + t *
// P.in_stride + c] for tokens t < n (n = STEP[N_TOKENS_WORD], clamped to P.max_tokens),
// clamped to f16's finite range, and zeros for the tokens from n up to the grid's end (the
// product reads whole groups of 64 tokens) within the block's P.rows rows. Each thread
// converts a pair of columns and stores it as one word (P.cols is even: coop.rs checks), not
// two 2-byte stores. Grid: x over groups of 512 columns, y over tokens, z over blocks (one
// for a product's own copy of its input; an activation's blocks for a copy several products
// share).

@group(0) @binding(3) var<storage, read_write> X16: array<u32>;
@group(0) @binding(4) var<storage, read> STEP: array<u32>;

const F16_MAX: f32 = 65504.0;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = 2u * gid.x;
    let t = gid.y;
    let b = gid.z;
    if (c >= P.cols || t >= P.rows) {
        return;
    }
    let n = min(STEP[N_TOKENS_WORD], P.max_tokens);
    var v = vec2<f32>(0.0);
    if (t < n) {
        let i = P.in_offset + (b * P.rows + t) * P.in_stride + c;
        v = vec2<f32>(load_x1(i), load_x1(i + 1u));
    }
    let h = clamp(v, vec2<f32>(-F16_MAX), vec2<f32>(F16_MAX));
    X16[((b * P.rows + t) * P.cols + c) / 2u] = pack2x16float(h);
}
