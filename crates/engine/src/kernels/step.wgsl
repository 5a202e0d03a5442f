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
