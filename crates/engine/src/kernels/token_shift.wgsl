// Token shift and lerp: for each row t (a token) and each of `n_mix` mixes m,
//   out[m][t] = x[t] + (prev - x[t]) * mu[m]
// where prev is the previous token of the same sequence: the row before it in this step, or
// the sequence's saved shift state for the first token of a chunk.
// Time mix uses 6 mixes (r, w, k, v, a, g); channel mix uses 1 (k).

struct Params {
    dim: u32,
    n_mix: u32,
    // Elements between consecutive mixes in `output`.
    mix_stride: u32,
    _pad: u32,
}

struct Step {
    n_rows: u32,
    n_chunks: u32,
    n_out: u32,
    _pad: u32,
}

// Per row: sequence slot, and the row of the previous token or NO_PREV.
struct Row {
    slot: u32,
    prev: u32,
}

const NO_PREV: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read> mu: array<f32>;
@group(0) @binding(5) var<storage, read> shift_state: array<f32>;
@group(0) @binding(6) var<storage, read> rows: array<Row>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let t = wg.x;
    if t >= step.n_rows {
        return;
    }
    let info = rows[t];
    for (var c = tid; c < p.dim; c += 256u) {
        let cur = x[t * p.dim + c];
        var prev: f32;
        if info.prev == NO_PREV {
            prev = shift_state[info.slot * p.dim + c];
        } else {
            prev = x[info.prev * p.dim + c];
        }
        let sx = prev - cur;
        for (var m = 0u; m < p.n_mix; m++) {
            output[m * p.mix_stride + t * p.dim + c] = sx * mu[m * p.dim + c] + cur;
        }
    }
}
