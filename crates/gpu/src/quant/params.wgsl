// The uniform parameters of one matrix part (mirrors `Params` in matmul.rs), shared by every
// matrix kernel: the decoders through quant/common.wgsl and the tensor-core product, which
// reads f16 scratch copies instead of the weights.

struct Params {
    rows: u32,           // rows in this part
    cols: u32,           // values per row
    blocks_per_row: u32, // GPU blocks per row
    row_words: u32,      // body words per row
    scale_base: u32,     // word index of the side f16 scales in W
    row_start: u32,      // first row of this part in the whole matrix
    in_offset: u32,      // element offset of the input (x, or token ids)
    in_stride: u32,      // elements between tokens' inputs
    out_offset: u32,     // element offset of the output
    out_stride: u32,     // elements between tokens' outputs
    max_tokens: u32,     // the count read from the step buffer is clamped to this
    first_row: u32,      // tensor-core weight decode: the slice's first row in the part
    k_split: u32,        // tensor-core product: parts of the columns (0 or 1: not split)
    // Tensor-core product of a stack of matrices (matmul_coop.wgsl): each matrix's input
    // block (8 bits each), the elements per block, and each matrix's epilogue (4 bits each);
    // the row where each matrix ends (x = 0: no stack; the last one and unused ones
    // 0xffffffff), what is added (wrapping) to matrix g's output index, its rows written
    // (the rest of its row range is padding, computed and not written), its columns (a
    // multiple of the column chunk) and where its f16 rows start in W16 (row-major).
    stack_in: u32,
    stack_block: u32,
    stack_epilogues: u32,
    stack_ends: vec4<u32>,
    stack_shift: vec4<u32>,
    stack_rows: vec4<u32>,
    stack_cols: vec4<u32>,
    stack_base: vec4<u32>,
}

@group(0) @binding(1) var<uniform> P: Params;

// The matrix of a stack that row `row` of the product belongs to (0 outside a stack).
fn stack_matrix(row: u32) -> u32 {
    let e = P.stack_ends;
    return select(0u, u32(row >= e.x) + u32(row >= e.y) + u32(row >= e.z), e.x != 0u);
}

// The epilogue of matrix g of a stack, else `kind` (the pipeline's).
fn stack_epilogue(g: u32, kind: u32) -> u32 {
    return select(kind, (P.stack_epilogues >> (4u * g)) & 0xfu, P.stack_ends.x != 0u);
}

// The first row of matrix g of a stack (0 outside one).
fn stack_start(g: u32) -> u32 {
    return select(0u, P.stack_ends[max(g, 1u) - 1u], g > 0u);
}

// Whether row `row` of the product is written: outside a stack every row (below P.rows, the
// caller's test), in a stack those of its matrix's rows (not its padding).
fn stack_writes(g: u32, row: u32) -> bool {
    return P.stack_ends.x == 0u || row - stack_start(g) < P.stack_rows[g];
}
