// The channel mix of a one-token step as one persistent dispatch (the multi-dispatch path:
// token_mix "ffn_mix", the key matvec, the quantization of its output, the value matvec):
//   xn = norm(x); k = relu(W_key (xn + (shift - xn) * mu))^2; x += W_value k
// with the sequence's new shift state xn. Every workgroup copies x into its workgroup memory,
// computes the norm's statistics, quantizes the key's whole input there, works out its share
// of the key's rows, waits at a grid barrier for all of k, quantizes it, then works out its
// share of the value's rows.
// k crosses workgroups within the dispatch with plain stores and loads. That is a data race
// by the letter of WGSL (grid_sync.wgsl: only atomics are ordered), made safe in practice by
// never reading a line of k before the barrier after which it is final (a workgroup's
// caches then hold no stale copy), and checked on the device at load: the calibration
// (`probe_rounds`) also writes and reads fresh words that way and counts wrong ones, and a
// device where any is wrong does not get this kernel. Atomic loads were correct but slow:
// each waits for the L2 before the next issues (the channel mix took 90 us per layer).
// x: every workgroup reads it whole before the barrier; after it each value row's owner
// reads and writes its own rows only.
// Composed (kernels/mod.rs) as: rwkv-gpu's persistent prelude (rounding.wgsl,
// persistent_input.wgsl), grid_sync.wgsl, the phases "key" and "value" (persistent_rows.wgsl
// with their weight types' unit files, weights at bindings 10 and 11), step.wgsl, the
// reductions (Lane, sum_256), then this file.

struct Params {
    key: PhaseMatrix,
    value: PhaseMatrix,
    dim: u32,
    ffn: u32,
    // Elements between the two halves of the shift state ([2][slots][dim]).
    half_stride: u32,
    eps: f32,
    // Values per 8-bit block of each phase's input (256 Q8_K, 32 Q8_0).
    key_block: u32,
    value_block: u32,
    max_spins: u32,
    // Calibration (GridSync::calibrate): this many checked barriers and nothing else.
    probe_rounds: u32,
    // Timing probe (WEB_RWKV_PERSISTENT_SKIP, wrong results): parts left out, bits 1 key
    // input, 2 key product, 4 value input, 8 value product, 16 the barrier.
    skip: u32,
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

// x, as the dispatch started.
var<workgroup> X: array<f32, X_MAX>;
var<private> MEAN: f32;
var<private> INV: f32;
// Where the sequence's current shift state starts.
var<private> SHIFT_AT: u32;

fn xn_at(i: u32) -> f32 {
    return (X[i] - MEAN) * INV * norm_w[i] + norm_b[i];
}

// Source 0: the key's input (token_mix.wgsl's value for one mix); 1: the value's input k.
fn px_source(source: u32, i: u32) -> f32 {
    if source == 0u {
        let xn = xn_at(i);
        let prev = shift_state[SHIFT_AT + i];
        return (prev - xn) * mu[i] + xn;
    }
    return ffn_k[i];
}

fn store_key(row: u32, v: f32) {
    let r = max(v, 0.0);
    ffn_k[row] = r * r;
}

fn store_value(row: u32, v: f32) {
    x[row] = X[row] + v;
}

// The calibration's check of plain stores and loads across the barrier, on ffn_k (unused
// before a step): `rounds` rounds, each writing a word per workgroup to a fresh, 32-word
// aligned slot, then reading all of them after a barrier; wrong words go to SYNC[2].
fn probe_plain(t: u32, wg: u32, wgs: u32, rounds: u32, max_spins: u32) {
    let stride = (wgs + 31u) / 32u * 32u;
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
    SHIFT_AT = info.half * p.half_stride + info.slot * p.dim;
    // The layer norm's statistics, as layer_norm.wgsl and token_mix.wgsl sum them.
    var sum = 0.0;
    for (var c = t; c < p.dim; c += 256u) {
        let v = x[c];
        X[c] = v;
        sum += v;
    }
    MEAN = sum_256(lane, sum) / f32(p.dim);
    var sq = 0.0;
    for (var c = t; c < p.dim; c += 256u) {
        let d = X[c] - MEAN;
        sq += d * d;
    }
    INV = 1.0 / sqrt(sum_256(lane, sq) / f32(p.dim) + p.eps);
    if (p.skip & 1u) == 0u {
        quantize_px(t, 0u, p.dim, p.key_block);
    }
    if (p.skip & 2u) == 0u {
        phase_rows_key(wg.x, nwg.x, t, p.key);
    }
    // The sequence's new shift state, into the other half: no workgroup reads it here.
    if wg.x == 0u {
        let at = (1u - info.half) * p.half_stride + info.slot * p.dim;
        for (var c = t; c < p.dim; c += 256u) {
            shift_state[at + c] = xn_at(c);
        }
    }
    if (p.skip & 16u) == 0u {
        grid_sync(t, nwg.x, p.max_spins);
    }
    if (p.skip & 4u) == 0u {
        quantize_px(t, 1u, p.ffn, p.value_block);
    }
    if (p.skip & 8u) == 0u {
        phase_rows_value(wg.x, nwg.x, t, p.value);
    }
}
