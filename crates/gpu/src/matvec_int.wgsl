// Integer path of matvec.wgsl, for K-quant weights read with Q8_K activations (ggml's
// vec_dot_type for them): x is quantized here to Q8_K exactly as the engine's rounding
// kernels round it (per 256 values, iscale = -127 / (the signed value of largest magnitude),
// q = min(round(iscale * x), 127), d = 1 / iscale), kept as packed signed bytes with the
// block's d and the sums of q per 16 values; the type's dot_unit multiplies weight codes by
// these bytes with packed integer dot products and applies the scales in f32, per 16 or 32
// values, as ggml's Q*_K x Q8_K kernels do per block. The result equals the float path's
// sum of (decoded weight) x (rounded x) up to f32 rounding.

// The tile's q as packed bytes (16 per vec4), its d per 256 values and sums of q per 16.
// Thread t stages values [16t, 16t + 16) of the tile: TILE = 16 x WG_SIZE.
var<workgroup> sh_q: array<vec4<u32>, TILE / 16u>;
var<workgroup> sh_dx: array<f32, TILE / 256u>;
var<workgroup> sh_bs: array<i32, TILE / 16u>;
// Per thread, the signed value of largest magnitude of its 16 (the first on ties).
var<workgroup> sh_m: array<f32, TILE / 16u>;

// The first PF units of this thread's row, loaded before x is staged so that their memory
// latency overlaps the staging.
const PF: u32 = 4u;
var<private> PF_UNITS: array<Unit, PF>;

fn q_word(i: u32) -> u32 {
    return sh_q[i / 4u][i % 4u];
}

// Columns [t0, t0 + len) of x, len a multiple of 256 (the rows of K-quant weights are).
fn stage(t: u32, x_base: u32, t0: u32, len: u32, mode: u32) {
    let staging = t < len / 16u;
    var v: array<f32, 16>;
    var m = 0.0;
    if staging {
        let base = x_base + t0 + 16u * t;
        for (var j = 0u; j < 16u; j++) {
            v[j] = X[base + j];
        }
        var best = 0.0;
        for (var j = 0u; j < 16u; j++) {
            if abs(v[j]) > best {
                best = abs(v[j]);
                m = v[j];
            }
        }
    }
    sh_m[t] = m;
    workgroupBarrier();
    if staging {
        let b = t / 16u;
        var bm = 0.0;
        var best = 0.0;
        for (var k = 0u; k < 16u; k++) {
            let c = sh_m[16u * b + k];
            if abs(c) > best {
                best = abs(c);
                bm = c;
            }
        }
        let iscale = select(0.0, -127.0 / bm, bm != 0.0);
        if t % 16u == 0u {
            sh_dx[b] = select(0.0, 1.0 / iscale, bm != 0.0);
        }
        var words = vec4<u32>(0u);
        var sum = 0;
        for (var w = 0u; w < 4u; w++) {
            var packed = 0u;
            for (var k = 0u; k < 4u; k++) {
                let q = i32(min(round(iscale * v[4u * w + k]), 127.0));
                packed |= (bitcast<u32>(q) & 0xffu) << (8u * k);
                sum += q;
            }
            words[w] = packed;
        }
        sh_q[t] = words;
        sh_bs[t] = sum;
    }
}

// Loads this thread's first PF units of the first tile (units lane, lane + TPR, ...).
fn prefetch(row: u32, lane: u32, cols: u32) {
    let units = (min(cols, TILE) / 256u) * UNITS;
    for (var k = 0u; k < PF; k++) {
        let i = lane + k * TPR;
        if i < units {
            PF_UNITS[k] = load_unit(row, i / UNITS, i % UNITS);
        }
    }
}

fn accumulate(row: u32, t0: u32, len: u32, lane: u32) {
    let b0 = t0 / 256u;
    let units = (len / 256u) * UNITS;
    // The first PF units (prefetched in the first tile), then the rest.
    for (var k = 0u; k < PF; k++) {
        let i = lane + k * TPR;
        if i < units {
            var d = PF_UNITS[k];
            if t0 != 0u {
                d = load_unit(row, b0 + i / UNITS, i % UNITS);
            }
            ACC += dot_unit(d, i % UNITS, i / UNITS);
        }
    }
    for (var i = lane + PF * TPR; i < units; i += TPR) {
        ACC += dot_unit(load_unit(row, b0 + i / UNITS, i % UNITS), i % UNITS, i / UNITS);
    }
}
