// What a matrix kernel does with its sum `s` for output element `i` of Y (the kernel's
// output binding): 0 store, 1 add to Y, 2 relu^2, 3 tanh, 4 sigmoid, 5 relu^2 rounded to f16,
// 6 relu^2 rounded to bf16 (Epilogue::id in matmul.rs; the roundings from round_half.wgsl).
fn epilogue_of(kind: u32, s: f32, i: u32) -> f32 {
    switch kind {
        case 1u: { return Y[i] + s; }
        case 2u: { let r = max(s, 0.0); return r * r; }
        case 3u: { return tanh(s); }
        case 4u: { return 1.0 / (1.0 + exp(-s)); }
        case 5u: { let r = max(s, 0.0); return round_f16(r * r); }
        case 6u: { let r = max(s, 0.0); return round_bf16(r * r); }
        default: { return s; }
    }
}
