// Matrix x matrix on tensor cores (wgpu's experimental cooperative matrices, 16x16x16 f16
// inputs, f32 accumulators): y[t][P.row_start + r] (op)= sum_c W16[r][c] * X16[t][c] for
// rows r < P.rows of a slice and tokens t < n (n = STEP[N_TOKENS_WORD], clamped to
// P.max_tokens). Used for prompts and batches where the device offers cooperative matrices;
// matmul_tiled.wgsl is the portable kernel with the same contract.
//
// Its weights come from the weight side composed after this file (its `fetch_a` and
// `stage_a`): matmul_coop_a16.wgsl reads f16 rows, W16 (a slice of the weight rows decoded
// by matmul_coop_dequant.wgsl just before it, row-major, P.cols values per row, resident
// copies or F16 weights themselves); matmul_coop_aq.wgsl with a type's decoder
// (matmul_coop_aq4_k.wgsl, ...) decodes the weights' blocks as it stages them. Its inputs
// are X16, the tokens' inputs converted by matmul_coop_x.wgsl (token t's values at
// P.in_offset + t * P.in_stride, in f16; both multiples of UNIT), either the product's own
// copy made just before it or an activation's copy several products share.
//
// Header constants (from matmul.rs): SG = the subgroup size; SGR x SGC subgroups per
// workgroup (WG_SIZE = SGR * SGC * SG), each owning 32 rows x 32 tokens (four 16 x 16
// accumulators), so BM = 32 * SGR rows and BN = 32 * SGC tokens per workgroup; BK columns
// per staged chunk; UNIT f16 values per staging load and store (4 or 2) and `Unit`, their
// type; TOKENS_FIRST (the workgroup order, see main); PROBE (0 for real work, else a timing
// probe: see the loop); DIRECT_STORE (whole tiles stored from the accumulators: see the
// end of main); EPILOGUE; N_TOKENS_WORD. Grid: x (and y) over row groups of BM, z
// over token groups of BN times the column parts.
//
// A stack (P.stack_ends.x > 0; matmul/coop.rs's prepare_coop_stacked): the slice's rows are
// those of several matrices; matrix g = stack_matrix(row) (rows up to P.stack_ends[g]) has
// P.stack_cols[g] columns, its f16 rows from element P.stack_base[g] of W16, reads block
// P.stack_in[g] (8 bits each) of the input, at P.in_offset + that * P.stack_block, writes
// its first P.stack_rows[g] rows at P.stack_shift[g] + row (plus the token's stride), and
// has its own epilogue (stack_epilogue). Every matrix starts at a multiple of BM, so a
// workgroup's rows are one matrix's.
//
// Split columns (P.k_split = S > 1, for grids too small to fill the GPU: a 2560-row matrix
// at 64 tokens is 40 workgroups, each walking every column): z = S x the token groups, and
// workgroup (.., z) sums only its part z / (token groups) of the column chunks. It writes
// its raw sums to Y = the partial-sum scratch, [token][part][row] (row < P.rows of the
// slice), and matmul_coop_sum.wgsl adds the parts in order and applies the epilogue.
//
// Per chunk of BK columns the workgroup copies a BM x BK tile of the weights and a BN x BK
// tile of X16 into workgroup memory (loads of UNIT values, coalesced along the rows), the
// next chunk's loads issued before the current chunk's products so that they overlap.
// Subgroup s owns rows 32 * (s % 2) .. + 32 and tokens 32 * (s / 2) .. + 32: four 16 x 16
// accumulators. P.cols is a multiple of BK. Rows past P.rows (stale scratch rows, read
// but never written out) and tokens past n (zeros) are computed and not written.
//
// This kernel is built without naga's bounds checks on Vulkan (shader.rs: they cost it
// 13-15%), so every index into its workgroup and private arrays is in range by
// construction (the weight side's files say why for sh_a and their registers): a staged
// input unit u < B_PT * WG_SIZE <= BN * ROW_UNITS goes to row u / ROW_UNITS < BN, unit
// u % ROW_UNITS < ROW_UNITS < SU of sh_b; the cooperative loads read rows r0 .. r0 + 31 <=
// BM - 1 (r0 = 32 (sg % SGR), BM = 32 SGR) and tb .. tb + 31 <= BN - 1, units ka .. ka +
// 16 / UNIT - 1 <= ROW_UNITS - 1; sh_c's index is sg * 256 + e with e < 256 and sg < SGR *
// SGC (WG_SIZE = SGR * SGC * SG, and the host runs this kernel only where the subgroup size
// is fixed at SG); pb by j < B_PT.
// Storage-buffer indices are guarded by the driver's robust buffer access there.

enable f16;
enable wgpu_cooperative_matrix;

@group(0) @binding(2) var<storage, read> X16: array<Unit>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> STEP: array<u32>;

// Row stride (in f16) of the staged tiles, padded by 8 values against bank conflicts (a
// multiple of 8 keeps every 16-value row start 16-byte aligned).
const SK: u32 = BK + 8u;
// The same stride in staging units (UNIT f16 values each: the header's `Unit` type, a
// vec4<f16> or vec2<f16>), the element of the staged arrays.
const SU: u32 = SK / UNIT;
// Units per staged row, and per thread of one staged tile.
const ROW_UNITS: u32 = BK / UNIT;
const B_PT: u32 = BN * ROW_UNITS / WG_SIZE;

// Every workgroup variable is a multiple of 16 bytes long: cooperative loads and stores
// need 16-byte aligned addresses and the driver places the variables as it likes. The
// tiles are staged in units, one load and one store per unit, and the cooperative loads
// read units too (their offsets and strides count units).
var<workgroup> sh_a: array<Unit, BM * SU>;
var<workgroup> sh_b: array<Unit, BN * SU>;
// One 16 x 16 f32 tile per subgroup for the epilogue.
var<workgroup> sh_c: array<f32, SGR * SGC * 256u>;
// The token count, made provably uniform for the cooperative operations.
var<workgroup> sh_n: vec4<u32>;

// The input units this thread copies for the next chunk: consecutive threads take
// consecutive units of a row, so their stores fall in consecutive banks (when a 16-byte
// piece was stored as eight f16 values, they shared 8 of the 32 banks, and the staging was
// most of the product's time on an H200). The weight side (`fetch_a`, `stage_a` and their
// registers) is in the weight source's file.
var<private> pb: array<Unit, B_PT>;

// The weight tile of the chunk at column k0 (rows first_row.. of the slice, of `cols` values
// from element w_base of the f16 rows) and the tokens b_row0.. of the input at x_base
// (elements).
fn fetch(li: u32, first_row: u32, w_base: u32, cols: u32, b_row0: u32, k0: u32, x_base: u32) {
    fetch_a(li, first_row, w_base, cols, k0);
    let x0 = x_base / UNIT + k0 / UNIT;
    for (var j = 0u; j < B_PT; j++) {
        let u = li + j * WG_SIZE;
        pb[j] = X16[x0 + (b_row0 + u / ROW_UNITS) * (P.in_stride / UNIT) + u % ROW_UNITS];
    }
}

fn stage(li: u32, k0: u32) {
    stage_a(li, k0);
    for (var j = 0u; j < B_PT; j++) {
        let u = li + j * WG_SIZE;
        sh_b[(u / ROW_UNITS) * SU + u % ROW_UNITS] = pb[j];
    }
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
    let ks = max(P.k_split, 1u);
    let token_groups = nwg.z / ks;
    // With TOKENS_FIRST, the same workgroups numbered with the token groups varying
    // fastest: the workgroups running at one time share row groups, so each weight row is
    // read from memory about once and the tokens' inputs (the smaller operand) from the L2.
    // (Selected, not assigned in a branch, to stay provably uniform.)
    let row_groups = nwg.x * nwg.y;
    let lin = (wg.z * nwg.y + wg.y) * nwg.x + wg.x;
    let tf = TOKENS_FIRST != 0u;
    let part = select(wg.z / token_groups, lin / (token_groups * row_groups), tf);
    let t0 = select(wg.z % token_groups, lin % token_groups, tf) * BN;
    let first_row = select(wg.y * nwg.x + wg.x, (lin / token_groups) % row_groups, tf) * BM;
    // In a stack, the rows are those of matrix g, which reads block stack_in[g] of the
    // input and writes from stack_shift[g] (both 0 outside a stack).
    let g = stack_matrix(first_row);
    let stacked = P.stack_ends.x != 0u;
    let cols = select(P.cols, P.stack_cols[g], stacked);
    let w_base = select(first_row * P.cols, P.stack_base[g] + (first_row - stack_start(g)) * cols, stacked);
    let x_base = P.in_offset + ((P.stack_in >> (8u * g)) & 0xffu) * P.stack_block;
    let out_base = P.out_offset + P.row_start + P.stack_shift[g];
    let epilogue = stack_epilogue(g, EPILOGUE);
    // No early return for workgroups past the ends: every cooperative operation must be
    // in uniform control flow. They compute and write nothing.
    let n_here = select(0u, min(BN, n_tok - t0), t0 < n_tok);
    let r0 = 32u * (sg % SGR);
    let tb = 32u * (sg / SGR);
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    // This workgroup's column chunks (all of them unless split).
    let per_part = (cols / BK + ks - 1u) / ks;
    let c_begin = part * per_part;
    let c_end = min(cols / BK, c_begin + per_part);
    // PROBE (timing only, results wrong): 1 no staging, 2 no products, 3 products only
    // (fragments loaded once).
    var fa0 = coopLoadT<coop_mat16x16<f16, A>>(&sh_a[r0 * SU], SU);
    var fa1 = coopLoadT<coop_mat16x16<f16, A>>(&sh_a[(r0 + 16u) * SU], SU);
    var fb0 = coopLoad<coop_mat16x16<f16, B>>(&sh_b[tb * SU], SU);
    var fb1 = coopLoad<coop_mat16x16<f16, B>>(&sh_b[(tb + 16u) * SU], SU);
    if ((PROBE == 0u || PROBE == 2u) && c_begin < c_end) {
        fetch(li, first_row, w_base, cols, t0, c_begin * BK, x_base);
    }
    for (var chunk = c_begin; chunk < c_end; chunk++) {
        if (PROBE == 0u || PROBE == 2u) {
            stage(li, chunk * BK);
        }
        workgroupBarrier();
        if ((PROBE == 0u || PROBE == 2u) && chunk + 1u < c_end) {
            fetch(li, first_row, w_base, cols, t0, (chunk + 1u) * BK, x_base);
        }
        if (PROBE != 2u) {
            for (var k = 0u; k < BK; k += 16u) {
                // A: 16 rows x 16 columns of W, row-major. B: 16 columns x 16 tokens, each
                // token's values contiguous (column-major).
                if (PROBE != 3u) {
                    let ka = k / UNIT;
                    fa0 = coopLoadT<coop_mat16x16<f16, A>>(&sh_a[r0 * SU + ka], SU);
                    fa1 = coopLoadT<coop_mat16x16<f16, A>>(&sh_a[(r0 + 16u) * SU + ka], SU);
                    fb0 = coopLoad<coop_mat16x16<f16, B>>(&sh_b[tb * SU + ka], SU);
                    fb1 = coopLoad<coop_mat16x16<f16, B>>(&sh_b[(tb + 16u) * SU + ka], SU);
                }
                c00 = coopMultiplyAdd(fa0, fb0, c00);
                c01 = coopMultiplyAdd(fa0, fb1, c01);
                c10 = coopMultiplyAdd(fa1, fb0, c10);
                c11 = coopMultiplyAdd(fa1, fb1, c11);
            }
        }
        workgroupBarrier();
    }
    // Whole tiles go straight from the accumulators to Y (DIRECT_STORE; no workgroup
    // memory, no barriers): where every row and token of the workgroup's tile is written,
    // its epilogue is a plain store (or it writes a part's raw sums), and Y's offset and
    // stride keep each 16-value column 16-byte aligned. The condition is uniform, as
    // cooperative stores need (`&`, not `&&`: naga's uniformity analysis takes a
    // short-circuit's result as non-uniform). DIRECT_STORE 2 is a timing probe: the other
    // tiles are not written at all. Not Add: every way of folding the outputs' values into
    // the accumulators (cooperative loads from Y after the loop, or before it as their
    // start, or those values staged through sh_c first) made the kernel's main loop
    // 20-35% slower on an H200, which only products of 2560 columns won back (BENCHMARKS.md,
    // session 16).
    let split = ks > 1u;
    let plain = split | epilogue == 0u;
    let stride = select(P.out_stride, ks * P.rows, split);
    let at0 = select(out_base + t0 * P.out_stride, (t0 * ks + part) * P.rows, split);
    let whole = DIRECT_STORE != 0u & plain & n_here == BN & first_row + BM <= P.rows
        & stack_writes(g, first_row + BM - 1u) & at0 % 4u == 0u & stride % 4u == 0u;
    if whole {
        // Accumulator element (row i, token j) at Y[at + j * stride + i] (column-major).
        // (Every index and the stride are named values: naga 30's SPIR-V writer panics on
        // a cooperative store with an unnamed expression among its operands.)
        let at00 = at0 + tb * stride + first_row + r0;
        let at10 = at00 + 16u;
        let at01 = at00 + 16u * stride;
        let at11 = at01 + 16u;
        coopStore(c00, &Y[at00], stride);
        coopStore(c01, &Y[at01], stride);
        coopStore(c10, &Y[at10], stride);
        coopStore(c11, &Y[at11], stride);
        return;
    }
    if (DIRECT_STORE == 2u) {
        return;
    }
    // Else through workgroup memory, a tile at a time: accumulator element (row i, token j)
    // stored column-major, sh_c[base + j * 16 + i], then written element by element.
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
            if (row < P.rows && t < n_here && stack_writes(g, row)) {
                if (ks > 1u) {
                    Y[((t0 + t) * ks + part) * P.rows + row] = sh_c[base + e];
                } else {
                    let i = out_base + (t0 + t) * P.out_stride + row;
                    Y[i] = epilogue_of(epilogue, sh_c[base + e], i);
                }
            }
        }
        workgroupBarrier();
    }
}
