// (rwkv-gpu's rounding.wgsl, step.wgsl, the Step struct, and reduce_subgroup.wgsl or
// reduce_tree.wgsl, the Lane struct, argmax_abs_256 and sum_256, and q8_blocks.wgsl are
// prepended.)
// Rounds activation rows the way ggml's CPU backend does before a matrix product, so that the
// GPU reproduces llama.cpp's numbers: f16 or bf16 per value, or Q8_0 / Q8_K blocks (values
// snapped to an 8-bit grid per block of 32 / 256). Writes the rounded f32 values, and where
// the tensor-core products read them (p.write_x16) their f16 copy too, in the same layout
// (what rwkv-gpu's matmul_coop_x.wgsl would write for the step's rows; one dispatch instead
// of two).
// One workgroup per (row, block of rows and tile of 256 columns); rows are
// [block][max_rows][cols]. Q8_K rows are whole blocks of 256, Q8_0 rows of 32.

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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> input: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
// The f16 copy, pairs of values per word (a small unused buffer unless p.write_x16).
@group(0) @binding(4) var<storage, read_write> x16: array<u32>;

const WG: u32 = 256u;

// The rows of the step this op rounds: its token rows or its logits rows.
fn row_count() -> u32 {
    return select(step.n_rows, step.n_out, p.count_out == 1u);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, lane: Lane) {
    let tid = lane.tid;
    if wg.x >= row_count() {
        return;
    }
    // wg.y = block * tiles + tile: 256 columns of one row of one block.
    let tiles = (p.cols + WG - 1u) / WG;
    let tile = wg.y % tiles;
    let base = (wg.y / tiles) * p.block_stride + wg.x * p.cols + tile * WG;
    let n = min(WG, p.cols - tile * WG);
    var r = 0.0;
    if p.mode == 1u || p.mode == 2u {
        if tid < n {
            let v = input[base + tid];
            r = select(round_bf16(v), round_f16(v), p.mode == 1u);
        }
    } else if p.mode == 3u {
        // Q8_0: blocks of 32 threads, one value each (threads past the row carry 0).
        let v = select(0.0, input[base + min(tid, n - 1u)], tid < n);
        r = round_q8_0(tid, v);
    } else {
        // Q8_K: one block of 256, one value per thread.
        r = round_q8_k(lane, input[base + tid]);
    }
    if tid < n {
        output[base + tid] = r;
    }
    if p.write_x16 == 1u {
        let w = f16_pair(tid, r);
        let c = 2u * tid;
        if c < n {
            x16[(base + c) / 2u] = w;
        }
    }
}

// `main_q8k`: Q8_K rounding with eight blocks per workgroup, for long steps (the engine's
// ROUND_WIDE_ROWS). Thread t rounds eight consecutive values of tile 8 g + t / 32 of row
// wg.x (g = the workgroup's group of eight tiles), so a block's maximum is one search over
// 32 partial maxima after a single barrier, instead of a workgroup-wide search (and its
// barriers) per block: rounding is latency-bound, and eight blocks' chains overlap. The same
// results as `main`'s mode 4. Its own entry point, so that `main` keeps its registers and
// workgroup memory. Grid: (rows, blocks of rows x groups of eight tiles).

// Per thread: the largest |v| of its eight values, its index in the block, and the value.
var<workgroup> q8k_part: array<vec3<f32>, 256>;

@compute @workgroup_size(256)
fn main_q8k(@builtin(workgroup_id) wg: vec3<u32>, lane: Lane) {
    if wg.x >= row_count() {
        return;
    }
    let tid = lane.tid;
    let tiles = p.cols / WG;
    let groups = (tiles + 7u) / 8u;
    let tile = (wg.y % groups) * 8u + tid / 32u;
    let live = tile < tiles;
    let first = (tid % 32u) * 8u;
    let base = (wg.y / groups) * p.block_stride + wg.x * p.cols + min(tile, tiles - 1u) * WG
        + first;
    var v: array<f32, 8>;
    var best = vec3<f32>(0.0, f32(first), 0.0);
    for (var j = 0u; j < 8u; j++) {
        v[j] = input[base + j];
        // The first of the largest, as ggml's sequential search finds it.
        if abs(v[j]) > best.x {
            best = vec3<f32>(abs(v[j]), f32(first + j), v[j]);
        }
    }
    q8k_part[tid] = best;
    workgroupBarrier();
    // The block's 32 partials come in index order: the first of the largest wins.
    let b0 = tid / 32u * 32u;
    var m = q8k_part[b0];
    for (var k = 1u; k < 32u; k++) {
        let q = q8k_part[b0 + k];
        if q.x > m.x {
            m = q;
        }
    }
    if !live {
        return;
    }
    let iscale = q8k_iscale(m.z);
    let d = q8k_scale(iscale);
    var r: array<f32, 8>;
    for (var j = 0u; j < 8u; j++) {
        r[j] = q8k_code(iscale, v[j]) * d;
        output[base + j] = r[j];
    }
    if p.write_x16 == 1u {
        for (var j = 0u; j < 8u; j += 2u) {
            x16[(base + j) / 2u] = pack_f16_pair(vec2<f32>(r[j], r[j + 1u]));
        }
    }
}
