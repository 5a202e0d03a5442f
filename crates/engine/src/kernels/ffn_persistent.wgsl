// The channel mix of a one-token step as one persistent dispatch (the multi-dispatch path:
// token_mix "ffn_mix", the key matvec, the quantization of its output, the value matvec):
//   xn = norm(x); k = relu(W_key (xn + (shift - xn) * mu))^2; x += W_value k
// with the sequence's new shift state xn, in four phases with a grid barrier
// (grid_sync.wgsl) after each of the first three:
//   1. the key's input, quantized to 8-bit blocks into xq (one 256-value tile per
//      workgroup, each such workgroup computing the norm's statistics), and the new shift;
//   2. the key's rows, shared out among all workgroups (rwkv-gpu's persistent phases),
//      reading xq;
//   3. k quantized into xq (a tile per workgroup);
//   4. the value's rows, added to x.
// Words written in one phase and read by other workgroups in a later one (xq, k) go through
// plain stores and loads. That is a data race by the letter of WGSL (only atomics are
// ordered by the barrier), made safe in practice by never reading a line of them before the
// barrier after which it is final (a workgroup's caches then hold no stale copy; xq's
// regions are 256-byte aligned), and checked on the device at load: the calibration
// (`probe_rounds`) also writes and reads fresh words that way, and a device where any comes
// back wrong does not get this kernel. (Atomic loads were correct but slow: each waited for
// the L2 before the next issued.) x: the tile workgroups read it before the first barrier;
// in phase 4 each value row's owner reads and writes its own rows only.
// Composed (persistent.rs) as: rwkv-gpu's persistent prelude, grid_sync.wgsl, the phases
// "key" and "value" (weights at bindings 10 and 11), step.wgsl, the reductions (Lane,
// argmax_abs_256, sum_256), q8_pack.wgsl, q8_blocks.wgsl, q8_store.wgsl, then this file.

struct Params {
    key: PhaseMatrix,
    value: PhaseMatrix,
    dim: u32,
    ffn: u32,
    // Elements between the two halves of the shift state ([2][slots][dim]).
    half_stride: u32,
    eps: f32,
    // The key's and value's inputs in xq: Q8_K (1) or Q8_0 (0), codes, scales, sums.
    key_q8k: u32,
    key_codes: u32,
    key_d: u32,
    key_bs: u32,
    value_q8k: u32,
    value_codes: u32,
    value_d: u32,
    value_bs: u32,
    max_spins: u32,
    // Calibration (GridSync::calibrate): this many checked barriers and nothing else.
    probe_rounds: u32,
    // Timing probe (WEB_RWKV_PERSISTENT_SKIP, wrong results): parts left out, bits 1 key
    // input, 2 key product, 4 value input, 8 value product.
    skip: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> norm_w: array<f32>;
@group(0) @binding(4) var<storage, read> norm_b: array<f32>;
@group(0) @binding(5) var<storage, read> mu: array<f32>;
@group(0) @binding(6) var<storage, read_write> shift_state: array<f32>;
@group(0) @binding(7) var<storage, read> rows: array<Row>;
@group(0) @binding(8) var<storage, read_write> ffn_k: array<f32>;
@group(0) @binding(9) var<storage, read_write> SYNC: array<atomic<u32>>;
// As vec4 so that the phases load 16 input codes at once.
@group(0) @binding(12) var<storage, read_write> xq: array<vec4<u32>>;

// The persistent phases read their inputs through these, q8_store.wgsl writes through
// xq_store.
fn xq_word(i: u32) -> u32 {
    return xq[i / 4u][i % 4u];
}

fn xq_vec4(i: u32) -> vec4<u32> {
    return xq[i / 4u];
}

fn xq_store(i: u32, w: u32) {
    xq[i / 4u][i % 4u] = w;
}

fn store_key(row: u32, v: f32) {
    let r = max(v, 0.0);
    ffn_k[row] = r * r;
}

fn store_value(row: u32, v: f32) {
    x[row] = x[row] + v;
}

// Tile `blk` of 256 values (v: this thread's) into xq, as the input format asks.
fn store_tile(lane: Lane, v: f32, blk: u32, q8k: u32, codes: u32, d: u32, bs: u32) {
    if q8k == 1u {
        store_q8k(lane, v, blk, codes, d, bs);
    } else {
        store_q8_0(lane.tid, v, blk, codes, d);
    }
}

// The calibration's check of plain stores and loads across the barrier, on ffn_k (unused
// before a step): rounds each writing a word per workgroup to a fresh, 64-word aligned
// slot, then reading all of them after a barrier; wrong words go to SYNC[2].
fn probe_plain(t: u32, wg: u32, wgs: u32, rounds: u32, max_spins: u32) {
    let stride = (wgs + 63u) / 64u * 64u;
    for (var r = 0u; r < rounds && (r + 1u) * stride <= p.ffn; r++) {
        if t == 0u {
            ffn_k[r * stride + wg] = f32(r * 7919u + wg + 1u);
        }
        grid_sync(t, wgs, max_spins);
        var bad = 0u;
        for (var j = t; j < wgs; j += 256u) {
            bad += u32(ffn_k[r * stride + j] != f32(r * 7919u + j + 1u));
        }
        if bad != 0u {
            atomicAdd(&SYNC[2], bad);
        }
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lane: Lane,
) {
    let t = lane.tid;
    if p.probe_rounds > 0u {
        grid_sync_probe(t, wg.x, nwg.x, 256u, p.probe_rounds, p.max_spins);
        probe_plain(t, wg.x, nwg.x, p.probe_rounds, p.max_spins);
        return;
    }
    // (Recorded for one-token steps only.)
    if step.n_rows != 1u {
        return;
    }
    let info = rows[0];
    let tiles = p.dim / 256u;
    if wg.x < tiles && (p.skip & 1u) == 0u {
        // The layer norm's statistics, as layer_norm.wgsl and token_mix.wgsl sum them.
        var sum = 0.0;
        for (var c = t; c < p.dim; c += 256u) {
            sum += x[c];
        }
        let mean = sum_256(lane, sum) / f32(p.dim);
        var sq = 0.0;
        for (var c = t; c < p.dim; c += 256u) {
            let d = x[c] - mean;
            sq += d * d;
        }
        let inv = 1.0 / sqrt(sum_256(lane, sq) / f32(p.dim) + p.eps);
        let now = info.half * p.half_stride + info.slot * p.dim;
        let next = (1u - info.half) * p.half_stride + info.slot * p.dim;
        for (var blk = wg.x; blk < tiles; blk += nwg.x) {
            let c = blk * 256u + t;
            let xn = (x[c] - mean) * inv * norm_w[c] + norm_b[c];
            let v = (shift_state[now + c] - xn) * mu[c] + xn;
            // The new shift state goes to the other half: nothing reads it here.
            shift_state[next + c] = xn;
            store_tile(lane, v, blk, p.key_q8k, p.key_codes, p.key_d, p.key_bs);
        }
    }
    grid_sync(t, nwg.x, p.max_spins);
    if (p.skip & 2u) == 0u {
        phase_rows_key(wg.x, nwg.x, t, p.key);
    }
    grid_sync(t, nwg.x, p.max_spins);
    if (p.skip & 4u) == 0u {
        for (var blk = wg.x; blk < p.ffn / 256u; blk += nwg.x) {
            let v = ffn_k[blk * 256u + t];
            store_tile(lane, v, blk, p.value_q8k, p.value_codes, p.value_d, p.value_bs);
        }
    }
    grid_sync(t, nwg.x, p.max_spins);
    if (p.skip & 8u) == 0u {
        phase_rows_value(wg.x, nwg.x, t, p.value);
    }
}
