// Saves the token-shift state of each chunk's sequence: the normalised input of its last token.
// Runs after every kernel that reads the old state, so readers and the writer never race.

struct Params {
    dim: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Step {
    n_rows: u32,
    n_chunks: u32,
    n_out: u32,
    _pad: u32,
}

// A chunk: consecutive rows of one sequence.
struct Chunk {
    slot: u32,
    first_row: u32,
    n_rows: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> att_x: array<f32>;
@group(0) @binding(3) var<storage, read> ffn_x: array<f32>;
@group(0) @binding(4) var<storage, read_write> att_state: array<f32>;
@group(0) @binding(5) var<storage, read_write> ffn_state: array<f32>;
@group(0) @binding(6) var<storage, read> chunks: array<Chunk>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    if wg.x >= step.n_chunks {
        return;
    }
    let chunk = chunks[wg.x];
    let last = chunk.first_row + chunk.n_rows - 1u;
    for (var c = tid; c < p.dim; c += 256u) {
        att_state[chunk.slot * p.dim + c] = att_x[last * p.dim + c];
        ffn_state[chunk.slot * p.dim + c] = ffn_x[last * p.dim + c];
    }
}
