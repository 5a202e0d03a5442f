// Rounding of activations as ggml's CPU backend does before a matrix product (shared by the
// kernels that write or read matrix inputs: the matvec kernels here and the engine's kernels).

// f32 -> nearest f16 (ties to even) -> f32, done with integer arithmetic so the result does
// not depend on how a driver rounds conversions.
fn round_f16(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let sign = bits & 0x80000000u;
    let a = bits & 0x7fffffffu;
    if a >= 0x7f800000u {
        return x; // inf or nan
    }
    let e = i32(a >> 23u) - 127;
    if e > 15 {
        return bitcast<f32>(sign | 0x7f800000u); // overflows f16
    }
    // Units in the last place of f16 at this exponent (subnormals share 2^-24).
    let ulp_exp = max(e, -14) - 10;
    if ulp_exp <= -150 {
        return bitcast<f32>(sign);
    }
    let ax = bitcast<f32>(a);
    let ulp = exp2(f32(ulp_exp));
    // Exact: ax / ulp is representable, and round() is ties-to-even in WGSL.
    var r = round(ax / ulp) * ulp;
    if r >= 65520.0 {
        r = bitcast<f32>(0x7f800000u);
    }
    return bitcast<f32>(sign | bitcast<u32>(r));
}

fn round_bf16(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    if (u & 0x7fffffffu) > 0x7f800000u {
        return bitcast<f32>(((u >> 16u) | 64u) << 16u);
    }
    return bitcast<f32>(((u + (0x7fffu + ((u >> 16u) & 1u))) >> 16u) << 16u);
}


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
