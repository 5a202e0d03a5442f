// Grid-wide barrier for persistent kernels (grid_sync.rs): every workgroup of the dispatch
// waits until all `wgs` workgroups (the grid's size) have arrived. It needs every workgroup
// of the grid resident at once, which the host checks before it launches such a kernel.
// The kernel binds SYNC as its counters: word 0 the barrier's state, word 1 counts waits
// given up, word 2 the calibration's wrong words. The wait is bounded (`max_spins` loads):
// a grid that cannot be resident at once finishes with wrong results and a nonzero word 1,
// never hangs.
//
// Word 0 holds the arrivals so far in its low SYNC_COUNT_BITS bits and a generation above.
// The last to arrive moves to the next generation and zeroes the count in one atomic add,
// so the barrier resets itself (dispatch after dispatch, with no host work) and no later
// arrival can be counted before the reset.
//
// Memory: storageBarrier() is a workgroup control barrier with device-scope acquire-release
// semantics on storage memory (naga's SPIR-V: CUDA's grid.sync pattern of barrier, fence,
// atomic, spin, fence, barrier). That orders atomics only: naga declares no storage buffer
// coherent, and on an H200 plain loads after the barrier still saw other workgroups' stale
// words. So data that crosses workgroups within a dispatch is written and read with atomics
// (atomicStore / atomicLoad of u32 words; relaxed loads go to the L2 at a load's cost).

const SYNC_COUNT_BITS: u32 = 13u;

// Called by every thread of every workgroup, in uniform control flow.
fn grid_sync(tid: u32, wgs: u32, max_spins: u32) {
    storageBarrier();
    if tid == 0u {
        let old = atomicAdd(&SYNC[0], 1u);
        if (old & ((1u << SYNC_COUNT_BITS) - 1u)) == wgs - 1u {
            atomicAdd(&SYNC[0], (1u << SYNC_COUNT_BITS) - wgs);
        } else {
            let generation = old >> SYNC_COUNT_BITS;
            var spins = 0u;
            loop {
                if (atomicLoad(&SYNC[0]) >> SYNC_COUNT_BITS) != generation {
                    break;
                }
                spins += 1u;
                if spins >= max_spins {
                    atomicAdd(&SYNC[1], 1u);
                    break;
                }
            }
        }
    }
    storageBarrier();
}

// Calibration (GridSync::calibrate): `rounds` barriers, each checked. Every workgroup
// writes a word per round into SYNC (from word 4: two slots of `wgs` words), then reads all
// of that round's words and counts the wrong ones in word 2. (With atomics: plain storage
// accesses are not coherent between the workgroups of a dispatch; measured on an H200,
// most such reads saw stale words.) `wg_size` is the kernel's workgroup size.
fn grid_sync_probe(tid: u32, wg: u32, wgs: u32, wg_size: u32, rounds: u32, max_spins: u32) {
    for (var r = 0u; r < rounds; r++) {
        let slot = 4u + (r & 1u) * wgs;
        if tid == 0u {
            atomicStore(&SYNC[slot + wg], r * 7919u + wg + 1u);
        }
        grid_sync(tid, wgs, max_spins);
        var bad = 0u;
        for (var j = tid; j < wgs; j += wg_size) {
            bad += u32(atomicLoad(&SYNC[slot + j]) != r * 7919u + j + 1u);
        }
        if bad != 0u {
            atomicAdd(&SYNC[2], bad);
        }
    }
}
