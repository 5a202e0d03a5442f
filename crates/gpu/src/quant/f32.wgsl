// F32: GPU blocks of 4 values (4 words); rows padded with zeros to a multiple of 4 values.

const BLOCK_ELEMS: u32 = 4u;
const BLOCK_WORDS: u32 = 4u;
const UNITS: u32 = 1u;

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let v = bitcast<vec4<f32>>(vec4<u32>(W[b], W[b + 1u], W[b + 2u], W[b + 3u]));
    if (col + 4u <= P.cols) {
        emit4(v, col);
    } else {
        for (var k = 0u; k < 4u; k++) {
            if (col + k < P.cols) {
                emit1(v[k], col + k);
            }
        }
    }
}
