// The input side of a persistent kernel's matvec phases (persistent.rs): one vector of up
// to PX_MAX values quantized into workgroup memory as ggml quantizes activations (Q8_K:
// blocks of 256 with the sums of the codes per 16; Q8_0: blocks of 32 with f16 scales), so
// every workgroup holds the whole input of its rows with no pass through global memory.
// The kernel defines `px_source(source, i) -> f32`, the unquantized value i of an input.
// persistent.rs prepends PX_MAX, PWG_SIZE (the workgroup size, 256) and rounding.wgsl, and
// appends px_row_sum (persistent_sum_*.wgsl).

// A matrix of a phase (one part, one binding): mirrors PhaseMatrix in persistent.rs.
struct PhaseMatrix {
    rows: u32,
    blocks_per_row: u32,
    row_words: u32,
    // Word index of the side scales (types that have them).
    scale_base: u32,
}

var<workgroup> PX_CODES: array<u32, PX_MAX / 4u>;
// The blocks' scales (Q8_0's rounded to f16) and the factors the codes were made with.
var<workgroup> PX_D: array<f32, PX_MAX / 32u>;
var<workgroup> PX_IS: array<f32, PX_MAX / 32u>;
var<workgroup> PX_SUM: array<i32, PX_MAX / 16u>;
// Per 16 values: the first value of the largest magnitude.
var<workgroup> PX_MAX16: array<f32, PX_MAX / 16u>;
var<workgroup> PX_ROWSUM: array<f32, PWG_SIZE>;

// The signed value of the larger magnitude, the first (`a`) on ties: a sequential scan's
// choice, as ggml's quantizers make it.
fn first_max_abs(a: f32, b: f32) -> f32 {
    return select(a, b, abs(b) > abs(a));
}

// Quantizes input `source` (values 0..n, n a multiple of `block`, 256 or 32) into the PX
// arrays. Every thread calls it, in uniform control flow.
fn quantize_px(t: u32, source: u32, n: u32, block: u32) {
    let groups = n / 16u;
    for (var g = t; g < groups; g += PWG_SIZE) {
        var m = 0.0;
        for (var k = 0u; k < 16u; k++) {
            m = first_max_abs(m, px_source(source, 16u * g + k));
        }
        PX_MAX16[g] = m;
    }
    workgroupBarrier();
    let per = block / 16u;
    for (var b = t; b < n / block; b += PWG_SIZE) {
        var m = 0.0;
        for (var k = 0u; k < per; k++) {
            m = first_max_abs(m, PX_MAX16[b * per + k]);
        }
        if block == 256u {
            let iscale = q8k_iscale(m);
            PX_IS[b] = iscale;
            PX_D[b] = q8k_scale(iscale);
        } else {
            let d = q8_0_scale(abs(m));
            PX_IS[b] = q8_0_inverse(d);
            PX_D[b] = round_f16(d);
        }
    }
    workgroupBarrier();
    for (var g = t; g < groups; g += PWG_SIZE) {
        let f = PX_IS[16u * g / block];
        var sum = 0;
        for (var w = 0u; w < 4u; w++) {
            var word = 0u;
            for (var e = 0u; e < 4u; e++) {
                let v = px_source(source, 16u * g + 4u * w + e);
                var c: i32;
                if block == 256u {
                    c = i32(q8k_code(f, v));
                } else {
                    c = i32(round(v * f));
                }
                sum += c;
                word |= (bitcast<u32>(c) & 0xffu) << (8u * e);
            }
            PX_CODES[4u * g + w] = word;
        }
        PX_SUM[g] = sum;
    }
    workgroupBarrier();
}

