// F16 x f32 input for direct.wgsl. A row is blocks of 8 values (one vec4 of two halves per
// word, lower half first); a block is one unit. f16 -> f32 widening is exact.

const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 8u;

struct Unit {
    a: vec4<f32>,
    b: vec4<f32>,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let w = wl(rb + blk);
    return Unit(
        vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
        vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)),
    );
}

// The unit's dot with the input values of block blk starting at x0 (a token's row).
fn unit_x(d: Unit, blk: u32, s: u32, x0: u32) -> f32 {
    let v = x0 + blk * 8u;
    return dot(d.a, x_values(v)) + dot(d.b, x_values(v + 4u));
}
