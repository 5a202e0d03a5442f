// Float path of matvec.wgsl: x is staged in workgroup memory as f32, rounded as ggml rounds
// activations for the weight type (the same expressions as the engine's rounding kernels),
// and the format's decode_unit hands decoded weights to emit4/emit1, which dot them with
// the staged x. Any weight type; rows of any length.

var<workgroup> sh_x: array<vec4<f32>, TILE / 4u>;
// Q8_K: the signed value of largest magnitude of each 32-value segment (first one on ties).
var<workgroup> sh_seg: array<f32, TILE / 32u>;

// First column of the tile being accumulated.
var<private> T0: u32;

fn emit4(w: vec4<f32>, col: u32) {
    ACC += dot(w, sh_x[(col - T0) / 4u]);
}

fn emit1(w: f32, col: u32) {
    let i = col - T0;
    ACC += w * sh_x[i / 4u][i % 4u];
}

fn put_x(i: u32, v: f32) {
    sh_x[i / 4u][i % 4u] = v;
}

fn get_x(i: u32) -> f32 {
    return sh_x[i / 4u][i % 4u];
}

// Stages x[x_base + t0 ..][..len] rounded per `mode`, zeros past `len`. Q8_0 and Q8_K need
// `len` to be a whole number of their blocks (32, 256), which their weight types guarantee.
fn stage(t: u32, x_base: u32, t0: u32, len: u32, mode: u32) {
    let base = x_base + t0;
    for (var i = t; i < TILE; i += WG_SIZE) {
        var v = 0.0;
        if i < len {
            v = X[base + i];
            if mode == 1u {
                v = round_f16(v);
            } else if mode == 2u {
                v = round_bf16(v);
            }
        }
        put_x(i, v);
    }
    if mode == 3u {
        // Q8_0: each thread rounds whole blocks of 32: d = amax / 127 stored as f16.
        workgroupBarrier();
        for (var s = t; s * 32u < len; s += WG_SIZE) {
            let o = 32u * s;
            var amax = 0.0;
            for (var j = 0u; j < 32u; j++) {
                amax = max(amax, abs(get_x(o + j)));
            }
            let d = q8_0_scale(amax);
            let id = q8_0_inverse(d);
            let d16 = round_f16(d);
            for (var j = 0u; j < 32u; j++) {
                put_x(o + j, round(get_x(o + j) * id) * d16);
            }
        }
    } else if mode == 4u {
        // Q8_K: blocks of 256; the signed value of largest magnitude maps to -127.
        workgroupBarrier();
        for (var s = t; s * 32u < len; s += WG_SIZE) {
            var best = 0.0;
            var bv = 0.0;
            for (var j = 0u; j < 32u; j++) {
                let v = get_x(32u * s + j);
                if abs(v) > best {
                    best = abs(v);
                    bv = v;
                }
            }
            sh_seg[s] = bv;
        }
        workgroupBarrier();
        for (var s = t; s * 32u < len; s += WG_SIZE) {
            let b = s / 8u;
            var best = 0.0;
            var m = 0.0;
            for (var k = 0u; k < 8u; k++) {
                let v = sh_seg[8u * b + k];
                if abs(v) > best {
                    best = abs(v);
                    m = v;
                }
            }
            let iscale = q8k_iscale(m);
            let d = q8k_scale(iscale);
            for (var j = 0u; j < 32u; j++) {
                let o = 32u * s + j;
                put_x(o, q8k_code(iscale, get_x(o)) * d);
            }
        }
    }
}

// No prefetch in the float path.
fn prefetch(row: u32, lane: u32, cols: u32) {}

fn accumulate(row: u32, t0: u32, len: u32, lane: u32) {
    T0 = t0;
    let b0 = t0 / BLOCK_ELEMS;
    let b1 = min((t0 + len + BLOCK_ELEMS - 1u) / BLOCK_ELEMS, P.blocks_per_row);
    let units = (b1 - b0) * UNITS;
    for (var i = lane; i < units; i += TPR) {
        let blk = b0 + i / UNITS;
        decode_unit(row, blk, i % UNITS, blk * BLOCK_ELEMS);
    }
}
