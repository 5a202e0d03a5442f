// Rounding of activations as ggml's CPU backend does before a matrix product (shared by the
// kernels that write or read matrix inputs: the matvec kernels here and the engine's kernels).
// ROUNDING_WGSL puts round_half.wgsl (round_f16, round_bf16) first.

// a / b as IEEE division rounds it. GPU divisions may be off by an ulp (Vulkan allows 2.5),
// which puts a rounding of iscale * x that ggml's CPU code makes on the other side (an 8-bit
// code off by one): one correction step with fused multiply-adds gives the CPU's quotient.
fn div_rn(a: f32, b: f32) -> f32 {
    let q = a / b;
    return fma(fma(-q, b, a), 1.0 / b, q);
}

// ggml's 8-bit quantization of activations (quantize_row_q8_K, quantize_row_q8_0), value by
// value, with IEEE quotients, for every kernel that quantizes or rounds an input that way.
// Q8_K: the block's value of largest magnitude m (signed) maps to -127: iscale = -127 / m,
// code = min(round(iscale x), 127), d = 1 / iscale (all 0 when m is 0).
fn q8k_iscale(m: f32) -> f32 {
    return select(0.0, div_rn(-127.0, m), m != 0.0);
}

fn q8k_code(iscale: f32, x: f32) -> f32 {
    return min(round(iscale * x), 127.0);
}

fn q8k_scale(iscale: f32) -> f32 {
    return select(0.0, div_rn(1.0, iscale), iscale != 0.0);
}

// Q8_0: d = amax / 127 (stored as f16), code = round(x / d) computed as x * (1 / d) (0 when
// d is 0).
fn q8_0_scale(amax: f32) -> f32 {
    return div_rn(amax, 127.0);
}

fn q8_0_inverse(d: f32) -> f32 {
    return select(0.0, div_rn(1.0, d), d != 0.0);
}
