// The shared part of a persistent kernel's matvec phases (persistent.rs): the phases'
// matrix struct and the rows' partial sums. Each phase reads its input through the
// kernel's `xq_word(i)`, quantized to 8-bit blocks (rwkv-gpu's Q8Input layout) by an earlier
// phase of the same dispatch, before a grid barrier.

// A matrix of a phase (one part, one binding): mirrors PhaseMatrix in persistent.rs.
struct PhaseMatrix {
    rows: u32,
    blocks_per_row: u32,
    row_words: u32,
    // Word index of the side scales (types that have them).
    scale_base: u32,
}

var<workgroup> PX_ROWSUM: array<f32, PWG_SIZE>;
