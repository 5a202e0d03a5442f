// (A header with CL, the tokens of a sub-chunk, CHUNKED_FROM, the tokens from which a chunk
// takes this path (wkv7_scan.wgsl skips such chunks), CHAIN_ROWS, the state rows of a chain
// workgroup (8, 16 or 32), and CHUNKED_PROBE (timing probes, `WEB_RWKV_CHUNKED_PROBE`: results
// are wrong with any bit set; 1 the chain's loads, 2 its loads of the v Qh^T terms, 4 its row
// products, 8 its state update, 16 the prep's solve, 32 its CL x CL matrices), step.wgsl,
// the Step and Chunk structs, scan_blocks.wgsl and scan_bindings.wgsl are prepended.)
// Step 3 of the chunk path of the RWKV-7 attention core (see wkv7.wgsl) in matrix form, for
// chunks of at least CHUNKED_FROM tokens: the same recurrence as wkv7_scan.wgsl, per state
// row i of a head (s, a row of 64 over the key index j; D = diag(w)),
//   sa_t = s_{t-1} . a_t,   s_t = s_{t-1} D_t + sa_t b_t + v_t[i] k_t,   y_t[i] = s_t . r_t,
// worked out over sub-chunks of CL tokens with products of small matrices instead of a walk
// over every token. Within a sub-chunk, with g_t = w_0 * .. * w_t (per j, g_{-1} = 1) and
// s0 the row at its start, every s_t is s0 g_t plus the sums of (sa_u b_u + v_u[i] k_u)
// g_t / g_u over u <= t; so the sa_t solve a unit lower triangular system of CL unknowns
// whose matrix is the same for the 64 rows of the head, and (see chunk_prep) a sub-chunk is
//   y = s0 Rh^T + v Qh^T                       (the row's CL outputs; v: its CL values)
//   s_end = s0 diag(g_end) + (s0 Ah^T) Bh + v Kt
// with Rh, Ah, Bh, Kt (CL x 64), Qh (CL x CL) and g_end the same for every row. Two passes:
// `chunk_prep` per (sub-chunk, head) works those out from the sub-chunk's values alone, in
// parallel over the whole prompt; `chunk_chain` per (chunk, head, group of CHAIN_ROWS state
// rows) walks the chunk's sub-chunks in order, writing the outputs and moving the state on:
// per sub-chunk two products of 64 x CL, not CL dependent token updates.
// The decays w lie in (0.545, 1) (w = exp(-0.606531 sigmoid(.)), so 1 / g_t stays below
// 1.9^CL: with CL = 16 about 2e4, well inside f32 (the products with it are of terms no
// larger than the plain ones).

// vec4s per row of 64.
const H4: u32 = 16u;
// A sub-chunk's part of `parts`, per head, in vec4s: Rh, Ah, Bh and Kt ([CL][64] each),
// g_end [64]. (The outputs' v Qh^T terms go to post_in, where chunk_chain adds s0 Rh^T.)
const OFF_A: u32 = CL * H4;
const OFF_B: u32 = 2u * CL * H4;
const OFF_K: u32 = 3u * CL * H4;
const OFF_G: u32 = 4u * CL * H4;
const PART: u32 = OFF_G + H4;
// Row stride in vec4s of the row-major tiles in workgroup memory whose rows are read side
// by side: 17 puts the same vec4 of consecutive rows in different banks.
const RS: u32 = 17u;
const WG: u32 = 256u;
// The thread layouts take a thread per vec4 of a [CL][64] tile, and per entry of a CL x CL
// matrix.
const_assert CL * H4 == WG;
const_assert CL == H4;

// [sub-chunks][heads][PART].
@group(0) @binding(6) var<storage, read_write> parts: array<vec4<f32>>;

// A sub-chunk: its first row in the step, its tokens (0: none) and its index among the
// step's sub-chunks (chunks in order, those of CHUNKED_FROM tokens or more).
struct Sub {
    first: u32,
    n: u32,
    index: u32,
}

// Sub-chunks of a chunk of `n_rows` tokens: ceil(n_rows / CL) if it takes this path, else 0.
fn sub_count(n_rows: u32) -> u32 {
    return select(0u, (n_rows + CL - 1u) / CL, takes_matrix_form(n_rows));
}

// The step's sub-chunk number x (n = 0 past the last).
fn find_sub(x: u32) -> Sub {
    var base = 0u;
    for (var c = 0u; c < step.n_chunks; c++) {
        let ch = chunks[c];
        let m = sub_count(ch.n_rows);
        if x < base + m {
            return chunk_sub(vec2<u32>(base, ch.first_row), ch.n_rows, x - base);
        }
        base += m;
    }
    return Sub(0u, 0u, x);
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
// The decays w_t, then b_t / g_t, then Bh = b_t g_end / g_t.
var<workgroup> sh_bb: array<vec4<f32>, CL * RS>;
// k_t / g_t, then Kh = k_t g_end / g_t, then Kt = Kh + Wh^T Bh.
var<workgroup> sh_kb: array<vec4<f32>, CL * RS>;
// [t][u]: Mbb = At_t . bb_u (u < t; then its powers), Mkb = At_t . kb_u (u < t; then
// Wh = T Mkb), Qb = Rt_t . bb_u (u <= t), Qk = Rt_t . kb_u (u <= t; then Qh = Qk + Qb Wh).
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
    // 1. The scaled vectors: thread (t, c4) for token t, columns 4 c4 .. (one vec4 of a
    // [CL][64] tile a thread: CL * H4 == WG). Tokens past the sub-chunk's end are the
    // identity (w = 1, the rest 0). The token's values loaded at once, the decays shared,
    // then each thread multiplies those before its token, in token order.
    let t = li / H4;
    let c4 = li % H4;
    let w = token4(sub, t, head, SCAN_W, c4, 1.0);
    let a = token4(sub, t, head, SCAN_A, c4, 0.0);
    let r = token4(sub, t, head, SCAN_R, c4, 0.0);
    let k = token4(sub, t, head, SCAN_K, c4, 0.0);
    let b = token4(sub, t, head, SCAN_B, c4, 0.0);
    let v = token4(sub, t, head, SCAN_V, c4, 0.0);
    sh_bb[t * RS + c4] = w;
    workgroupBarrier();
    var before = vec4<f32>(1.0);
    for (var u = 0u; u < t; u++) {
        before *= sh_bb[u * RS + c4];
    }
    let g = before * w;
    sh_at[t * RS + c4] = a * before;
    sh_rt[t * RS + c4] = r * g;
    sh_kb[t * RS + c4] = k / g;
    if t == CL - 1u {
        sh_gl[c4] = g;
        parts[pb + OFF_G + c4] = g;
    }
    workgroupBarrier();
    sh_bb[t * RS + c4] = b / g;
    workgroupBarrier();
    // 2. The CL x CL matrices: thread (t, u) their entries (t, u) (CL * CL == WG).
    {
        let u = c4;
        let e = li;
        var mbb = 0.0;
        var mkb = 0.0;
        var qb = 0.0;
        var qk = 0.0;
        for (var c = 0u; c < H4 && (CHUNKED_PROBE & 32u) == 0u; c++) {
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
    // 3. X = (I - Mbb)^-1 [At | Mkb] = (I + M^8)(I + M^4)(I + M^2)(I + M) X (M = Mbb is
    // strictly lower triangular, so M^16 = 0): four rounds of X += M X, M = M M, every
    // thread at once (a forward substitution takes CL dependent rows). Thread (t, c) takes
    // vec4 c of At's row t and column c of Mkb and of M (CL == H4).
    for (var round = 0u; round < 4u && (CHUNKED_PROBE & 16u) == 0u; round++) {
        var xa = sh_at[t * RS + c4];
        var xk = sh_mkb[t * CL + c4];
        var m2 = 0.0;
        for (var u = 0u; u < t; u++) {
            let m = sh_mbb[t * CL + u];
            xa += m * sh_at[u * RS + c4];
            xk += m * sh_mkb[u * CL + c4];
            m2 += m * sh_mbb[u * CL + c4];
        }
        workgroupBarrier();
        sh_at[t * RS + c4] = xa;
        sh_mkb[t * CL + c4] = xk;
        sh_mbb[t * CL + c4] = m2;
        workgroupBarrier();
    }
    // 4. Rh = Rt + Qb Ah and Ah, out; Bh and Kh, and Qh = Qk + Qb Wh, in place; the values
    // in place of Rt.
    {
        let e = li;
        var acc = sh_rt[t * RS + c4];
        for (var u = 0u; u <= t; u++) {
            acc += sh_qb[t * CL + u] * sh_at[u * RS + c4];
        }
        parts[pb + e] = acc;
        sh_rt[t * RS + c4] = v;
        parts[pb + OFF_A + e] = sh_at[t * RS + c4];
        let bh = sh_bb[t * RS + c4] * sh_gl[c4];
        sh_bb[t * RS + c4] = bh;
        parts[pb + OFF_B + e] = bh;
        sh_kb[t * RS + c4] *= sh_gl[c4];
    }
    // (Qh: thread e < CL * CL / 4 takes 4 entries of row t.)
    if li < CL * CL / 4u {
        let e = li;
        let t = e / (CL / 4u);
        let u0 = (e % (CL / 4u)) * 4u;
        var acc = vec4<f32>(sh_qk[t * CL + u0], sh_qk[t * CL + u0 + 1u], sh_qk[t * CL + u0 + 2u],
            sh_qk[t * CL + u0 + 3u]);
        for (var m = 0u; m <= t; m++) {
            let w = vec4<f32>(sh_mkb[m * CL + u0], sh_mkb[m * CL + u0 + 1u],
                sh_mkb[m * CL + u0 + 2u], sh_mkb[m * CL + u0 + 3u]);
            acc += sh_qb[t * CL + m] * w;
        }
        sh_qk[t * CL + u0] = acc.x;
        sh_qk[t * CL + u0 + 1u] = acc.y;
        sh_qk[t * CL + u0 + 2u] = acc.z;
        sh_qk[t * CL + u0 + 3u] = acc.w;
    }
    workgroupBarrier();
    // 5. The outputs' v Qh^T terms into post_in (token t, rows 4 c4 ..); Kt = Kh + Wh^T Bh,
    // out.
    if t < sub.n {
        var y = vec4<f32>(0.0);
        for (var u = 0u; u <= t; u++) {
            y += sh_qk[t * CL + u] * sh_rt[u * RS + c4];
        }
        let out = out_at(sub, t, head, 4u * c4);
        post_in[out] = y.x;
        post_in[out + 1u] = y.y;
        post_in[out + 2u] = y.z;
        post_in[out + 3u] = y.w;
    }
    // (Kt: thread (u, c4) its row u's vec4 c4.)
    var kt = sh_kb[t * RS + c4];
    for (var m = t + 1u; m < CL; m++) {
        kt += sh_mkb[m * CL + t] * sh_bb[m * RS + c4];
    }
    parts[pb + OFF_K + li] = kt;
}

// ---- chunk_chain: one workgroup per (chunk, head, group of CHAIN_ROWS state rows) ----

// Threads of a chain workgroup: each takes 4 of its rows (a row quad) and, in turn, one
// token (outputs) and one vec4 of columns (the state update), so that each value read from
// workgroup memory serves 4 rows (the kernel is bound by those reads).
const CHAIN_WG: u32 = CHAIN_ROWS / 4u * H4;
// vec4s of each of a sub-chunk's [CL][64] tiles a chain thread stages.
const STAGE_PT: u32 = CL * H4 / CHAIN_WG;

// [t][j] tiles: Ah and Rh (RS vec4s a row: threads of one row quad read different tokens'
// rows side by side), Bh and Kt.
var<workgroup> sh_ca: array<vec4<f32>, CL * RS>;
var<workgroup> sh_cr: array<vec4<f32>, CL * RS>;
var<workgroup> sh_cb: array<vec4<f32>, CL * H4>;
var<workgroup> sh_ck: array<vec4<f32>, CL * H4>;
// The group's values [u][row quad] (a vec4 of 4 rows), g_end.
var<workgroup> sh_cv: array<vec4<f32>, CL * CHAIN_ROWS / 4u>;
var<workgroup> sh_cg: array<vec4<f32>, H4>;
// The group's state rows at the sub-chunk's start, and their s0 . Ah_t [t][row quad].
var<workgroup> sh_s: array<vec4<f32>, CHAIN_ROWS * H4>;
var<workgroup> sh_x: array<vec4<f32>, CL * CHAIN_ROWS / 4u>;
// The chunk's first sub-chunk and count.
var<workgroup> sh_range: vec2<u32>;

// A sub-chunk's values as one thread loads them (`load_sub`) and stages them (`stage_sub`):
// vec4s li + k CHAIN_WG of Ah, Rh, Bh and Kt, vec4 li of the values (token li / 4, the
// group's row quad li % 4) and of g_end (li < 16); and, not staged, the v Qh^T terms of the
// thread's outputs (token li % 16, row quad li / 16) that chunk_prep left in post_in.
struct SubValues {
    a: array<vec4<f32>, STAGE_PT>,
    r: array<vec4<f32>, STAGE_PT>,
    b: array<vec4<f32>, STAGE_PT>,
    k: array<vec4<f32>, STAGE_PT>,
    v: vec4<f32>,
    g: vec4<f32>,
    y: vec4<f32>,
}

// Where the outputs of token t of `sub` for rows i .. i + 3 go.
fn out_at(sub: Sub, t: u32, head: u32, i: u32) -> u32 {
    return (((sub.first + t) * (p.dim / HEAD_SIZE) + head) * POST_BLOCKS + POST_Y) * HEAD_SIZE + i;
}

fn load_sub(sub: Sub, head: u32, i0: u32, li: u32) -> SubValues {
    var x: SubValues;
    if (CHUNKED_PROBE & 1u) != 0u {
        return x;
    }
    let pb = part_at(sub.index, head);
    for (var k = 0u; k < STAGE_PT; k++) {
        let e = li + k * CHAIN_WG;
        x.a[k] = parts[pb + OFF_A + e];
        x.r[k] = parts[pb + e];
        x.b[k] = parts[pb + OFF_B + e];
        x.k[k] = parts[pb + OFF_K + e];
    }
    let t = li % H4;
    if t < sub.n && (CHUNKED_PROBE & 2u) == 0u {
        let out = out_at(sub, t, head, i0 + 4u * (li / H4));
        x.y = vec4<f32>(post_in[out], post_in[out + 1u], post_in[out + 2u], post_in[out + 3u]);
    }
    x.v = token4(sub, li / (CHAIN_ROWS / 4u), head, SCAN_V, i0 / 4u + li % (CHAIN_ROWS / 4u), 0.0);
    if li < H4 {
        x.g = parts[pb + OFF_G + li];
    }
    return x;
}

fn stage_sub(x: SubValues, li: u32) {
    for (var k = 0u; k < STAGE_PT; k++) {
        let e = li + k * CHAIN_WG;
        sh_ca[(e / H4) * RS + e % H4] = x.a[k];
        sh_cr[(e / H4) * RS + e % H4] = x.r[k];
        sh_cb[e] = x.b[k];
        sh_ck[e] = x.k[k];
    }
    sh_cv[li] = x.v;
    if li < H4 {
        sh_cg[li] = x.g;
    }
}

@compute @workgroup_size(CHAIN_WG)
fn chunk_chain(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if wg.x >= step.n_chunks {
        return;
    }
    if li == 0u {
        var base = 0u;
        for (var c = 0u; c < wg.x; c++) {
            base += sub_count(chunks[c].n_rows);
        }
        sh_range = vec2<u32>(base, sub_count(chunks[wg.x].n_rows));
    }
    let range = workgroupUniformLoad(&sh_range);
    if range.y == 0u {
        return;
    }
    let chunk = chunks[wg.x];
    let n_head = p.dim / HEAD_SIZE;
    let groups = HEAD_SIZE / CHAIN_ROWS;
    let head = wg.y / groups;
    let i0 = (wg.y % groups) * CHAIN_ROWS;
    // Thread (q, c): row quad q (rows i0 + 4 q ..); c is a token for the outputs and a vec4
    // of columns for the update.
    let q = li / H4;
    let c = li % H4;
    let sat = ((chunk.slot * n_head + head) * HEAD_SIZE + i0 + 4u * q) * H4 + c;
    var s0 = state[sat];
    var s1 = state[sat + H4];
    var s2 = state[sat + 2u * H4];
    var s3 = state[sat + 3u * H4];
    let at = vec2<u32>(range.x, chunk.first_row);
    var next = load_sub(chunk_sub(at, chunk.n_rows, 0u), head, i0, li);
    for (var n = 0u; n < range.y; n++) {
        let sub = chunk_sub(at, chunk.n_rows, n);
        stage_sub(next, li);
        var y = next.y;
        sh_s[(4u * q) * H4 + c] = s0;
        sh_s[(4u * q + 1u) * H4 + c] = s1;
        sh_s[(4u * q + 2u) * H4 + c] = s2;
        sh_s[(4u * q + 3u) * H4 + c] = s3;
        workgroupBarrier();
        // Token t = c: s0 . Ah_t and the output y_t of the quad's rows.
        let t = c;
        var x = vec4<f32>(0.0);
        for (var j = 0u; j < H4 && (CHUNKED_PROBE & 4u) == 0u; j++) {
            let a = sh_ca[t * RS + j];
            let r = sh_cr[t * RS + j];
            let r0 = sh_s[(4u * q) * H4 + j];
            let r1 = sh_s[(4u * q + 1u) * H4 + j];
            let r2 = sh_s[(4u * q + 2u) * H4 + j];
            let r3 = sh_s[(4u * q + 3u) * H4 + j];
            x += vec4<f32>(dot(r0, a), dot(r1, a), dot(r2, a), dot(r3, a));
            y += vec4<f32>(dot(r0, r), dot(r1, r), dot(r2, r), dot(r3, r));
        }
        sh_x[t * (CHAIN_ROWS / 4u) + q] = x;
        if t < sub.n {
            let out = out_at(sub, t, head, i0 + 4u * q);
            post_in[out] = y.x;
            post_in[out + 1u] = y.y;
            post_in[out + 2u] = y.z;
            post_in[out + 3u] = y.w;
        }
        workgroupBarrier();
        // The next sub-chunk's loads, in flight during the update.
        if n + 1u < range.y {
            next = load_sub(chunk_sub(at, chunk.n_rows, n + 1u), head, i0, li);
        }
        // Columns 4 c ..: s0 g_end + (s0 Ah^T) Bh + v Kt, for the quad's rows.
        let g = sh_cg[c];
        s0 *= g;
        s1 *= g;
        s2 *= g;
        s3 *= g;
        for (var u = 0u; u < CL && (CHUNKED_PROBE & 8u) == 0u; u++) {
            let b = sh_cb[u * H4 + c];
            let k = sh_ck[u * H4 + c];
            let xu = sh_x[u * (CHAIN_ROWS / 4u) + q];
            let vu = sh_cv[u * (CHAIN_ROWS / 4u) + q];
            s0 += xu.x * b + vu.x * k;
            s1 += xu.y * b + vu.y * k;
            s2 += xu.z * b + vu.z * k;
            s3 += xu.w * b + vu.w * k;
        }
        // Before the next sub-chunk's values replace these.
        workgroupBarrier();
    }
    state[sat] = s0;
    state[sat + H4] = s1;
    state[sat + 2u * H4] = s2;
    state[sat + 3u * H4] = s3;
}

// Sub-chunk n of a chunk of `n_rows` tokens whose first sub-chunk is number at.x and first
// row at.y (n = 0 tokens past its end; its values are then read from its first sub-chunk).
fn chunk_sub(at: vec2<u32>, n_rows: u32, n: u32) -> Sub {
    if n * CL >= n_rows {
        return Sub(at.y, 0u, at.x);
    }
    return Sub(at.y + n * CL, min(CL, n_rows - n * CL), at.x + n);
}
