// Quantizes rows of x to 8-bit blocks once, for the matvecs that read them
// pre-quantized (q8k.wgsl), exactly as ggml's quantize_row_q8_K and the staging of
// matvec_int_q8k.wgsl do: per block of 256 values, the signed value of largest magnitude
// (the first on ties) maps to -127, q = min(round(iscale * x), 127), d = 1 / iscale; plus the
// sums of q per 16 values (for the K-quants' minimums). x holds segments (blocks of an
// activation) seg_stride apart, each with rows of seg_len values row_stride apart (all
// multiples of 256); the first `rows` rows of each (the grid's y) are quantized, row t of
// segment b packed as XQ's row b * rows_cap + t. Output words (XQ):
//   [0, n/4)                      the codes, four signed bytes per word
//   [d_base, d_base + n/256)      d per block (f32 bits)
//   [bs_base, bs_base + n/16)     the sums of q per 16 values (i32 bits)
// One workgroup per block. (rounding.wgsl, for div_rn, and q8_pack.wgsl are prepended.)

struct Params {
    n: u32,
    d_base: u32,
    bs_base: u32,
    seg_len: u32,
    seg_stride: u32,
    row_stride: u32,
    rows_cap: u32,
    // 0: Q8_K; 1: Q8_0 (blocks of 32: d = amax / 127 (f16), q = round(x / d), as the Q8_0
    // staging of matvec_int_q8_0.wgsl and ggml's quantize_row_q8_0 compute it; no sums).
    format: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> XQ: array<u32>;

var<workgroup> red_abs: array<f32, 256>;
var<workgroup> red_at: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    // Block j of row `row` of segment `seg`; one value per thread.
    let per_row = p.seg_len / 256u;
    let seg = wg.x / per_row;
    let j = wg.x % per_row;
    let row = wg.y;
    let first = seg * p.seg_stride + row * p.row_stride + j * 256u;
    let blk = (seg * p.rows_cap + row) * per_row + j;
    let v = X[first + tid];
    if p.format == 1u {
        store_q8_0(v, tid, blk);
        return;
    }
    // The index of the largest |v| in the block, the lowest on ties.
    red_abs[tid] = abs(v);
    red_at[tid] = tid;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if tid < s {
            let a = red_abs[tid];
            let b = red_abs[tid + s];
            if b > a || (b == a && red_at[tid + s] < red_at[tid]) {
                red_abs[tid] = b;
                red_at[tid] = red_at[tid + s];
            }
        }
        workgroupBarrier();
    }
    let iscale = q8k_iscale(X[first + red_at[0]]);
    if tid == 0u {
        XQ[p.d_base + blk] = bitcast<u32>(q8k_scale(iscale));
    }
    q8_codes[tid] = i32(q8k_code(iscale, v));
    workgroupBarrier();
    if tid < 64u {
        XQ[blk * 64u + tid] = q8_word(tid);
    } else if tid < 80u {
        let g = tid - 64u;
        XQ[p.bs_base + blk * 16u + g] = bitcast<u32>(q8_sum16(g));
    }
}

// Q8_0: eight blocks of 32 in the workgroup's 256 values (this thread's value v).
fn store_q8_0(v: f32, tid: u32, blk: u32) {
    red_abs[tid] = abs(v);
    workgroupBarrier();
    let b0 = tid - tid % 32u;
    var amax = 0.0;
    for (var j = 0u; j < 32u; j++) {
        amax = max(amax, red_abs[b0 + j]);
    }
    let d = q8_0_scale(amax);
    q8_codes[tid] = i32(round(v * q8_0_inverse(d)));
    if tid % 32u == 0u {
        XQ[p.d_base + blk * 8u + tid / 32u] = bitcast<u32>(round_f16(d));
    }
    workgroupBarrier();
    if tid < 64u {
        XQ[blk * 64u + tid] = q8_word(tid);
    }
}
