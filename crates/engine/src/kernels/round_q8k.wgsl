// `main_q8k`: round_activations.wgsl's Q8_K and Q8_0 roundings (modes 4 and 3) for long
// steps (the engine's ROUND_WIDE_ROWS), four tiles of 256 per workgroup, each thread four
// consecutive values as one vec4 (64 threads a tile), so that its loads and stores are whole
// 16- and 8-byte units (a thread of eight scalars, as this kernel first had, strides its
// stores 32 bytes apart). A Q8_K block's maximum: each thread's first largest, then per 16
// threads, then the block's four groups, in index order (the first of the largest wins, as
// ggml's sequential search finds it), two barriers; a Q8_0 block's is its 8 threads'. The
// same results as `main`. Grid: (rows, blocks of rows x groups of four tiles).
// (rwkv-gpu's rounding.wgsl, step.wgsl, the reductions and q8_blocks.wgsl for first_max4,
// round_q8k4, round_q8_0_4 and pack_f16_pair, and round_bindings.wgsl with `RoundVal` =
// vec4<f32>, `RoundWord` = vec2<u32> are prepended.)

// Each thread's signed largest value, then from 256 on each 16 threads'.
var<workgroup> q8k_part: array<f32, 272>;

// The first of largest magnitude of `n` entries of q8k_part from `first`, in index order.
fn first_max_of(first: u32, n: u32) -> f32 {
    var best = q8k_part[first];
    for (var k = 1u; k < n; k++) {
        let q = q8k_part[first + k];
        if abs(q) > abs(best) {
            best = q;
        }
    }
    return best;
}

@compute @workgroup_size(256)
fn main_q8k(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    if wg.x >= row_count() {
        return;
    }
    let tiles = p.cols / 256u;
    let groups = (tiles + 3u) / 4u;
    let tile = (wg.y % groups) * 4u + tid / 64u;
    let live = tile < tiles;
    let at = ((wg.y / groups) * p.block_stride + wg.x * p.cols + min(tile, tiles - 1u) * 256u)
        / 4u + tid % 64u;
    let v = round_input(at);
    q8k_part[tid] = first_max4(v);
    workgroupBarrier();
    if tid % 16u == 0u {
        q8k_part[256u + tid / 16u] = first_max_of(tid, 16u);
    }
    workgroupBarrier();
    var r: vec4<f32>;
    if p.mode == 3u {
        // Q8_0: the block of 32 values is this thread's group of 8.
        let b0 = tid / 8u * 8u;
        var amax = 0.0;
        for (var k = 0u; k < 8u; k++) {
            amax = max(amax, abs(q8k_part[b0 + k]));
        }
        r = round_q8_0_4(v, amax);
    } else {
        r = round_q8k4(v, first_max_of(256u + tid / 64u * 4u, 4u));
    }
    if !live {
        return;
    }
    output[at] = r;
    if p.write_x16 == 1u {
        x16[at] = vec2<u32>(pack_f16_pair(r.xy), pack_f16_pair(r.zw));
    }
}
