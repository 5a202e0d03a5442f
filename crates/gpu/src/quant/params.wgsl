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
    // Tensor-core product of a stack of matrices (matmul_coop.wgsl): rows per matrix (0: no
    // stack), each matrix's input block (8 bits each), and the elements per block (matrix g
    // reads block stack_in[g] of the input and writes block g of the output).
    stack_rows: u32,
    stack_in: u32,
    stack_block: u32,
}

@group(0) @binding(1) var<uniform> P: Params;
