// Decodes rows P.first_row .. P.first_row + P.rows of a weight part to f16 for the tensor-core
// product (matmul_coop.wgsl): W16[r * P.cols + c] = W[P.first_row + r][c], with ggml's
// dequantization (the format's decode_unit) in f32, then rounded to f16 (clamped to its
// finite range). One thread per decode unit; grid x (and y) over units, 256 per workgroup.

enable f16;

@group(0) @binding(3) var<storage, read_write> W16: array<f16>;

const F16_MAX: f32 = 65504.0;

// Index in W16 of column 0 of the row being decoded.
var<private> row_base: u32;

fn emit1(w: f32, col: u32) {
    W16[row_base + col] = f16(clamp(w, -F16_MAX, F16_MAX));
}

fn emit4(w: vec4<f32>, col: u32) {
    let v = vec4<f16>(clamp(w, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
    let i = row_base + col;
    W16[i] = v.x;
    W16[i + 1u] = v.y;
    W16[i + 2u] = v.z;
    W16[i + 3u] = v.w;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let item = gid.y * nwg.x * 256u + gid.x;
    let per_row = P.blocks_per_row * UNITS;
    let r = item / per_row;
    if (r >= P.rows) {
        return;
    }
    let rem = item % per_row;
    let blk = rem / UNITS;
    row_base = r * P.cols;
    decode_unit(P.first_row + r, blk, rem % UNITS, blk * BLOCK_ELEMS);
}
