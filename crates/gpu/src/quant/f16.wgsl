// F16: GPU blocks of 8 values (4 words, two halves each, lower half first); rows padded with
// zeros to a multiple of 8 values. f16 -> f32 widening is exact.

const BLOCK_ELEMS: u32 = 8u;
const BLOCK_WORDS: u32 = 4u;
const UNITS: u32 = 1u;

fn widen2(w: u32) -> vec2<f32> {
    return unpack2x16float(w);
}

fn decode_unit(row: u32, blk: u32, u: u32, col: u32) {
    let b = body(row, blk);
    let a = vec4<f32>(widen2(W[b]), widen2(W[b + 1u]));
    let c = vec4<f32>(widen2(W[b + 2u]), widen2(W[b + 3u]));
    if (col + 8u <= P.cols) {
        emit4(a, col);
        emit4(c, col + 4u);
    } else {
        for (var k = 0u; k < 4u; k++) {
            if (col + k < P.cols) {
                emit1(a[k], col + k);
            }
            if (col + 4u + k < P.cols) {
                emit1(c[k], col + 4u + k);
            }
        }
    }
}
