// Matrix x matrix for prompts and batches: y[t][row_start + r] (op)= sum_c W[r][c] * x[t][c]
// for tokens t < n (n = STEP[N_TOKENS_WORD], clamped to P.max_tokens), tiled through
// workgroup memory so that every weight is decoded once per BN tokens (the row kernel in
// matmul.wgsl decodes it once per TT = 8 tokens and re-reads x from memory for each).
//
// Header constants (from matmul.rs): BM rows x BN tokens per workgroup, RT rows x CT tokens
// per thread (WG_SIZE = (BM / RT) x (BN / CT) threads); KT columns per weight tile (a whole
// number of blocks); KX columns per x chunk; EPILOGUE; N_TOKENS_WORD. Grid: x, y = row groups
// of BM rows (linearised as in matmul.wgsl), z = token groups of BN tokens.
//
// Per weight tile: the threads decode the BM x KT tile into `sh_w` with the format's
// decode_unit (ggml's dequantization, bit for bit); then, KX columns at a time, they stage
// BN tokens of x in `sh_x` and each thread accumulates an RT x CT block (rows x tokens) in
// f32, from RT weight and CT x vectors loaded once per 4 columns (a larger block means fewer
// workgroup-memory loads per product). Rows and tokens past the ends are computed on zeros and not written.

// X (binding 2) and load_x1 come from matmul_x1.wgsl.
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> STEP: array<u32>;

const BPT: u32 = KT / BLOCK_ELEMS;
// Row stride of sh_w in vec4s, padded by one so that the rows of neighbouring threads
// fall in different banks.
const SW: u32 = KT / 4u + 1u;
const X4: u32 = KX / 4u;
// Threads along rows: thread (i, j) owns rows RT i .. RT i + RT - 1 and tokens
// CT j .. CT j + CT - 1.
const TR: u32 = BM / RT;
const NACC: u32 = RT * CT;

// With PREFETCH, thread li keeps x chunk elements li + j WG_SIZE of the next chunk in
// registers: their loads are issued before the products of the current chunk, so their
// latency hides behind that work instead of stalling the workgroup once per chunk.
const XPT: u32 = (BN * X4 + WG_SIZE - 1u) / WG_SIZE;

var<workgroup> sh_w: array<vec4<f32>, BM * SW>;
var<workgroup> sh_x: array<vec4<f32>, BN * X4>;

// Where decode_unit's values go: the local row being decoded and the tile's first column.
var<private> cur_row: u32;
var<private> k0: u32;

fn emit1(w: f32, col: u32) {
    let c = col - k0;
    sh_w[cur_row * SW + c / 4u][c % 4u] = w;
}

fn emit4(w: vec4<f32>, col: u32) {
    let c = col - k0;
    if ((c & 3u) == 0u) {
        sh_w[cur_row * SW + c / 4u] = w;
    } else {
        emit1(w.x, col);
        emit1(w.y, col + 1u);
        emit1(w.z, col + 2u);
        emit1(w.w, col + 3u);
    }
}

// Element i of the x chunk at columns [col0, col0 + KX): token i / X4, columns
// col0 + 4 (i % X4) ..+ 4; zeros past the tokens or columns.
fn x_chunk_element(i: u32, x_base: u32, n_here: u32, col0: u32) -> vec4<f32> {
    let t = i / X4;
    let col = col0 + (i % X4) * 4u;
    var v = vec4<f32>(0.0);
    if (i < BN * X4 && t < n_here) {
        let at = x_base + t * P.in_stride + col;
        if (col < P.cols) { v.x = load_x1(at); }
        if (col + 1u < P.cols) { v.y = load_x1(at + 1u); }
        if (col + 2u < P.cols) { v.z = load_x1(at + 2u); }
        if (col + 3u < P.cols) { v.w = load_x1(at + 3u); }
    }
    return v;
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n_tok = min(STEP[N_TOKENS_WORD], P.max_tokens);
    let t0 = wg.z * BN;
    let first_row = (wg.y * nwg.x + wg.x) * BM;
    // Uniform over the workgroup, so the barriers below are reached by all or none.
    if (t0 >= n_tok || first_row >= P.rows) {
        return;
    }
    let n_here = min(BN, n_tok - t0);
    let x_base = P.in_offset + t0 * P.in_stride;
    let tr = li % TR;
    let tt = li / TR;
    var acc = array<f32, NACC>();
    // PREFETCH: this thread's part of the first x chunk.
    var xr: array<vec4<f32>, XPT>;
    if (PREFETCH) {
        for (var j = 0u; j < XPT; j++) {
            xr[j] = x_chunk_element(li + j * WG_SIZE, x_base, n_here, 0u);
        }
    }
    let n_tiles = (P.blocks_per_row + BPT - 1u) / BPT;
    for (var tile = 0u; tile < n_tiles; tile++) {
        k0 = tile * KT;
        // Each tile's products are summed on their own and then added, as ggml sums a block
        // before accumulating it: a long running f32 sum rounds noticeably worse.
        var part = array<f32, NACC>();
        for (var i = li; i < BM * SW; i += WG_SIZE) {
            sh_w[i] = vec4<f32>(0.0);
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
            if (k0 + kc >= P.cols) {
                break;
            }
            if (PREFETCH) {
                for (var j = 0u; j < XPT; j++) {
                    let i = li + j * WG_SIZE;
                    if (i < BN * X4) {
                        sh_x[i] = xr[j];
                    }
                }
            } else {
                for (var i = li; i < BN * X4; i += WG_SIZE) {
                    sh_x[i] = x_chunk_element(i, x_base, n_here, k0 + kc);
                }
            }
            workgroupBarrier();
            if (PREFETCH) {
                // The next chunk: the next of this tile or the first of the next tile (both
                // start at column k0 + kc + KX); past the row it is zeros and unused.
                for (var j = 0u; j < XPT; j++) {
                    xr[j] = x_chunk_element(li + j * WG_SIZE, x_base, n_here, k0 + kc + KX);
                }
            }
            for (var c = 0u; c < X4; c++) {
                var wv: array<vec4<f32>, RT>;
                var xv: array<vec4<f32>, CT>;
                for (var a = 0u; a < RT; a++) {
                    wv[a] = sh_w[(RT * tr + a) * SW + kc / 4u + c];
                }
                for (var b = 0u; b < CT; b++) {
                    xv[b] = sh_x[(CT * tt + b) * X4 + c];
                }
                for (var a = 0u; a < RT; a++) {
                    for (var b = 0u; b < CT; b++) {
                        part[a * CT + b] += dot(wv[a], xv[b]);
                    }
                }
            }
            workgroupBarrier();
        }
        for (var k = 0u; k < NACC; k++) {
            acc[k] += part[k];
        }
    }
    for (var k = 0u; k < NACC; k++) {
        let row = first_row + RT * tr + k / CT;
        let t = CT * tt + k % CT;
        if (row < P.rows && t < n_here) {
            let i = P.out_offset + (t0 + t) * P.out_stride + P.row_start + row;
            Y[i] = epilogue_of(EPILOGUE, acc[k], i);
        }
    }
}
