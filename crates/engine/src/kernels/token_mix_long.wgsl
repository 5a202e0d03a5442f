// `main_long`: token_mix.wgsl's work for long steps, one workgroup of LONG_WG threads per
// row, each thread LONG_K vec4s of it, LONG_WG vec4s apart (LONG_WG x LONG_K = dim / 4;
// generated constants, LONG_WG a multiple of 64, so a Q8_K block is 64 consecutive threads
// at one k). The engine takes it for the attention's mix in steps of at least
// `EngineOptions::token_mix_long_from` rows where a target is rounded to 8 bits, dim is a
// multiple of 256 and the workgroup fits the device. Where `main` rounds one 256-column
// tile of one mix at a time, each rounding a workgroup-wide maximum search and each f16 pair
// a round trip through workgroup memory (about five barriers per tile and mix: 300 a row of
// 2.9B's attention mix), this kernel holds its row in registers and meets at eight barriers
// in all: the norm sums of the row and its previous row (two sums, both rows together),
// then every mix's maxima at once, per 16 threads, then per block. A Q8_0 block is 8
// threads, a Q8_K block 64; a block's maximum is a scan of its threads' maxima in index
// order (the first of the largest wins, as ggml's sequential search finds it). The same
// results as `main` except for the order of the norm sums.
// (rwkv-gpu's rounding.wgsl, step.wgsl, q8_blocks.wgsl for first_max4, the vec4 roundings
// and pack_f16_pair, and token_mix_bindings.wgsl with `MixVal` = vec4<f32>, `MixWord` =
// vec2<u32> are prepended.)

const LONG_GROUPS: u32 = LONG_WG / 32u;

// The two rows' partial sums (sum_wide).
var<workgroup> wide_part: array<vec2<f32>, LONG_WG>;
var<workgroup> wide_group: array<vec2<f32>, LONG_GROUPS>;
// Per thread and vec4 k of its row, its signed largest value of mixes 0-3 (set 0) and 4-7
// (set 1), at [(2 k + set) * LONG_WG + thread]; then per 16 threads, from M16 on, at
// [M16 + (2 k + set) * LONG_WG / 16 + thread / 16].
const M16: u32 = LONG_WG * LONG_K * 2u;
var<workgroup> mix_max: array<vec4<f32>, M16 + LONG_WG * LONG_K / 8u>;

// The sum over the workgroup of v (every thread calls it, in uniform control flow): groups of
// 32 threads in order, then the groups in order.
fn sum_wide(tid: u32, v: vec2<f32>) -> vec2<f32> {
    wide_part[tid] = v;
    workgroupBarrier();
    if tid % 32u == 0u {
        var s = wide_part[tid];
        for (var k = 1u; k < 32u; k++) {
            s += wide_part[tid + k];
        }
        wide_group[tid / 32u] = s;
    }
    workgroupBarrier();
    var total = wide_group[0];
    for (var g = 1u; g < LONG_GROUPS; g++) {
        total += wide_group[g];
    }
    // The arrays are reused by the next call.
    workgroupBarrier();
    return total;
}

// Component-wise (four mixes): the first of largest magnitude of `n` entries of mix_max
// from `first`, in index order.
fn scan_max(first: u32, n: u32) -> vec4<f32> {
    var best = mix_max[first];
    for (var k = 1u; k < n; k++) {
        let q = mix_max[first + k];
        best = select(best, q, abs(q) > abs(best));
    }
    return best;
}

// v rounded per `mode`, with its Q8_0 block's signed maximum q0 and Q8_K block's qk.
fn rounded4(v: vec4<f32>, mode: u32, q0: f32, qk: f32) -> vec4<f32> {
    switch mode {
        case 1u: {
            return vec4<f32>(round_f16(v.x), round_f16(v.y), round_f16(v.z), round_f16(v.w));
        }
        case 2u: {
            return vec4<f32>(round_bf16(v.x), round_bf16(v.y), round_bf16(v.z), round_bf16(v.w));
        }
        case 3u: {
            return round_q8_0_4(v, abs(q0));
        }
        case 4u: {
            return round_q8k4(v, qk);
        }
        default: {
            return v;
        }
    }
}

// Writes r (four values from element o) to target a (which 1) or b (2), and its f16 copy if
// the step's products read one.
fn store4(r: vec4<f32>, o: u32, which: u32) {
    let half = vec2<u32>(pack_f16_pair(r.xy), pack_f16_pair(r.zw));
    let copy = (p.x16 & which) != 0u;
    if which == 1u {
        out_a[o / 4u] = r;
        if copy {
            x16_a[o / 4u] = half;
        }
    } else {
        out_b[o / 4u] = r;
        if copy {
            x16_b[o / 4u] = half;
        }
    }
}

@compute @workgroup_size(LONG_WG)
fn main_long(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    // Binds xq like the other entry points (it writes none: few-row steps only), so that the
    // engine binds all three alike.
    _ = &xq;
    let t = wg.x;
    // Uniform: one row per workgroup.
    if t >= step.n_rows {
        return;
    }
    let info = rows[t];
    let row4 = p.dim / 4u;
    let has_prev = info.prev != NO_PREV;
    // The state of a row without a previous one in the step is already normalized.
    let state_in = (info.half * p.half_stride + info.slot * p.dim) / 4u;
    var xv: array<vec4<f32>, LONG_K>;
    var pv: array<vec4<f32>, LONG_K>;
    var s = vec2<f32>(0.0);
    for (var k = 0u; k < LONG_K; k++) {
        let c4 = tid + k * LONG_WG;
        xv[k] = x[t * row4 + c4];
        if has_prev {
            pv[k] = x[info.prev * row4 + c4];
        } else {
            pv[k] = shift_state[state_in + c4];
        }
        let sx = xv[k].x + xv[k].y + xv[k].z + xv[k].w;
        s += vec2<f32>(sx, pv[k].x + pv[k].y + pv[k].z + pv[k].w);
    }
    let mean = sum_wide(tid, s) / f32(p.dim);
    var q = vec2<f32>(0.0);
    for (var k = 0u; k < LONG_K; k++) {
        let dx = xv[k] - mean.x;
        let dp = pv[k] - mean.y;
        q += vec2<f32>(dot(dx, dx), dot(dp, dp));
    }
    let inv = 1.0 / sqrt(sum_wide(tid, q) / f32(p.dim) + p.eps);
    // From here xv holds the normalized row and pv the shift (previous row - row).
    let state_out = ((1u - info.half) * p.half_stride + info.slot * p.dim) / 4u;
    for (var k = 0u; k < LONG_K; k++) {
        let c4 = tid + k * LONG_WG;
        let w = norm_w[c4];
        let b = norm_b[c4];
        let xn = (xv[k] - mean.x) * inv.x * w + b;
        let prev = select(pv[k], (pv[k] - mean.y) * inv.y * w + b, has_prev);
        xv[k] = xn;
        pv[k] = prev - xn;
        if info.last == 1u {
            shift_state[state_out + c4] = xn;
        }
    }
    // Each thread's signed largest value per vec4 and mix (0 for mixes without an 8-bit
    // target), then per 16 threads. (The loops over all eight mix slots let the compiler
    // unroll them and index the vectors by constants.)
    for (var k = 0u; k < LONG_K; k++) {
        let c4 = tid + k * LONG_WG;
        var lo = vec4<f32>(0.0);
        var hi = vec4<f32>(0.0);
        for (var m = 0u; m < 8u; m++) {
            let ma = mode_of(p.mode_a, m);
            let mb = mode_of(p.mode_b, m);
            var top = 0.0;
            if m < p.n_mix && (ma == 3u || ma == 4u || mb == 3u || mb == 4u) {
                top = first_max4(pv[k] * mu[m * row4 + c4] + xv[k]);
            }
            if m < 4u {
                lo[m] = top;
            } else {
                hi[m - 4u] = top;
            }
        }
        mix_max[2u * k * LONG_WG + tid] = lo;
        mix_max[(2u * k + 1u) * LONG_WG + tid] = hi;
    }
    workgroupBarrier();
    if tid % 16u == 0u {
        for (var k = 0u; k < 2u * LONG_K; k++) {
            mix_max[M16 + k * (LONG_WG / 16u) + tid / 16u] = scan_max(k * LONG_WG + tid, 16u);
        }
    }
    workgroupBarrier();
    for (var k = 0u; k < LONG_K; k++) {
        // This thread's Q8_0 block (8 threads) and Q8_K block (64 threads: 4 groups of 16),
        // for mixes 0-3 and 4-7.
        let b0 = 2u * k * LONG_WG + tid / 8u * 8u;
        let q0 = array<vec4<f32>, 2>(scan_max(b0, 8u), scan_max(b0 + LONG_WG, 8u));
        let bk = M16 + 2u * k * (LONG_WG / 16u) + tid / 64u * 4u;
        let qk = array<vec4<f32>, 2>(scan_max(bk, 4u), scan_max(bk + LONG_WG / 16u, 4u));
        let c4 = tid + k * LONG_WG;
        for (var m = 0u; m < 8u; m++) {
            if m >= p.n_mix {
                break;
            }
            let v = pv[k] * mu[m * row4 + c4] + xv[k];
            let o = m * p.mix_stride + t * p.dim + 4u * c4;
            let a = q0[m / 4u][m % 4u];
            let kq = qk[m / 4u][m % 4u];
            let ma = mode_of(p.mode_a, m);
            if ma != 255u {
                store4(rounded4(v, ma, a, kq), o, 1u);
            }
            let mb = mode_of(p.mode_b, m);
            if mb != 255u {
                store4(rounded4(v, mb, a, kq), o, 2u);
            }
        }
    }
}
