// Quantizes n values of x (segments of seg_len values, seg_stride apart in x; both multiples
// of 256) to Q8_K once, for the matvecs that read them
// pre-quantized (q8k.wgsl), exactly as ggml's quantize_row_q8_K and the staging of
// matvec_int_q8k.wgsl do: per block of 256 values, the signed value of largest magnitude
// (the first on ties) maps to -127, q = min(round(iscale * x), 127), d = 1 / iscale; plus the
// sums of q per 16 values (for the K-quants' minimums). The segments are packed one after
// another: value i of XQ is x[(i / seg_len) * seg_stride + i % seg_len]. Output words (XQ):
//   [0, n/4)                      the codes, four signed bytes per word
//   [d_base, d_base + n/256)      d per block (f32 bits)
//   [bs_base, bs_base + n/16)     the sums of q per 16 values (i32 bits)
// One workgroup per block, one value per thread. (rounding.wgsl, for div_rn, is prepended.)

struct Params {
    n: u32,
    d_base: u32,
    bs_base: u32,
    seg_len: u32,
    seg_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> XQ: array<u32>;

var<workgroup> red_abs: array<f32, 256>;
var<workgroup> red_at: array<u32, 256>;
var<workgroup> codes: array<i32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let blk = wg.x;
    // The block's first value in x (blocks do not straddle segments).
    let first = (blk * 256u / p.seg_len) * p.seg_stride + blk * 256u % p.seg_len;
    let v = X[first + t];
    // The index of the largest |v| in the block, the lowest on ties.
    red_abs[t] = abs(v);
    red_at[t] = t;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if t < s {
            let a = red_abs[t];
            let b = red_abs[t + s];
            if b > a || (b == a && red_at[t + s] < red_at[t]) {
                red_abs[t] = b;
                red_at[t] = red_at[t + s];
            }
        }
        workgroupBarrier();
    }
    let m = X[first + red_at[0]];
    var q = 0;
    if m != 0.0 {
        let iscale = div_rn(-127.0, m);
        q = i32(min(round(iscale * v), 127.0));
        if t == 0u {
            XQ[p.d_base + blk] = bitcast<u32>(div_rn(1.0, iscale));
        }
    } else if t == 0u {
        XQ[p.d_base + blk] = 0u;
    }
    codes[t] = q;
    workgroupBarrier();
    if t < 64u {
        var word = 0u;
        for (var e = 0u; e < 4u; e++) {
            word |= (bitcast<u32>(codes[4u * t + e]) & 0xffu) << (8u * e);
        }
        XQ[blk * 64u + t] = word;
    } else if t < 80u {
        let g = t - 64u;
        var sum = 0;
        for (var e = 0u; e < 16u; e++) {
            sum += codes[16u * g + e];
        }
        XQ[p.bs_base + blk * 16u + g] = bitcast<u32>(sum);
    }
}
