// Rows of 16-bit floats for direct.wgsl (composed after f16.wgsl or bf16.wgsl, which give
// `widen`, a word's two values in f32, lower half first), with input_f32.wgsl: blocks of 8
// values (one vec4 of words), a block per unit.

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 8u;

struct Unit {
    a: vec4<f32>,
    b: vec4<f32>,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let w = wl(rb + blk);
    return Unit(vec4<f32>(widen(w.x), widen(w.y)), vec4<f32>(widen(w.z), widen(w.w)));
}

// A unit with the offset in a token's row of its first input value.
struct Prep {
    a: vec4<f32>,
    b: vec4<f32>,
    v: u32,
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    return Prep(d.a, d.b, blk * 8u);
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    let v = x0 + p.v;
    return dot(p.a, x_values(v)) + dot(p.b, x_values(v + 4u));
}
