// Row lookup: out[t][c] = W[ids[t]][c], decoded exactly as ggml's dequantize_row_*, for the
// tokens t < n (n = STEP[N_TOKENS_WORD], clamped to P.max_tokens). Used for embedding
// lookups and to check the decoders bit for bit. One workgroup per token (2-D grid,
// linearised); ids outside this part's rows are left to the other parts' dispatches, ids
// outside the matrix write nothing.

@group(0) @binding(2) var<storage, read> IDS: array<u32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(4) var<storage, read> STEP: array<u32>;

var<private> out_base: u32;

fn emit4(w: vec4<f32>, col: u32) {
    let i = out_base + col;
    OUT[i] = w.x;
    OUT[i + 1u] = w.y;
    OUT[i + 2u] = w.z;
    OUT[i + 3u] = w.w;
}

fn emit1(w: f32, col: u32) {
    OUT[out_base + col] = w;
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n_tok = min(STEP[N_TOKENS_WORD], P.max_tokens);
    let t = wg.y * nwg.x + wg.x;
    if (t >= n_tok) {
        return;
    }
    let id = IDS[P.in_offset + t];
    if (id < P.row_start || id - P.row_start >= P.rows) {
        return;
    }
    let row = id - P.row_start;
    out_base = P.out_offset + t * P.out_stride;
    let units = P.blocks_per_row * UNITS;
    for (var i = li; i < units; i += WG_SIZE) {
        let blk = i / UNITS;
        decode_unit(row, blk, i % UNITS, blk * BLOCK_ELEMS);
    }
}
