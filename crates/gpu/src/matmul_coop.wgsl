// Matrix x matrix on tensor cores (wgpu's experimental cooperative matrices, 16x16x16 f16
// inputs, f32 accumulators): y[t][P.row_start + r] (op)= sum_c W16[r][c] * X16[t][c] for
// rows r < P.rows of a slice and tokens t < n (n = STEP[N_TOKENS_WORD], clamped to
// P.max_tokens). Used for prompts and batches where the device offers cooperative matrices;
// matmul_tiled.wgsl is the portable kernel with the same contract.
//
// Its inputs are f16 copies made just before it in the same pass: W16, a slice of the
// weight rows decoded by matmul_coop_dequant.wgsl (row-major, P.cols values per row), and
// X16, the tokens' inputs converted by matmul_coop_x.wgsl (token-major, P.cols values per
// token, zeros from token n up to the next multiple of BN). Both are read straight from
// storage by the cooperative loads (no workgroup staging, so no barriers in the loop).
//
// Header constants (from matmul.rs): SG = the subgroup size; WG_SIZE = 4 * SG; BM = 64
// rows and BN = 64 tokens per workgroup; EPILOGUE; N_TOKENS_WORD. Grid: x (and y) over row
// groups of BM, z over token groups of BN. Subgroup s owns rows 32 * (s % 2) .. + 32 and
// tokens 32 * (s / 2) .. + 32: four 16 x 16 accumulators. P.cols is a multiple of 32.
// Rows past P.rows (stale scratch rows, read but never written out) and tokens past n
// (zeros) are computed and not written.

enable f16;
enable wgpu_cooperative_matrix;

@group(0) @binding(0) var<storage, read> W16: array<f16>;
@group(0) @binding(2) var<storage, read> X16: array<f16>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> STEP: array<u32>;

// One 16 x 16 f32 tile per subgroup for the epilogue. Every workgroup variable is a
// multiple of 16 bytes long: cooperative stores need 16-byte aligned addresses and the
// driver places the variables as it likes.
var<workgroup> sh_c: array<f32, 1024>;
// The token count, made provably uniform for the cooperative operations.
var<workgroup> sh_n: vec4<u32>;

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
    // No early return for workgroups past the ends: every cooperative operation must be
    // in uniform control flow. They compute and write nothing.
    let n_here = select(0u, min(BN, n_tok - t0), t0 < n_tok);
    let ld = P.cols;
    let r0 = 32u * (sg % 2u);
    let tb = 32u * (sg / 2u);
    let a0 = (first_row + r0) * ld;
    let a1 = a0 + 16u * ld;
    let b0 = (t0 + tb) * ld;
    let b1 = b0 + 16u * ld;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k = 0u; k < ld; k += 32u) {
        // A: 16 rows x 16 columns of W16, row-major. B: 16 columns x 16 tokens, each
        // token's values contiguous (column-major). Two k steps per iteration.
        let wa0 = coopLoadT<coop_mat16x16<f16, A>>(&W16[a0 + k], ld);
        let wa1 = coopLoadT<coop_mat16x16<f16, A>>(&W16[a1 + k], ld);
        let xb0 = coopLoad<coop_mat16x16<f16, B>>(&X16[b0 + k], ld);
        let xb1 = coopLoad<coop_mat16x16<f16, B>>(&X16[b1 + k], ld);
        let wa2 = coopLoadT<coop_mat16x16<f16, A>>(&W16[a0 + k + 16u], ld);
        let wa3 = coopLoadT<coop_mat16x16<f16, A>>(&W16[a1 + k + 16u], ld);
        let xb2 = coopLoad<coop_mat16x16<f16, B>>(&X16[b0 + k + 16u], ld);
        let xb3 = coopLoad<coop_mat16x16<f16, B>>(&X16[b1 + k + 16u], ld);
        c00 = coopMultiplyAdd(wa0, xb0, c00);
        c01 = coopMultiplyAdd(wa0, xb1, c01);
        c10 = coopMultiplyAdd(wa1, xb0, c10);
        c11 = coopMultiplyAdd(wa1, xb1, c11);
        c00 = coopMultiplyAdd(wa2, xb2, c00);
        c01 = coopMultiplyAdd(wa2, xb3, c01);
        c10 = coopMultiplyAdd(wa3, xb2, c10);
        c11 = coopMultiplyAdd(wa3, xb3, c11);
    }
    // Accumulator element (row i, token j) stored column-major: sh_c[base + j * 16 + i].
    let base = sg * 256u;
    for (var q = 0u; q < 4u; q++) {
        switch q {
            case 0u: { coopStore(c00, &sh_c[base], 16u); }
            case 1u: { coopStore(c01, &sh_c[base], 16u); }
            case 2u: { coopStore(c10, &sh_c[base], 16u); }
            default: { coopStore(c11, &sh_c[base], 16u); }
        }
        workgroupBarrier();
        for (var e = lane; e < 256u; e += SG) {
            let row = first_row + r0 + 16u * (q / 2u) + e % 16u;
            let t = tb + 16u * (q % 2u) + e / 16u;
            if (row < P.rows && t < n_here) {
                let i = P.out_offset + (t0 + t) * P.out_stride + P.row_start + row;
                Y[i] = epilogue_of(EPILOGUE, sh_c[base + e], i);
            }
        }
        workgroupBarrier();
    }
}
