// Q4_0 x Q8_0 for the integer matvec path. W is read as vec4<u32>: a repacked block is its
// 16 code bytes (one vec4; value j < 16 in the low nibble of byte j, value j + 16 in its high
// nibble) with d in the side array (see weights.rs). One unit per block:
//   sum = (d_x * d) * (sum of (code - 8) * x byte)
// as ggml's vec_dot_q4_0_q8_0 computes each block; the codes go into the packed dot products
// as they are (0..15) and 8 x (the sum of the x bytes) is taken off after.

const BLOCK_VALUES: u32 = 32u;
const UNITS: u32 = 1u;
// Units loaded ahead of the staging of x (see matvec_int.wgsl): 8 x 16 bytes.
const PF: u32 = 8u;

fn load_unit(row: u32, blk: u32, u: u32) -> Unit {
    return Unit(wl((row * P.row_words + blk * 4u) / 4u), side_d(row, blk));
}

fn dot_unit(d: Unit, u: u32, lb: u32) -> f32 {
    let x0 = sh_q[2u * lb];
    let x1 = sh_q[2u * lb + 1u];
    let m4 = 0x0f0f0f0fu;
    let ones = 0x01010101u;
    var s = 0;
    var sx = 0;
    for (var k = 0u; k < 4u; k++) {
        s += dot4I8Packed(d.q[k] & m4, x0[k]) + dot4I8Packed((d.q[k] >> 4u) & m4, x1[k]);
        sx += dot4I8Packed(ones, x0[k]) + dot4I8Packed(ones, x1[k]);
    }
    return (sh_dx[lb] * d.d) * f32(s - 8 * sx);
}
