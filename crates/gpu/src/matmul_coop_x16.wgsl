// The tensor-core product's inputs (see matmul_coop.wgsl) from X16, converted to f16 by
// matmul_coop_x.wgsl (token-major, P.cols values per token, zeros past the step's tokens).

@group(0) @binding(2) var<storage, read> X16: array<u32>;

// Values 2k and 2k + 1 of token t as an f16 pair (n: the step's tokens, zeroed already).
fn x_pair(t: u32, k: u32, n: u32) -> u32 {
    return X16[t * (P.cols / 2u) + k];
}
