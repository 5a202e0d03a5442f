// Writes a workgroup's 256 values (one per thread; every thread calls these together, in
// uniform control flow) as one tile of rwkv-gpu's Q8Input layout through the kernel's
// `xq_store(word, value)`, as rwkv-gpu's quantize_q8.wgsl does: the codes of tile `blk` at
// words codes + 64 blk.., its scales from word d, and for Q8_K its sums per 16 from word bs.
// For token_mix.wgsl and layer_tail.wgsl (q8_pack.wgsl, q8_blocks.wgsl, the reductions
// and rounding.wgsl are prepended).

// One Q8_K block.
fn store_q8k(lane: Lane, v: f32, blk: u32, codes: u32, d_at: u32, bs: u32) {
    let t = lane.tid;
    block_vals[t] = v;
    let iscale = q8k_iscale(block_vals[argmax_abs_256(lane, v)]);
    let d = q8k_scale(iscale);
    q8_codes[t] = i32(q8k_code(iscale, v));
    workgroupBarrier();
    if t < 64u {
        xq_store(codes + blk * 64u + t, q8_word(t));
    } else if t < 80u {
        let g = t - 64u;
        xq_store(bs + blk * 16u + g, bitcast<u32>(q8_sum16(g)));
    } else if t == 80u {
        xq_store(d_at + blk, bitcast<u32>(d));
    }
    // block_vals and q8_codes are reused by the next call.
    workgroupBarrier();
}

// Eight Q8_0 blocks of 32, their scales rounded to f16.
fn store_q8_0(tid: u32, v: f32, blk: u32, codes: u32, d_at: u32) {
    let d = q8_0_scale(block_amax_32(tid, v));
    q8_codes[tid] = i32(round(v * q8_0_inverse(d)));
    if tid % 32u == 0u {
        xq_store(d_at + blk * 8u + tid / 32u, bitcast<u32>(round_f16(d)));
    }
    workgroupBarrier();
    if tid < 64u {
        xq_store(codes + blk * 64u + tid, q8_word(tid));
    }
    // q8_codes is reused by the next call.
    workgroupBarrier();
}
