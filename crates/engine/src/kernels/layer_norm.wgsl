// (step.wgsl, the Step struct, and reduce_subgroup.wgsl or reduce_tree.wgsl, the Lane struct
// and sum_256, are prepended: the same sums as the token mix's layer norms.)
// Layer norm of whole rows, with affine weight and bias: one workgroup per row.
// With `gather` set, output row i normalises input row `rows[i]` (used to pick the rows whose
// logits are wanted before the head).

struct Params {
    dim: u32,
    eps: f32,
    gather: u32,
    // 0: count rows with step.n_rows, 1: with step.n_out.
    count_out: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> input: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> rows: array<u32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, lane: Lane) {
    let tid = lane.tid;
    let row = wg.x;
    let count = select(step.n_rows, step.n_out, p.count_out == 1u);
    if row >= count {
        return;
    }
    let src = select(row, rows[row], p.gather == 1u) * p.dim;
    let dst = row * p.dim;

    var sum = 0.0;
    for (var c = tid; c < p.dim; c += WG) {
        sum += input[src + c];
    }
    let mean = sum_256(lane, sum) / f32(p.dim);
    var sq = 0.0;
    for (var c = tid; c < p.dim; c += WG) {
        let d = input[src + c] - mean;
        sq += d * d;
    }
    let inv = 1.0 / sqrt(sum_256(lane, sq) / f32(p.dim) + p.eps);
    for (var c = tid; c < p.dim; c += WG) {
        output[dst + c] = (input[src + c] - mean) * inv * weight[c] + bias[c];
    }
}
