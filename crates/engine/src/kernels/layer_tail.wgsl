// The tail of a layer in a one-token step as one persistent dispatch: the attention's output
// projection and the channel mix (the multi-dispatch path: the output's input quantized, the
// output matvec, token_mix "ffn_mix", the key matvec, its output quantized, the value
// matvec):
//   y = W_out a;  h = x + y;  hn = norm(h)
//   k = relu(W_key (hn + (shift - hn) * mu))^2;  x = h + W_value k
// with the sequence's new shift state hn, in six phases with a grid barrier (grid_sync.wgsl)
// after each of the first five:
//   1. a (the WKV kernel's output) quantized to 8-bit tiles into xq, a 256-value tile per
//      workgroup;
//   2. the output's rows into y, shared out among all workgroups (rwkv-gpu's persistent
//      phases, reading xq);
//   3. the key's input quantized into xq (each tile's workgroup computes the norm's
//      statistics of h), and the new shift state;
//   4. the key's rows into k;
//   5. k quantized into xq;
//   6. the value's rows, x = (x + y) + value row (the additions of the multi-dispatch path,
//      in its order).
// Words written in one phase and read by other workgroups in a later one (xq, y, k) go
// through plain stores and loads. That is a data race by the letter of WGSL (only atomics
// are ordered by the barrier), made safe in practice by never reading a line of them before
// the barrier after which it is final (a workgroup's caches then hold no stale copy; xq's
// regions are 256-byte aligned), and checked on the device at load: the calibration
// (`probe_rounds`) also writes and reads fresh words that way, and a device where any comes
// back wrong does not get this kernel. (Atomic loads were correct but slow: each waited for
// the L2 before the next issued.) x is only read until phase 6, where each row's owner
// reads and writes its own rows.
// Composed (persistent.rs) as: rwkv-gpu's persistent prelude, grid_sync.wgsl, the phases
// "output", "key" and "value" (weights at bindings 11, 12, 13), step.wgsl, the reductions
// (Lane, argmax_abs_256, sum_256), q8_pack.wgsl, q8_blocks.wgsl, q8_store.wgsl, then this
// file.

// A phase's input in xq: Q8_K (q8k 1) or Q8_0 tiles, their codes, scales and sums.
struct PhaseInput {
    q8k: u32,
    codes: u32,
    d: u32,
    bs: u32,
}

struct Params {
    output: PhaseMatrix,
    key: PhaseMatrix,
    value: PhaseMatrix,
    output_input: PhaseInput,
    key_input: PhaseInput,
    value_input: PhaseInput,
    dim: u32,
    ffn: u32,
    // Elements between the two halves of the shift state ([2][slots][dim]).
    half_stride: u32,
    eps: f32,
    max_spins: u32,
    // Calibration (GridSync::calibrate): this many checked barriers and nothing else.
    probe_rounds: u32,
    // Timing probe (WEB_RWKV_PERSISTENT_SKIP, wrong results): products left out, bits 1
    // output, 2 key, 8 value.
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
@group(0) @binding(9) var<storage, read> att_out: array<f32>;
@group(0) @binding(10) var<storage, read_write> SYNC: array<atomic<u32>>;
// As vec4 so that the phases load 16 input codes at once.
@group(0) @binding(14) var<storage, read_write> xq: array<vec4<u32>>;
@group(0) @binding(15) var<storage, read_write> y: array<f32>;

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

// h = x + y, the residual after the attention (what the multi-dispatch path's output
// product adds into x).
fn h_at(c: u32) -> f32 {
    return x[c] + y[c];
}

fn store_output(row: u32, v: f32) {
    y[row] = v;
}

fn store_key(row: u32, v: f32) {
    let r = max(v, 0.0);
    ffn_k[row] = r * r;
}

fn store_value(row: u32, v: f32) {
    x[row] = h_at(row) + v;
}

// Tile `blk` of 256 values (v: this thread's) into xq as `input` asks.
fn store_tile(lane: Lane, v: f32, blk: u32, input: PhaseInput) {
    if input.q8k == 1u {
        store_q8k(lane, v, blk, input.codes, input.d, input.bs);
    } else {
        store_q8_0(lane.tid, v, blk, input.codes, input.d);
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
    // 1. The output's input.
    for (var blk = wg.x; blk < tiles; blk += nwg.x) {
        store_tile(lane, att_out[blk * 256u + t], blk, p.output_input);
    }
    grid_sync(t, nwg.x, p.max_spins);
    // 2. The output's rows.
    if (p.skip & 1u) == 0u {
        phase_rows_output(wg.x, nwg.x, t, p.output);
    }
    grid_sync(t, nwg.x, p.max_spins);
    // 3. The key's input: h = x + y, its layer norm (statistics summed as layer_norm.wgsl
    // and token_mix.wgsl sum them), the token shift and lerp.
    if wg.x < tiles {
        var sum = 0.0;
        for (var c = t; c < p.dim; c += 256u) {
            sum += h_at(c);
        }
        let mean = sum_256(lane, sum) / f32(p.dim);
        var sq = 0.0;
        for (var c = t; c < p.dim; c += 256u) {
            let d = h_at(c) - mean;
            sq += d * d;
        }
        let inv = 1.0 / sqrt(sum_256(lane, sq) / f32(p.dim) + p.eps);
        let now = info.half * p.half_stride + info.slot * p.dim;
        let next = (1u - info.half) * p.half_stride + info.slot * p.dim;
        for (var blk = wg.x; blk < tiles; blk += nwg.x) {
            let c = blk * 256u + t;
            let hn = (h_at(c) - mean) * inv * norm_w[c] + norm_b[c];
            let v = (shift_state[now + c] - hn) * mu[c] + hn;
            // The new shift state goes to the other half: nothing reads it here.
            shift_state[next + c] = hn;
            store_tile(lane, v, blk, p.key_input);
        }
    }
    grid_sync(t, nwg.x, p.max_spins);
    // 4. The key's rows.
    if (p.skip & 2u) == 0u {
        phase_rows_key(wg.x, nwg.x, t, p.key);
    }
    grid_sync(t, nwg.x, p.max_spins);
    // 5. The value's input.
    for (var blk = wg.x; blk < p.ffn / 256u; blk += nwg.x) {
        store_tile(lane, ffn_k[blk * 256u + t], blk, p.value_input);
    }
    grid_sync(t, nwg.x, p.max_spins);
    // 6. The value's rows.
    if (p.skip & 8u) == 0u {
        phase_rows_value(wg.x, nwg.x, t, p.value);
    }
}
