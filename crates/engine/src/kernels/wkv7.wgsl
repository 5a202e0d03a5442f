// The RWKV-7 attention core for one head of one chunk: a workgroup of HEAD_SIZE threads walks
// the chunk's tokens in order. Per token it finishes the head's inputs (decay, in-context rate,
// value residual, k normalisation), updates the 64x64 state, reads it out with r, then applies
// the per-head group norm, the r.k bonus and the gate. Everything here is local to the head, so
// one dispatch does it all.
//
// Thread i owns row i of the state (value index i, key index j):
//   S[i][j] = S[i][j] * w[j] + v[i] * k[j] + (sum_j' S[i][j'] * -kk[j']) * (kk[j] * a[j])
//   y[i] = sum_j S[i][j] * r[j]

const HEAD_SIZE: u32 = 64u;

struct Params {
    dim: u32,
    // 1 in the first layer: v is stored as v_first instead of being mixed with it.
    first_layer: u32,
    // Elements between the r, k, v blocks of `rkv` and the w, a, g, v blocks of `lora`.
    block_stride: u32,
    group_norm_eps: f32,
}

struct Step {
    n_rows: u32,
    n_chunks: u32,
    n_out: u32,
    _pad: u32,
}

struct Chunk {
    slot: u32,
    first_row: u32,
    n_rows: u32,
    _pad: u32,
}

// Per-layer vectors, each `dim` long, in this order.
const W0: u32 = 0u;
const A0: u32 = 1u;
const V0: u32 = 2u;
const K_K: u32 = 3u;
const K_A: u32 = 4u;
const R_K: u32 = 5u;
const LN_W: u32 = 6u;
const LN_B: u32 = 7u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> chunks: array<Chunk>;
// [3][rows][dim]: receptance, key, value projections.
@group(0) @binding(3) var<storage, read> rkv: array<f32>;
// [4][rows][dim]: decay LoRA, in-context-rate LoRA, gate, value-residual LoRA outputs.
@group(0) @binding(4) var<storage, read> lora: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_first: array<f32>;
// [slots][heads][HEAD_SIZE][HEAD_SIZE] for this layer.
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read> vecs: array<f32>;
@group(0) @binding(8) var<storage, read_write> output: array<f32>;

var<workgroup> partial: array<f32, HEAD_SIZE>;
var<workgroup> sh_w: array<f32, HEAD_SIZE>;
var<workgroup> sh_k: array<f32, HEAD_SIZE>;
var<workgroup> sh_a: array<f32, HEAD_SIZE>;
var<workgroup> sh_b: array<f32, HEAD_SIZE>;
var<workgroup> sh_r: array<f32, HEAD_SIZE>;

fn head_sum(i: u32, v: f32) -> f32 {
    partial[i] = v;
    workgroupBarrier();
    for (var s = HEAD_SIZE / 2u; s > 0u; s = s / 2u) {
        if i < s {
            partial[i] = partial[i] + partial[i + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

fn vec_at(which: u32, c: u32) -> f32 {
    return vecs[which * p.dim + c];
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    if wg.x >= step.n_chunks {
        return;
    }
    let chunk = chunks[wg.x];
    let head = wg.y;
    let n_head = p.dim / HEAD_SIZE;
    let c = head * HEAD_SIZE + i;
    let base = ((chunk.slot * n_head + head) * HEAD_SIZE + i) * HEAD_SIZE;

    var s: array<f32, HEAD_SIZE>;
    for (var j = 0u; j < HEAD_SIZE; j++) {
        s[j] = state[base + j];
    }

    let bs = p.block_stride;
    for (var n = 0u; n < chunk.n_rows; n++) {
        let idx = (chunk.first_row + n) * p.dim + c;
        let r = rkv[idx];
        var k = rkv[bs + idx];
        var v = rkv[2u * bs + idx];
        // exp(-e^-0.5 * sigmoid(.)), the decay in (0, 1).
        let w = exp(-0.606531 * sigmoid(vec_at(W0, c) + lora[idx]));
        let a = sigmoid(vec_at(A0, c) + lora[bs + idx]);
        let g = lora[2u * bs + idx];
        if p.first_layer == 1u {
            v_first[idx] = v;
        } else {
            v = v + (v_first[idx] - v) * sigmoid(vec_at(V0, c) + lora[3u * bs + idx]);
        }
        var kk = k * vec_at(K_K, c);
        let norm = sqrt(head_sum(i, kk * kk));
        kk = kk / max(norm, 1e-12);
        let ka = k * vec_at(K_A, c);
        k = k + (a * ka - ka);

        sh_w[i] = w;
        sh_k[i] = k;
        sh_a[i] = -kk;
        sh_b[i] = kk * a;
        sh_r[i] = r;
        workgroupBarrier();

        var sa = 0.0;
        for (var j = 0u; j < HEAD_SIZE; j++) {
            sa += sh_a[j] * s[j];
        }
        var y = 0.0;
        for (var j = 0u; j < HEAD_SIZE; j++) {
            s[j] = s[j] * sh_w[j] + v * sh_k[j] + sa * sh_b[j];
            y += s[j] * sh_r[j];
        }

        // Group norm over the head, then the bonus and the gate.
        let mean = head_sum(i, y) / f32(HEAD_SIZE);
        let d = y - mean;
        let variance = head_sum(i, d * d) / f32(HEAD_SIZE);
        var out = d / sqrt(variance + p.group_norm_eps);
        out = out * vec_at(LN_W, c) + vec_at(LN_B, c);
        let bonus = head_sum(i, r * k * vec_at(R_K, c));
        out = out + v * bonus;
        output[idx] = out * g;
    }

    for (var j = 0u; j < HEAD_SIZE; j++) {
        state[base + j] = s[j];
    }
}
