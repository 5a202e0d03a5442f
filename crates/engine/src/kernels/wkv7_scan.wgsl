// (A header with CHUNKED_FROM (see below), LANES, the lanes per state row, SCAN_ROWS, the consecutive state rows a
// group of LANES lanes updates, SCAN_WG, the threads per workgroup, and WGS_PER_HEAD = 64
// LANES / SCAN_ROWS / SCAN_WG, the generated row code, step.wgsl, the Step and Chunk
// structs, scan_blocks.wgsl and scan_bindings.wgsl are prepended.)
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

// The per-token record of a head in scan_in, in vec4s: the SCAN_BLOCKS blocks.
const RECORD: u32 = SCAN_BLOCKS * HEAD_SIZE / 4u;

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
    // Long chunks take the matrix form (wkv7_chunked.wgsl).
    if takes_matrix_form(chunk.n_rows) {
        return;
    }
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
