// The channel mix of a one-token step as one persistent dispatch (the multi-dispatch path:
// token_mix "ffn_mix", the key matvec, the quantization of its output, the value matvec):
//   xn = norm(x); k = relu(W_key (xn + (shift - xn) * mu))^2; x += W_value k
// with the sequence's new shift state xn. Every workgroup computes the norm's statistics and
// quantizes the key's whole input into its workgroup memory, works out its share of the
// key's rows, waits at a grid barrier for all of k, quantizes it, then works out its share
// of the value's rows. k and x cross workgroups, so they are read and written with atomics
// (grid_sync.wgsl).
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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> x: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read> norm_w: array<f32>;
@group(0) @binding(4) var<storage, read> norm_b: array<f32>;
@group(0) @binding(5) var<storage, read> mu: array<f32>;
@group(0) @binding(6) var<storage, read_write> shift_state: array<f32>;
@group(0) @binding(7) var<storage, read> rows: array<Row>;
@group(0) @binding(8) var<storage, read_write> ffn_k: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read_write> SYNC: array<atomic<u32>>;

var<private> MEAN: f32;
var<private> INV: f32;
// Where the sequence's current shift state starts.
var<private> SHIFT_AT: u32;

fn x_at(i: u32) -> f32 {
    return bitcast<f32>(atomicLoad(&x[i]));
}

fn xn_at(i: u32) -> f32 {
    return (x_at(i) - MEAN) * INV * norm_w[i] + norm_b[i];
}

// Source 0: the key's input (token_mix.wgsl's value for one mix); 1: the value's input k.
fn px_source(source: u32, i: u32) -> f32 {
    if source == 0u {
        let xn = xn_at(i);
        let prev = shift_state[SHIFT_AT + i];
        return (prev - xn) * mu[i] + xn;
    }
    return bitcast<f32>(atomicLoad(&ffn_k[i]));
}

fn store_key(row: u32, v: f32) {
    let r = max(v, 0.0);
    atomicStore(&ffn_k[row], bitcast<u32>(r * r));
}

fn store_value(row: u32, v: f32) {
    atomicStore(&x[row], bitcast<u32>(x_at(row) + v));
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
        sum += x_at(c);
    }
    MEAN = sum_256(lane, sum) / f32(p.dim);
    var sq = 0.0;
    for (var c = t; c < p.dim; c += 256u) {
        let d = x_at(c) - MEAN;
        sq += d * d;
    }
    INV = 1.0 / sqrt(sum_256(lane, sq) / f32(p.dim) + p.eps);
    quantize_px(t, 0u, p.dim, p.key_block);
    phase_rows_key(wg.x, nwg.x, t, p.key);
    // The sequence's new shift state, into the other half: no workgroup reads it here.
    if wg.x == 0u {
        let at = (1u - info.half) * p.half_stride + info.slot * p.dim;
        for (var c = t; c < p.dim; c += 256u) {
            shift_state[at + c] = xn_at(c);
        }
    }
    grid_sync(t, nwg.x, p.max_spins);
    quantize_px(t, 1u, p.ffn, p.value_block);
    phase_rows_value(wg.x, nwg.x, t, p.value);
}
