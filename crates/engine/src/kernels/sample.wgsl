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
const ONE: u32 = 0x80000000u;
const COUNT_FLOOR_BITS: u32 = 0x1f800000u; // 2^-64
const NONE: u32 = 0xffffffffu;

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

// Step 4: the largest t in [0, 2^31] with (count or mass of {w >= t}) >= need.
fn bisect(tid: u32, base: u32, vocab: u32, need: vec2<u32>, mass: bool) -> u32 {
    var lo = 0u;
    var hi = ONE + 1u;
    for (var it = 0u; it < 32u; it++) {
        let mid = lo + (hi - lo) / 2u;
        var part = vec2<u32>(0u, 0u);
        for (var i = tid; i < vocab; i += WG) {
            let w = weights[base + i];
            if w >= mid {
                part = add64(part, vec2<u32>(select(1u, w, mass), 0u));
            }
        }
        if ge64(sum64(tid, part), need) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
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

    // Steps 1 and 2: the largest penalised logit and the lowest id holding it.
    var best = -3.0e38;
    var best_i = NONE;
    for (var i = tid; i < vocab; i += WG) {
        let x = penalised(logits[lbase + i], counts[cbase + i], p);
        if best_i == NONE || x > best {
            best = x;
            best_i = i;
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
        for (var i = tid; i < vocab; i += WG) {
            let w = weight(penalised(logits[lbase + i], counts[cbase + i], p), m, p.k);
            weights[lbase + i] = w;
            part = add64(part, vec2<u32>(w, 0u));
        }
        // The draw below reads weights other invocations wrote.
        storageBarrier();
        let total = sum64(tid, part);

        // Step 4: the threshold.
        var t = p.min_w;
        let top_k = broadcast(tid, p.top_k);
        if top_k != 0u && top_k < vocab {
            t = max(t, bisect(tid, lbase, vocab, vec2<u32>(top_k, 0u), false));
        }
        let top_p = broadcast(tid, p.top_p);
        if top_p != 0u {
            var need = mul_shr32(total, top_p);
            if need.x == 0u && need.y == 0u {
                need = vec2<u32>(1u, 0u);
            }
            t = max(t, bisect(tid, lbase, vocab, need, true));
        }

        // Step 5: inverse CDF in id order. Invocation j sums the kept weights of the j-th
        // run of consecutive ids; invocation 0 finds the run holding the goal and walks it.
        let run = (vocab + WG - 1u) / WG;
        let start = min(tid * run, vocab);
        let end = min(start + run, vocab);
        var mass = vec2<u32>(0u, 0u);
        for (var i = start; i < end; i++) {
            let w = weights[lbase + i];
            if w >= t {
                mass = add64(mass, vec2<u32>(w, 0u));
            }
        }
        red64[tid] = mass;
        workgroupBarrier();
        if tid == 0u {
            var kept = vec2<u32>(0u, 0u);
            for (var j = 0u; j < WG; j++) {
                kept = add64(kept, red64[j]);
            }
            let goal = mul_shr32(kept, random(p.seed_lo, p.seed_hi, counters[slot]));
            var acc = vec2<u32>(0u, 0u);
            var j = 0u;
            for (; j < WG - 1u; j++) {
                let next = add64(acc, red64[j]);
                if gt64(next, goal) {
                    break;
                }
                acc = next;
            }
            var pick = NONE;
            for (var i = j * run; i < min(j * run + run, vocab); i++) {
                let w = weights[lbase + i];
                if w >= t {
                    acc = add64(acc, vec2<u32>(w, 0u));
                    if gt64(acc, goal) {
                        pick = i;
                        break;
                    }
                }
            }
            shared_u = pick;
        }
        chosen = workgroupUniformLoad(&shared_u);
    }

    // Step 6: decay every count, count the token, advance the step counter.
    let count_floor = bitcast<f32>(COUNT_FLOOR_BITS);
    for (var i = tid; i < vocab; i += WG) {
        var c = opaque(counts[cbase + i] * p.decay);
        if c < count_floor {
            c = 0.0;
        }
        if i == chosen {
            c = c + 1.0;
        }
        counts[cbase + i] = c;
    }
    if tid == 0u {
        counters[slot] = counters[slot] + 1u;
        ids[row] = chosen;
    }
}
