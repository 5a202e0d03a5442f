// `main_long`: token_mix.wgsl's work for steps of more than 16 rows (prompts, batches), one
// workgroup per row, each thread eight consecutive columns (LONG_WG = dim / 8 threads, a
// generated constant; the engine takes this entry point only where dim is a multiple of 256
// and dim / 8 threads fit a workgroup). Where `main` rounds one 256-column tile of one mix at
// a time, each rounding a workgroup-wide maximum search and each f16 pair a round trip
// through workgroup memory (about five barriers per tile and mix: 300 a row of 2.9B's
// attention mix), this kernel holds its row's values in registers and meets at six
// barriers in all: the norm sums of the row and its previous row (two sums, together), then
// one exchange of every mix's per-thread maxima. A thread's eight values are whole f16 pairs
// and Q8_0 / Q8_K blocks are whole threads (4 and 32 of them), so the f16 copies need no
// exchange, and a block's maximum is a scan of its threads' maxima in index order (the first
// of the largest wins, as ggml's sequential search finds it). Same results as `main` except
// the norm sums' order.

// The two rows' partial sums (sum_wide) and, per mix, each thread's signed largest value.
var<workgroup> wide_part: array<vec2<f32>, LONG_WG>;
var<workgroup> wide_group: array<vec2<f32>, LONG_GROUPS>;
var<workgroup> mix_max: array<vec4<f32>, LONG_WG * 2u>;

// 32-thread groups of the workgroup (LONG_WG is a multiple of 32).
const LONG_GROUPS: u32 = LONG_WG / 32u;

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

// The first value of largest magnitude of v (0 if all are 0).
fn first_max8(v: array<f32, 8>) -> f32 {
    var best = 0.0;
    for (var j = 0u; j < 8u; j++) {
        if abs(v[j]) > abs(best) {
            best = v[j];
        }
    }
    return best;
}

// Component-wise: the first of largest magnitude of the maxima of `n` threads from `first`
// (4 mixes per vec4, set `half` of mix_max).
fn block_max(first: u32, n: u32, half: u32) -> vec4<f32> {
    var best = mix_max[half * LONG_WG + first];
    for (var k = 1u; k < n; k++) {
        let q = mix_max[half * LONG_WG + first + k];
        best = select(best, q, abs(q) > abs(best));
    }
    return best;
}

fn rounded8(v: array<f32, 8>, mode: u32, q0: f32, qk: f32) -> array<f32, 8> {
    var r = v;
    if mode == 1u {
        for (var j = 0u; j < 8u; j++) {
            r[j] = round_f16(v[j]);
        }
    } else if mode == 2u {
        for (var j = 0u; j < 8u; j++) {
            r[j] = round_bf16(v[j]);
        }
    } else if mode == 3u {
        let d = q8_0_scale(abs(q0));
        let inv = q8_0_inverse(d);
        let dh = round_f16(d);
        for (var j = 0u; j < 8u; j++) {
            r[j] = round(v[j] * inv) * dh;
        }
    } else if mode == 4u {
        let iscale = q8k_iscale(qk);
        let d = q8k_scale(iscale);
        for (var j = 0u; j < 8u; j++) {
            r[j] = q8k_code(iscale, v[j]) * d;
        }
    }
    return r;
}

// Mix m's eight values of this thread: xn + (prev - xn) * mu[m].
fn mix8(m: u32, c: u32, xn: array<f32, 8>, sx: array<f32, 8>) -> array<f32, 8> {
    var v: array<f32, 8>;
    for (var j = 0u; j < 8u; j++) {
        v[j] = sx[j] * mu[m * p.dim + c + j] + xn[j];
    }
    return v;
}

// Writes r (eight values from element o) to target a (which 1) or b (2), and its f16 copy if
// the step's products read one.
fn store8(r: array<f32, 8>, o: u32, which: u32) {
    let copy = (p.x16 & which) != 0u;
    for (var j = 0u; j < 8u; j++) {
        if which == 1u {
            out_a[o + j] = r[j];
        } else {
            out_b[o + j] = r[j];
        }
    }
    if copy {
        for (var j = 0u; j < 8u; j += 2u) {
            let w = pack_f16_pair(vec2<f32>(r[j], r[j + 1u]));
            if which == 1u {
                x16_a[(o + j) / 2u] = w;
            } else {
                x16_b[(o + j) / 2u] = w;
            }
        }
    }
}

@compute @workgroup_size(LONG_WG)
fn main_long(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    // Binds xq like the other entry points (it writes none: few-row steps only), so that one
    // bind group layout serves all three.
    _ = &xq;
    let t = wg.x;
    // Uniform: one row per workgroup.
    if t >= step.n_rows {
        return;
    }
    let info = rows[t];
    let c = tid * 8u;
    let has_prev = info.prev != NO_PREV;
    var xv: array<f32, 8>;
    var pv: array<f32, 8>;
    var s = vec2<f32>(0.0);
    for (var j = 0u; j < 8u; j++) {
        xv[j] = x[t * p.dim + c + j];
        if has_prev {
            pv[j] = x[info.prev * p.dim + c + j];
        } else {
            pv[j] = shift_state[info.half * p.half_stride + info.slot * p.dim + c + j];
        }
        s += vec2<f32>(xv[j], pv[j]);
    }
    let mean = sum_wide(tid, s) / f32(p.dim);
    var q = vec2<f32>(0.0);
    for (var j = 0u; j < 8u; j++) {
        let d = vec2<f32>(xv[j], pv[j]) - mean;
        q += d * d;
    }
    let inv = 1.0 / sqrt(sum_wide(tid, q) / f32(p.dim) + p.eps);
    var xn: array<f32, 8>;
    var sx: array<f32, 8>;
    for (var j = 0u; j < 8u; j++) {
        let w = norm_w[c + j];
        let b = norm_b[c + j];
        xn[j] = (xv[j] - mean.x) * inv.x * w + b;
        // Without a previous row in the step, the saved state is already normalized.
        let prev = select(pv[j], (pv[j] - mean.y) * inv.y * w + b, has_prev);
        sx[j] = prev - xn[j];
        if info.last == 1u {
            shift_state[(1u - info.half) * p.half_stride + info.slot * p.dim + c + j] = xn[j];
        }
    }
    // Each thread's signed largest value per mix (0 for mixes without an 8-bit target).
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    // (Loops over all eight mix slots, so that the compiler can unroll them and index the
    // vectors by constants.)
    for (var m = 0u; m < 8u; m++) {
        let ma = mode_of(p.mode_a, m);
        let mb = mode_of(p.mode_b, m);
        var top = 0.0;
        if m < p.n_mix && (ma == 3u || ma == 4u || mb == 3u || mb == 4u) {
            top = first_max8(mix8(m, c, xn, sx));
        }
        if m < 4u {
            lo[m] = top;
        } else {
            hi[m - 4u] = top;
        }
    }
    mix_max[tid] = lo;
    mix_max[LONG_WG + tid] = hi;
    workgroupBarrier();
    // This thread's Q8_0 block (4 threads) and Q8_K block (32 threads), per mix.
    let q0 = array<vec4<f32>, 2>(block_max(tid / 4u * 4u, 4u, 0u), block_max(tid / 4u * 4u, 4u, 1u));
    let qk = array<vec4<f32>, 2>(block_max(tid / 32u * 32u, 32u, 0u), block_max(tid / 32u * 32u, 32u, 1u));
    for (var m = 0u; m < 8u; m++) {
        if m >= p.n_mix {
            break;
        }
        let v = mix8(m, c, xn, sx);
        let o = m * p.mix_stride + t * p.dim + c;
        let a = q0[m / 4u][m % 4u];
        let k = qk[m / 4u][m % 4u];
        let ma = mode_of(p.mode_a, m);
        if ma != 255u {
            store8(rounded8(v, ma, a, k), o, 1u);
        }
        let mb = mode_of(p.mode_b, m);
        if mb != 255u {
            store8(rounded8(v, mb, a, k), o, 2u);
        }
    }
}
