// ggml's rounding of an activation to f16 or bf16 (before a product with F16 or BF16
// weights), shared by rounding.wgsl's users and the matrix kernels' epilogues (epilogue.wgsl).

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

// f32 -> nearest bf16 (ties to even; NaN stays NaN) -> f32, as ggml does.
fn round_bf16(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    if (u & 0x7fffffffu) > 0x7f800000u {
        return bitcast<f32>(((u >> 16u) | 64u) << 16u);
    }
    return bitcast<f32>(((u + (0x7fffu + ((u >> 16u) & 1u))) >> 16u) << 16u);
}
