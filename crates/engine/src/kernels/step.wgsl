// The step's shape and its chunk table, shared by the engine's kernels (prepended by
// kernels/mod.rs; mirrors the Rust side's step tables).

struct Step {
    n_rows: u32,
    n_chunks: u32,
    n_out: u32,
    _pad: u32,
}

struct Chunk {
    slot: u32,
    first_row: u32,
    n_rows: u32,
    _pad: u32,
}

// A row of the step's token-shift table (token_mix.wgsl, layer_tail.wgsl).
struct Row {
    slot: u32,
    // Row of the previous token in this step, or NO_PREV.
    prev: u32,
    // Half of the shift state that holds this sequence's current state.
    half: u32,
    // 1 for the last row of its chunk: it saves the new state.
    last: u32,
}

const NO_PREV: u32 = 0xffffffffu;
