// (A header with LANES, the lanes per state row, SCAN_ROWS, the consecutive state rows a
// group of LANES lanes updates, SCAN_WG, the threads per workgroup, and WGS_PER_HEAD = 64
// LANES / SCAN_ROWS / SCAN_WG, the generated row code and step.wgsl, the Step and Chunk
// structs, are prepended.)
// Step 3 of the chunk path of the RWKV-7 attention core (see wkv7.wgsl): the state update
// and read-out over a chunk's tokens, in order. The 64 rows of a head's state evolve
// independently, so every row is its own recurrence: LANES lanes own a row, lane l the
// key indices l * 64 / LANES .. + 64 / LANES, and the row's two sums are the lanes' own
// sums (in index order) added across the lanes with subgroupShuffleXor, so the lanes of a
// row must be an aligned group of one subgroup: LANES is a power of two no larger than the
// device's smallest subgroup size (1: no subgroup operations, one lane per row). Workgroups
// of SCAN_WG lanes, WGS_PER_HEAD per head; wkv7_prep wrote the per-token values (shared by
// the rows of a head, read from cache; a lane's SCAN_ROWS rows share its loads), each lane
// keeps the next few tokens' loads in flight while it works on this one.
//   sa = sum_j -kk[j] S[i][j];  S[i][j] = S[i][j] w[j] + v[i] k[j] + sa (kk[j] a[j])
//   y[i] = sum_j S[i][j] r[j]

const HEAD_SIZE: u32 = 64u;
// The per-token record of a head in scan_in, in vec4s: blocks w, k, -kk, kk * a, r, v.
const RECORD: u32 = 96u;
const POST_BLOCKS: u32 = 3u;
const POST_Y: u32 = 2u;

// The leading fields of wkv7.wgsl's Params (the same uniform buffer).
struct Params {
    dim: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> chunks: array<Chunk>;
// [rows][heads][6][16] (see wkv7.wgsl's SCAN_* blocks).
@group(0) @binding(3) var<storage, read> scan_in: array<vec4<f32>>;
// [slots][heads][HEAD_SIZE][HEAD_SIZE] for this layer, as vec4s.
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;
// [rows][heads][3][HEAD_SIZE]: the scan writes block POST_Y.
@group(0) @binding(5) var<storage, read_write> post_in: array<f32>;

// The segmented scan (steps of one long chunk; SEGMENTS, the segment count, is in the
// header): the chunk's rows are cut into SEGMENTS segments of seg_len rows, and
//  1. seg_prep walks every segment twice side by side: the state rows from zero (B, with the
//     v k terms) and from the identity's rows (M, without them: the product of the
//     segment's transitions), into `state` bound to that scratch ([segment][head][B, M]
//     [64 rows][16 vec4]);
//  2. seg_join, a workgroup per head, takes the slot's state S through the segments in
//     order (the start of segment s is S; then S = S M_s + B_s), writing each start to
//     `starts` ([segment][head][64][16]) and the end to the slot's state;
//  3. seg_main walks every segment from its start (`state` bound to `starts`), writing y.
// Its critical path is about three segments' tokens and the joins instead of the chunk's.
// The results are the sequential scan's up to f32 rounding (S M + B sums in another order).
@group(0) @binding(6) var<storage, read> seg_bm: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> seg_starts: array<vec4<f32>>;

// 1 for the rows that carry the v k terms (all but seg_prep's M rows).
var<private> V_SCALE: f32 = 1.0;

// Rows per segment of a chunk of n rows.
fn seg_len(n: u32) -> u32 {
    return (n + SEGMENTS - 1u) / SEGMENTS;
}

// Generated (kernels/mod.rs): the lane's part of its state row, S0.. (private vec4s);
// fn state_load(at), state_store(at); struct Tok, the lane's part of a token's values and
// v[i], which fn fetch(at, part, i) loads from the record at `at` (vec4s; `part`: the lane's
// first vec4 of each block); fn scan_token(x: Tok) -> y: the update and read-out, its two
// sums added across the row's lanes; fn scan_rows(..): the walk over a chunk's tokens with
// several tokens' loads in flight.

@compute @workgroup_size(SCAN_WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if wg.x >= step.n_chunks {
        return;
    }
    let chunk = chunks[wg.x];
    let n_head = p.dim / HEAD_SIZE;
    let head = wg.y / WGS_PER_HEAD;
    // State rows i .. i + SCAN_ROWS, lane l of them.
    let i = ((wg.y % WGS_PER_HEAD) * (SCAN_WG / LANES) + t / LANES) * SCAN_ROWS;
    let l = t % LANES;
    let part = l * (16u / LANES);
    let sbase = ((chunk.slot * n_head + head) * HEAD_SIZE + i) * 16u + part;
    state_load(sbase);
    let at0 = (chunk.first_row * n_head + head) * RECORD;
    let out0 = ((chunk.first_row * n_head + head) * POST_BLOCKS + POST_Y) * HEAD_SIZE + i;
    scan_rows(at0, n_head * RECORD, chunk.n_rows, part, i, out0,
        n_head * POST_BLOCKS * HEAD_SIZE, l == 0u);
    state_store(sbase);
}

@compute @workgroup_size(SCAN_WG)
fn seg_prep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let chunk = chunks[0];
    let len = seg_len(chunk.n_rows);
    let first = wg.x * len;
    if first >= chunk.n_rows {
        return;
    }
    let n_head = p.dim / HEAD_SIZE;
    // wg.y: head, then B or M, then the part of the rows.
    let head = wg.y / (2u * WGS_PER_HEAD);
    let half = (wg.y / WGS_PER_HEAD) % 2u;
    let i = ((wg.y % WGS_PER_HEAD) * (SCAN_WG / LANES) + t / LANES) * SCAN_ROWS;
    let l = t % LANES;
    let part = l * (16u / LANES);
    if half == 0u {
        state_zero();
    } else {
        state_identity(i, part);
        V_SCALE = 0.0;
    }
    let at0 = ((chunk.first_row + first) * n_head + head) * RECORD;
    scan_rows(at0, n_head * RECORD, min(len, chunk.n_rows - first), part, i, 0u, 0u, false);
    state_store((((wg.x * n_head + head) * 2u + half) * HEAD_SIZE + i) * 16u + part);
}

@compute @workgroup_size(SCAN_WG)
fn seg_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let chunk = chunks[0];
    let len = seg_len(chunk.n_rows);
    let first = wg.x * len;
    if first >= chunk.n_rows {
        return;
    }
    let n_head = p.dim / HEAD_SIZE;
    let head = wg.y / WGS_PER_HEAD;
    let i = ((wg.y % WGS_PER_HEAD) * (SCAN_WG / LANES) + t / LANES) * SCAN_ROWS;
    let l = t % LANES;
    let part = l * (16u / LANES);
    state_load(((wg.x * n_head + head) * HEAD_SIZE + i) * 16u + part);
    let row0 = chunk.first_row + first;
    let at0 = (row0 * n_head + head) * RECORD;
    let out0 = ((row0 * n_head + head) * POST_BLOCKS + POST_Y) * HEAD_SIZE + i;
    scan_rows(at0, n_head * RECORD, min(len, chunk.n_rows - first), part, i, out0,
        n_head * POST_BLOCKS * HEAD_SIZE, l == 0u);
}

// seg_join's state S[i][j] (row i, vec4 j / 4) and the segment's M[j][j'].
var<workgroup> join_s: array<vec4<f32>, 1024>;
var<workgroup> join_m: array<vec4<f32>, 1024>;

@compute @workgroup_size(256)
fn seg_join(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let chunk = chunks[0];
    let n_head = p.dim / HEAD_SIZE;
    let head = wg.x;
    let len = seg_len(chunk.n_rows);
    let segs = (chunk.n_rows + len - 1u) / len;
    let at = (chunk.slot * n_head + head) * 1024u;
    for (var k = 0u; k < 4u; k++) {
        join_s[t + 256u * k] = state[at + t + 256u * k];
    }
    // Thread t: row i, columns c .. c + 16 (vec4s c / 4 ..).
    let i = t / 4u;
    let c4 = (t % 4u) * 4u;
    for (var seg = 0u; seg < segs; seg++) {
        let bm = (seg * n_head + head) * 2048u;
        for (var k = 0u; k < 4u; k++) {
            join_m[t + 256u * k] = seg_bm[bm + 1024u + t + 256u * k];
        }
        workgroupBarrier();
        for (var k = 0u; k < 4u; k++) {
            seg_starts[(seg * n_head + head) * 1024u + t + 256u * k] = join_s[t + 256u * k];
        }
        // S M + B for row i, columns c..: B first, then the terms in j order.
        var a0 = seg_bm[bm + i * 16u + c4];
        var a1 = seg_bm[bm + i * 16u + c4 + 1u];
        var a2 = seg_bm[bm + i * 16u + c4 + 2u];
        var a3 = seg_bm[bm + i * 16u + c4 + 3u];
        for (var j = 0u; j < 64u; j++) {
            let sij = join_s[i * 16u + j / 4u][j % 4u];
            a0 += sij * join_m[j * 16u + c4];
            a1 += sij * join_m[j * 16u + c4 + 1u];
            a2 += sij * join_m[j * 16u + c4 + 2u];
            a3 += sij * join_m[j * 16u + c4 + 3u];
        }
        workgroupBarrier();
        join_s[i * 16u + c4] = a0;
        join_s[i * 16u + c4 + 1u] = a1;
        join_s[i * 16u + c4 + 2u] = a2;
        join_s[i * 16u + c4 + 3u] = a3;
        workgroupBarrier();
    }
    for (var k = 0u; k < 4u; k++) {
        state[at + t + 256u * k] = join_s[t + 256u * k];
    }
}
