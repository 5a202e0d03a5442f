// grid_sync.rs's kernels (rwkv-gpu's grid_sync.wgsl is prepended).
// Round r: every workgroup writes a word derived from (r, its id) into slot r % 2, then
// (after the barrier, or in the next dispatch for `chained`) reads every workgroup's word of
// that round and counts the wrong ones.

struct Params {
    rounds: u32,
    // The round of a `chained` dispatch.
    round: u32,
    // The barrier's bound on its spin.
    max_spins: u32,
    // Where round r's words go: 0 slot r % 2 (reused), 1 slot r (fresh memory every round).
    fresh: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> SYNC: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read_write> data: array<u32>;
@group(0) @binding(3) var<storage, read_write> errors: array<atomic<u32>>;

fn word(r: u32, wg: u32) -> u32 {
    return r * 7919u + wg * 31u + 1u;
}

fn slot(r: u32, wgs: u32) -> u32 {
    return select(r & 1u, r, p.fresh == 1u) * wgs;
}

fn check(r: u32, tid: u32, wgs: u32) {
    let slot = slot(r, wgs);
    var bad = 0u;
    for (var j = tid; j < wgs; j += 256u) {
        bad += u32(data[slot + j] != word(r, j));
    }
    if bad != 0u {
        atomicAdd(&errors[0], bad);
    }
}

@compute @workgroup_size(256)
fn persistent(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    for (var r = 0u; r < p.rounds; r++) {
        if tid == 0u {
            data[slot(r, nwg.x) + wg.x] = word(r, wg.x);
        }
        grid_sync(tid, nwg.x, p.max_spins);
        check(r, tid, nwg.x);
    }
}

// The same with atomic words: rwkv-gpu's calibration check (wrong words into SYNC[2]).
@compute @workgroup_size(256)
fn persistent_atomic(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    grid_sync_probe(tid, wg.x, nwg.x, 256u, p.rounds, p.max_spins);
}

// One round per dispatch: checks the previous round's words, writes this round's.
@compute @workgroup_size(256)
fn chained(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    if p.round > 0u {
        check(p.round - 1u, tid, nwg.x);
    } else if p.rounds == 1u {
        // (Never true: keeps SYNC in this entry point's bindings, which `bind` fills.)
        atomicAdd(&SYNC[1], 0u);
    }
    if tid == 0u {
        data[(p.round & 1u) * nwg.x + wg.x] = word(p.round, wg.x);
    }
}
