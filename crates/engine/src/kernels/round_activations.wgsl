// (rwkv-gpu's rounding.wgsl, step.wgsl, the Step struct, and reduce_subgroup.wgsl or
// reduce_tree.wgsl, the Lane struct, argmax_abs_256 and sum_256, q8_blocks.wgsl and
// round_bindings.wgsl with scalar elements are prepended.)
// Rounds activation rows the way ggml's CPU backend does before a matrix product, so that the
// GPU reproduces llama.cpp's numbers: f16 or bf16 per value, or Q8_0 / Q8_K blocks (values
// snapped to an 8-bit grid per block of 32 / 256). Writes the rounded f32 values, and where
// the tensor-core products read them (p.write_x16) their f16 copy too, in the same layout
// (what rwkv-gpu's matmul_coop_x.wgsl would write for the step's rows; one dispatch instead
// of two).
// One workgroup per (row, block of rows and tile of 256 columns); rows are
// [block][max_rows][cols]. Q8_K rows are whole blocks of 256, Q8_0 rows of 32.

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
            let v = round_input(base + tid);
            r = select(round_bf16(v), round_f16(v), p.mode == 1u);
        }
    } else if p.mode == 3u {
        // Q8_0: blocks of 32 threads, one value each (threads past the row carry 0).
        let v = select(0.0, round_input(base + min(tid, n - 1u)), tid < n);
        r = round_q8_0(tid, v);
    } else {
        // Q8_K: one block of 256, one value per thread.
        r = round_q8_k(lane, round_input(base + tid));
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
