// Q6_K x Q8_K for the integer matvec path. W is read as u32 words; a repacked block is 52
// words (ql[128], qh[64], scales[16]) with d in the side array (see weights.rs). Unit
// (n, g), u = 4n + g: l in [8g, 8g + 8) of half n, i.e. values 128n + l, +32, +64, +96 (the
// low/low/high/high nibbles of ql[64n + l], ql[64n + 32 + l] with bits 0-1/2-3/4-5/6-7 of
// qh[32n + l] on top, minus 32) under scales 8n + g/2 + 0/2/4/6:
//   sum = d_x * d * (sc1 * isum1 + sc2 * isum2 + sc3 * isum3 + sc4 * isum4)
// with the codes made signed bytes (q - 32) for the packed integer dot products.

const BLOCK_VALUES: u32 = 256u;
const UNITS: u32 = 8u;
// Units loaded ahead of the staging of x (see matvec_int.wgsl): 8 x 36 bytes.
const PF: u32 = 8u;

// (centred and sbyte: quant_int/q6_k_codes.wgsl, prepended.)

fn side_d(row: u32, blk: u32) -> f32 {
    let i = row * P.blocks_per_row + blk;
    let h = unpack2x16float(wl(P.scale_base + i / 2u));
    return select(h.x, h.y, (i & 1u) == 1u);
}


struct Unit {
    // ql words of l (2), ql words of l + 32 (2), qh words (2), the scale words (2).
    w: array<u32, 8>,
    d: f32,
}

fn load_unit(row: u32, blk: u32, u: u32) -> Unit {
    let b = row * P.row_words + blk * 52u;
    let n = u / 4u;
    let g = u % 4u;
    let la = b + 16u * n + 2u * g;
    let hw = b + 32u + 8u * n + 2u * g;
    let sw = b + 48u + 2u * n;
    return Unit(
        array<u32, 8>(wl(la), wl(la + 1u), wl(la + 8u), wl(la + 9u), wl(hw), wl(hw + 1u), wl(sw), wl(sw + 1u)),
        side_d(row, blk),
    );
}

fn dot_unit(d: Unit, u: u32, lb: u32) -> f32 {
    let n = u / 4u;
    let g = u % 4u;
    let m4 = 0x0f0f0f0fu;
    let m2 = 0x03030303u;
    var i1 = 0;
    var i2 = 0;
    var i3 = 0;
    var i4 = 0;
    // Q8_K words of values 128n + 8g + 4k (+32, +64, +96) of this block.
    let xw = lb * 64u + 32u * n + 2u * g;
    for (var k = 0u; k < 2u; k++) {
        let a = d.w[k];
        let c = d.w[2u + k];
        let h = d.w[4u + k];
        i1 += dot4I8Packed(centred((a & m4) | ((h & m2) << 4u)), q_word(xw + k));
        i2 += dot4I8Packed(centred((c & m4) | (((h >> 2u) & m2) << 4u)), q_word(xw + 8u + k));
        i3 += dot4I8Packed(centred(((a >> 4u) & m4) | (((h >> 4u) & m2) << 4u)), q_word(xw + 16u + k));
        i4 += dot4I8Packed(centred(((c >> 4u) & m4) | (((h >> 6u) & m2) << 4u)), q_word(xw + 24u + k));
    }
    // Scales 8n + g/2 + 0, 2, 4, 6: bytes g/2, g/2 + 2 of both scale words.
    let j = g / 2u;
    let sw0 = d.w[6];
    let sw1 = d.w[7];
    let isum = sbyte(sw0, j) * i1 + sbyte(sw0, j + 2u) * i2 + sbyte(sw1, j) * i3 + sbyte(sw1, j + 2u) * i4;
    return (sh_dx[lb] * d.d) * f32(isum);
}
