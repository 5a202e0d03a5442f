// (rwkv-gpu's rounding.wgsl and q8_pack.wgsl, the generated lora_lanes and a header with the
// LoRA ranks R_W, R_A, R_G, R_V and LORA_F16, whether the LoRA weights are f16 pairs, and
// WKV_PROBE (see kernels/mod.rs), step.wgsl, the Step and Chunk structs, and scan_blocks.wgsl are
// prepended.)
// The RWKV-7 attention core. Entry points:
//  - `main`: one workgroup per (chunk, head) walks the chunk's tokens in order, doing steps
//    1-5 below per token. Used when every chunk of a step has one token (decode).
//  - `prep` (steps 1-2), then wkv7_scan.wgsl (step 3), then `post` (steps 4-5): the path for
//    steps with chunks of several tokens. `prep` and `post` run one workgroup per (token,
//    head), independent of each other; only the scan walks the tokens in order, with a few
//    lanes per state row (the rows of a head evolve independently). Chunks of many tokens
//    (prompts) take step 3 in matrix form instead, sub-chunk by sub-chunk
//    (wkv7_chunked.wgsl).
//  - `main_pre` and `prep_pre`: `main` and `prep` for steps of many tokens, whose second
//    LoRA products the matrix kernels computed before (`lora_sums`): step 1 is a read, and
//    a workgroup is the head's 64 channels.
// The steps, per token:
//  1. finishes the LoRAs: w, a, g and the value-residual mix are the second LoRA products,
//     computed here for the head's 64 channels from the hidden vectors (rounded as ggml
//     rounds the input of an F16 product) and the transposed LoRA weights, in the lanes of
//     llama.cpp's CPU kernels: 8 FMA lanes over the rank (lane = j % 8, reduced as
//     tinyBLAS's `hsum`) for chunks of several tokens, 4 x 8 lanes (j % 32, reduced as
//     `GGML_F32x8_REDUCE`) for single tokens (`ggml_vec_dot_f16`). Thread (lane g, pair p)
//     sums lane g for channels 2p, 2p + 1 (one u32 of f16 weights); with the ranks known
//     when the shader is built, each thread's loads are all in flight at once;
//  2. finishes the head's inputs: decay, in-context rate, value residual, k normalisation;
//  3. updates the 64x64 state and reads it out with r (threads 0..63 own a row each);
//  4. applies the per-head group norm, the r.k bonus and the gate;
//  5. writes the result, rounded as the output projection's reader needs when the rounding
//     stays inside a head (f16, bf16, Q8_0 blocks of 32); Q8_K blocks span 4 heads, so for
//     them the result is written in f32 and rounded by the reader.
//
// Thread i < 64 owns row i of the head's state (value index i, key index j):
//   S[i][j] = S[i][j] * w[j] + v[i] * k[j] + (sum_j' S[i][j'] * -kk[j']) * (kk[j] * a[j])
//   y[i] = sum_j S[i][j] * r[j]

const WG: u32 = 256u;
// LoRA products: PAIRS threads cover the head's channels two by two, one per lane.
const PAIRS: u32 = HEAD_SIZE / 2u;
const LANES: u32 = 8u;

struct Params {
    dim: u32,
    // 1 in the first layer: v is stored as v_first instead of being mixed with it.
    first_layer: u32,
    // Elements between the r, k, v blocks of `rkv`.
    block_stride: u32,
    group_norm_eps: f32,
    // LoRA ranks (decay, iclr, gate, value; value 0 in the first layer).
    ranks: vec4<u32>,
    // Where each transposed LoRA weight starts in `lora_w` (in values).
    weight_offsets: vec4<u32>,
    // 1: LoRA weights are f16 pairs; 0: f32 (the pipeline's LORA_F16 says the same).
    lora_f16: u32,
    // Rounding of the output for the output projection: 0 f32, 1 f16, 2 bf16, 3 Q8_0.
    out_mode: u32,
    // 1: hidden values are rounded to f16 as ggml does for an F16 product.
    round_hidden: u32,
    // Values per row of `hidden`, and where each LoRA's start in a row (each rank padded:
    // see the engine's LORA_ALIGN).
    hidden_stride: u32,
    hidden_starts: vec4<u32>,
    // Q8_0 output (out_mode 3): rows (0: none) of `xq` that the steps' first rows also go
    // to as rwkv-gpu's Q8Input (the output projection's 8-bit copy, read by steps of up to
    // that many rows), and the word of its first scale.
    q8_rows: u32,
    xq_d: u32,
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
// LoRA hidden vectors, [rows][hidden_stride]: each row holds decay (after tanh), iclr, gate
// (after sigmoid) and value residual one after the other, from p.hidden_starts.
@group(0) @binding(4) var<storage, read> hidden: array<f32>;
// Transposed second LoRA weights, [rank][dim] each (f16 pairs or f32).
@group(0) @binding(5) var<storage, read> lora_w: array<u32>;
@group(0) @binding(6) var<storage, read_write> v_first: array<f32>;
// [slots][heads][HEAD_SIZE][HEAD_SIZE] for this layer, as vec4s.
@group(0) @binding(7) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> vecs: array<f32>;
@group(0) @binding(9) var<storage, read_write> output: array<f32>;
// The chunk path's per-token values, [rows][heads][block][HEAD_SIZE]: for the scan (blocks
// SCAN_W .. SCAN_V) and for `post` (blocks POST_GATE .. POST_Y; the scan writes POST_Y).
@group(0) @binding(10) var<storage, read_write> scan_in: array<f32>;
@group(0) @binding(11) var<storage, read_write> post_in: array<f32>;
// The second LoRA products for `main_pre` and `prep_pre`, raw sums in blocks of
// block_stride: [4][rows][dim], decay, iclr, gate, value residual.
@group(0) @binding(12) var<storage, read> lora_sums: array<f32>;
// The output's Q8_0 copy (see p.q8_rows): codes four per word, then the blocks' scales.
@group(0) @binding(13) var<storage, read_write> xq: array<u32>;

// (HEAD_SIZE and the blocks of scan_in and post_in: scan_blocks.wgsl.)

// Hidden vectors of the current token, rounded (at most 1024 values over the four LoRAs).
const MAX_HIDDEN: u32 = 1024u;
var<workgroup> sh_hidden: array<f32, MAX_HIDDEN>;
// LoRA lane partial sums, [lora][lane][pair].
var<workgroup> sh_part: array<vec2<f32>, 1024>;
// Per-channel values of the head: w, k, -kk, kk * a, r.
// (As vec4s: the generated state code reads them four at a time.)
var<workgroup> sh_w: array<vec4<f32>, 16>;
var<workgroup> sh_k: array<vec4<f32>, 16>;
var<workgroup> sh_a: array<vec4<f32>, 16>;
var<workgroup> sh_b: array<vec4<f32>, 16>;
var<workgroup> sh_r: array<vec4<f32>, 16>;
// This thread's state row (threads 0..63), S0..S15 of the generated code.
// fn state_load(at), state_store(at): the row from / to state[at..at + 16] (vec4s).
// fn state_step(v) -> y: the update of the row and its read-out, sums in column order.
// Reduction inputs and the head's outputs.
var<workgroup> sh_s1: array<vec4<f32>, 16>;
var<workgroup> sh_s2: array<vec4<f32>, 16>;
var<workgroup> sh_o: array<f32, HEAD_SIZE>;

fn vec_at(which: u32, c: u32) -> f32 {
    return vecs[which * p.dim + c];
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Weights of channels c, c + 1 (c even) at value index `idx` of the transposed LoRAs.
fn lora_pair(idx: u32) -> vec2<f32> {
    if LORA_F16 {
        return unpack2x16float(lora_w[idx / 2u]);
    }
    return vec2<f32>(bitcast<f32>(lora_w[idx]), bitcast<f32>(lora_w[idx + 1u]));
}

// Weight `j` of the transposed LoRA `which` for channel `c`.
fn lora_weight(which: u32, j: u32, c: u32) -> f32 {
    let idx = p.weight_offsets[which] + j * p.dim + c;
    if LORA_F16 {
        let pair = unpack2x16float(lora_w[idx / 2u]);
        return select(pair.x, pair.y, (idx & 1u) == 1u);
    }
    return bitcast<f32>(lora_w[idx]);
}

// fn lora_lanes(g, pr, hb, wb, vec_mode, has_v) (generated, see kernels/mod.rs): lane g's
// partial sums of the four LoRAs for channels 2 pr, 2 pr + 1 into sh_part. Elements
// j = 8m + g; `vec_mode`: the four accumulators of ggml_vec_dot_f16 (element j in
// accumulator (j % 32) / 8), already combined as GGML_F32x8_REDUCE's first step, elements
// past the last whole 32 left to lora_final; else one accumulator (tinyBLAS). Every load is
// written out, so all of them are in flight at once.

// The product of LoRA `which` for channel c from the lane partials (c = 2 pr + odd).
fn lora_final(which: u32, rank: u32, hb: u32, c: u32, pr: u32, odd: u32, vec_mode: bool) -> f32 {
    let b = which * LANES * PAIRS + pr;
    // Lanes 0-3 and 4-7 of the channel; lanes i and i + 4 added first in both reductions.
    let lo = vec4<f32>(sh_part[b][odd], sh_part[b + PAIRS][odd], sh_part[b + 2u * PAIRS][odd],
        sh_part[b + 3u * PAIRS][odd]);
    let hi = vec4<f32>(sh_part[b + 4u * PAIRS][odd], sh_part[b + 5u * PAIRS][odd],
        sh_part[b + 6u * PAIRS][odd], sh_part[b + 7u * PAIRS][odd]);
    let t = lo + hi;
    if !vec_mode {
        // tinyBLAS hsum: then (0 + 2) + (1 + 3).
        return (t.x + t.z) + (t.y + t.w);
    }
    // GGML_F32x8_REDUCE's last steps: then (0 + 1) + (2 + 3); the elements past the last
    // whole 32 are added after (ggml adds them in f64).
    var sum = (t.x + t.y) + (t.z + t.w);
    for (var j = rank / 32u * 32u; j < rank; j++) {
        sum += lora_weight(which, j, c) * sh_hidden[hb + j];
    }
    return sum;
}

// Pairwise tree sums of the 64 values in sh_s1 / sh_s2 (halves added first: v[j] + v[j + 32],
// then + [j + 16], ...), the order the head's reductions have always used, written out so
// that no private array is indexed.
fn tree64(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, v4: vec4<f32>,
          v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>, v8: vec4<f32>, v9: vec4<f32>,
          v10: vec4<f32>, v11: vec4<f32>, v12: vec4<f32>, v13: vec4<f32>, v14: vec4<f32>,
          v15: vec4<f32>) -> f32 {
    // j + 32
    let a0 = v0 + v8;
    let a1 = v1 + v9;
    let a2 = v2 + v10;
    let a3 = v3 + v11;
    let a4 = v4 + v12;
    let a5 = v5 + v13;
    let a6 = v6 + v14;
    let a7 = v7 + v15;
    // j + 16
    let b0 = a0 + a4;
    let b1 = a1 + a5;
    let b2 = a2 + a6;
    let b3 = a3 + a7;
    // j + 8
    let c0 = b0 + b2;
    let c1 = b1 + b3;
    // j + 4, j + 2, j + 1
    let d = c0 + c1;
    let e = d.xy + d.zw;
    return e.x + e.y;
}

fn tree_s1() -> f32 {
    return tree64(sh_s1[0], sh_s1[1], sh_s1[2], sh_s1[3], sh_s1[4], sh_s1[5], sh_s1[6], sh_s1[7],
        sh_s1[8], sh_s1[9], sh_s1[10], sh_s1[11], sh_s1[12], sh_s1[13], sh_s1[14], sh_s1[15]);
}

fn tree_s2() -> f32 {
    return tree64(sh_s2[0], sh_s2[1], sh_s2[2], sh_s2[3], sh_s2[4], sh_s2[5], sh_s2[6], sh_s2[7],
        sh_s2[8], sh_s2[9], sh_s2[10], sh_s2[11], sh_s2[12], sh_s2[13], sh_s2[14], sh_s2[15]);
}

// Per-channel vectors of the layer that steps 1-2 read.
struct ChannelVecs {
    w0: f32,
    a0: f32,
    v0: f32,
    k_k: f32,
    k_a: f32,
}

fn channel_vecs(c: u32) -> ChannelVecs {
    return ChannelVecs(vec_at(W0, c), vec_at(A0, c), vec_at(V0, c), vec_at(K_K, c),
        vec_at(K_A, c));
}

// What steps 1-2 give for channel i of the head at one token.
struct TokenInputs {
    w: f32,
    // k after the in-context rate.
    k: f32,
    // v after the value residual mix.
    v: f32,
    // -kk and kk * a.
    na: f32,
    b: f32,
    r: f32,
    gate: f32,
}

// Step 2 for channel i of the head (idx = row * dim + c) from the token's projections r, k,
// v, v_first's value vf (first layer: none) and the LoRA sums (decay, iclr, gate, value
// residual; the last unused in the first layer). Called in uniform control flow; it reads
// sh_s1 last, so the caller writes sh_s1 only after a barrier.
fn finish_inputs(i: u32, owner: bool, idx: u32, cv: ChannelVecs, r: f32, k_in: f32, v_in: f32,
                 vf: f32, sums: vec4<f32>) -> TokenInputs {
    // exp(-e^-0.5 * sigmoid(.)), the decay in (0, 1).
    let w = exp(-0.606531 * sigmoid(cv.w0 + sums.x));
    let a = sigmoid(cv.a0 + sums.y);
    var v = v_in;
    if p.first_layer == 1u {
        if owner {
            v_first[idx] = v;
        }
    } else {
        v = v + (vf - v) * sigmoid(cv.v0 + sums.w);
    }
    var k = k_in;
    var kk = k * cv.k_k;
    if owner {
        sh_s1[i / 4u][i % 4u] = kk * kk;
    }
    workgroupBarrier();
    let norm = sqrt(tree_s1());
    kk = kk / max(norm, 1e-12);
    let ka = k * cv.k_a;
    k = k + (a * ka - ka);
    return TokenInputs(w, k, v, -kk, kk * a, r, sums.z);
}

// Steps 1-2 for token `row` (idx = row * dim + c) by a workgroup of WG threads: thread t is
// channel i = t % 64 (t < 64 own it) and LoRA lane g for the channel pair pr. Called in
// uniform control flow; it reads sh_s1 last, so the caller writes sh_s1 only after a
// barrier.
fn token_inputs(t: u32, row: u32, idx: u32, cv: ChannelVecs, vec_mode: bool) -> TokenInputs {
    let i = t % HEAD_SIZE;
    let owner = t < HEAD_SIZE;
    let pr = t % PAIRS;
    let g = t / PAIRS;
    let c = idx % p.dim;
    let head = c / HEAD_SIZE;
    let rk = p.ranks;
    let has_v = rk.w != 0u;
    let n_hidden = rk.x + rk.y + rk.z + rk.w;
    // Start of each LoRA's hidden values in sh_hidden (packed; in the token's row of
    // `hidden` they start at p.hidden_starts).
    let hb = vec4<u32>(0u, rk.x, rk.x + rk.y, rk.x + rk.y + rk.z);
    // Where the weights of channels (2 pr, 2 pr + 1) of this head start in each LoRA.
    let wb = p.weight_offsets + vec4<u32>(head * HEAD_SIZE + 2u * pr);
    let bs = p.block_stride;

    // 1. The token's hidden vectors, rounded for the F16 products.
    for (var h = t; h < n_hidden; h += WG) {
        let lora = u32(h >= hb.y) + u32(h >= hb.z) + u32(h >= hb.w);
        let v = hidden[row * p.hidden_stride + p.hidden_starts[lora] + h - hb[lora]];
        sh_hidden[h] = select(v, round_f16(v), p.round_hidden == 1u);
    }
    let r = rkv[idx];
    let k = rkv[bs + idx];
    let v = rkv[2u * bs + idx];
    var vf = 0.0;
    if p.first_layer == 0u {
        vf = v_first[idx];
    }
    workgroupBarrier();

    // LoRA lane partials.
    if (WKV_PROBE & 1u) == 0u {
        lora_lanes(g, pr, hb, wb, vec_mode, has_v);
    }
    workgroupBarrier();

    // The products for channel i (every thread of channel i computes them alike).
    let ci = i / 2u;
    let odd = i % 2u;
    let sw = lora_final(0u, R_W, hb.x, c, ci, odd, vec_mode);
    let sa = lora_final(1u, R_A, hb.y, c, ci, odd, vec_mode);
    let sg = lora_final(2u, R_G, hb.z, c, ci, odd, vec_mode);
    var sv = 0.0;
    if p.first_layer == 0u {
        sv = lora_final(3u, R_V, hb.w, c, ci, odd, vec_mode);
    }
    return finish_inputs(i, owner, idx, cv, r, k, v, vf, vec4<f32>(sw, sa, sg, sv));
}

// `token_inputs` from the LoRA sums in `lora_sums`, by a workgroup of the head's 64 channels
// (thread i is channel i).
fn token_inputs_pre(i: u32, idx: u32, cv: ChannelVecs) -> TokenInputs {
    let bs = p.block_stride;
    let r = rkv[idx];
    let k = rkv[bs + idx];
    let v = rkv[2u * bs + idx];
    var vf = 0.0;
    var sv = 0.0;
    if p.first_layer == 0u {
        vf = v_first[idx];
        sv = lora_sums[3u * bs + idx];
    }
    let sums = vec4<f32>(lora_sums[idx], lora_sums[bs + idx], lora_sums[2u * bs + idx], sv);
    return finish_inputs(i, true, idx, cv, r, k, v, vf, sums);
}

// Steps 4-5 for channel i of the head at token `row`: the group norm of y over the head,
// then the bonus (vb = v * the head's r.k bonus) and the gate, rounded for the output
// projection (Q8_0: also written to xq as codes and scales where row < p.q8_rows). sh_s1
// must hold the head's y (written, then a barrier); called in uniform control flow.
fn head_output(y: f32, vb: f32, gate: f32, c: u32, i: u32, owner: bool, row: u32) -> f32 {
    let mean = tree_s1() / f32(HEAD_SIZE);
    let d = y - mean;
    workgroupBarrier();
    if owner {
        sh_s1[i / 4u][i % 4u] = d * d;
    }
    workgroupBarrier();
    let variance = tree_s1() / f32(HEAD_SIZE);
    var out = d / sqrt(variance + p.group_norm_eps);
    out = out * vec_at(LN_W, c) + vec_at(LN_B, c);
    out = (out + vb) * gate;

    // 5. Rounded for the output projection.
    switch p.out_mode {
        case 1u: { out = round_f16(out); }
        case 2u: { out = round_bf16(out); }
        case 3u: {
            // Q8_0: d = amax / 127 over the 32 channels of the block, stored as f16.
            if owner {
                sh_o[i] = out;
            }
            workgroupBarrier();
            let b0 = i - i % 32u;
            var amax = 0.0;
            for (var j = 0u; j < 32u; j++) {
                amax = max(amax, abs(sh_o[b0 + j]));
            }
            let dq = q8_0_scale(amax);
            let code = round(out * q8_0_inverse(dq));
            out = code * round_f16(dq);
            if row < p.q8_rows {
                // The codes packed as rwkv-gpu's quantize_q8.wgsl packs them (q8_pack.wgsl's
                // q8_codes and q8_word), the scale as the f32 of its f16 rounding.
                if owner {
                    q8_codes[i] = i32(code);
                }
                workgroupBarrier();
                let v0 = row * p.dim + c - i;
                if owner && i < HEAD_SIZE / 4u {
                    xq[v0 / 4u + i] = q8_word(i);
                }
                if owner && i % 32u == 0u {
                    xq[p.xq_d + (v0 + i) / 32u] = bitcast<u32>(round_f16(dq));
                }
            }
        }
        default: {}
    }
    return out;
}

// Steps 3-5 of one token in a chunk walker (`main`, `main_pre`): the state update and
// read-out by the row owners, the head's output into output[idx]. Uniform control flow.
fn chunk_token(x: TokenInputs, row: u32, idx: u32, c: u32, i: u32, owner: bool, r_k: f32) {
    if owner {
        let q = i / 4u;
        let e = i % 4u;
        sh_w[q][e] = x.w;
        sh_k[q][e] = x.k;
        sh_a[q][e] = x.na;
        sh_b[q][e] = x.b;
        sh_r[q][e] = x.r;
    }
    workgroupBarrier();

    // 3. State update and read-out, by the row owners.
    var y = 0.0;
    if owner {
        if (WKV_PROBE & 2u) == 0u {
            y = state_step(x.v);
        } else {
            y = x.v;
        }
        sh_s1[i / 4u][i % 4u] = y;
        sh_s2[i / 4u][i % 4u] = x.r * x.k * r_k;
    }
    workgroupBarrier();

    // 4-5.
    let bonus = tree_s2();
    var out = y;
    if (WKV_PROBE & 4u) == 0u {
        out = head_output(y, x.v * bonus, x.gate, c, i, owner, row);
    }
    if owner {
        output[idx] = out;
    }
    workgroupBarrier();
}

// Where state row i of the head of `chunk` starts in `state` (vec4s).
fn state_row(chunk: Chunk, head: u32, i: u32) -> u32 {
    let n_head = p.dim / HEAD_SIZE;
    return (((chunk.slot * n_head + head) * HEAD_SIZE + i) * HEAD_SIZE) / 4u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if wg.x >= step.n_chunks || (WKV_PROBE & 8u) != 0u {
        return;
    }
    let chunk = chunks[wg.x];
    let head = wg.y;
    // Thread t: channel i of the head (threads t < 64 own state row i).
    let i = t % HEAD_SIZE;
    let owner = t < HEAD_SIZE;
    let c = head * HEAD_SIZE + i;
    let sbase = state_row(chunk, head, i);
    // (WKV_PROBE: measurement bits, see kernels/mod.rs; 0 in normal builds.)
    let keep_state = owner && (WKV_PROBE & 2u) == 0u;

    if keep_state {
        state_load(sbase);
    }

    let cv = channel_vecs(c);
    let r_k = vec_at(R_K, c);
    let vec_mode = chunk.n_rows == 1u;
    for (var n = 0u; n < chunk.n_rows; n++) {
        let row = chunk.first_row + n;
        let idx = row * p.dim + c;
        chunk_token(token_inputs(t, row, idx, cv, vec_mode), row, idx, c, i, owner, r_k);
    }

    if keep_state {
        state_store(sbase);
    }
}

// `main` with the LoRA sums precomputed: thread i owns state row i and channel i.
@compute @workgroup_size(HEAD_SIZE)
fn main_pre(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    if wg.x >= step.n_chunks {
        return;
    }
    let chunk = chunks[wg.x];
    let head = wg.y;
    let c = head * HEAD_SIZE + i;
    let sbase = state_row(chunk, head, i);
    state_load(sbase);
    let cv = channel_vecs(c);
    let r_k = vec_at(R_K, c);
    for (var n = 0u; n < chunk.n_rows; n++) {
        let row = chunk.first_row + n;
        let idx = row * p.dim + c;
        chunk_token(token_inputs_pre(i, idx, cv), row, idx, c, i, true, r_k);
    }
    state_store(sbase);
}

// The end of `prep` and `prep_pre` for channel i of head `head` at token `row`: the r.k
// bonus, then the values of the scan and of `post`. Uniform control flow.
fn prep_store(x: TokenInputs, row: u32, head: u32, c: u32, i: u32, owner: bool) {
    if owner {
        sh_s2[i / 4u][i % 4u] = x.r * x.k * vec_at(R_K, c);
    }
    workgroupBarrier();
    let bonus = tree_s2();
    if owner {
        let n_head = p.dim / HEAD_SIZE;
        let sb = (row * n_head + head) * SCAN_BLOCKS * HEAD_SIZE + i;
        scan_in[sb + SCAN_W * HEAD_SIZE] = x.w;
        scan_in[sb + SCAN_K * HEAD_SIZE] = x.k;
        scan_in[sb + SCAN_A * HEAD_SIZE] = x.na;
        scan_in[sb + SCAN_B * HEAD_SIZE] = x.b;
        scan_in[sb + SCAN_R * HEAD_SIZE] = x.r;
        scan_in[sb + SCAN_V * HEAD_SIZE] = x.v;
        let pb = (row * n_head + head) * POST_BLOCKS * HEAD_SIZE + i;
        post_in[pb + POST_GATE * HEAD_SIZE] = x.gate;
        post_in[pb + POST_VB * HEAD_SIZE] = x.v * bonus;
    }
}

// Steps 1-2 of token wg.x for head wg.y, into scan_in and post_in (gate, v * bonus).
@compute @workgroup_size(WG)
fn prep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row = wg.x;
    if row >= step.n_rows {
        return;
    }
    // A chunk of one token takes ggml_vec_dot_f16's lanes, as in `main`.
    var vec_mode = false;
    for (var n = 0u; n < step.n_chunks; n++) {
        let chunk = chunks[n];
        if row >= chunk.first_row && row - chunk.first_row < chunk.n_rows {
            vec_mode = chunk.n_rows == 1u;
        }
    }
    let head = wg.y;
    let i = t % HEAD_SIZE;
    let c = head * HEAD_SIZE + i;
    let x = token_inputs(t, row, row * p.dim + c, channel_vecs(c), vec_mode);
    prep_store(x, row, head, c, i, t < HEAD_SIZE);
}

// `prep` with the LoRA sums precomputed, thread i for channel i.
@compute @workgroup_size(HEAD_SIZE)
fn prep_pre(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    let row = wg.x;
    if row >= step.n_rows {
        return;
    }
    let head = wg.y;
    let c = head * HEAD_SIZE + i;
    let x = token_inputs_pre(i, row * p.dim + c, channel_vecs(c));
    prep_store(x, row, head, c, i, true);
}

// Steps 4-5 of token wg.x for head wg.y from post_in (y written by the scan), into output.
@compute @workgroup_size(HEAD_SIZE)
fn post(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    let row = wg.x;
    if row >= step.n_rows {
        return;
    }
    let head = wg.y;
    let n_head = p.dim / HEAD_SIZE;
    let c = head * HEAD_SIZE + i;
    let pb = (row * n_head + head) * POST_BLOCKS * HEAD_SIZE + i;
    let y = post_in[pb + POST_Y * HEAD_SIZE];
    sh_s1[i / 4u][i % 4u] = y;
    workgroupBarrier();
    let out = head_output(y, post_in[pb + POST_VB * HEAD_SIZE], post_in[pb + POST_GATE * HEAD_SIZE],
        c, i, true, row);
    output[row * p.dim + c] = out;
}
