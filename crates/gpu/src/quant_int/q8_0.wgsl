// Q8_0 x Q8_0 for the integer matvec path. W is read as vec4<u32>: a repacked block is its
// 32 codes (8 words, two vec4s) with d in the side array (see weights.rs). Unit u (of 2)
// takes codes [16u, 16u + 16) of the block:
//   sum = (d_x * d) * (the integer dot product of the codes with the Q8_0 bytes of x)
// as ggml's vec_dot_q8_0_q8_0 computes each block (there per 32 values, here per 16).

const BLOCK_VALUES: u32 = 32u;
const UNITS: u32 = 2u;
// Units loaded ahead of the staging of x (see matvec_int.wgsl): 8 x 16 bytes.
const PF: u32 = 8u;

fn load_unit(row: u32, blk: u32, u: u32) -> Unit {
    return Unit(wl((row * P.row_words + blk * 8u) / 4u + u), side_d(row, blk));
}

fn dot_unit(d: Unit, u: u32, lb: u32) -> f32 {
    let x = sh_q[2u * lb + u];
    var s = 0;
    for (var k = 0u; k < 4u; k++) {
        s += dot4I8Packed(d.q[k], x[k]);
    }
    return (sh_dx[lb] * d.d) * f32(s);
}
