//! The arithmetic of llama.cpp's CPU backend, reproduced bit for bit.
//!
//! The fixtures' logits come from llama.cpp's CPU build (x86 AVX2 + FMA + F16C, no AVX-512)
//! running the prompt as one batch. Matching them within 1e-4 takes more than f32 math:
//! before every matrix product ggml rounds the activations to the weight's `vec_dot_type`
//! (F16 → f16, BF16 → bf16, Q4_0/Q5_0/Q8_0 → Q8_0, Q4_1/Q5_1 → Q8_1, K-quants → Q8_K), and
//! that rounding amplifies the last bit of its input: one ulp that moves one activation
//! across a Q8 rounding boundary changes that product by ~1e-3 relative. Over a 131-token
//! prompt such flips happen at most positions unless the reference computes the *same bits*
//! as ggml wherever a value is later rounded, i.e. the same summation order, the same fused
//! multiply-adds and the same integer dot products as the kernels llama.cpp runs.
//!
//! This module holds that arithmetic (written from the kernels' definitions, not their code):
//!
//! * [`GgmlMatrix`]: a weight in its file encoding, multiplied the way ggml's kernel for it
//!   does. ggml picks the kernel from the weight type, its shape and the number of tokens in
//!   the batch ([`BatchSlot`]): llamafile's tinyBLAS for F16/BF16 batches; tinyBLAS_Q0 and
//!   `ggml_vec_dot_q*_0_q8_0` (same rounding) for Q8_0/Q5_0; the repacked 8-column GEMM/GEMV
//!   for Q4_0 and Q4_K; the "tiled" K-quant GEMM for batches of 8 or more; and the AVX2
//!   `ggml_vec_dot_*` kernels otherwise.
//! * [`norm`], [`l2_norm`], [`sum`], [`wkv7`]: ggml's reductions, which accumulate in f64 or
//!   in 8-lane SIMD registers with FMA and so round differently from a left-to-right f32 sum.
//!
//! The transcendentals need nothing special: ggml calls libm's `tanhf`/`expf`, as Rust's
//! `f32` methods do. All of this was checked against llama.cpp itself (the revision the
//! fixtures name, built for AVX2): every logit of every fixture, and batches of 1–17 tokens,
//! come out bit-identical.

use gguf::GgmlType;
use half::{bf16, f16};

/// Arithmetic of the CPU reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations times exactly decoded weights.
    #[default]
    Exact,
    /// llama.cpp's CPU arithmetic, bit for bit (see the module docs).
    LlamaCpp,
}

/// Where a token sits in the llama.cpp micro-batch that computes it. ggml picks matrix
/// kernels by the number of tokens in the batch, and the repacked Q4_K GEMM leaves the last
/// `len % 4` tokens to a GEMV that rounds differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSlot {
    /// Tokens in the micro-batch.
    pub len: usize,
    /// This token's index in it.
    pub index: usize,
}

impl BatchSlot {
    /// One token decoded on its own, as in generation.
    pub const SINGLE: BatchSlot = BatchSlot { len: 1, index: 0 };
}

/// llama.cpp's default micro-batch size (`n_ubatch`, also llama-cpp-python's `n_batch`):
/// longer prompts are computed in chunks of this many tokens.
pub const UBATCH: usize = 512;

// ---------------------------------------------------------------------------------------
// Horizontal sums of 8-lane registers. IEEE addition is commutative, so only the grouping
// matters.

/// `hsum_float_8` and tinyBLAS's `hsum`: lanes i and i+4, then (0+2) + (1+3).
fn hsum8(v: &[f32; 8]) -> f32 {
    let a = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// `GGML_F32x8_REDUCE` of four accumulators: (x0+x2) + (x1+x3) lane-wise, lanes i and i+4,
/// then (0+1) + (2+3) (two `hadd`s).
fn reduce4x8(x: &[[f32; 8]; 4]) -> f32 {
    let s: [f32; 8] = std::array::from_fn(|l| (x[0][l] + x[2][l]) + (x[1][l] + x[3][l]));
    let t = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// Fused multiply-add, `a * b + c` rounded once (`_mm256_fmadd_ps`, or a C `a * b + c` that
/// GCC contracts).
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

fn read_f16(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

// ---------------------------------------------------------------------------------------
// Reductions of the model math.

/// `ggml_vec_sum_f32` (and so `ggml_sum_rows`): a left-to-right sum in f64, rounded once.
pub fn sum(x: impl IntoIterator<Item = f32>) -> f32 {
    x.into_iter().map(f64::from).sum::<f64>() as f32
}

/// `ggml_norm` (layer norm without the affine part): the mean from [`sum`]; the variance from
/// the squares of `x - mean` taken 8 at a time, each 8 reduced in f32 and the reductions
/// added in f64; then `(x - mean) * (1 / sqrt(var + eps))`.
pub fn norm(x: &[f32], eps: f32) -> Vec<f32> {
    let n = x.len();
    let mean = sum(x.iter().copied()) / n as f32;
    let y: Vec<f32> = x.iter().map(|v| v - mean).collect();
    let mut squares = 0.0f64;
    let mut eights = y.chunks_exact(8);
    for c in &mut eights {
        squares += f64::from(hsum8(&std::array::from_fn(|l| c[l] * c[l])));
    }
    for v in eights.remainder() {
        squares += f64::from(v * v);
    }
    let variance = (squares / n as f64) as f32;
    let scale = 1.0 / (variance + eps).sqrt();
    y.into_iter().map(|v| v * scale).collect()
}

/// `ggml_l2_norm`: the squares added in f64, then `x * (1 / max(sqrt(sum), eps))`.
pub fn l2_norm(x: &mut [f32], eps: f32) {
    let squares = x.iter().map(|v| f64::from(v * v)).sum::<f64>() as f32;
    let scale = 1.0 / squares.sqrt().max(eps);
    x.iter_mut().for_each(|v| *v *= scale);
}

/// One head of `ggml_rwkv_wkv7` for one token: `state` is `n × n` with row i (value index)
/// contiguous over j (key index), `a`/`b` the op's inputs (`-kk` and `kk * a` in RWKV-7).
/// Per row, `sa = Σ_j a_j S_ij`, `S'_ij = fma(sa, b_j, fma(S_ij, w_j, v_i k_j))` and
/// `y_i = Σ_j S'_ij r_j`, both sums in four 8-lane FMA accumulators (`GGML_F32_STEP` = 32)
/// reduced by `GGML_F32x8_REDUCE`. Head sizes that are not a multiple of 32 (which the ggml
/// kernel does not handle) fall back to plain sums.
#[allow(clippy::too_many_arguments)]
pub fn wkv7(
    state: &mut [f32],
    r: &[f32],
    w: &[f32],
    k: &[f32],
    v: &[f32],
    a: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    let n = r.len();
    let simd = n.is_multiple_of(32);
    // Element j goes to accumulator (j % 32) / 8, lane j % 8.
    let sum_lanes = |f: &dyn Fn(usize) -> (f32, f32)| -> f32 {
        if simd {
            let mut acc = [[0.0f32; 8]; 4];
            for j in 0..n {
                let (x, y) = f(j);
                let slot = &mut acc[(j % 32) / 8][j % 8];
                *slot = fma(x, y, *slot);
            }
            reduce4x8(&acc)
        } else {
            (0..n).map(|j| f(j).0 * f(j).1).sum()
        }
    };
    for i in 0..n {
        let row = &mut state[i * n..(i + 1) * n];
        let sa = sum_lanes(&|j| (a[j], row[j]));
        for j in 0..n {
            let kv = v[i] * k[j];
            row[j] = fma(sa, b[j], fma(row[j], w[j], kv));
        }
        y[i] = sum_lanes(&|j| (row[j], r[j]));
    }
}

// ---------------------------------------------------------------------------------------
// Activation quantizers: the `from_float` of each vec_dot_type in the AVX2 build.

/// A 32-element activation block: Q8_0, or Q8_1 with its `s`.
struct Q8Block {
    /// The scale as stored (f16).
    d: f32,
    /// Q8_1 only: `d · Σq` (with the f32 `d`), stored as f16.
    s: f32,
    q: [i8; 32],
}

/// `quantize_row_q8_0`/`_q8_1` and `ggml_quantize_mat_q8_0_4x8` (AVX2): `d = amax / 127`
/// stored as f16 and `q = round_half_even(x · (127 / amax))`. The multiplier is
/// `127 / amax`, which is not always `1 / d`.
fn quantize_q8(x: &[f32]) -> Vec<Q8Block> {
    x.chunks_exact(32)
        .map(|c| {
            let amax = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let q: [i8; 32] = std::array::from_fn(|i| (c[i] * id).round_ties_even() as i8);
            let qsum: i32 = q.iter().map(|&v| i32::from(v)).sum();
            Q8Block {
                d: f16::from_f32(d).to_f32(),
                s: f16::from_f32(d * qsum as f32).to_f32(),
                q,
            }
        })
        .collect()
}

/// A 256-element Q8_K activation block.
struct Q8KBlock {
    d: f32,
    q: [i8; 256],
    /// The sums of each 16 consecutive `q`.
    bsums: [i32; 16],
}

impl Q8KBlock {
    /// The sum of `q` over 32-element sub-block `s`.
    fn bsum32(&self, s: usize) -> i32 {
        self.bsums[2 * s] + self.bsums[2 * s + 1]
    }
}

/// `quantize_row_q8_K_ref`: with `max` the first value of largest magnitude (signed),
/// `iscale = -127 / max`, `q = round_half_even(iscale · x)`, `d = 1 / iscale` (kept in f32).
/// The AVX2 4-row variant of the repacked GEMM may take the opposite sign when both +amax
/// and -amax occur, which negates `q` and `d` together and so changes no product.
fn quantize_q8_k(x: &[f32]) -> Vec<Q8KBlock> {
    x.chunks_exact(256)
        .map(|c| {
            let (mut max, mut amax) = (0.0f32, 0.0f32);
            for &v in c {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                return Q8KBlock {
                    d: 0.0,
                    q: [0; 256],
                    bsums: [0; 16],
                };
            }
            let iscale = -127.0 / max;
            let q: [i8; 256] =
                std::array::from_fn(|i| (iscale * c[i]).round_ties_even().min(127.0) as i8);
            let bsums =
                std::array::from_fn(|g| q[16 * g..16 * g + 16].iter().map(|&v| i32::from(v)).sum());
            Q8KBlock {
                d: 1.0 / iscale,
                q,
                bsums,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Weights in their file encoding.

/// A 32-element weight block (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): the scale, the min (Q4_1 and
/// Q5_1) and the integer codes as the kernels use them (signed for Q4_0/Q5_0/Q8_0, unsigned
/// for Q4_1/Q5_1).
#[derive(Clone)]
struct SmallBlock {
    d: f32,
    m: f32,
    q: [i8; 32],
}

/// A 256-element K-quant block: the super-block scale and min scale, the integer scale and
/// min of each sub-block (8 of 32 elements for Q4_K/Q5_K, 16 of 16 for Q2_K/Q3_K/Q6_K) and
/// the unsigned codes (Q3_K: value + 4; Q6_K: value + 32).
#[derive(Clone)]
struct KBlock {
    d: f32,
    dmin: f32,
    sc: [i32; 16],
    mn: [i32; 16],
    q: [u8; 256],
}

#[derive(Clone)]
enum Weights {
    /// F16/BF16: the kernels work on the exactly widened values, which the caller keeps.
    Float,
    Small(Vec<SmallBlock>),
    K(Vec<KBlock>),
}

/// A weight matrix of `rows` outputs × `cols` inputs, multiplied as ggml's CPU backend does.
#[derive(Clone)]
pub struct GgmlMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    w: Weights,
}

impl std::fmt::Debug for GgmlMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgmlMatrix({:?}, {}x{})", self.ty, self.rows, self.cols)
    }
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block (`get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (i32, i32) {
    if j < 4 {
        (i32::from(s[j] & 63), i32::from(s[j + 4] & 63))
    } else {
        (
            i32::from((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4)),
            i32::from((s[j + 4] >> 4) | ((s[j] >> 6) << 4)),
        )
    }
}

/// Parses one block of a 32-element type (`block_q4_0` … `block_q8_0`).
fn parse_small(ty: GgmlType, b: &[u8]) -> SmallBlock {
    // Element i < 16 is the low nibble of byte i, element i ≥ 16 the high nibble of i - 16;
    // the Q5 types keep bit 4 of element i in bit i of `qh`.
    let nibble = |qs: &[u8], i: usize| if i < 16 { qs[i] & 0xF } else { qs[i - 16] >> 4 };
    let fifth = |qh: &[u8], i: usize| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        (((qh >> i) & 1) as u8) << 4
    };
    let d = read_f16(b, 0);
    let (m, q): (f32, [i8; 32]) = match ty {
        GgmlType::Q8_0 => (0.0, std::array::from_fn(|i| b[2 + i] as i8)),
        GgmlType::Q4_0 => (0.0, std::array::from_fn(|i| nibble(&b[2..], i) as i8 - 8)),
        GgmlType::Q4_1 => (
            read_f16(b, 2),
            std::array::from_fn(|i| nibble(&b[4..], i) as i8),
        ),
        GgmlType::Q5_0 => (
            0.0,
            std::array::from_fn(|i| (nibble(&b[6..], i) | fifth(&b[2..], i)) as i8 - 16),
        ),
        GgmlType::Q5_1 => (
            read_f16(b, 2),
            std::array::from_fn(|i| (nibble(&b[8..], i) | fifth(&b[4..], i)) as i8),
        ),
        _ => unreachable!("not a 32-element type: {ty:?}"),
    };
    SmallBlock { d, m, q }
}

/// Parses one block of a K-quant (`block_q2_K` … `block_q6_K`), elements in natural order.
fn parse_k(ty: GgmlType, b: &[u8]) -> KBlock {
    let mut k = KBlock {
        d: 0.0,
        dmin: 0.0,
        sc: [0; 16],
        mn: [0; 16],
        q: [0; 256],
    };
    match ty {
        GgmlType::Q4_K | GgmlType::Q5_K => {
            k.d = read_f16(b, 0);
            k.dmin = read_f16(b, 2);
            for j in 0..8 {
                (k.sc[j], k.mn[j]) = scale_min_k4(j, &b[4..16]);
            }
            let (qh, qs) = if ty == GgmlType::Q5_K {
                (Some(&b[16..48]), &b[48..176])
            } else {
                (None, &b[16..144])
            };
            // 64 elements per 32 bytes: low nibbles first, then high nibbles.
            for c in 0..4 {
                for l in 0..32 {
                    let byte = qs[32 * c + l];
                    let (mut lo, mut hi) = (byte & 0xF, byte >> 4);
                    if let Some(qh) = qh {
                        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                    }
                    k.q[64 * c + l] = lo;
                    k.q[64 * c + 32 + l] = hi;
                }
            }
        }
        GgmlType::Q6_K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            k.d = read_f16(b, 208);
            for (j, &s) in sc.iter().enumerate() {
                k.sc[j] = i32::from(s as i8);
            }
            for h in 0..2 {
                let (ql, qh, q) = (&ql[64 * h..], &qh[32 * h..], &mut k.q[128 * h..]);
                for l in 0..32 {
                    q[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                    q[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                    q[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                    q[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
            }
        }
        GgmlType::Q3_K => {
            let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
            k.d = read_f16(b, 108);
            // Sixteen 6-bit scales: low 4 bits in bytes 0..8, high 2 bits in bytes 8..12.
            for j in 0..16 {
                let low = (scales[j % 8] >> (4 * (j / 8))) & 0xF;
                let high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
                k.sc[j] = i32::from(low | (high << 4)) - 32;
            }
            for h in 0..2 {
                for s in 0..4 {
                    for l in 0..32 {
                        let low = (qs[32 * h + l] >> (2 * s)) & 3;
                        let high = (hmask[l] >> (4 * h + s)) & 1;
                        k.q[128 * h + 32 * s + l] = low | (high << 2);
                    }
                }
            }
        }
        GgmlType::Q2_K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            k.d = read_f16(b, 80);
            k.dmin = read_f16(b, 82);
            for (j, &s) in scales.iter().enumerate() {
                k.sc[j] = i32::from(s & 0xF);
                k.mn[j] = i32::from(s >> 4);
            }
            for h in 0..2 {
                for s in 0..4 {
                    for l in 0..32 {
                        k.q[128 * h + 32 * s + l] = (qs[32 * h + l] >> (2 * s)) & 3;
                    }
                }
            }
        }
        _ => unreachable!("not a K-quant: {ty:?}"),
    }
    k
}

impl GgmlMatrix {
    /// Wraps a weight of `rows × cols` given its bytes in ggml's block layout. Returns `None`
    /// for types (or row lengths) without an emulated kernel.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Option<GgmlMatrix> {
        use GgmlType::*;
        let blocks = || bytes.chunks_exact(ty.block_bytes());
        let w = match ty {
            F16 | BF16 => Weights::Float,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 if cols.is_multiple_of(32) => {
                Weights::Small(blocks().map(|b| parse_small(ty, b)).collect())
            }
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K if cols.is_multiple_of(256) => {
                Weights::K(blocks().map(|b| parse_k(ty, b)).collect())
            }
            _ => return None,
        };
        Some(GgmlMatrix { ty, rows, cols, w })
    }

    /// `W x` for one token at `slot` of its batch, as ggml computes it. `decoded` is the
    /// weight decoded to f32 (row-major), which the F16/BF16 kernels read.
    pub fn mul(&self, decoded: &[f32], x: &[f32], slot: BatchSlot) -> Vec<f32> {
        use GgmlType::*;
        debug_assert_eq!(x.len(), self.cols);
        match &self.w {
            Weights::Float => {
                let round: fn(f32) -> f32 = match self.ty {
                    F16 => |v| f16::from_f32(v).to_f32(),
                    _ => |v| bf16::from_f32(v).to_f32(),
                };
                let x: Vec<f32> = x.iter().map(|&v| round(v)).collect();
                // llamafile's tinyBLAS takes batches whose shapes it tiles; else ggml_vec_dot.
                let tiny =
                    slot.len >= 2 && self.cols.is_multiple_of(8) && self.rows.is_multiple_of(4);
                let dot = match (tiny, self.ty) {
                    (true, _) => dot_tinyblas,
                    (false, F16) => dot_vec_f16,
                    (false, _) => dot_vec_bf16,
                };
                let rows = decoded.chunks_exact(self.cols);
                rows.map(|row| dot(row, &x)).collect()
            }
            Weights::Small(blocks) => {
                let a = quantize_q8(x);
                let dot = match self.ty {
                    // Repacked into 8-column blocks: GEMM and GEMV round alike.
                    Q4_0 if self.rows.is_multiple_of(8) => dot_q4_0_repacked,
                    Q4_1 | Q5_1 => dot_q8_1_lanes,
                    _ => dot_q8_0_lanes,
                };
                let rows = blocks.chunks_exact(self.cols / 32);
                rows.map(|row| dot(row, &a)).collect()
            }
            Weights::K(blocks) => {
                let a = quantize_q8_k(x);
                let rows = blocks.chunks_exact(self.cols / 256);
                if self.ty == Q4_K && self.rows.is_multiple_of(8) {
                    // Repacked: GEMM over whole groups of 4 tokens, GEMV for the rest.
                    let gemm = slot.len >= 4 && slot.index < slot.len - slot.len % 4;
                    rows.map(|row| dot_q4_k_repacked(row, &a, gemm)).collect()
                } else if slot.len >= 8 {
                    rows.map(|row| dot_k_tiled(self.ty, row, &a)).collect()
                } else {
                    rows.map(|row| dot_k_lanes(self.ty, row, &a)).collect()
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Float kernels (the activation already rounded to f16/bf16 and widened).

/// tinyBLAS (F16·F16 and BF16·BF16 on AVX2): one 8-lane FMA accumulator along k, `hsum`.
fn dot_tinyblas(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (w, x) in w.chunks_exact(8).zip(x.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = fma(w[l], x[l], acc[l]);
        }
    }
    hsum8(&acc)
}

/// Four 8-lane FMA accumulators over steps of 32 elements (accumulator `(i % 32) / 8`, lane
/// `i % 8`), as `ggml_vec_dot_f16`/`_bf16` run them; returns them and where the tail starts.
fn four_accumulators(w: &[f32], x: &[f32]) -> ([[f32; 8]; 4], usize) {
    let body = w.len() / 32 * 32;
    let mut acc = [[0.0f32; 8]; 4];
    for i in 0..body {
        let slot = &mut acc[(i % 32) / 8][i % 8];
        *slot = fma(w[i], x[i], *slot);
    }
    (acc, body)
}

/// `ggml_vec_dot_f16` (AVX2): [`four_accumulators`] reduced by `GGML_F32x8_REDUCE`, the tail
/// added in f64.
fn dot_vec_f16(w: &[f32], x: &[f32]) -> f32 {
    let (acc, body) = four_accumulators(w, x);
    let tail = (body..w.len()).map(|i| f64::from(w[i] * x[i]));
    (f64::from(reduce4x8(&acc)) + tail.sum::<f64>()) as f32
}

/// `ggml_vec_dot_bf16` (AVX2): [`four_accumulators`] (`c += x * y`, which GCC fuses),
/// combined as (c1 + c3) + (c2 + c4) and `hsum`, the tail added in f64.
fn dot_vec_bf16(w: &[f32], x: &[f32]) -> f32 {
    let (c, body) = four_accumulators(w, x);
    let c: [f32; 8] = std::array::from_fn(|l| (c[0][l] + c[2][l]) + (c[1][l] + c[3][l]));
    let tail = (body..w.len()).map(|i| f64::from(w[i] * x[i]));
    (f64::from(hsum8(&c)) + tail.sum::<f64>()) as f32
}

// ---------------------------------------------------------------------------------------
// Kernels of the 32-element types.

/// Integer dot product of lane `l` (elements 4l..4l+3) of a 32-element block. (The kernels
/// form it with `maddubs` on |w| and sign-adjusted `a`; no partial sum can saturate.)
fn lane_dot(w: &[i8; 32], a: &[i8; 32], l: usize) -> i32 {
    (4 * l..4 * l + 4)
        .map(|e| i32::from(w[e]) * i32::from(a[e]))
        .sum()
}

/// Q8_0, Q5_0 and (unrepacked) Q4_0 times Q8_0, as tinyBLAS_Q0_AVX and
/// `ggml_vec_dot_q*_0_q8_0` both compute it: per block 8 lanes of 4-product integer sums,
/// each `acc = fma(dW·dA, lane, acc)`; then `hsum`.
fn dot_q8_0_lanes(w: &[SmallBlock], a: &[Q8Block]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wb, ab) in w.iter().zip(a) {
        let d = wb.d * ab.d;
        for (l, acc) in acc.iter_mut().enumerate() {
            *acc = fma(d, lane_dot(&wb.q, &ab.q, l) as f32, *acc);
        }
    }
    hsum8(&acc)
}

/// `ggml_vec_dot_q4_1_q8_1` / `_q5_1_q8_1` (AVX2; llamafile has no kernel for these, so
/// batches use it too): the lanes of [`dot_q8_0_lanes`] on the unsigned codes, plus the mins
/// `summs = fma(m, s, summs)` added after the `hsum`.
fn dot_q8_1_lanes(w: &[SmallBlock], a: &[Q8Block]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (wb, ab) in w.iter().zip(a) {
        summs = fma(wb.m, ab.s, summs);
        let d = wb.d * ab.d;
        for (l, acc) in acc.iter_mut().enumerate() {
            *acc = fma(d, lane_dot(&wb.q, &ab.q, l) as f32, *acc);
        }
    }
    hsum8(&acc) + summs
}

/// The repacked Q4_0 8×8 GEMM and GEMV: per block one integer dot product,
/// `acc = fma(sum, dW·dA, acc)`.
fn dot_q4_0_repacked(w: &[SmallBlock], a: &[Q8Block]) -> f32 {
    w.iter().zip(a).fold(0.0, |acc, (wb, ab)| {
        let s: i32 = (0..8).map(|l| lane_dot(&wb.q, &ab.q, l)).sum();
        fma(s as f32, wb.d * ab.d, acc)
    })
}

// ---------------------------------------------------------------------------------------
// K-quant kernels.

/// Integer dot product of the codes in `range` of a block with the activation codes.
fn code_dot(w: &KBlock, a: &Q8KBlock, range: std::ops::Range<usize>) -> i32 {
    range.map(|e| i32::from(w.q[e]) * i32::from(a.q[e])).sum()
}

/// The repacked Q4_K 8×8 kernels. Both keep the scaled sums and the min terms in two float
/// accumulators and subtract them at the end; the GEMV adds once per 256-element block, the
/// GEMM once per pair of 32-element sub-blocks.
fn dot_q4_k_repacked(w: &[KBlock], a: &[Q8KBlock], gemm: bool) -> f32 {
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    for (wb, ab) in w.iter().zip(a) {
        let (d, dmin) = (wb.d * ab.d, wb.dmin * ab.d);
        let pair = |p: usize| -> (i32, i32) {
            let subs = 2 * p..2 * p + 2;
            let s = subs.clone();
            let s = s.map(|s| wb.sc[s] * code_dot(wb, ab, 32 * s..32 * s + 32));
            let m = subs.map(|s| wb.mn[s] * ab.bsum32(s));
            (s.sum(), m.sum())
        };
        let sums: Vec<(i32, i32)> = if gemm {
            (0..4).map(pair).collect()
        } else {
            vec![(0..4)
                .map(pair)
                .fold((0, 0), |(s, m), (ps, pm)| (s + ps, m + pm))]
        };
        for (s, m) in sums {
            acc = fma(s as f32, d, acc);
            acc_min = fma(m as f32, dmin, acc_min);
        }
    }
    acc - acc_min
}

/// The code offset of a K-quant's unsigned codes, its sub-block length, and whether it has
/// per-sub-block mins.
fn k_layout(ty: GgmlType) -> (i32, usize, bool) {
    match ty {
        GgmlType::Q6_K => (32, 16, false),
        GgmlType::Q3_K => (4, 16, false),
        GgmlType::Q2_K => (0, 16, true),
        _ => (0, 32, true), // Q4_K, Q5_K
    }
}

/// The "tiled" K-quant GEMM (batches of 8 or more, AVX2 micro-kernel): per 256-element block
/// the exact integers `s1 = Σ_sub sc·Σ(q - offset)·a` and `s2 = Σ_sub mn·Σa`, then
/// `acc = fma(fma(-dmin, s2, d·s1), dA, acc)`.
fn dot_k_tiled(ty: GgmlType, w: &[KBlock], a: &[Q8KBlock]) -> f32 {
    let (offset, sub, has_min) = k_layout(ty);
    let mut acc = 0.0f32;
    for (wb, ab) in w.iter().zip(a) {
        let (mut s1, mut s2) = (0i32, 0i32);
        for s in 0..256 / sub {
            let range = sub * s..sub * s + sub;
            let asum: i32 = ab.bsums[range.start / 16..range.end / 16].iter().sum();
            s1 += wb.sc[s] * (code_dot(wb, ab, range) - offset * asum);
            s2 += wb.mn[s] * asum;
        }
        let mut res = wb.d * s1 as f32;
        if has_min {
            res = fma(-wb.dmin, s2 as f32, res);
        }
        acc = fma(res, ab.d, acc);
    }
    acc
}

/// `ggml_vec_dot_q{2,3,4,5,6}_K_q8_K` (AVX2), for batches of fewer than 8 tokens. Per block,
/// integer lane l holds elements 4l..4l+3 of every 32, each times its sub-block scale;
/// `acc = fma(dW·dA, lane, acc)`, then `hsum`. Each kernel folds in the mins (and Q6_K its
/// code offset) its own way, see the match below.
fn dot_k_lanes(ty: GgmlType, w: &[KBlock], a: &[Q8KBlock]) -> f32 {
    let (offset, sub, _) = k_layout(ty);
    let mut acc = [0.0f32; 8];
    let mut acc_min = [0.0f32; 4];
    let mut summs = 0.0f32;
    for (wb, ab) in w.iter().zip(a) {
        let d = ab.d * wb.d;
        let dmin = -ab.d * wb.dmin;
        let mut lanes = [0i32; 8];
        for c in 0..8 {
            for (l, lane) in lanes.iter_mut().enumerate() {
                let e = 32 * c + 4 * l;
                let p: i32 = (e..e + 4)
                    .map(|e| {
                        // Q3_K takes the offset off the codes; Q6_K off the lanes (below).
                        let q = i32::from(wb.q[e]) - if ty == GgmlType::Q3_K { offset } else { 0 };
                        q * i32::from(ab.q[e])
                    })
                    .sum();
                *lane += wb.sc[e / sub] * p;
            }
        }
        // Lane l of these corrections covers the 16-element sub-blocks 2l and 2l + 1.
        let pair16 = |v: &[i32; 16], l: usize| {
            v[2 * l] * ab.bsums[2 * l] + v[2 * l + 1] * ab.bsums[2 * l + 1]
        };
        match ty {
            GgmlType::Q6_K => {
                for (l, lane) in lanes.iter_mut().enumerate() {
                    *lane -= 32 * pair16(&wb.sc, l);
                }
            }
            GgmlType::Q2_K => {
                // The mins enter the same accumulator, before the block's sums.
                for (l, acc) in acc.iter_mut().enumerate() {
                    *acc = fma(dmin, pair16(&wb.mn, l) as f32, *acc);
                }
            }
            GgmlType::Q4_K => {
                // A 4-lane accumulator, lane p = 32-element sub-blocks 2p and 2p + 1.
                for (p, acc) in acc_min.iter_mut().enumerate() {
                    let m =
                        wb.mn[2 * p] * ab.bsum32(2 * p) + wb.mn[2 * p + 1] * ab.bsum32(2 * p + 1);
                    *acc = fma(dmin, m as f32, *acc);
                }
            }
            GgmlType::Q5_K => {
                let m: i32 = (0..8).map(|s| wb.mn[s] * ab.bsum32(s)).sum();
                summs = fma(dmin, m as f32, summs);
            }
            _ => {}
        }
        for (acc, lane) in acc.iter_mut().zip(lanes) {
            *acc = fma(d, lane as f32, *acc);
        }
    }
    let mins = (acc_min[0] + acc_min[2]) + (acc_min[1] + acc_min[3]);
    match ty {
        GgmlType::Q4_K => hsum8(&acc) + mins,
        _ => hsum8(&acc) + summs,
    }
}

/// Rounds `x` (one activation row) in place as ggml quantizes it for a weight of type
/// `weight`: the fallback for weight types without an emulated kernel, whose products then
/// round like ggml's but sum in a different order.
pub fn round_activation(weight: GgmlType, x: &mut [f32]) {
    use GgmlType::*;
    match weight.vec_dot_type() {
        F16 => x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
        BF16 => x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32()),
        Q8_0 | Q8_1 => {
            let blocks = quantize_q8(x);
            for (c, b) in x.chunks_exact_mut(32).zip(blocks) {
                c.iter_mut()
                    .zip(b.q)
                    .for_each(|(v, q)| *v = f32::from(q) * b.d);
            }
        }
        Q8_K => {
            let blocks = quantize_q8_k(x);
            for (c, b) in x.chunks_exact_mut(256).zip(blocks) {
                c.iter_mut()
                    .zip(b.q)
                    .for_each(|(v, q)| *v = f32::from(q) * b.d);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream in [-1, 1).
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Random blocks of `ty` (random codes, scales and mins) with a sane f16 scale.
    fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
        let mut bytes: Vec<u8> = noise(seed, n_blocks * ty.block_bytes())
            .iter()
            .map(|v| ((v + 1.0) * 128.0) as u8)
            .collect();
        let d = f16::from_f32(0.01).to_le_bytes();
        let dmin = f16::from_f32(0.003).to_le_bytes();
        for b in bytes.chunks_exact_mut(ty.block_bytes()) {
            let (d_at, dmin_at) = match ty {
                GgmlType::Q6_K => (208, None),
                GgmlType::Q3_K => (108, None),
                GgmlType::Q2_K => (80, Some(82)),
                GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q4_1 | GgmlType::Q5_1 => (0, Some(2)),
                _ => (0, None),
            };
            b[d_at..d_at + 2].copy_from_slice(&d);
            if let Some(at) = dmin_at {
                b[at..at + 2].copy_from_slice(&dmin);
            }
        }
        bytes
    }

    /// Every emulated kernel agrees with an f64 product of the exactly decoded weight and
    /// the rounded activation: the block parsers and integer sums are right, whatever the
    /// kernel's rounding order.
    #[test]
    fn every_kernel_matches_the_decoded_weights() {
        use GgmlType::*;
        let (rows, cols) = (8, 512);
        for ty in [
            F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
        ] {
            let bytes = match ty {
                F16 | BF16 => noise(1, rows * cols)
                    .iter()
                    .flat_map(|&v| match ty {
                        F16 => f16::from_f32(v).to_le_bytes(),
                        _ => bf16::from_f32(v).to_le_bytes(),
                    })
                    .collect(),
                _ => random_blocks(ty, rows * cols / ty.block_elements(), 7),
            };
            let decoded = gguf::dequant::dequantize_to_vec(ty, &bytes, rows * cols).unwrap();
            let m = GgmlMatrix::new(ty, rows, cols, &bytes).unwrap();
            let x = noise(3, cols);
            let mut xr = x.clone();
            round_activation(ty, &mut xr);
            let want: Vec<f64> = decoded
                .chunks_exact(cols)
                .map(|r| {
                    r.iter()
                        .zip(&xr)
                        .map(|(w, x)| f64::from(*w) * f64::from(*x))
                        .sum()
                })
                .collect();
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            // Q8_1 keeps `d·Σq` in f16, so the min term of Q4_1/Q5_1 is only that precise.
            let tol = if matches!(ty, Q4_1 | Q5_1) {
                2e-3
            } else {
                1e-5
            };
            for len in [1, 5, 9] {
                for index in [0, len - 1] {
                    let got = m.mul(&decoded, &x, BatchSlot { len, index });
                    for (g, w) in got.iter().zip(&want) {
                        let err = (f64::from(*g) - w).abs() / scale;
                        assert!(err < tol, "{ty:?} len {len}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn q8_0_scales_by_127_over_amax() {
        // 127 / amax and 1 / (amax / 127) differ for amax = 0.3: the kernels use the former.
        let mut x = vec![0.0f32; 32];
        x[0] = 0.3;
        x[1] = 0.3 * 20.5 / 127.0;
        let b = &quantize_q8(&x)[0];
        assert_eq!(b.q[0], 127);
        assert_eq!(f32::from(b.q[1]), (x[1] * (127.0 / 0.3)).round_ties_even());
        assert_eq!(b.d, f16::from_f32(0.3 / 127.0).to_f32());
    }

    #[test]
    fn q8_k_keeps_the_signed_extreme() {
        let mut x = vec![0.25f32; 256];
        x[7] = -3.0;
        let b = &quantize_q8_k(&x)[0];
        assert_eq!(f32::from(b.q[7]) * b.d, -3.0);
        assert_eq!(b.bsums[0], (0..16).map(|i| i32::from(b.q[i])).sum::<i32>());
    }

    #[test]
    fn reductions_group_like_the_simd_code() {
        // 1 + 2^-24 (x8 lanes) loses the small terms in a left-to-right sum but not in
        // ggml's pairwise groupings.
        let v = [1.0, 1e-8, 1e-8, 1e-8, -1.0, 1e-8, 1e-8, 1e-8];
        assert_eq!(hsum8(&v), ((1.0f32 + -1.0) + (1e-8 + 1e-8)) + (2e-8 + 2e-8));
        let acc = [[1.0; 8], [2.0; 8], [3.0; 8], [4.0; 8]];
        assert_eq!(reduce4x8(&acc), 80.0);
        assert_eq!(sum([1e8f32, 1.0, -1e8]), 1.0);
    }

    #[test]
    fn norm_and_wkv_agree_with_plain_math() {
        let x = noise(5, 64);
        let y = norm(&x, 1e-5);
        let mean = y.iter().map(|v| f64::from(*v)).sum::<f64>() / 64.0;
        let var = y.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 64.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-3);

        let n = 64;
        let vecs: Vec<Vec<f32>> = (0..7).map(|i| noise(10 + i, n)).collect();
        let (r, w, k, v, a, b) = (&vecs[0], &vecs[1], &vecs[2], &vecs[3], &vecs[4], &vecs[5]);
        let mut state = noise(20, n * n);
        let before = state.clone();
        let mut y = vec![0.0; n];
        wkv7(&mut state, r, w, k, v, a, b, &mut y);
        for i in 0..n {
            let row = &before[i * n..(i + 1) * n];
            let sa: f64 = (0..n).map(|j| f64::from(a[j]) * f64::from(row[j])).sum();
            let mut yi = 0.0f64;
            for j in 0..n {
                let s = f64::from(row[j]) * f64::from(w[j])
                    + f64::from(v[i]) * f64::from(k[j])
                    + sa * f64::from(b[j]);
                assert!((f64::from(state[i * n + j]) - s).abs() < 1e-5);
                yi += s * f64::from(r[j]);
            }
            assert!((f64::from(y[i]) - yi).abs() < 1e-4);
        }
    }
}
