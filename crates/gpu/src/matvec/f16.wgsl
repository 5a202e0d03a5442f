// F16 x f32 input for direct.wgsl. A row is blocks of 8 values (one vec4 of two halves per
// word, lower half first); a block is one unit. f16 -> f32 widening is exact.

const UNITS: u32 = 1u;

fn unit_dot(rb: u32, side: u32, blk: u32, s: u32, x0: u32) -> f32 {
    let w = wl(rb + blk);
    let v = x0 + blk * 8u;
    let xa = x_values(v);
    let xb = x_values(v + 4u);
    let a = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    let b = vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
    return dot(a, xa) + dot(b, xb);
}
