// The second half of a tensor-core product split over columns (matmul_coop.wgsl with
// P.k_split = S > 1): y[t][P.row_start + r] (op)= the sum, in part order, of the S partial
// sums PART[t][part][r] for rows r < P.rows of the slice and tokens t < n (n =
// STEP[N_TOKENS_WORD], clamped to P.max_tokens). One thread per output; grid: x over rows
// in groups of 256, y over tokens.
//
// Header constants (from matmul.rs): EPILOGUE, N_TOKENS_WORD.

@group(0) @binding(2) var<storage, read> PART: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> STEP: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = min(STEP[N_TOKENS_WORD], P.max_tokens);
    let row = gid.x;
    let t = gid.y;
    if (row >= P.rows || t >= n) {
        return;
    }
    let ks = max(P.k_split, 1u);
    let first = t * ks * P.rows + row;
    var s = 0.0;
    for (var part = 0u; part < ks; part++) {
        s += PART[first + part * P.rows];
    }
    // (A stack's matrix g writes from stack_shift[g]: see matmul_coop.wgsl.)
    let g = stack_matrix(row);
    if (!stack_writes(g, row)) {
        return;
    }
    let i = P.out_offset + P.row_start + P.stack_shift[g] + t * P.out_stride + row;
    Y[i] = epilogue_of(stack_epilogue(g, EPILOGUE), s, i);
}
