// Matrix x matrix on tensor cores (wgpu's experimental cooperative matrices, 16x16x16 f16
// inputs, f32 accumulators): y[t][row_start + r] (op)= sum_c W[r][c] * x[t][c] for tokens
// t < n (n = STEP[N_TOKENS_WORD], clamped to P.max_tokens). Used for prompts and batches
// where the device offers cooperative matrices; matmul_tiled.wgsl is the portable kernel
// with the same contract.
//
// Header constants (from matmul.rs): SG = the subgroup size; WG_SIZE = 4 * SG (four
// subgroups); BM = 32 rows and BN = 64 tokens per workgroup; KT columns per decoded weight
// tile (a whole number of blocks); KX columns per staged x chunk; EPILOGUE; N_TOKENS_WORD.
// Grid as in matmul_tiled.wgsl.
//
// The workgroup decodes a BM x KT weight tile to f16 in workgroup memory (ggml's
// dequantization in f32, then rounded to f16), then stages KX columns of BN tokens of x as
// f16 and multiplies: subgroup s owns rows 16 * (s % 2) .. + 16 and tokens 32 * (s / 2)
// .. + 32, two 16 x 16 accumulators. At the end each subgroup stores its accumulators to
// workgroup memory and its lanes apply the epilogue. Rows and tokens past the ends are
// computed on zeros and not written.

enable f16;
enable wgpu_cooperative_matrix;

// X (binding 2) and load_x1 come from matmul_x1.wgsl.
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> STEP: array<u32>;

const BPT: u32 = KT / BLOCK_ELEMS;
// Row strides (in f16) of the staged tiles, padded by 8 values against bank conflicts
// (multiples of 8 keep every 16-value row start 16-byte aligned).
const SA: u32 = KT + 8u;
const SB: u32 = KX + 8u;

var<workgroup> sh_a: array<f16, BM * SA>;
var<workgroup> sh_b: array<f16, BN * SB>;
// One 16 x 16 f32 tile per subgroup for the epilogue.
var<workgroup> sh_c: array<f32, 4u * 256u>;

// The token count, made provably uniform for the cooperative operations. A vec4 because
// every workgroup variable here is a multiple of 16 bytes long: the driver places them
// as it likes, and cooperative loads and stores need 16-byte aligned addresses (a 4-byte
// variable placed first shifted the tiles on an H100 and gave wrong products).
var<workgroup> sh_n: vec4<u32>;

var<private> cur_row: u32;
var<private> k0: u32;

fn emit1(w: f32, col: u32) {
    sh_a[cur_row * SA + col - k0] = f16(w);
}

fn emit4(w: vec4<f32>, col: u32) {
    let i = cur_row * SA + col - k0;
    sh_a[i] = f16(w.x);
    sh_a[i + 1u] = f16(w.y);
    sh_a[i + 2u] = f16(w.z);
    sh_a[i + 3u] = f16(w.w);
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    if (li == 0u) {
        sh_n = vec4<u32>(min(STEP[N_TOKENS_WORD], P.max_tokens));
    }
    let n_tok = workgroupUniformLoad(&sh_n).x;
    let t0 = wg.z * BN;
    let first_row = (wg.y * nwg.x + wg.x) * BM;
    // No early return for workgroups past the ends (the grid rarely has any): naga's
    // uniformity analysis cannot prove such a return uniform, and every cooperative
    // operation must be. They compute on zeros and write nothing.
    let n_here = select(0u, min(BN, n_tok - t0), t0 < n_tok);
    let x_base = P.in_offset + t0 * P.in_stride;
    let r0 = 16u * (sg % 2u);
    let tb = 32u * (sg / 2u);
    var acc0 = coop_mat16x16<f32, C>();
    var acc1 = coop_mat16x16<f32, C>();
    let n_tiles = (P.blocks_per_row + BPT - 1u) / BPT;
    for (var tile = 0u; tile < n_tiles; tile++) {
        let kt0 = tile * KT;
        k0 = kt0;
        for (var i = li; i < BM * SA; i += WG_SIZE) {
            sh_a[i] = f16(0.0);
        }
        workgroupBarrier();
        for (var item = li; item < BM * BPT * UNITS; item += WG_SIZE) {
            let r = item / (BPT * UNITS);
            let rem = item % (BPT * UNITS);
            let blk = tile * BPT + rem / UNITS;
            let row = first_row + r;
            if (blk < P.blocks_per_row && row < P.rows) {
                cur_row = r;
                decode_unit(row, blk, rem % UNITS, blk * BLOCK_ELEMS);
            }
        }
        workgroupBarrier();
        for (var kc = 0u; kc < KT; kc += KX) {
            if (kt0 + kc >= P.cols) {
                break;
            }
            for (var i = li; i < BN * KX; i += WG_SIZE) {
                let t = i / KX;
                let col = kt0 + kc + i % KX;
                var v = 0.0;
                if (t < n_here && col < P.cols) {
                    v = load_x1(x_base + t * P.in_stride + col);
                }
                sh_b[t * SB + i % KX] = f16(v);
            }
            workgroupBarrier();
            for (var k = 0u; k < KX; k += 16u) {
                // A: 16 rows x 16 columns of W, row-major. B: 16 columns x 16 tokens, each
                // token's values contiguous (column-major).
                let a = coopLoadT<coop_mat16x16<f16, A>>(&sh_a[r0 * SA + kc + k], SA);
                let b0 = coopLoad<coop_mat16x16<f16, B>>(&sh_b[tb * SB + k], SB);
                let b1 = coopLoad<coop_mat16x16<f16, B>>(&sh_b[(tb + 16u) * SB + k], SB);
                acc0 = coopMultiplyAdd(a, b0, acc0);
                acc1 = coopMultiplyAdd(a, b1, acc1);
            }
            workgroupBarrier();
        }
    }
    // Accumulator element (row i, token j) stored column-major: sh_c[base + j * 16 + i].
    let base = sg * 256u;
    for (var half = 0u; half < 2u; half++) {
        if (half == 0u) {
            coopStore(acc0, &sh_c[base], 16u);
        } else {
            coopStore(acc1, &sh_c[base], 16u);
        }
        workgroupBarrier();
        for (var e = lane; e < 256u; e += SG) {
            let row = first_row + r0 + e % 16u;
            let t = tb + 16u * half + e / 16u;
            if (row < P.rows && t < n_here) {
                let i = P.out_offset + (t0 + t) * P.out_stride + P.row_start + row;
                Y[i] = epilogue_of(EPILOGUE, sh_c[base + e], i);
            }
        }
        workgroupBarrier();
    }
}
