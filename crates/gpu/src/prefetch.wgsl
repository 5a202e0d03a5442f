// Reads one word of every 32-byte sector of a weight buffer, so that the sectors are in the
// L2 cache when a later kernel reads them (prefetch.rs). The loads' results feed a store
// that practically never happens, so the compiler keeps them.

struct Params {
    words: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    var acc = 0u;
    let stride = nwg.x * 256u * 8u;
    for (var i = gid.x * 8u; i < p.words; i += stride) {
        acc ^= W[i];
    }
    if acc == 0x9e3779b9u {
        sink[0] = acc;
    }
}
