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
}

impl Matrix {
    /// Loads a 2-D GGUF tensor {cols, rows} (ggml order: dims[0] is the row length).
    fn load(file: &GgufFile, t: &TensorInfo, precision: Precision) -> Result<Matrix> {
        Ok(Matrix {
            rows: t.n_rows() as usize,
            cols: t.row_len() as usize,
            data: file.tensor_f32(&t.name)?,
            ty: t.ty,
            precision,
        })
    }

    /// y = M x.
    pub fn mul_vec(&self, x: &[f32]) -> Vec<f32> {
        debug_assert_eq!(x.len(), self.cols);
        let rounded;
        let x = match self.precision {
            Precision::LlamaCpp if !skip_hack(self) => {
                let mut v = x.to_vec();
                crate::ggml_cpu::round_activation(self.ty, &mut v);
                rounded = v;
                &rounded
            }
            _ => x,
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

pub static LAST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
fn skip_hack(m: &Matrix) -> bool {
    let v = std::env::var("SKIP").unwrap_or_default();
    let last = LAST.load(std::sync::atomic::Ordering::Relaxed);
    (v == "head" && m.rows == 4096)
        || (last && v == "fv" && m.cols == 1024)
        || (last && v == "fk" && m.rows == 1024)
}
pub fn dump(name: &str, v: &[f32]) {
    if let Ok(d) = std::env::var("DUMP") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{d}/{name}.f32"))
            .unwrap();
        for x in v {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
}
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Layer norm over the whole vector, with affine weight and bias.
fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
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
fn group_norm(x: &mut [f32], group: usize, eps: f32) {
    for chunk in x.chunks_exact_mut(group) {
        let n = group as f32;
        let mean = chunk.iter().sum::<f32>() / n;
        let var = chunk.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        chunk.iter_mut().for_each(|v| *v = (*v - mean) * inv);
    }
}

/// Divides each `group`-sized chunk by its L2 norm (at least `eps`), as ggml_l2_norm does.
fn l2_norm_groups(x: &mut [f32], group: usize, eps: f32) {
    for chunk in x.chunks_exact_mut(group) {
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

    fn apply(&self, x: &[f32], eps: f32) -> Vec<f32> {
        layer_norm(x, &self.weight, &self.bias, eps)
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
            embedding: Matrix::load(file, &t.embedding, p)?,
            embedding_norm: Norm::load(file, &t.embedding_norm)?,
            layers,
            output_norm: Norm::load(file, &t.output_norm)?,
            head: Matrix::load(file, &t.head, p)?,
            config: spec.config,
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
        self.check_state(state)?;
        let c = &self.config;
        if token as usize >= c.vocab_size {
            return Err(ModelError::TokenOutOfRange {
                id: token,
                vocab_size: c.vocab_size,
            });
        }
        let eps = c.layer_norm_eps;
        let mut x = self
            .embedding_norm
            .apply(self.embedding.row(token as usize), eps);
        let mut v_first: Option<Vec<f32>> = None;
        for (li, (layer, s)) in self.layers.iter().zip(&mut state.layers).enumerate() {
            LAST.store(
                li + 1 == self.layers.len(),
                std::sync::atomic::Ordering::Relaxed,
            );
            dump(&format!("inp{li}"), &x);
            let xa = layer.att_norm.apply(&x, eps);
            dump(&format!("attn_norm{li}"), &xa);
            let dx = layer.time_mix(&xa, s, &mut v_first, c);
            dump(&format!("tm_out{li}"), &dx);
            x = add(&x, &dx);
            dump(&format!("ffn_inp{li}"), &x);
            let xf = layer.ffn_norm.apply(&x, eps);
            dump(&format!("ffn_norm{li}"), &xf);
            let dx = layer.channel_mix(&xf, s);
            dump(&format!("cm_out{li}"), &dx);
            x = add(&x, &dx);
            dump(&format!("l_out{li}"), &x);
        }
        let x = self.output_norm.apply(&x, eps);
        dump("result_norm", &x);
        Ok(self.head.mul_vec(&x))
    }

    /// Runs a sequence of tokens; returns the logits after every position.
    pub fn forward_sequence(&self, tokens: &[u32], state: &mut State) -> Result<Vec<Vec<f32>>> {
        tokens
            .iter()
            .map(|&t| self.forward_token(t, state))
            .collect()
    }
}

impl Layer {
    fn time_mix(
        &self,
        xa: &[f32],
        s: &mut LayerState,
        v_first: &mut Option<Vec<f32>>,
        c: &Rwkv7Config,
    ) -> Vec<f32> {
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

        let r = self.receptance.mul_vec(&xr);
        let k = self.key.mul_vec(&xk);
        let mut v = self.value.mul_vec(&xv);

        let w_lora = self.w2.mul_vec(
            &self
                .w1
                .mul_vec(&xw)
                .into_iter()
                .map(f32::tanh)
                .collect::<Vec<_>>(),
        );
        // exp(-e^-0.5 * sigmoid(.)): llama.cpp writes the constant as 0.606531.
        let w: Vec<f32> = add(&w_lora, &self.w0)
            .into_iter()
            .map(|z| (-0.606531 * sigmoid(z)).exp())
            .collect();
        let a: Vec<f32> = add(&self.a2.mul_vec(&self.a1.mul_vec(&xa_)), &self.a0)
            .into_iter()
            .map(sigmoid)
            .collect();
        let g = self.g2.mul_vec(
            &self
                .g1
                .mul_vec(&xg)
                .into_iter()
                .map(sigmoid)
                .collect::<Vec<_>>(),
        );

        match (&self.v, v_first.as_ref()) {
            (Some((v0, v1, v2)), Some(first)) => {
                let mix = add(&v2.mul_vec(&v1.mul_vec(&xv)), v0);
                for ((v, f), m) in v.iter_mut().zip(first).zip(&mix) {
                    *v += (f - *v) * sigmoid(*m);
                }
            }
            _ => *v_first = Some(v.clone()),
        }

        let mut kk: Vec<f32> = k.iter().zip(&self.k_k).map(|(k, m)| k * m).collect();
        l2_norm_groups(&mut kk, n, 1e-12);
        let k: Vec<f32> = k
            .iter()
            .zip(&a)
            .zip(&self.k_a)
            .map(|((k, a), ka)| k + (a * (k * ka) - k * ka))
            .collect();

        let li = if self.v.is_some() { 1 } else { 0 };
        dump(&format!("r{li}"), &r);
        dump(&format!("w{li}"), &w);
        dump(&format!("k{li}"), &k);
        dump(&format!("v{li}"), &v);
        dump(&format!("a{li}"), &a);
        dump(&format!("g{li}"), &g);
        dump(&format!("kk{li}"), &kk);
        // WKV-7: per head, S = S diag(w) + v k^T + (S a_) b^T with a_ = -kk, b = kk * a.
        let mut y = vec![0.0f32; c.n_embd];
        for h in 0..c.n_head {
            let o = h * n;
            let state = &mut s.wkv[h * n * n..(h + 1) * n * n];
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

        dump(&format!("wkv{li}"), &y);
        group_norm(&mut y, n, Rwkv7Config::GROUP_NORM_EPS);
        dump(&format!("gn{li}"), &y);
        for ((y, w), b) in y
            .iter_mut()
            .zip(&self.group_norm.weight)
            .zip(&self.group_norm.bias)
        {
            *y = *y * w + b;
        }
        for h in 0..c.n_head {
            let o = h * n;
            let bonus: f32 = (o..o + n).map(|j| r[j] * k[j] * self.r_k[j]).sum();
            for i in o..o + n {
                y[i] += v[i] * bonus;
            }
        }
        dump(&format!("bonus{li}"), &y);
        for (y, g) in y.iter_mut().zip(&g) {
            *y *= g;
        }
        dump(&format!("yg{li}"), &y);
        self.output.mul_vec(&y)
    }

    fn channel_mix(&self, xf: &[f32], s: &mut LayerState) -> Vec<f32> {
        let xk: Vec<f32> = xf
            .iter()
            .zip(&s.ffn_shift)
            .zip(&self.ffn_mu_k)
            .map(|((x, p), m)| x + (p - x) * m)
            .collect();
        s.ffn_shift.copy_from_slice(xf);
        let k: Vec<f32> = self
            .ffn_key
            .mul_vec(&xk)
            .into_iter()
            .map(|v| {
                let r = v.max(0.0);
                r * r
            })
            .collect();
        self.ffn_value.mul_vec(&k)
    }
}
