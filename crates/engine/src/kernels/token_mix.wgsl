// (rwkv-gpu's rounding.wgsl and q8_pack.wgsl, step.wgsl, the Step and Row structs, and
// reduce_subgroup.wgsl or reduce_tree.wgsl, the Lane struct, argmax_abs_256 and sum_256,
// q8_blocks.wgsl, q8_store.wgsl and token_mix_bindings.wgsl, with scalar elements, are
// prepended.)
// Layer norm + token shift + lerps + rounding, fused: for each row t (a token) and each of
// `n_mix` mixes m,
//   xn = norm(x[t]);  prev = norm(x[previous token]) or the sequence's saved shift state
//   out[m][t] = xn + (prev - xn) * mu[m]
// written once or twice per mix (`target a` and `target b`), each rounded as the matrix that
// reads it needs (ggml's activation rounding), except the 8-bit roundings in one-token
// steps, whose matvecs quantize their input themselves. The last row of each chunk saves xn as the
// sequence's new shift state, into the other half of the double-buffered state, so no row of
// this dispatch reads what another writes. In steps of up to `q8k` rows, the mixes whose
// target a is rounded to Q8_K or Q8_0 are also written quantized to `xq` (rwkv-gpu's Q8Input
// layout: row t of mix m as row m * q8k + t; a tile is one Q8_K block, or eight Q8_0
// blocks), so the direct matvecs reading them need no quantization pass.
// Grid: (rows, groups of column tiles of 256; engine.rs's mix_tiles_per_wg tiles a group),
// or in steps of a few rows (rows, tiles x mixes). Every workgroup recomputes the
// norm statistics of its rows, so a row's tile groups (and mixes) run in parallel.

const TILE: u32 = 256u;

// Pairs of the tile's values r (this thread's; all threads call this together) as f16, from
// f16 index o0 (even) of copy `which` (1: x16_a, 2: x16_b), for the first n values.
fn store_x16(lane: Lane, r: f32, o0: u32, n: u32, which: u32) {
    let w = f16_pair(lane.tid, r);
    let c = 2u * lane.tid;
    if c < n {
        if which == 1u {
            x16_a[(o0 + c) / 2u] = w;
        } else {
            x16_b[(o0 + c) / 2u] = w;
        }
    }
}

fn xq_store(i: u32, w: u32) {
    xq[i] = w;
}

// Mean and 1/sqrt(var + eps) of row r (layer_norm.wgsl's formula; the sums' order is that of
// sum_256).
fn row_stats(lane: Lane, r: u32) -> vec2<f32> {
    let tid = lane.tid;
    let base = r * p.dim;
    var sum = 0.0;
    for (var c = tid; c < p.dim; c += TILE) {
        sum += x[base + c];
    }
    let mean = sum_256(lane, sum) / f32(p.dim);
    var sq = 0.0;
    for (var c = tid; c < p.dim; c += TILE) {
        let d = x[base + c] - mean;
        sq += d * d;
    }
    let inv = 1.0 / sqrt(sum_256(lane, sq) / f32(p.dim) + p.eps);
    return vec2<f32>(mean, inv);
}

// Rounds v (this thread's value; all threads call this together) per `mode`.
fn round_value(lane: Lane, v: f32, mode: u32) -> f32 {
    switch mode {
        case 1u: { return round_f16(v); }
        case 2u: { return round_bf16(v); }
        case 3u: { return round_q8_0(lane.tid, v); }
        case 4u: { return round_q8_k(lane, v); }
        default: { return v; }
    }
}

// v as a target of rounding `mode` gets it: rounded in steps of several rows; in one-token
// steps only f16 and bf16 (the 8-bit readers quantize themselves). Uniform control flow.
fn rounded_for(lane: Lane, v: f32, mode: u32, several: bool) -> f32 {
    if several || mode == 1u || mode == 2u {
        return round_value(lane, v, mode);
    }
    return v;
}

// Entry points: `main_few` for steps of up to 16 rows (it also writes xq), `main` for longer
// ones; each is compiled with only its own code (the Q8 stores cost the long steps' kernel
// registers even where they never ran).
@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lane: Lane,
) {
    mix_rows(wg, nwg, lane, false);
}

@compute @workgroup_size(256)
fn main_few(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lane: Lane,
) {
    mix_rows(wg, nwg, lane, true);
}

fn mix_rows(wg: vec3<u32>, nwg: vec3<u32>, lane: Lane, few: bool) {
    let t = wg.x;
    if t >= step.n_rows {
        return;
    }
    let info = rows[t];
    let st = row_stats(lane, t);
    var pst = vec2<f32>(0.0, 0.0);
    if info.prev != NO_PREV {
        pst = row_stats(lane, info.prev);
    }
    // A grid of more than a row's tiles (steps of a few rows) gives each workgroup one mix of
    // one tile, so the mixes' roundings run side by side. A grid of fewer (long steps) gives
    // each workgroup several consecutive tiles of its row, so that fewer workgroups work out
    // the same row's norm statistics.
    let tiles = (p.dim + TILE - 1u) / TILE;
    let split = nwg.y > tiles;
    let m_first = select(0u, wg.y / tiles, split);
    let m_end = select(p.n_mix, min(m_first + 1u, p.n_mix), split);
    if split {
        mix_tile(lane, t, info, st, pst, wg.y % tiles, m_first, m_end, few);
        return;
    }
    let per = (tiles + nwg.y - 1u) / nwg.y;
    for (var j = 0u; j < per; j++) {
        let tile = wg.y * per + j;
        if tile >= tiles {
            break;
        }
        mix_tile(lane, t, info, st, pst, tile, m_first, m_end, few);
    }
}

// Row t's mixes m_first..m_end for the 256 columns of `tile` (every thread one column), with
// the norm statistics st of the row and pst of its previous row. Uniform control flow.
fn mix_tile(lane: Lane, t: u32, info: Row, st: vec2<f32>, pst: vec2<f32>, tile: u32,
            m_first: u32, m_end: u32, few: bool) {
    let c = tile * TILE + lane.tid;
    let in_row = c < p.dim;
    let cc = min(c, p.dim - 1u);
    let xn = (x[t * p.dim + cc] - st.x) * st.y * norm_w[cc] + norm_b[cc];
    var prev: f32;
    if info.prev == NO_PREV {
        prev = shift_state[info.half * p.half_stride + info.slot * p.dim + cc];
    } else {
        prev = (x[info.prev * p.dim + cc] - pst.x) * pst.y * norm_w[cc] + norm_b[cc];
    }
    if info.last == 1u && in_row && m_first == 0u {
        shift_state[(1u - info.half) * p.half_stride + info.slot * p.dim + c] = xn;
    }
    let sx = prev - xn;
    // A one-token step's readers are matvecs that quantize their 8-bit inputs themselves (or
    // read xq); f16 and bf16 roundings, value by value, are done here in every step.
    let several = step.n_rows > 1u;
    for (var m = m_first; m < m_end; m++) {
        // Threads past the row carry 0 so block maxima are not disturbed.
        let v = select(0.0, sx * mu[m * p.dim + cc] + xn, in_row);
        let o = m * p.mix_stride + t * p.dim + c;
        let ma = mode_of(p.mode_a, m);
        // The tile's first value and count, for the f16 copies.
        let o0 = m * p.mix_stride + t * p.dim + tile * TILE;
        let n = min(TILE, p.dim - tile * TILE);
        if ma != 255u {
            let r = rounded_for(lane, v, ma, several);
            if in_row {
                out_a[o] = r;
            }
            if several && (p.x16 & 1u) != 0u {
                store_x16(lane, r, o0, n, 1u);
            }
            if few && step.n_rows <= p.q8k {
                let blk = (m * p.q8k + t) * (p.dim / TILE) + tile;
                if ma == 4u {
                    store_q8k(lane, v, blk, 0u, p.xq_d, p.xq_bs);
                } else if ma == 3u {
                    store_q8_0(lane.tid, v, blk, 0u, p.xq_d);
                }
            }
        }
        let mb = mode_of(p.mode_b, m);
        if mb != 255u {
            let r = rounded_for(lane, v, mb, several);
            if in_row {
                out_b[o] = r;
            }
            if several && (p.x16 & 2u) != 0u {
                store_x16(lane, r, o0, n, 2u);
            }
        }
    }
}
