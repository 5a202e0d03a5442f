// Decodes rows P.first_row .. P.first_row + P.rows of a weight part to f16 for the
// tensor-core product (matmul_coop.wgsl): W16[r * P.cols + c] = W[P.first_row + r][c], with
// ggml's dequantization (the format's decode_unit) in f32, then rounded to f16 (clamped to
// its finite range). Rows are whole blocks (P.cols = P.blocks_per_row * BLOCK_ELEMS).
//
// One thread per decode unit, 256 per workgroup; grid x (and y) over units. A workgroup's
// units are whole consecutive blocks, i.e. one contiguous run of W16: they are decoded into
// workgroup memory first and then written out 16 bytes per thread, coalesced (a unit's own
// values are scattered over its block, so writing them directly cost a memory transaction
// per value).
//
// For the block formats (not f32, f16, bf16) this kernel is built without naga's bounds
// checks on Vulkan (shader.rs), so its `tile` indices are in range by construction: UNITS
// divides 256, so a workgroup's 256 units are whole blocks; every value a unit emits lies in
// its own block, at most 256 * UNIT_VALUES values from the workgroup's first, and emit4's
// pair index i / 2 + 1 stays below TILE_VALUES / 2 (i is a multiple of 4); the write-out
// reads tile[4 q + 3] with q < n_values / 8 <= TILE_VALUES / 8. (emit1 serves only the
// float formats' partial blocks, and the float formats keep the checks.)

@group(0) @binding(3) var<storage, read_write> W16: array<vec4<u32>>;

const F16_MAX: f32 = 65504.0;
const UNIT_VALUES: u32 = BLOCK_ELEMS / UNITS;
const TILE_VALUES: u32 = 256u * UNIT_VALUES;

// The workgroup's values as f16 pairs.
var<workgroup> tile: array<u32, TILE_VALUES / 2u>;

// Index in `tile` (in f16) of column 0 of the row being decoded.
var<private> row_base: i32;

fn half2(v: vec2<f32>) -> u32 {
    return pack2x16float(clamp(v, vec2<f32>(-F16_MAX), vec2<f32>(F16_MAX)));
}

fn emit1(w: f32, col: u32) {
    // Only a row's last values of the float formats come one by one (none when the rows
    // are whole blocks); the unit's thread owns the pair.
    let i = u32(row_base + i32(col));
    var v = unpack2x16float(tile[i / 2u]);
    if (i % 2u == 0u) {
        v.x = w;
    } else {
        v.y = w;
    }
    tile[i / 2u] = half2(v);
}

fn emit4(w: vec4<f32>, col: u32) {
    let i = u32(row_base + i32(col)) / 2u;
    tile[i] = half2(w.xy);
    tile[i + 1u] = half2(w.zw);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let first_item = (wg.y * nwg.x + wg.x) * 256u;
    let per_row = P.blocks_per_row * UNITS;
    let total = P.rows * per_row;
    if (first_item >= total) {
        return;
    }
    let item = first_item + li;
    if (item < total) {
        let r = item / per_row;
        let rem = item % per_row;
        let blk = rem / UNITS;
        // W16 index of the row's column 0, relative to the workgroup's first value.
        row_base = i32(r * P.cols) - i32(first_item * UNIT_VALUES);
        decode_unit(P.first_row + r, blk, rem % UNITS, blk * BLOCK_ELEMS);
    }
    workgroupBarrier();
    let n_values = min(total - first_item, 256u) * UNIT_VALUES;
    let base = first_item * UNIT_VALUES / 8u;
    for (var q = li; q < n_values / 8u; q += 256u) {
        W16[base + q] = vec4<u32>(tile[4u * q], tile[4u * q + 1u], tile[4u * q + 2u], tile[4u * q + 3u]);
    }
}
