//! The RWKV-7 forward pass on the CPU in plain f32: the oracle every GPU kernel is checked
//! against. It is written to be read, not to be fast; it follows the math of llama.cpp's
//! `rwkv7` graph for the same tensors.
//!
//! Per token and layer (x is the residual stream, `norm` a layer norm):
//! ```text
//! time mix:   xa = norm(x); sx = prev_att - xa; prev_att = xa
//!             xr,xw,xk,xv,xa_,xg = xa + sx * mu_{r,w,k,v,a,g}
//!             r = Wr xr;  k = Wk xk;  v = Wv xv
//!             w = exp(-e^-0.5 * sigmoid(w0 + W2 tanh(W1 xw)))          (decay in (0,1))
//!             a = sigmoid(a0 + A2 (A1 xa_))                            (in-context rate)
//!             g = G2 sigmoid(G1 xg)                                    (gate)
//!             layer 0: v_first = v;  else v += (v_first - v) * sigmoid(v0 + V2 (V1 xv))
//!             kk = l2norm_per_head(k * k_k);  k = k * (1 + (a - 1) * k_a)
//!             per head, S (64x64, rows = value index i, cols = key index j):
//!               S = S * diag(w) + v k^T + (S (-kk)) (kk * a)^T;   y = S r
//!             y = groupnorm_per_head(y) ; y += v * sum_head(r * k * r_k); y *= g
//!             x += Wo y
//! channel mix: xf = norm(x); sx = prev_ffn - xf; prev_ffn = xf
//!             x += Wvalue relu(Wkey (xf + sx * mu_k))^2
//! ```

use gguf::{GgmlType, GgufFile, TensorInfo};

use crate::error::{ModelError, Result};
pub use crate::ggml_cpu::Precision;
use crate::ggml_cpu::{self, BatchSlot, GgmlMatrix};
use crate::spec::{Rwkv7Config, Rwkv7Spec};
use crate::state::{LayerState, State};

/// A dense row-major f32 matrix: `rows` outputs, each the dot product of a row with the input.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
    /// The weight's type in the file, and how activations are rounded before the product.
    pub ty: GgmlType,
    pub precision: Precision,
    /// [`Precision::LlamaCpp`]: the weight in its file encoding with ggml's kernel for it
    /// (`None` for types without an emulated kernel, which fall back to rounding the
    /// activations and an f32 dot product).
    ggml: Option<GgmlMatrix>,
}

impl Matrix {
    /// Loads a 2-D GGUF tensor {cols, rows} (ggml order: dims[0] is the row length).
    fn load(file: &GgufFile, t: &TensorInfo, precision: Precision) -> Result<Matrix> {
        let (rows, cols) = (t.n_rows() as usize, t.row_len() as usize);
        let data = file.tensor_f32(&t.name)?;
        let ggml = match precision {
            Precision::Exact => None,
            Precision::LlamaCpp => GgmlMatrix::new(t.ty, rows, cols, file.tensor_bytes(t)),
        };
        Ok(Matrix {
            rows,
            cols,
            data,
            ty: t.ty,
            precision,
            ggml,
        })
    }

    /// y = M x, for a token computed on its own.
    pub fn mul_vec(&self, x: &[f32]) -> Vec<f32> {
        self.mul_at(x, BatchSlot::SINGLE)
    }

    /// y = M x for a token at `slot` of a llama.cpp batch (which decides ggml's kernel).
    fn mul_at(&self, x: &[f32], slot: BatchSlot) -> Vec<f32> {
        debug_assert_eq!(x.len(), self.cols);
        if let Some(m) = &self.ggml {
            return m.mul(&self.data, x, slot);
        }
        let rounded;
        let x = match self.precision {
            Precision::Exact => x,
            Precision::LlamaCpp => {
                let mut v = x.to_vec();
                crate::ggml_cpu::round_activation(self.ty, &mut v);
                rounded = v;
                &rounded
            }
        };
        self.data
            .chunks_exact(self.cols)
            .map(|row| dot(row, x))
            .collect()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// How one token is computed: its place in llama.cpp's batch (which picks ggml's matrix
/// kernels) and whether to follow ggml's rounding order ([`Precision::LlamaCpp`]).
#[derive(Clone, Copy, Debug)]
struct Step {
    slot: BatchSlot,
    ggml: bool,
}

/// Layer norm over the whole vector, with affine weight and bias.
fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, ggml: bool) -> Vec<f32> {
    if ggml {
        // ggml_norm, then ggml_mul by the weight and ggml_add of the bias.
        let y = ggml_cpu::norm(x, eps);
        return y
            .iter()
            .zip(w.iter().zip(b))
            .map(|(v, (w, b))| v * w + b)
            .collect();
    }
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    x.iter()
        .zip(w.iter().zip(b))
        .map(|(v, (w, b))| (v - mean) * inv * w + b)
        .collect()
}

/// Layer norm without affine part, over each `group`-sized chunk.
fn group_norm(x: &mut [f32], group: usize, eps: f32, ggml: bool) {
    for chunk in x.chunks_exact_mut(group) {
        if ggml {
            let y = ggml_cpu::norm(chunk, eps);
            chunk.copy_from_slice(&y);
            continue;
        }
        let n = group as f32;
        let mean = chunk.iter().sum::<f32>() / n;
        let var = chunk.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        chunk.iter_mut().for_each(|v| *v = (*v - mean) * inv);
    }
}

/// Divides each `group`-sized chunk by its L2 norm (at least `eps`), as ggml_l2_norm does.
fn l2_norm_groups(x: &mut [f32], group: usize, eps: f32, ggml: bool) {
    for chunk in x.chunks_exact_mut(group) {
        if ggml {
            ggml_cpu::l2_norm(chunk, eps);
            continue;
        }
        let norm = chunk.iter().map(|v| v * v).sum::<f32>().sqrt();
        let scale = 1.0 / norm.max(eps);
        chunk.iter_mut().for_each(|v| *v *= scale);
    }
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// A vector tensor decoded to f32.
fn vector(file: &GgufFile, t: &TensorInfo) -> Result<Vec<f32>> {
    Ok(file.tensor_f32(&t.name)?)
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Norm {
    fn load(file: &GgufFile, t: &(TensorInfo, TensorInfo)) -> Result<Norm> {
        Ok(Norm {
            weight: vector(file, &t.0)?,
            bias: vector(file, &t.1)?,
        })
    }

    fn apply(&self, x: &[f32], eps: f32, ggml: bool) -> Vec<f32> {
        layer_norm(x, &self.weight, &self.bias, eps, ggml)
    }
}

struct Layer {
    att_norm: Norm,
    ffn_norm: Norm,
    /// Token-shift mixes, one vector each: r, w, k, v, a, g.
    mu: [Vec<f32>; 6],
    w0: Vec<f32>,
    w1: Matrix,
    w2: Matrix,
    a0: Vec<f32>,
    a1: Matrix,
    a2: Matrix,
    v: Option<(Vec<f32>, Matrix, Matrix)>,
    g1: Matrix,
    g2: Matrix,
    k_k: Vec<f32>,
    k_a: Vec<f32>,
    r_k: Vec<f32>,
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    output: Matrix,
    group_norm: Norm,
    ffn_mu_k: Vec<f32>,
    ffn_key: Matrix,
    ffn_value: Matrix,
}

/// RWKV-7 with every weight decoded to f32 in host memory.
pub struct CpuModel {
    pub config: Rwkv7Config,
    embedding: Matrix,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    output_norm: Norm,
    head: Matrix,
    precision: Precision,
}

impl CpuModel {
    /// Decodes every weight of the file to f32, with exact f32 arithmetic.
    pub fn load(file: &GgufFile) -> Result<CpuModel> {
        Self::load_with(file, Precision::Exact)
    }

    /// Decodes every weight of the file to f32; `precision` says how matrix products round.
    pub fn load_with(file: &GgufFile, precision: Precision) -> Result<CpuModel> {
        let p = precision;
        let spec = Rwkv7Spec::from_gguf(file)?;
        let t = &spec.tensors;
        let d = spec.config.n_embd;
        let layers = t
            .layers
            .iter()
            .map(|l| {
                let lerp = vector(file, &l.lerp_fused)?;
                let mu = std::array::from_fn(|i| lerp[i * d..(i + 1) * d].to_vec());
                Ok(Layer {
                    att_norm: Norm::load(file, &l.att_norm)?,
                    ffn_norm: Norm::load(file, &l.ffn_norm)?,
                    mu,
                    w0: vector(file, &l.w0)?,
                    w1: Matrix::load(file, &l.w1, p)?,
                    w2: Matrix::load(file, &l.w2, p)?,
                    a0: vector(file, &l.a0)?,
                    a1: Matrix::load(file, &l.a1, p)?,
                    a2: Matrix::load(file, &l.a2, p)?,
                    v: match &l.v {
                        None => None,
                        Some((v0, v1, v2)) => Some((
                            vector(file, v0)?,
                            Matrix::load(file, v1, p)?,
                            Matrix::load(file, v2, p)?,
                        )),
                    },
                    g1: Matrix::load(file, &l.g1, p)?,
                    g2: Matrix::load(file, &l.g2, p)?,
                    k_k: vector(file, &l.k_k)?,
                    k_a: vector(file, &l.k_a)?,
                    r_k: vector(file, &l.r_k)?,
                    receptance: Matrix::load(file, &l.receptance, p)?,
                    key: Matrix::load(file, &l.key, p)?,
                    value: Matrix::load(file, &l.value, p)?,
                    output: Matrix::load(file, &l.output, p)?,
                    group_norm: Norm::load(file, &l.group_norm)?,
                    ffn_mu_k: vector(file, &l.ffn_lerp_k)?,
                    ffn_key: Matrix::load(file, &l.ffn_key, p)?,
                    ffn_value: Matrix::load(file, &l.ffn_value, p)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuModel {
            // Only read by rows (ggml_get_rows dequantizes exactly), never multiplied.
            embedding: Matrix::load(file, &t.embedding, Precision::Exact)?,
            embedding_norm: Norm::load(file, &t.embedding_norm)?,
            layers,
            output_norm: Norm::load(file, &t.output_norm)?,
            head: Matrix::load(file, &t.head, p)?,
            config: spec.config,
            precision,
        })
    }

    pub fn new_state(&self) -> State {
        State::new(&self.config)
    }

    fn check_state(&self, state: &State) -> Result<()> {
        state.check(&self.config)
    }

    /// Runs one token through the model, updating `state`; returns the logits.
    pub fn forward_token(&self, token: u32, state: &mut State) -> Result<Vec<f32>> {
        self.forward_at(token, state, BatchSlot::SINGLE)
    }

    /// Runs a sequence of tokens; returns the logits after every position. With
    /// [`Precision::LlamaCpp`] the tokens are computed as llama.cpp computes one batch of
    /// them (in micro-batches of `ggml_cpu::UBATCH`), whose kernels differ from those of
    /// single-token decoding.
    pub fn forward_sequence(&self, tokens: &[u32], state: &mut State) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(ggml_cpu::UBATCH) {
            for (index, &t) in chunk.iter().enumerate() {
                let slot = BatchSlot {
                    len: chunk.len(),
                    index,
                };
                out.push(self.forward_at(t, state, slot)?);
            }
        }
        Ok(out)
    }

    /// Runs one token at `slot` of a batch through the model.
    fn forward_at(&self, token: u32, state: &mut State, slot: BatchSlot) -> Result<Vec<f32>> {
        self.check_state(state)?;
        let step = Step {
            slot,
            ggml: self.precision == Precision::LlamaCpp,
        };
        let c = &self.config;
        if token as usize >= c.vocab_size {
            return Err(ModelError::TokenOutOfRange {
                id: token,
                vocab_size: c.vocab_size,
            });
        }
        let (eps, g) = (c.layer_norm_eps, step.ggml);
        let mut x = self
            .embedding_norm
            .apply(self.embedding.row(token as usize), eps, g);
        let mut v_first: Option<Vec<f32>> = None;
        for (layer, s) in self.layers.iter().zip(&mut state.layers) {
            let xa = layer.att_norm.apply(&x, eps, g);
            let dx = layer.time_mix(&xa, s, &mut v_first, c, step);
            x = add(&x, &dx);
            let xf = layer.ffn_norm.apply(&x, eps, g);
            let dx = layer.channel_mix(&xf, s, step);
            x = add(&x, &dx);
        }
        let x = self.output_norm.apply(&x, eps, g);
        Ok(self.head.mul_at(&x, step.slot))
    }
}

impl Layer {
    fn time_mix(
        &self,
        xa: &[f32],
        s: &mut LayerState,
        v_first: &mut Option<Vec<f32>>,
        c: &Rwkv7Config,
        step: Step,
    ) -> Vec<f32> {
        let slot = step.slot;
        let mul = |m: &Matrix, x: &[f32]| m.mul_at(x, slot);
        let n = c.head_size;
        let sx: Vec<f32> = s.att_shift.iter().zip(xa).map(|(p, x)| p - x).collect();
        s.att_shift.copy_from_slice(xa);
        let mix = |mu: &[f32]| -> Vec<f32> {
            xa.iter()
                .zip(&sx)
                .zip(mu)
                .map(|((x, d), m)| x + d * m)
                .collect()
        };
        let [xr, xw, xk, xv, xa_, xg] = std::array::from_fn(|i| mix(&self.mu[i]));

        let r = mul(&self.receptance, &xr);
        let k = mul(&self.key, &xk);
        let mut v = mul(&self.value, &xv);

        let w_lora = mul(
            &self.w2,
            &mul(&self.w1, &xw)
                .into_iter()
                .map(f32::tanh)
                .collect::<Vec<_>>(),
        );
        // exp(-e^-0.5 * sigmoid(.)): llama.cpp writes the constant as 0.606531.
        let w: Vec<f32> = add(&w_lora, &self.w0)
            .into_iter()
            .map(|z| (-0.606531 * sigmoid(z)).exp())
            .collect();
        let a: Vec<f32> = add(&mul(&self.a2, &mul(&self.a1, &xa_)), &self.a0)
            .into_iter()
            .map(sigmoid)
            .collect();
        let g = mul(
            &self.g2,
            &mul(&self.g1, &xg)
                .into_iter()
                .map(sigmoid)
                .collect::<Vec<_>>(),
        );

        match (&self.v, v_first.as_ref()) {
            (Some((v0, v1, v2)), Some(first)) => {
                let mix = add(&mul(v2, &mul(v1, &xv)), v0);
                for ((v, f), m) in v.iter_mut().zip(first).zip(&mix) {
                    *v += (f - *v) * sigmoid(*m);
                }
            }
            _ => *v_first = Some(v.clone()),
        }

        let mut kk: Vec<f32> = k.iter().zip(&self.k_k).map(|(k, m)| k * m).collect();
        l2_norm_groups(&mut kk, n, 1e-12, step.ggml);
        let k: Vec<f32> = k
            .iter()
            .zip(&a)
            .zip(&self.k_a)
            .map(|((k, a), ka)| k + (a * (k * ka) - k * ka))
            .collect();

        // WKV-7: per head, S = S diag(w) + v k^T + (S a_) b^T with a_ = -kk, b = kk * a.
        let mut y = vec![0.0f32; c.n_embd];
        for h in 0..c.n_head {
            let o = h * n;
            let state = &mut s.wkv[h * n * n..(h + 1) * n * n];
            if step.ggml {
                // ggml_rwkv_wkv7 with its inputs a = -kk and b = kk * a.
                let hd = o..o + n;
                let neg_kk: Vec<f32> = kk[hd.clone()].iter().map(|v| -v).collect();
                let b: Vec<f32> = kk[hd.clone()]
                    .iter()
                    .zip(&a[hd.clone()])
                    .map(|(k, a)| k * a)
                    .collect();
                let (r, w, k, v) = (
                    &r[hd.clone()],
                    &w[hd.clone()],
                    &k[hd.clone()],
                    &v[hd.clone()],
                );
                ggml_cpu::wkv7(state, r, w, k, v, &neg_kk, &b, &mut y[hd]);
                continue;
            }
            for i in 0..n {
                let row = &mut state[i * n..(i + 1) * n];
                let sa: f32 = (0..n).map(|j| -kk[o + j] * row[j]).sum();
                let mut acc = 0.0;
                for j in 0..n {
                    row[j] = row[j] * w[o + j] + v[o + i] * k[o + j] + sa * (kk[o + j] * a[o + j]);
                    acc += row[j] * r[o + j];
                }
                y[o + i] = acc;
            }
        }

        group_norm(&mut y, n, Rwkv7Config::GROUP_NORM_EPS, step.ggml);
        for ((y, w), b) in y
            .iter_mut()
            .zip(&self.group_norm.weight)
            .zip(&self.group_norm.bias)
        {
            *y = *y * w + b;
        }
        for h in 0..c.n_head {
            let o = h * n;
            let terms = (o..o + n).map(|j| r[j] * k[j] * self.r_k[j]);
            // ggml_sum_rows adds in f64.
            let bonus: f32 = if step.ggml {
                ggml_cpu::sum(terms)
            } else {
                terms.sum()
            };
            for i in o..o + n {
                y[i] += v[i] * bonus;
            }
        }
        for (y, g) in y.iter_mut().zip(&g) {
            *y *= g;
        }
        mul(&self.output, &y)
    }

    fn channel_mix(&self, xf: &[f32], s: &mut LayerState, step: Step) -> Vec<f32> {
        let xk: Vec<f32> = xf
            .iter()
            .zip(&s.ffn_shift)
            .zip(&self.ffn_mu_k)
            .map(|((x, p), m)| x + (p - x) * m)
            .collect();
        s.ffn_shift.copy_from_slice(xf);
        let k: Vec<f32> = self
            .ffn_key
            .mul_at(&xk, step.slot)
            .into_iter()
            .map(|v| {
                let r = v.max(0.0);
                r * r
            })
            .collect();
        self.ffn_value.mul_at(&k, step.slot)
    }
}
