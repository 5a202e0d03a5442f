// (rounding.wgsl and a header defining HPW, heads per workgroup, are prepended.)
// The RWKV-7 attention core for HPW heads of one chunk: each group of HEAD_SIZE threads owns a
// head and walks the chunk's tokens in order. Per token it
//  1. finishes the LoRAs: w, a, g and the value-residual mix are the second LoRA products,
//     computed here for the head's channels from the hidden vectors (rounded as ggml rounds
//     the input of an F16 product) and the transposed LoRA weights;
//  2. finishes the head's inputs: decay, in-context rate, value residual, k normalisation;
//  3. updates the 64x64 state and reads it out with r;
//  4. applies the per-head group norm, the r.k bonus and the gate;
//  5. writes the result rounded as the output projection's reader needs (Q8_K blocks span
//     the 256 channels of 4 heads, which is why a workgroup holds 4 heads when it can).
//
// Thread i of a head owns row i of its state (value index i, key index j):
//   S[i][j] = S[i][j] * w[j] + v[i] * k[j] + (sum_j' S[i][j'] * -kk[j']) * (kk[j] * a[j])
//   y[i] = sum_j S[i][j] * r[j]

const HEAD_SIZE: u32 = 64u;
const WG: u32 = HEAD_SIZE * HPW;

struct Params {
    dim: u32,
    // 1 in the first layer: v is stored as v_first instead of being mixed with it.
    first_layer: u32,
    // Elements between the r, k, v blocks of `rkv`.
    block_stride: u32,
    group_norm_eps: f32,
    // LoRA ranks (decay, iclr, gate, value) and where each hidden block starts in `hidden`.
    ranks: vec4<u32>,
    hidden_offsets: vec4<u32>,
    // Where each transposed LoRA weight starts in `lora_w` (in values).
    weight_offsets: vec4<u32>,
    // 1: LoRA weights are f16 pairs; 0: f32.
    lora_f16: u32,
    // Rounding of the output for the output projection: 0 f32, 1 f16, 2 bf16, 3 Q8_0, 4 Q8_K.
    out_mode: u32,
    // 1: hidden values are rounded to f16 as ggml does for an F16 product.
    round_hidden: u32,
    _pad0: u32,
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
// LoRA hidden vectors: [rows][rank] blocks for decay (after tanh), iclr, gate (after
// sigmoid) and value residual.
@group(0) @binding(4) var<storage, read> hidden: array<f32>;
// Transposed second LoRA weights, [rank][dim] each (f16 pairs or f32).
@group(0) @binding(5) var<storage, read> lora_w: array<u32>;
@group(0) @binding(6) var<storage, read_write> v_first: array<f32>;
// [slots][heads][HEAD_SIZE][HEAD_SIZE] for this layer.
@group(0) @binding(7) var<storage, read_write> state: array<f32>;
@group(0) @binding(8) var<storage, read> vecs: array<f32>;
@group(0) @binding(9) var<storage, read_write> output: array<f32>;

var<workgroup> red: array<f32, WG>;
var<workgroup> red_idx: array<u32, WG>;
var<workgroup> sh_w: array<f32, WG>;
var<workgroup> sh_k: array<f32, WG>;
var<workgroup> sh_a: array<f32, WG>;
var<workgroup> sh_b: array<f32, WG>;
var<workgroup> sh_r: array<f32, WG>;
// Hidden vectors of the current token, rounded (at most 1024 values over the four LoRAs).
const MAX_HIDDEN: u32 = 1024u;
var<workgroup> sh_hidden: array<f32, MAX_HIDDEN>;

// Sum over the `width` consecutive threads of this thread's group.
fn group_sum(t: u32, v: f32, width: u32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = width / 2u; s > 0u; s = s / 2u) {
        if (t % width) < s {
            red[t] = red[t] + red[t + s];
        }
        workgroupBarrier();
    }
    let total = red[t - t % width];
    workgroupBarrier();
    return total;
}

// Index of the largest |v| over `width` consecutive threads (ties: lowest index).
fn group_argmax_abs(t: u32, v: f32, width: u32) -> u32 {
    red[t] = abs(v);
    red_idx[t] = t;
    workgroupBarrier();
    for (var s = width / 2u; s > 0u; s = s / 2u) {
        if (t % width) < s {
            let a = red[t];
            let b = red[t + s];
            if b > a || (b == a && red_idx[t + s] < red_idx[t]) {
                red[t] = b;
                red_idx[t] = red_idx[t + s];
            }
        }
        workgroupBarrier();
    }
    let idx = red_idx[t - t % width];
    workgroupBarrier();
    return idx;
}

fn vec_at(which: u32, c: u32) -> f32 {
    return vecs[which * p.dim + c];
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Weight `j` of the transposed LoRA `which` for channel `c`.
fn lora_weight(which: u32, j: u32, c: u32) -> f32 {
    let idx = p.weight_offsets[which] + j * p.dim + c;
    if p.lora_f16 == 1u {
        let pair = unpack2x16float(lora_w[idx / 2u]);
        return select(pair.x, pair.y, (idx & 1u) == 1u);
    }
    return bitcast<f32>(lora_w[idx]);
}

// Second LoRA product for channel c: sum_j W[c][j] * hidden[j].
fn lora_out(which: u32, c: u32) -> f32 {
    var acc = 0.0;
    let base = hidden_base(which);
    for (var j = 0u; j < p.ranks[which]; j++) {
        acc += lora_weight(which, j, c) * sh_hidden[base + j];
    }
    return acc;
}

// Start of LoRA `which`'s hidden values in sh_hidden.
fn hidden_base(which: u32) -> u32 {
    var base = 0u;
    for (var k = 0u; k < which; k++) {
        base += p.ranks[k];
    }
    return base;
}

fn round_out(t: u32, v: f32) -> f32 {
    switch p.out_mode {
        case 1u: { return round_f16(v); }
        case 2u: { return round_bf16(v); }
        case 3u: {
            let i = group_argmax_abs(t, v, 32u);
            let amax = abs(sh_b[i]);
            let d = amax / 127.0;
            let id = select(0.0, 1.0 / d, d != 0.0);
            return round(v * id) * round_f16(d);
        }
        case 4u: {
            let m = sh_b[group_argmax_abs(t, v, 256u)];
            if m == 0.0 {
                return 0.0;
            }
            let iscale = -127.0 / m;
            return min(round(iscale * v), 127.0) * (1.0 / iscale);
        }
        default: { return v; }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if wg.x >= step.n_chunks {
        return;
    }
    let chunk = chunks[wg.x];
    let i = t % HEAD_SIZE;
    let head = wg.y * HPW + t / HEAD_SIZE;
    let n_head = p.dim / HEAD_SIZE;
    let c = head * HEAD_SIZE + i;
    let base = ((chunk.slot * n_head + head) * HEAD_SIZE + i) * HEAD_SIZE;
    // This thread's head shares sh_* entries [g0, g0 + HEAD_SIZE).
    let g0 = t - i;

    var s: array<f32, HEAD_SIZE>;
    for (var j = 0u; j < HEAD_SIZE; j++) {
        s[j] = state[base + j];
    }

    let n_hidden = p.ranks.x + p.ranks.y + p.ranks.z + p.ranks.w;
    let bs = p.block_stride;
    for (var n = 0u; n < chunk.n_rows; n++) {
        let row = chunk.first_row + n;
        let idx = row * p.dim + c;

        // 1. The token's hidden vectors, rounded for the F16 products.
        for (var h = t; h < n_hidden; h += WG) {
            var which = 0u;
            var j = h;
            while which < 3u && j >= p.ranks[which] {
                j -= p.ranks[which];
                which++;
            }
            let v = hidden[p.hidden_offsets[which] + row * p.ranks[which] + j];
            sh_hidden[h] = select(v, round_f16(v), p.round_hidden == 1u);
        }
        workgroupBarrier();

        // 2. The head's inputs.
        let r = rkv[idx];
        var k = rkv[bs + idx];
        var v = rkv[2u * bs + idx];
        // exp(-e^-0.5 * sigmoid(.)), the decay in (0, 1).
        let w = exp(-0.606531 * sigmoid(vec_at(W0, c) + lora_out(0u, c)));
        let a = sigmoid(vec_at(A0, c) + lora_out(1u, c));
        let g = lora_out(2u, c);
        if p.first_layer == 1u {
            v_first[idx] = v;
        } else {
            v = v + (v_first[idx] - v) * sigmoid(vec_at(V0, c) + lora_out(3u, c));
        }
        var kk = k * vec_at(K_K, c);
        let norm = sqrt(group_sum(t, kk * kk, HEAD_SIZE));
        kk = kk / max(norm, 1e-12);
        let ka = k * vec_at(K_A, c);
        k = k + (a * ka - ka);

        sh_w[t] = w;
        sh_k[t] = k;
        sh_a[t] = -kk;
        sh_b[t] = kk * a;
        sh_r[t] = r;
        workgroupBarrier();

        // 3. State update and read-out.
        var sa = 0.0;
        for (var j = 0u; j < HEAD_SIZE; j++) {
            sa += sh_a[g0 + j] * s[j];
        }
        var y = 0.0;
        for (var j = 0u; j < HEAD_SIZE; j++) {
            s[j] = s[j] * sh_w[g0 + j] + v * sh_k[g0 + j] + sa * sh_b[g0 + j];
            y += s[j] * sh_r[g0 + j];
        }

        // 4. Group norm over the head, then the bonus and the gate.
        let mean = group_sum(t, y, HEAD_SIZE) / f32(HEAD_SIZE);
        let d = y - mean;
        let variance = group_sum(t, d * d, HEAD_SIZE) / f32(HEAD_SIZE);
        var out = d / sqrt(variance + p.group_norm_eps);
        out = out * vec_at(LN_W, c) + vec_at(LN_B, c);
        let bonus = group_sum(t, r * k * vec_at(R_K, c), HEAD_SIZE);
        out = (out + v * bonus) * g;

        // 5. Rounded for the output projection (sh_b is free again and holds the values).
        workgroupBarrier();
        sh_b[t] = out;
        workgroupBarrier();
        output[idx] = round_out(t, out);
        workgroupBarrier();
    }

    for (var j = 0u; j < HEAD_SIZE; j++) {
        state[base + j] = s[j];
    }
}
