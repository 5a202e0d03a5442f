// Sampling, one workgroup of WG invocations (a power of two, prepended by sample.rs) per
// logits row. The algorithm is the one specified at the top of
// the rwkv-sampler crate (crates/sampler/src/lib.rs), step for step, and rwkv_sampler's CPU
// sampler picks the same token for the same logits, counts, parameters and step counter:
// floats only in single +, -, * operations (products are kept from being fused into FMAs), a
// maximum and one conversion; integers from the weights on (64-bit sums as vec2<u32>, low
// word first), so neither exp nor the order of summation can make the two disagree.
//
// Each row reads its slot from slots[row] and writes the sampled token id to ids[row] (where a
// chained step's first dispatch reads it, feed_sampled.wgsl); the slot's penalty counts and
// step counter are updated in place.

struct Info {
    vocab: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// rwkv_sampler::Prepared::words().
struct Params {
    k: f32,
    presence: f32,
    frequency: f32,
    decay: f32,
    greedy: u32,
    top_k: u32,
    top_p: u32,
    min_w: u32,
    seed_lo: u32,
    seed_hi: u32,
    // Always 0, but the compiler cannot know: see opaque().
    zero: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> info: Info;
@group(0) @binding(1) var<storage, read> logits: array<f32>;         // [rows][vocab]
@group(0) @binding(2) var<storage, read> params: array<Params>;      // [slots]
@group(0) @binding(3) var<storage, read> table: array<u32>;          // rwkv_sampler::exp_table()
@group(0) @binding(4) var<storage, read_write> counts: array<f32>;   // [slots][vocab]
@group(0) @binding(5) var<storage, read_write> counters: array<u32>; // [slots]
@group(0) @binding(6) var<storage, read> slots: array<u32>;          // [rows]
@group(0) @binding(7) var<storage, read_write> weights: array<u32>;  // [rows][vocab]
@group(0) @binding(8) var<storage, read_write> ids: array<u32>;      // [rows]

const MIN_LOG2: f32 = -2621440.0; // -40 * 2^16
const COUNT_FLOOR_BITS: u32 = 0x1f800000u; // 2^-64
const NONE: u32 = 0xffffffffu;
// Loads an invocation issues together in the passes over the vocabulary: a loop that uses
// each load before the next waits out the memory latency once per load.
const BATCH: u32 = 8u;
// Invocations that read one run of consecutive ids together in step 5.
const TEAM: u32 = 32u;

var<workgroup> red64: array<vec2<u32>, WG>;
var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> shared_u: u32;
var<private> zero: u32;

// The product rounded to f32 on its own: xor with a value only known at run time (0) stops
// the compiler from contracting it with a following addition into an FMA, which rounds once.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ zero);
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn ge64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y > b.y || (a.y == b.y && a.x >= b.x);
}

fn gt64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y > b.y || (a.y == b.y && a.x > b.x);
}

// The full 64-bit product of two u32.
fn mul32(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return vec2<u32>((p00 & 0xffffu) | (mid << 16u), p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u));
}

// floor(a * b / 2^32), for results below 2^64.
fn mul_shr32(a: vec2<u32>, b: u32) -> vec2<u32> {
    return add64(mul32(a.y, b), vec2<u32>(mul32(a.x, b).y, 0u));
}

// rwkv_sampler::random: lowbias32 rounds over (seed, counter).
fn mix(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn random(seed_lo: u32, seed_hi: u32, counter: u32) -> u32 {
    var h = mix(seed_lo ^ 0x9e3779b9u);
    h = mix(h ^ seed_hi);
    h = mix(h ^ counter);
    return mix(h + 0x6a09e667u);
}

// Sum over the workgroup, the same value in every invocation.
fn sum64(tid: u32, v: vec2<u32>) -> vec2<u32> {
    red64[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if tid < s {
            red64[tid] = add64(red64[tid], red64[tid + s]);
        }
        workgroupBarrier();
    }
    let total = workgroupUniformLoad(&red64[0]);
    workgroupBarrier();
    return total;
}

// Invocation 0's `v`, in every invocation.
fn broadcast(tid: u32, v: u32) -> u32 {
    if tid == 0u {
        shared_u = v;
    }
    let out = workgroupUniformLoad(&shared_u);
    workgroupBarrier();
    return out;
}

// Step 1: the penalised logit.
fn penalised(l: f32, c: f32, p: Params) -> f32 {
    if c > 0.0 {
        return l - (p.presence + opaque(c * p.frequency));
    }
    return l;
}

// The penalised logits of ids i0, i0 + WG, .. (BATCH of them; ids past the vocabulary read
// its last one, for the caller to skip), all loads issued before any is used.
fn penalised_batch(i0: u32, lbase: u32, cbase: u32, vocab: u32, p: Params) -> array<f32, BATCH> {
    var xs: array<f32, BATCH>;
    for (var k = 0u; k < BATCH; k++) {
        let i = min(i0 + k * WG, vocab - 1u);
        xs[k] = penalised(logits[lbase + i], counts[cbase + i], p);
    }
    return xs;
}

// The weights of ids i0, i0 + stride, .. (BATCH of them, ids from `end` on reading id
// end - 1, for the caller to skip) of the row at `base`, all loads issued before any is used.
fn weights_batch(base: u32, i0: u32, stride: u32, end: u32) -> array<u32, BATCH> {
    var ws: array<u32, BATCH>;
    for (var k = 0u; k < BATCH; k++) {
        ws[k] = weights[base + min(i0 + k * stride, end - 1u)];
    }
    return ws;
}

// Step 3: the integer weight.
fn weight(x: f32, m: f32, k: f32) -> u32 {
    let d = max((x - m) * k, MIN_LOG2);
    let e = u32(-i32(d));
    let q = e >> 16u;
    if q >= 32u {
        return 0u;
    }
    return (table[(e >> 8u) & 0xffu] * table[256u + (e & 0xffu)]) >> q;
}

// Step 4's radix select: one 256-bin histogram of 64-bit sums (counts or masses) per pass,
// low and high words apart so that atomics can add to them, then copied to plain words,
// which the scan loads faster.
var<workgroup> bins_lo: array<atomic<u32>, 256>;
var<workgroup> bins_hi: array<atomic<u32>, 256>;
var<workgroup> bins: array<vec2<u32>, 256>;
var<workgroup> group_sum: array<vec2<u32>, 16>; // bins 16g to 16g + 15
var<workgroup> choice: vec4<u32>;               // the pass's byte, then its `above`

// Adds v to bin d. Each carry out of the low word is counted into the high one, so the bin
// holds the exact sum whatever order the invocations add in.
fn bin_add(d: u32, v: vec2<u32>) {
    let old = atomicAdd(&bins_lo[d], v.x);
    let hi = v.y + select(0u, 1u, old + v.x < old);
    if hi != 0u {
        atomicAdd(&bins_hi[d], hi);
    }
}

fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

// Step 4: the largest t in [0, 2^31] with F(t) >= need, F(t) the count (or mass) of
// {w >= t}. Radix select, a byte of t per pass from the top: `above` is F of the weights
// whose fixed high bytes exceed t's so far (less than need), the histogram sorts those
// equal to them by their next byte, and the pass takes the largest byte b with
// above + F(bytes >= b) >= need: the t a bisection over [0, 2^31] finds, in 4 passes over
// the weights instead of 32. With F(0) < need no byte qualifies and t is 0, as there.
fn threshold(tid: u32, base: u32, vocab: u32, need: vec2<u32>, mass: bool) -> u32 {
    var t = 0u;
    var above = vec2<u32>(0u, 0u);
    // Cleared here, then by each pass as it copies them out.
    for (var d = tid; d < 256u; d += WG) {
        atomicStore(&bins_lo[d], 0u);
        atomicStore(&bins_hi[d], 0u);
    }
    workgroupBarrier();
    for (var b = 0u; b < 4u; b++) {
        let shift = 24u - 8u * b;
        let fixed = ~(0xffffffffu >> (8u * b));
        // An invocation's weights in a row with the same byte take one atomic add: most
        // weights share a few small bytes, where the adds would queue. BATCH loads at a time,
        // all in flight before the adds.
        var run_d = NONE;
        var run = vec2<u32>(0u, 0u);
        for (var i0 = tid; i0 < vocab; i0 += BATCH * WG) {
            var ws = weights_batch(base, i0, WG, vocab);
            for (var k = 0u; k < BATCH; k++) {
                let w = ws[k];
                if i0 + k * WG < vocab && (w & fixed) == t {
                    let d = (w >> shift) & 0xffu;
                    if d != run_d {
                        if run_d != NONE {
                            bin_add(run_d, run);
                        }
                        run_d = d;
                        run = vec2<u32>(0u, 0u);
                    }
                    run = add64(run, vec2<u32>(select(1u, w, mass), 0u));
                }
            }
        }
        if run_d != NONE {
            bin_add(run_d, run);
        }
        workgroupBarrier();
        for (var d = tid; d < 256u; d += WG) {
            bins[d] = vec2<u32>(atomicExchange(&bins_lo[d], 0u), atomicExchange(&bins_hi[d], 0u));
        }
        workgroupBarrier();
        if tid < 16u {
            var s = vec2<u32>(0u, 0u);
            for (var e = 0u; e < 16u; e++) {
                s = add64(s, bins[tid * 16u + e]);
            }
            group_sum[tid] = s;
        }
        // Byte 0 unless one qualifies.
        if tid == 0u {
            choice = vec4<u32>(0u, above, 0u);
        }
        workgroupBarrier();
        // Byte d's invocation sums the bins from d up (the later groups by their sums; loops
        // of fixed length, whose loads are in flight together); the largest byte that
        // qualifies is the one whose next does not.
        for (var d = tid; d < 256u; d += WG) {
            let g = d / 16u;
            var s = above;
            for (var h = 0u; h < 16u; h++) {
                s = add64(s, select(vec2<u32>(0u, 0u), group_sum[h], h > g));
            }
            for (var e = 0u; e < 16u; e++) {
                s = add64(s, select(vec2<u32>(0u, 0u), bins[g * 16u + e], g * 16u + e >= d));
            }
            let next = sub64(s, bins[d]);
            if ge64(s, need) && !ge64(next, need) {
                choice = vec4<u32>(d, next, 0u);
            }
        }
        let c = workgroupUniformLoad(&choice);
        t |= c.x << shift;
        above = c.yz;
    }
    return t;
}

// Step 5's run holding the goal, the kept mass of the runs before it, and the goal.
struct Draw {
    run: u32,
    before: vec2<u32>,
    goal: vec2<u32>,
}

var<workgroup> draw: Draw;

// Step 5: the kept (>= t) mass of the weights from `first` up to `end`, `stride` apart.
fn kept_mass(base: u32, first: u32, end: u32, stride: u32, t: u32) -> vec2<u32> {
    var mass = vec2<u32>(0u, 0u);
    for (var i0 = first; i0 < end; i0 += BATCH * stride) {
        var ws = weights_batch(base, i0, stride, end);
        for (var k = 0u; k < BATCH; k++) {
            if i0 + k * stride < end && ws[k] >= t {
                mass = add64(mass, vec2<u32>(ws[k], 0u));
            }
        }
    }
    return mass;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wg.x;
    let vocab = info.vocab;
    let slot = broadcast(tid, slots[row]);
    let p = params[slot];
    zero = p.zero;
    let lbase = row * vocab;
    let cbase = slot * vocab;
    // (Read before invocation 0 advances it at the end.)
    let counter = counters[slot];

    // Steps 1 and 2: the largest penalised logit and the lowest id holding it.
    var best = -3.0e38;
    var best_i = NONE;
    for (var i0 = tid; i0 < vocab; i0 += BATCH * WG) {
        var xs = penalised_batch(i0, lbase, cbase, vocab, p);
        for (var k = 0u; k < BATCH; k++) {
            let i = i0 + k * WG;
            if i < vocab && (best_i == NONE || xs[k] > best) {
                best = xs[k];
                best_i = i;
            }
        }
    }
    red_f[tid] = best;
    red_i[tid] = best_i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if tid < s {
            let v = red_f[tid + s];
            let j = red_i[tid + s];
            let i = red_i[tid];
            if j != NONE && (i == NONE || v > red_f[tid] || (v == red_f[tid] && j < i)) {
                red_f[tid] = v;
                red_i[tid] = j;
            }
        }
        workgroupBarrier();
    }
    let m = workgroupUniformLoad(&red_f[0]);
    var chosen = workgroupUniformLoad(&red_i[0]);
    workgroupBarrier();

    if broadcast(tid, p.greedy) == 0u {
        // Step 3: weights, and their total.
        var part = vec2<u32>(0u, 0u);
        for (var i0 = tid; i0 < vocab; i0 += BATCH * WG) {
            var xs = penalised_batch(i0, lbase, cbase, vocab, p);
            for (var k = 0u; k < BATCH; k++) {
                let i = i0 + k * WG;
                if i < vocab {
                    let w = weight(xs[k], m, p.k);
                    weights[lbase + i] = w;
                    part = add64(part, vec2<u32>(w, 0u));
                }
            }
        }
        // The draw below reads weights other invocations wrote.
        storageBarrier();
        let total = sum64(tid, part);

        // Step 4: the threshold.
        var t = p.min_w;
        let top_k = broadcast(tid, p.top_k);
        if top_k != 0u && top_k < vocab {
            t = max(t, threshold(tid, lbase, vocab, vec2<u32>(top_k, 0u), false));
        }
        let top_p = broadcast(tid, p.top_p);
        if top_p != 0u {
            var need = mul_shr32(total, top_p);
            if need.x == 0u && need.y == 0u {
                need = vec2<u32>(1u, 0u);
            }
            t = max(t, threshold(tid, lbase, vocab, need, true));
        }

        // Step 5: inverse CDF in id order, in two levels. Teams of TEAM invocations sum the
        // kept weights of one run of consecutive ids each (the team's loads side by side);
        // invocation 0 finds the run holding the goal; then each invocation sums a part of
        // that run, a scan finds the part holding the goal, and its invocation walks it.
        let runs = WG / TEAM;
        let run = (vocab + runs - 1u) / runs;
        let lane = tid % TEAM;
        let first = min(tid / TEAM * run, vocab);
        red64[tid] = kept_mass(lbase, first + lane, min(first + run, vocab), TEAM, t);
        workgroupBarrier();
        for (var s = TEAM / 2u; s > 0u; s = s / 2u) {
            if lane < s {
                red64[tid] = add64(red64[tid], red64[tid + s]);
            }
            workgroupBarrier();
        }
        if tid == 0u {
            var kept = vec2<u32>(0u, 0u);
            for (var j = 0u; j < runs; j++) {
                kept = add64(kept, red64[j * TEAM]);
            }
            let goal = mul_shr32(kept, random(p.seed_lo, p.seed_hi, counter));
            var acc = vec2<u32>(0u, 0u);
            var j = 0u;
            for (; j < runs - 1u; j++) {
                let next = add64(acc, red64[j * TEAM]);
                if gt64(next, goal) {
                    break;
                }
                acc = next;
            }
            draw = Draw(j, acc, goal);
            // (The pick if no part held the goal, which cannot be: it is below the total.)
            shared_u = NONE;
        }
        let found = workgroupUniformLoad(&draw);
        let lo = min(found.run * run, vocab);
        let hi = min(lo + run, vocab);
        let part_len = (hi - lo + WG - 1u) / WG;
        let start = min(lo + tid * part_len, hi);
        let end = min(start + part_len, hi);
        let mass = kept_mass(lbase, start, end, 1u, t);
        // Inclusive prefix sums of the parts' masses.
        red64[tid] = mass;
        workgroupBarrier();
        for (var s = 1u; s < WG; s = s * 2u) {
            var v = red64[tid];
            if tid >= s {
                v = add64(v, red64[tid - s]);
            }
            workgroupBarrier();
            red64[tid] = v;
            workgroupBarrier();
        }
        var acc = add64(found.before, sub64(red64[tid], mass));
        if !gt64(acc, found.goal) && gt64(add64(found.before, red64[tid]), found.goal) {
            for (var i0 = start; i0 < end; i0 += BATCH) {
                var ws = weights_batch(lbase, i0, 1u, end);
                var pick = NONE;
                for (var k = 0u; k < BATCH; k++) {
                    if pick == NONE && i0 + k < end && ws[k] >= t {
                        acc = add64(acc, vec2<u32>(ws[k], 0u));
                        if gt64(acc, found.goal) {
                            pick = i0 + k;
                        }
                    }
                }
                if pick != NONE {
                    shared_u = pick;
                    break;
                }
            }
        }
        chosen = workgroupUniformLoad(&shared_u);
    }

    // Step 6: decay every count, count the token, advance the step counter.
    let count_floor = bitcast<f32>(COUNT_FLOOR_BITS);
    for (var i0 = tid; i0 < vocab; i0 += BATCH * WG) {
        var cs: array<f32, BATCH>;
        for (var k = 0u; k < BATCH; k++) {
            cs[k] = counts[cbase + min(i0 + k * WG, vocab - 1u)];
        }
        for (var k = 0u; k < BATCH; k++) {
            let i = i0 + k * WG;
            var c = opaque(cs[k] * p.decay);
            if c < count_floor {
                c = 0.0;
            }
            if i == chosen {
                c = c + 1.0;
            }
            if i < vocab {
                counts[cbase + i] = c;
            }
        }
    }
    if tid == 0u {
        counters[slot] = counter + 1u;
        ids[row] = chosen;
    }
}
