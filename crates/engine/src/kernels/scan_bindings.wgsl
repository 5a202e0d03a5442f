// What both WKV scans (wkv7_scan.wgsl, wkv7_chunked.wgsl) share, after scan_blocks.wgsl and
// a header with CHUNKED_FROM: their bindings, and which chunks each takes.

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
// [rows][heads][POST_BLOCKS][HEAD_SIZE]: the scans write block POST_Y.
@group(0) @binding(5) var<storage, read_write> post_in: array<f32>;

// Whether a chunk of `n_rows` tokens takes the matrix-form scan (wkv7_chunked.wgsl) rather
// than the token-by-token one (CHUNKED_FROM 0: none does; engine.rs's ChunkedFrom decides
// which of the two a step dispatches by the same rule).
fn takes_matrix_form(n_rows: u32) -> bool {
    return CHUNKED_FROM != 0u && n_rows >= CHUNKED_FROM;
}
