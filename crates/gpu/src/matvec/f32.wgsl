// F32 x f32 input for direct.wgsl (with input_f32.wgsl): blocks of 4 values (one vec4 of
// words, weights.rs), a block per unit.

// load_unit's row base counts vec4s.
const RB_WORDS: u32 = 4u;
const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 4u;

struct Unit {
    a: vec4<f32>,
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    return Unit(bitcast<vec4<f32>>(wl(rb + blk)));
}

// A unit with the offset in a token's row of its first input value.
struct Prep {
    a: vec4<f32>,
    v: u32,
}

fn prep_unit(d: Unit, blk: u32, s: u32) -> Prep {
    return Prep(d.a, blk * 4u);
}

// The prepared unit's dot with a token's input values (its row starting at x0).
fn prep_x(p: Prep, x0: u32) -> f32 {
    return dot(p.a, x_values(x0 + p.v));
}
