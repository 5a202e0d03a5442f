// (A header with CL, the tokens of a sub-chunk, and CHUNKED_FROM, the tokens from which a
// chunk takes this path (wkv7_scan.wgsl skips such chunks), and step.wgsl, the Step and
// Chunk structs, are prepended.)
// Step 3 of the chunk path of the RWKV-7 attention core (see wkv7.wgsl) in matrix form, for
// chunks of at least CHUNKED_FROM tokens: the same recurrence as wkv7_scan.wgsl, per state
// row i of a head (s, a row of 64 over the key index j; D = diag(w)),
//   sa_t = s_{t-1} . a_t,   s_t = s_{t-1} D_t + sa_t b_t + v_t[i] k_t,   y_t[i] = s_t . r_t,
// worked out over sub-chunks of CL tokens with products of small matrices instead of a walk
// over every token. Within a sub-chunk, with g_t = w_0 * .. * w_t (per j, g_{-1} = 1) and
// s0 the row at its start, every s_t is s0 g_t plus the sums of (sa_u b_u + v_u[i] k_u)
// g_t / g_u over u <= t; so the sa_t solve a unit lower triangular system of CL unknowns
// whose matrix is the same for the 64 rows of the head, and (see chunk_prep) a sub-chunk is
//   y = s0 Rh^T + v Qh^T        (CL outputs of the row; v: the row's CL values)
//   s_end = s0 Z + v Kt          (Z: 64 x 64, Kt: CL x 64; U = V Kt for the head's rows)
// Three passes: `chunk_prep` per (sub-chunk, head) computes Rh, Qh, Z and U from the
// sub-chunk's values alone (in parallel over the whole prompt); `chunk_chain` per (chunk,
// head, group of CHAIN_ROWS state rows) walks the sub-chunks in order, s <- s Z + U (one
// 64 x 64 product per sub-chunk, not CL dependent token updates), leaving each sub-chunk's
// start state in place of its U; `chunk_out` per (sub-chunk, head) writes the outputs y.
// The decays w lie in (0.545, 1) (w = exp(-0.606531 sigmoid(.)), so 1 / g_t stays below
// 1.9^CL: with CL = 16 about 2e4, well inside f32 (the products with it are of terms no
// larger than the plain ones).

const HEAD_SIZE: u32 = 64u;
// Blocks of a token's record in scan_in (wkv7.wgsl's SCAN_*): w, k, a (-kk), b (kk * a), r,
// v; and post_in's block that takes the outputs.
const SCAN_W: u32 = 0u;
const SCAN_K: u32 = 1u;
const SCAN_A: u32 = 2u;
const SCAN_B: u32 = 3u;
const SCAN_R: u32 = 4u;
const SCAN_V: u32 = 5u;
const SCAN_BLOCKS: u32 = 6u;
const POST_BLOCKS: u32 = 3u;
const POST_Y: u32 = 2u;
// A sub-chunk's part of `parts`, per head: Rh [CL][64], Qh [CL][CL], Z [64][64], U [64][64]
// (rows i, then the state rows at the sub-chunk's start, written by chunk_chain).
const OFF_Q: u32 = CL * HEAD_SIZE;
const OFF_Z: u32 = OFF_Q + CL * CL;
const OFF_U: u32 = OFF_Z + HEAD_SIZE * HEAD_SIZE;
const PART: u32 = OFF_U + HEAD_SIZE * HEAD_SIZE;
// Row stride of the [CL][64] tiles in workgroup memory: 65 puts the same column of
// different rows in different banks.
const PS: u32 = 65u;
const WG: u32 = 256u;
// State rows per chain workgroup (four per thread).
const CHAIN_ROWS: u32 = 16u;

// The leading fields of wkv7.wgsl's Params (the same uniform buffer).
struct Params {
    dim: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> chunks: array<Chunk>;
// [rows][heads][SCAN_BLOCKS][HEAD_SIZE] (wkv7.wgsl's `prep`).
@group(0) @binding(3) var<storage, read> scan_in: array<f32>;
// [slots][heads][HEAD_SIZE][HEAD_SIZE] for this layer.
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
// [rows][heads][POST_BLOCKS][HEAD_SIZE]: block POST_Y is written here.
@group(0) @binding(5) var<storage, read_write> post_in: array<f32>;
// [sub-chunks][heads][PART].
@group(0) @binding(6) var<storage, read_write> parts: array<f32>;

// A sub-chunk: its chunk, its first row in the step, its tokens (0: none) and its index
// among the step's sub-chunks (chunks in order, those of CHUNKED_FROM tokens or more).
struct Sub {
    chunk: u32,
    first: u32,
    n: u32,
    index: u32,
}

fn takes_chunked(n_rows: u32) -> bool {
    return CHUNKED_FROM != 0u && n_rows >= CHUNKED_FROM;
}

// The step's sub-chunk number x (n = 0 past the last).
fn find_sub(x: u32) -> Sub {
    var base = 0u;
    for (var c = 0u; c < step.n_chunks; c++) {
        let ch = chunks[c];
        if takes_chunked(ch.n_rows) {
            let m = (ch.n_rows + CL - 1u) / CL;
            if x < base + m {
                let s = x - base;
                return Sub(c, ch.first_row + s * CL, min(CL, ch.n_rows - s * CL), x);
            }
            base += m;
        }
    }
    return Sub(0u, 0u, 0u, x);
}

fn scan_at(row: u32, head: u32, block: u32, j: u32) -> u32 {
    return ((row * (p.dim / HEAD_SIZE) + head) * SCAN_BLOCKS + block) * HEAD_SIZE + j;
}

fn part_at(sub: u32, head: u32) -> u32 {
    return (sub * (p.dim / HEAD_SIZE) + head) * PART;
}

var<workgroup> sh_sub: Sub;

// ---- chunk_prep: one workgroup per (sub-chunk, head) ----

// At (a_t g_{t-1}), then Ah = T At (T = (I - Mbb)^-1).
var<workgroup> sh_at: array<f32, CL * PS>;
// Rt (r_t g_t), then the values v of the sub-chunk ([t][i]).
var<workgroup> sh_rt: array<f32, CL * PS>;
// b_t / g_t, then Bh = b_t g_end / g_t.
var<workgroup> sh_bb: array<f32, CL * PS>;
// k_t / g_t, then Kh = k_t g_end / g_t, then Kt = Kh + Wh^T Bh.
var<workgroup> sh_kb: array<f32, CL * PS>;
// [t][u]: Mbb = At_t . bb_u (u < t), Mkb = At_t . kb_u (u < t; then Wh = T Mkb), Qb = Rt_t .
// bb_u (u <= t), Qk = Rt_t . kb_u (u <= t).
var<workgroup> sh_mbb: array<f32, CL * CL>;
var<workgroup> sh_mkb: array<f32, CL * CL>;
var<workgroup> sh_qb: array<f32, CL * CL>;
var<workgroup> sh_qk: array<f32, CL * CL>;
// g_end: the decay over the whole sub-chunk.
var<workgroup> sh_gl: array<f32, HEAD_SIZE>;

@compute @workgroup_size(WG)
fn chunk_prep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if li == 0u {
        sh_sub = find_sub(wg.x);
    }
    let sub = workgroupUniformLoad(&sh_sub);
    if sub.n == 0u {
        return;
    }
    let head = wg.y;
    let pb = part_at(sub.index, head);
    // 1. The scaled vectors. Thread (q, j) takes tokens q * TPT.. of column j; the decay
    // before them it multiplies up itself. Tokens past the sub-chunk's end are the identity
    // (w = 1, the rest 0).
    let j = li % HEAD_SIZE;
    let q = li / HEAD_SIZE;
    let tpt = CL / (WG / HEAD_SIZE);
    var g = 1.0;
    for (var u = 0u; u < q * tpt; u++) {
        if u < sub.n {
            g *= scan_in[scan_at(sub.first + u, head, SCAN_W, j)];
        }
    }
    for (var e = 0u; e < tpt; e++) {
        let t = q * tpt + e;
        var w = 1.0;
        var k = 0.0;
        var a = 0.0;
        var b = 0.0;
        var r = 0.0;
        if t < sub.n {
            let row = sub.first + t;
            w = scan_in[scan_at(row, head, SCAN_W, j)];
            k = scan_in[scan_at(row, head, SCAN_K, j)];
            a = scan_in[scan_at(row, head, SCAN_A, j)];
            b = scan_in[scan_at(row, head, SCAN_B, j)];
            r = scan_in[scan_at(row, head, SCAN_R, j)];
        }
        let before = g;
        g *= w;
        sh_at[t * PS + j] = a * before;
        sh_rt[t * PS + j] = r * g;
        sh_bb[t * PS + j] = b / g;
        sh_kb[t * PS + j] = k / g;
    }
    if q == WG / HEAD_SIZE - 1u {
        sh_gl[j] = g;
    }
    workgroupBarrier();
    // 2. The CL x CL matrices.
    for (var e = li; e < CL * CL; e += WG) {
        let t = e / CL;
        let u = e % CL;
        var mbb = 0.0;
        var mkb = 0.0;
        var qb = 0.0;
        var qk = 0.0;
        for (var c = 0u; c < HEAD_SIZE; c++) {
            let at = sh_at[t * PS + c];
            let rt = sh_rt[t * PS + c];
            let bb = sh_bb[u * PS + c];
            let kb = sh_kb[u * PS + c];
            mbb += at * bb;
            mkb += at * kb;
            qb += rt * bb;
            qk += rt * kb;
        }
        sh_mbb[e] = select(0.0, mbb, u < t);
        sh_mkb[e] = select(0.0, mkb, u < t);
        sh_qb[e] = select(0.0, qb, u <= t);
        sh_qk[e] = select(0.0, qk, u <= t);
    }
    workgroupBarrier();
    // 3. (I - Mbb) X = [At | Mkb] by forward substitution, in place: X_t += sum over u < t of
    // Mbb[t][u] X_u, a row at a time (64 + CL columns side by side).
    for (var t = 1u; t < CL; t++) {
        if li < HEAD_SIZE + CL {
            var acc = 0.0;
            for (var u = 0u; u < t; u++) {
                let x = select(sh_mkb[u * CL + (li - HEAD_SIZE) % CL], sh_at[u * PS + li % HEAD_SIZE], li < HEAD_SIZE);
                acc += sh_mbb[t * CL + u] * x;
            }
            if li < HEAD_SIZE {
                sh_at[t * PS + li] += acc;
            } else {
                sh_mkb[t * CL + li - HEAD_SIZE] += acc;
            }
        }
        workgroupBarrier();
    }
    // 4. Rh = Rt + Qb Ah and Qh = Qk + Qb Wh, out; Bh and Kh in place.
    for (var e = li; e < CL * HEAD_SIZE; e += WG) {
        let t = e / HEAD_SIZE;
        let c = e % HEAD_SIZE;
        var acc = sh_rt[t * PS + c];
        for (var u = 0u; u <= t; u++) {
            acc += sh_qb[t * CL + u] * sh_at[u * PS + c];
        }
        parts[pb + e] = acc;
        sh_bb[t * PS + c] *= sh_gl[c];
        sh_kb[t * PS + c] *= sh_gl[c];
    }
    for (var e = li; e < CL * CL; e += WG) {
        let t = e / CL;
        let u = e % CL;
        var acc = sh_qk[e];
        for (var m = 0u; m <= t; m++) {
            acc += sh_qb[t * CL + m] * sh_mkb[m * CL + u];
        }
        parts[pb + OFF_Q + e] = acc;
    }
    workgroupBarrier();
    // 5. Kt = Kh + Wh^T Bh in place; Z = diag(g_end) + Ah^T Bh, out; the values into sh_rt.
    for (var e = li; e < CL * HEAD_SIZE; e += WG) {
        let u = e / HEAD_SIZE;
        let c = e % HEAD_SIZE;
        var acc = sh_kb[u * PS + c];
        for (var t = u + 1u; t < CL; t++) {
            acc += sh_mkb[t * CL + u] * sh_bb[t * PS + c];
        }
        sh_kb[u * PS + c] = acc;
        var v = 0.0;
        if u < sub.n {
            v = scan_in[scan_at(sub.first + u, head, SCAN_V, c)];
        }
        sh_rt[u * PS + c] = v;
    }
    for (var e = li; e < HEAD_SIZE * HEAD_SIZE; e += WG) {
        let r = e / HEAD_SIZE;
        let c = e % HEAD_SIZE;
        var acc = select(0.0, sh_gl[r], r == c);
        for (var t = 0u; t < CL; t++) {
            acc += sh_at[t * PS + r] * sh_bb[t * PS + c];
        }
        parts[pb + OFF_Z + e] = acc;
    }
    workgroupBarrier();
    // 6. U = V Kt: row i, column j.
    for (var e = li; e < HEAD_SIZE * HEAD_SIZE; e += WG) {
        let i = e / HEAD_SIZE;
        let c = e % HEAD_SIZE;
        var acc = 0.0;
        for (var u = 0u; u < CL; u++) {
            acc += sh_rt[u * PS + i] * sh_kb[u * PS + c];
        }
        parts[pb + OFF_U + e] = acc;
    }
}

// ---- chunk_chain: one workgroup per (chunk, head, group of CHAIN_ROWS rows) ----

// The group's state rows, and the sub-chunk's Z.
var<workgroup> sh_s: array<f32, CHAIN_ROWS * HEAD_SIZE>;
var<workgroup> sh_z: array<f32, HEAD_SIZE * HEAD_SIZE>;
// The chunk's first sub-chunk and count.
var<workgroup> sh_range: vec2<u32>;

@compute @workgroup_size(WG)
fn chunk_chain(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if wg.x >= step.n_chunks {
        return;
    }
    if li == 0u {
        var base = 0u;
        for (var c = 0u; c < wg.x; c++) {
            let n = chunks[c].n_rows;
            if takes_chunked(n) {
                base += (n + CL - 1u) / CL;
            }
        }
        let n = chunks[wg.x].n_rows;
        sh_range = vec2<u32>(base, select(0u, (n + CL - 1u) / CL, takes_chunked(n)));
    }
    let range = workgroupUniformLoad(&sh_range);
    if range.y == 0u {
        return;
    }
    let n_head = p.dim / HEAD_SIZE;
    let groups = HEAD_SIZE / CHAIN_ROWS;
    let head = wg.y / groups;
    // Thread (m, j): column j of rows i0 + m * 4 ..
    let j = li % HEAD_SIZE;
    let m = li / HEAD_SIZE;
    let local0 = m * 4u;
    let i0 = (wg.y % groups) * CHAIN_ROWS + local0;
    let sbase = (chunks[wg.x].slot * n_head + head) * HEAD_SIZE * HEAD_SIZE;
    var s: array<f32, 4>;
    for (var k = 0u; k < 4u; k++) {
        s[k] = state[sbase + (i0 + k) * HEAD_SIZE + j];
    }
    // The next sub-chunk's Z column part and U, loaded a sub-chunk ahead.
    var zn: array<f32, 16>;
    var un: array<f32, 4>;
    var pb = part_at(range.x, head);
    for (var k = 0u; k < 16u; k++) {
        zn[k] = parts[pb + OFF_Z + (m + 4u * k) * HEAD_SIZE + j];
    }
    for (var k = 0u; k < 4u; k++) {
        un[k] = parts[pb + OFF_U + (i0 + k) * HEAD_SIZE + j];
    }
    for (var n = 0u; n < range.y; n++) {
        for (var k = 0u; k < 16u; k++) {
            sh_z[(m + 4u * k) * HEAD_SIZE + j] = zn[k];
        }
        var u: array<f32, 4>;
        for (var k = 0u; k < 4u; k++) {
            u[k] = un[k];
            sh_s[(local0 + k) * HEAD_SIZE + j] = s[k];
            // The sub-chunk's start state, for chunk_out, in place of its U.
            parts[pb + OFF_U + (i0 + k) * HEAD_SIZE + j] = s[k];
        }
        workgroupBarrier();
        if n + 1u < range.y {
            pb = part_at(range.x + n + 1u, head);
            for (var k = 0u; k < 16u; k++) {
                zn[k] = parts[pb + OFF_Z + (m + 4u * k) * HEAD_SIZE + j];
            }
            for (var k = 0u; k < 4u; k++) {
                un[k] = parts[pb + OFF_U + (i0 + k) * HEAD_SIZE + j];
            }
        }
        for (var k = 0u; k < 4u; k++) {
            var acc = u[k];
            for (var c = 0u; c < HEAD_SIZE; c++) {
                acc += sh_s[(local0 + k) * HEAD_SIZE + c] * sh_z[c * HEAD_SIZE + j];
            }
            s[k] = acc;
        }
        workgroupBarrier();
    }
    for (var k = 0u; k < 4u; k++) {
        state[sbase + (i0 + k) * HEAD_SIZE + j] = s[k];
    }
}

// ---- chunk_out: one workgroup per (sub-chunk, head) ----

// The state at the sub-chunk's start [i][j], Rh [t][j], Qh [t][u], the values [u][i].
var<workgroup> sh_st: array<f32, HEAD_SIZE * PS>;
var<workgroup> sh_r: array<f32, CL * HEAD_SIZE>;
var<workgroup> sh_q: array<f32, CL * CL>;
var<workgroup> sh_v: array<f32, CL * HEAD_SIZE>;

@compute @workgroup_size(WG)
fn chunk_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if li == 0u {
        sh_sub = find_sub(wg.x);
    }
    let sub = workgroupUniformLoad(&sh_sub);
    if sub.n == 0u {
        return;
    }
    let head = wg.y;
    let n_head = p.dim / HEAD_SIZE;
    let pb = part_at(sub.index, head);
    for (var e = li; e < HEAD_SIZE * HEAD_SIZE; e += WG) {
        sh_st[(e / HEAD_SIZE) * PS + e % HEAD_SIZE] = parts[pb + OFF_U + e];
    }
    for (var e = li; e < CL * HEAD_SIZE; e += WG) {
        sh_r[e] = parts[pb + e];
        let u = e / HEAD_SIZE;
        var v = 0.0;
        if u < sub.n {
            v = scan_in[scan_at(sub.first + u, head, SCAN_V, e % HEAD_SIZE)];
        }
        sh_v[e] = v;
    }
    for (var e = li; e < CL * CL; e += WG) {
        sh_q[e] = parts[pb + OFF_Q + e];
    }
    workgroupBarrier();
    for (var e = li; e < CL * HEAD_SIZE; e += WG) {
        let t = e / HEAD_SIZE;
        let i = e % HEAD_SIZE;
        if t < sub.n {
            var acc = 0.0;
            for (var c = 0u; c < HEAD_SIZE; c++) {
                acc += sh_st[i * PS + c] * sh_r[t * HEAD_SIZE + c];
            }
            for (var u = 0u; u <= t; u++) {
                acc += sh_v[u * HEAD_SIZE + i] * sh_q[t * CL + u];
            }
            post_in[(((sub.first + t) * n_head + head) * POST_BLOCKS + POST_Y) * HEAD_SIZE + i] = acc;
        }
    }
}
