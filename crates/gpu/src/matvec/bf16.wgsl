// BF16 x f32 input for direct.wgsl. A row is blocks of 8 values (one vec4 of two halves per
// word, lower half first, as f16.wgsl); a block is one unit. bf16 -> f32 widening is exact
// (the 16 bits are the top of the f32).

const UNITS: u32 = 1u;
const UNIT_VALUES: u32 = 8u;

struct Unit {
    a: vec4<f32>,
    b: vec4<f32>,
}

fn bf16_pair(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

fn load_unit(rb: u32, side: u32, blk: u32, s: u32) -> Unit {
    let w = wl(rb + blk);
    return Unit(
        vec4<f32>(bf16_pair(w.x), bf16_pair(w.y)),
        vec4<f32>(bf16_pair(w.z), bf16_pair(w.w)),
    );
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
