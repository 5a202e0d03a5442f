// The first dispatch of a chained step (see `Engine::submit_sample_step`): rows whose token
// is not known on the CPU feed the id that the sampling step before sampled for their
// sequence. Their entry in the token table is `SAMPLED | k`, k being the logits row of that
// step, whose ids stay in the sampler's `ids` buffer. One workgroup walks the rows.
// Composed (Kernels::feed_sampled_wgsl) after step.wgsl and the constant SAMPLED
// (kernels::SAMPLED_TOKEN).

@group(0) @binding(0) var<uniform> STEP: Step;
@group(0) @binding(1) var<storage, read_write> TOKENS: array<u32>;
@group(0) @binding(2) var<storage, read> KEPT: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32) {
    for (var r = li; r < STEP.n_rows; r += 64u) {
        let t = TOKENS[r];
        if ((t & SAMPLED) != 0u) {
            TOKENS[r] = KEPT[t & ~SAMPLED];
        }
    }
}
