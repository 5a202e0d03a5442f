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
// vec4s per row of 64.
const H4: u32 = 16u;
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
// A sub-chunk's part of `parts`, per head, in vec4s: Rh [CL][64], Qh [CL][CL], Z [64][64],
// U [64][64] (rows i; then the state rows at the sub-chunk's start, written by
// chunk_chain).
const OFF_Q: u32 = CL * H4;
const OFF_Z: u32 = OFF_Q + CL * CL / 4u;
const OFF_U: u32 = OFF_Z + HEAD_SIZE * H4;
const PART: u32 = OFF_U + HEAD_SIZE * H4;
// Row stride in vec4s of the row-major tiles in workgroup memory whose rows are read side
// by side: 17 puts the same vec4 of consecutive rows in different banks.
const RS: u32 = 17u;
const WG: u32 = 256u;
// State rows per chain workgroup.
const CHAIN_ROWS: u32 = 16u;

// The leading fields of wkv7.wgsl's Params (the same uniform buffer).
struct Params {
    dim: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> chunks: array<Chunk>;
// [rows][heads][SCAN_BLOCKS][HEAD_SIZE] (wkv7.wgsl's `prep`), as vec4s.
@group(0) @binding(3) var<storage, read> scan_in: array<vec4<f32>>;
// [slots][heads][HEAD_SIZE][HEAD_SIZE] for this layer, as vec4s.
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;
// [rows][heads][POST_BLOCKS][HEAD_SIZE]: block POST_Y is written here.
@group(0) @binding(5) var<storage, read_write> post_in: array<f32>;
// [sub-chunks][heads][PART].
@group(0) @binding(6) var<storage, read_write> parts: array<vec4<f32>>;

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

// vec4 c4 of block `block` of token `row`'s record for `head`.
fn scan_at(row: u32, head: u32, block: u32, c4: u32) -> u32 {
    return ((row * (p.dim / HEAD_SIZE) + head) * SCAN_BLOCKS + block) * H4 + c4;
}

// A token's vec4 of a block, the identity's values past the sub-chunk's end.
fn token4(sub: Sub, t: u32, head: u32, block: u32, c4: u32, outside: f32) -> vec4<f32> {
    if t < sub.n {
        return scan_in[scan_at(sub.first + t, head, block, c4)];
    }
    return vec4<f32>(outside);
}

fn part_at(sub: u32, head: u32) -> u32 {
    return (sub * (p.dim / HEAD_SIZE) + head) * PART;
}

var<workgroup> sh_sub: Sub;

// ---- chunk_prep: one workgroup per (sub-chunk, head) ----

// [t][j] tiles, RS vec4s a row. At (a_t g_{t-1}), then Ah = T At (T = (I - Mbb)^-1).
var<workgroup> sh_at: array<vec4<f32>, CL * RS>;
// Rt (r_t g_t), then the values v of the sub-chunk ([t][i]).
var<workgroup> sh_rt: array<vec4<f32>, CL * RS>;
// b_t / g_t, then Bh = b_t g_end / g_t.
var<workgroup> sh_bb: array<vec4<f32>, CL * RS>;
// k_t / g_t, then Kh = k_t g_end / g_t, then Kt = Kh + Wh^T Bh.
var<workgroup> sh_kb: array<vec4<f32>, CL * RS>;
// [t][u]: Mbb = At_t . bb_u (u < t), Mkb = At_t . kb_u (u < t; then Wh = T Mkb), Qb = Rt_t .
// bb_u (u <= t), Qk = Rt_t . kb_u (u <= t).
var<workgroup> sh_mbb: array<f32, CL * CL>;
var<workgroup> sh_mkb: array<f32, CL * CL>;
var<workgroup> sh_qb: array<f32, CL * CL>;
var<workgroup> sh_qk: array<f32, CL * CL>;
// g_end: the decay over the whole sub-chunk.
var<workgroup> sh_gl: array<vec4<f32>, H4>;

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
    // 1. The scaled vectors: thread (t, c4) for token t, columns 4 c4 ..; the decay before
    // the token it multiplies up itself, in token order. Tokens past the sub-chunk's end
    // are the identity (w = 1, the rest 0).
    for (var e = li; e < CL * H4; e += WG) {
        let t = e / H4;
        let c4 = e % H4;
        var before = vec4<f32>(1.0);
        for (var u = 0u; u < t; u++) {
            before *= token4(sub, u, head, SCAN_W, c4, 1.0);
        }
        let g = before * token4(sub, t, head, SCAN_W, c4, 1.0);
        sh_at[t * RS + c4] = token4(sub, t, head, SCAN_A, c4, 0.0) * before;
        sh_rt[t * RS + c4] = token4(sub, t, head, SCAN_R, c4, 0.0) * g;
        sh_bb[t * RS + c4] = token4(sub, t, head, SCAN_B, c4, 0.0) / g;
        sh_kb[t * RS + c4] = token4(sub, t, head, SCAN_K, c4, 0.0) / g;
        if t == CL - 1u {
            sh_gl[c4] = g;
        }
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
        for (var c = 0u; c < H4; c++) {
            let at = sh_at[t * RS + c];
            let rt = sh_rt[t * RS + c];
            let bb = sh_bb[u * RS + c];
            let kb = sh_kb[u * RS + c];
            mbb += dot(at, bb);
            mkb += dot(at, kb);
            qb += dot(rt, bb);
            qk += dot(rt, kb);
        }
        sh_mbb[e] = select(0.0, mbb, u < t);
        sh_mkb[e] = select(0.0, mkb, u < t);
        sh_qb[e] = select(0.0, qb, u <= t);
        sh_qk[e] = select(0.0, qk, u <= t);
    }
    workgroupBarrier();
    // 3. (I - Mbb) X = [At | Mkb] by forward substitution, in place: X_t += sum over u < t of
    // Mbb[t][u] X_u, a row at a time (the 16 vec4s of At and the CL columns of Mkb side by
    // side).
    for (var t = 1u; t < CL; t++) {
        if li < H4 {
            var acc = vec4<f32>(0.0);
            for (var u = 0u; u < t; u++) {
                acc += sh_mbb[t * CL + u] * sh_at[u * RS + li];
            }
            sh_at[t * RS + li] += acc;
        } else if li < H4 + CL {
            let c = li - H4;
            var acc = 0.0;
            for (var u = 0u; u < t; u++) {
                acc += sh_mbb[t * CL + u] * sh_mkb[u * CL + c];
            }
            sh_mkb[t * CL + c] += acc;
        }
        workgroupBarrier();
    }
    // 4. Rh = Rt + Qb Ah and Qh = Qk + Qb Wh, out; Bh and Kh in place.
    for (var e = li; e < CL * H4; e += WG) {
        let t = e / H4;
        let c4 = e % H4;
        var acc = sh_rt[t * RS + c4];
        for (var u = 0u; u <= t; u++) {
            acc += sh_qb[t * CL + u] * sh_at[u * RS + c4];
        }
        parts[pb + e] = acc;
        sh_bb[t * RS + c4] *= sh_gl[c4];
        sh_kb[t * RS + c4] *= sh_gl[c4];
    }
    for (var e = li; e < CL * CL / 4u; e += WG) {
        let t = e / (CL / 4u);
        let u0 = (e % (CL / 4u)) * 4u;
        var acc = vec4<f32>(sh_qk[t * CL + u0], sh_qk[t * CL + u0 + 1u], sh_qk[t * CL + u0 + 2u],
            sh_qk[t * CL + u0 + 3u]);
        for (var m = 0u; m <= t; m++) {
            let w = vec4<f32>(sh_mkb[m * CL + u0], sh_mkb[m * CL + u0 + 1u],
                sh_mkb[m * CL + u0 + 2u], sh_mkb[m * CL + u0 + 3u]);
            acc += sh_qb[t * CL + m] * w;
        }
        parts[pb + OFF_Q + e] = acc;
    }
    workgroupBarrier();
    // 5. Kt = Kh + Wh^T Bh in place, the values into sh_rt; Z = diag(g_end) + Ah^T Bh out, a
    // 4 x 4 tile a thread.
    for (var e = li; e < CL * H4; e += WG) {
        let u = e / H4;
        let c4 = e % H4;
        var acc = sh_kb[u * RS + c4];
        for (var t = u + 1u; t < CL; t++) {
            acc += sh_mkb[t * CL + u] * sh_bb[t * RS + c4];
        }
        sh_kb[u * RS + c4] = acc;
        sh_rt[u * RS + c4] = token4(sub, u, head, SCAN_V, c4, 0.0);
    }
    for (var e = li; e < H4 * H4; e += WG) {
        let r4 = e / H4;
        let c4 = e % H4;
        var z: array<vec4<f32>, 4>;
        for (var t = 0u; t < CL; t++) {
            let a = sh_at[t * RS + r4];
            let b = sh_bb[t * RS + c4];
            z[0] += a.x * b;
            z[1] += a.y * b;
            z[2] += a.z * b;
            z[3] += a.w * b;
        }
        if r4 == c4 {
            let gl = sh_gl[c4];
            z[0].x += gl.x;
            z[1].y += gl.y;
            z[2].z += gl.z;
            z[3].w += gl.w;
        }
        for (var k = 0u; k < 4u; k++) {
            parts[pb + OFF_Z + (r4 * 4u + k) * H4 + c4] = z[k];
        }
    }
    workgroupBarrier();
    // 6. U = V Kt (row i, column j), a 4 x 4 tile a thread.
    for (var e = li; e < H4 * H4; e += WG) {
        let i4 = e / H4;
        let c4 = e % H4;
        var acc: array<vec4<f32>, 4>;
        for (var u = 0u; u < CL; u++) {
            let v = sh_rt[u * RS + i4];
            let k = sh_kb[u * RS + c4];
            acc[0] += v.x * k;
            acc[1] += v.y * k;
            acc[2] += v.z * k;
            acc[3] += v.w * k;
        }
        for (var k = 0u; k < 4u; k++) {
            parts[pb + OFF_U + (i4 * 4u + k) * H4 + c4] = acc[k];
        }
    }
}

// ---- chunk_chain: one workgroup per (chunk, head, group of CHAIN_ROWS state rows) ----

// Threads of a chain workgroup: each takes 4 of its rows and 4 columns.
const CHAIN_WG: u32 = CHAIN_ROWS * H4 / 4u;
// The group's state rows, and the sub-chunk's Z (row-major).
var<workgroup> sh_s: array<vec4<f32>, CHAIN_ROWS * H4>;
var<workgroup> sh_z: array<vec4<f32>, HEAD_SIZE * H4>;
// The chunk's first sub-chunk and count.
var<workgroup> sh_range: vec2<u32>;

@compute @workgroup_size(CHAIN_WG)
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
    // Thread (q, c4): columns 4 c4 .. of the group's rows 4 q .. (state rows i0 + 4 q ..).
    let q = li / H4;
    let c4 = li % H4;
    let i0 = (wg.y % groups) * CHAIN_ROWS + 4u * q;
    let sat = ((chunks[wg.x].slot * n_head + head) * HEAD_SIZE + i0) * H4 + c4;
    var s: array<vec4<f32>, 4>;
    for (var k = 0u; k < 4u; k++) {
        s[k] = state[sat + k * H4];
    }
    // The next sub-chunk's Z (its vec4s li, li + CHAIN_WG, ..) and U, a sub-chunk ahead.
    var zn: array<vec4<f32>, HEAD_SIZE * H4 / CHAIN_WG>;
    var un: array<vec4<f32>, 4>;
    var pb = part_at(range.x, head);
    for (var k = 0u; k < HEAD_SIZE * H4 / CHAIN_WG; k++) {
        zn[k] = parts[pb + OFF_Z + li + k * CHAIN_WG];
    }
    for (var k = 0u; k < 4u; k++) {
        un[k] = parts[pb + OFF_U + (i0 + k) * H4 + c4];
    }
    for (var n = 0u; n < range.y; n++) {
        for (var k = 0u; k < HEAD_SIZE * H4 / CHAIN_WG; k++) {
            sh_z[li + k * CHAIN_WG] = zn[k];
        }
        var acc = un;
        for (var k = 0u; k < 4u; k++) {
            sh_s[(4u * q + k) * H4 + c4] = s[k];
            // The sub-chunk's start state, for chunk_out, in place of its U.
            parts[pb + OFF_U + (i0 + k) * H4 + c4] = s[k];
        }
        workgroupBarrier();
        if n + 1u < range.y {
            pb = part_at(range.x + n + 1u, head);
            for (var k = 0u; k < HEAD_SIZE * H4 / CHAIN_WG; k++) {
                zn[k] = parts[pb + OFF_Z + li + k * CHAIN_WG];
            }
            for (var k = 0u; k < 4u; k++) {
                un[k] = parts[pb + OFF_U + (i0 + k) * H4 + c4];
            }
        }
        // s <- s Z + U: 4 of Z's rows at a time, each read once for the thread's 4 rows.
        for (var c = 0u; c < H4; c++) {
            let z0 = sh_z[(4u * c) * H4 + c4];
            let z1 = sh_z[(4u * c + 1u) * H4 + c4];
            let z2 = sh_z[(4u * c + 2u) * H4 + c4];
            let z3 = sh_z[(4u * c + 3u) * H4 + c4];
            for (var k = 0u; k < 4u; k++) {
                let x = sh_s[(4u * q + k) * H4 + c];
                acc[k] += x.x * z0 + x.y * z1 + x.z * z2 + x.w * z3;
            }
        }
        s = acc;
        workgroupBarrier();
    }
    for (var k = 0u; k < 4u; k++) {
        state[sat + k * H4] = s[k];
    }
}

// ---- chunk_out: one workgroup per (sub-chunk, head) ----

// The state at the sub-chunk's start [i][j] (RS vec4s a row), Rh [t][j], Qh [t][u], the
// values [u][i].
var<workgroup> sh_st: array<vec4<f32>, HEAD_SIZE * RS>;
var<workgroup> sh_r: array<vec4<f32>, CL * H4>;
var<workgroup> sh_q: array<vec4<f32>, CL * CL / 4u>;
var<workgroup> sh_v: array<vec4<f32>, CL * H4>;

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
    for (var e = li; e < HEAD_SIZE * H4; e += WG) {
        sh_st[(e / H4) * RS + e % H4] = parts[pb + OFF_U + e];
    }
    for (var e = li; e < CL * H4; e += WG) {
        sh_r[e] = parts[pb + e];
        sh_v[e] = token4(sub, e / H4, head, SCAN_V, e % H4, 0.0);
    }
    for (var e = li; e < CL * CL / 4u; e += WG) {
        sh_q[e] = parts[pb + OFF_Q + e];
    }
    workgroupBarrier();
    // Thread (tq, i): row i's outputs for tokens tq * TPT ...
    let i = li % HEAD_SIZE;
    let tpt = CL * HEAD_SIZE / WG;
    let t0 = (li / HEAD_SIZE) * tpt;
    for (var e = 0u; e < tpt; e++) {
        let t = t0 + e;
        if t < sub.n {
            var acc0 = 0.0;
            var acc1 = 0.0;
            for (var c = 0u; c < H4; c += 2u) {
                acc0 += dot(sh_st[i * RS + c], sh_r[t * H4 + c]);
                acc1 += dot(sh_st[i * RS + c + 1u], sh_r[t * H4 + c + 1u]);
            }
            for (var u = 0u; u <= t; u++) {
                acc0 += sh_v[u * H4 + i / 4u][i % 4u] * sh_q[(t * CL + u) / 4u][u % 4u];
            }
            post_in[(((sub.first + t) * n_head + head) * POST_BLOCKS + POST_Y) * HEAD_SIZE + i] =
                acc0 + acc1;
        }
    }
}
