//! The model's weights on the GPU, by role. Matrices stay in their GGUF encoding
//! ([`GpuMatrix`]); the small per-channel vectors are decoded to f32 and packed.

use gguf::{GgufFile, TensorInfo};
use rwkv_gpu::{GpuContext, GpuMatrix};
use rwkv_model::{Rwkv7Config, Rwkv7Spec};

use crate::error::{EngineError, Result};

/// Order of the vectors packed in [`LayerWeights::vecs`]; the WKV kernel reads them so.
pub const VEC_ORDER: [&str; 8] = ["w0", "a0", "v0", "k_k", "k_a", "r_k", "ln_w", "ln_b"];

pub struct LayerWeights {
    pub att_norm_w: wgpu::Buffer,
    pub att_norm_b: wgpu::Buffer,
    pub ffn_norm_w: wgpu::Buffer,
    pub ffn_norm_b: wgpu::Buffer,
    /// Time-mix lerps [6][dim]: r, w, k, v, a, g.
    pub lerp: wgpu::Buffer,
    /// Channel-mix lerp [dim].
    pub ffn_lerp: wgpu::Buffer,
    /// [8][dim] in [`VEC_ORDER`].
    pub vecs: wgpu::Buffer,
    pub receptance: GpuMatrix,
    pub key: GpuMatrix,
    pub value: GpuMatrix,
    pub output: GpuMatrix,
    pub w1: GpuMatrix,
    pub w2: GpuMatrix,
    pub a1: GpuMatrix,
    pub a2: GpuMatrix,
    pub g1: GpuMatrix,
    pub g2: GpuMatrix,
    /// Value-residual LoRA; absent in the first layer.
    pub v1: Option<GpuMatrix>,
    pub v2: Option<GpuMatrix>,
    pub ffn_key: GpuMatrix,
    pub ffn_value: GpuMatrix,
}

pub struct ModelWeights {
    pub embedding: GpuMatrix,
    pub embedding_norm_w: wgpu::Buffer,
    pub embedding_norm_b: wgpu::Buffer,
    pub layers: Vec<LayerWeights>,
    pub output_norm_w: wgpu::Buffer,
    pub output_norm_b: wgpu::Buffer,
    pub head: GpuMatrix,
}

impl ModelWeights {
    /// Uploads every weight; `progress` is called with (bytes uploaded, total bytes).
    pub fn upload(
        ctx: &GpuContext,
        file: &GgufFile,
        spec: &Rwkv7Spec,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ModelWeights> {
        let total: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
        let mut done = 0u64;
        let mut up = Uploader {
            ctx,
            file,
            done: &mut done,
            total,
            progress,
        };
        let t = &spec.tensors;
        let c = &spec.config;
        let layers = t
            .layers
            .iter()
            .map(|l| {
                let zeros = vec![0.0f32; c.n_embd];
                let v0 = match &l.v {
                    Some((v0, _, _)) => up.vector(v0)?,
                    None => zeros,
                };
                let packed: Vec<f32> = [
                    up.vector(&l.w0)?,
                    up.vector(&l.a0)?,
                    v0,
                    up.vector(&l.k_k)?,
                    up.vector(&l.k_a)?,
                    up.vector(&l.r_k)?,
                    up.vector(&l.group_norm.0)?,
                    up.vector(&l.group_norm.1)?,
                ]
                .concat();
                Ok(LayerWeights {
                    att_norm_w: up.f32_buffer(&l.att_norm.0)?,
                    att_norm_b: up.f32_buffer(&l.att_norm.1)?,
                    ffn_norm_w: up.f32_buffer(&l.ffn_norm.0)?,
                    ffn_norm_b: up.f32_buffer(&l.ffn_norm.1)?,
                    lerp: up.f32_buffer(&l.lerp_fused)?,
                    ffn_lerp: up.f32_buffer(&l.ffn_lerp_k)?,
                    vecs: up.raw_f32("vecs", &packed)?,
                    receptance: up.matrix(&l.receptance)?,
                    key: up.matrix(&l.key)?,
                    value: up.matrix(&l.value)?,
                    output: up.matrix(&l.output)?,
                    w1: up.matrix(&l.w1)?,
                    w2: up.matrix(&l.w2)?,
                    a1: up.matrix(&l.a1)?,
                    a2: up.matrix(&l.a2)?,
                    g1: up.matrix(&l.g1)?,
                    g2: up.matrix(&l.g2)?,
                    v1: l.v.as_ref().map(|v| up.matrix(&v.1)).transpose()?,
                    v2: l.v.as_ref().map(|v| up.matrix(&v.2)).transpose()?,
                    ffn_key: up.matrix(&l.ffn_key)?,
                    ffn_value: up.matrix(&l.ffn_value)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelWeights {
            embedding: up.matrix(&t.embedding)?,
            embedding_norm_w: up.f32_buffer(&t.embedding_norm.0)?,
            embedding_norm_b: up.f32_buffer(&t.embedding_norm.1)?,
            layers,
            output_norm_w: up.f32_buffer(&t.output_norm.0)?,
            output_norm_b: up.f32_buffer(&t.output_norm.1)?,
            head: up.matrix(&t.head)?,
        })
    }

    /// Bytes of all weights on the GPU.
    pub fn gpu_bytes(&self, config: &Rwkv7Config) -> u64 {
        let vec_bytes = (config.n_embd * 4) as u64;
        let per_layer_vecs = vec_bytes * (4 + 6 + 1 + 8);
        let mut total = self.embedding.gpu_bytes() + self.head.gpu_bytes() + 4 * vec_bytes;
        for l in &self.layers {
            total += per_layer_vecs;
            for m in [
                &l.receptance,
                &l.key,
                &l.value,
                &l.output,
                &l.w1,
                &l.w2,
                &l.a1,
                &l.a2,
                &l.g1,
                &l.g2,
                &l.ffn_key,
                &l.ffn_value,
            ] {
                total += m.gpu_bytes();
            }
            total += l.v1.as_ref().map_or(0, |m| m.gpu_bytes());
            total += l.v2.as_ref().map_or(0, |m| m.gpu_bytes());
        }
        total
    }
}

struct Uploader<'a> {
    ctx: &'a GpuContext,
    file: &'a GgufFile,
    done: &'a mut u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl Uploader<'_> {
    fn advance(&mut self, t: &TensorInfo) {
        *self.done += t.n_bytes;
        (self.progress)(*self.done, self.total);
    }

    fn vector(&mut self, t: &TensorInfo) -> Result<Vec<f32>> {
        Ok(self.file.tensor_f32(&t.name)?)
    }

    fn raw_f32(&self, label: &str, values: &[f32]) -> Result<wgpu::Buffer> {
        Ok(self
            .ctx
            .create_storage_buffer(label, bytemuck::cast_slice(values))?)
    }

    fn f32_buffer(&mut self, t: &TensorInfo) -> Result<wgpu::Buffer> {
        let values = self.vector(t)?;
        self.advance(t);
        self.raw_f32(&t.name, &values)
    }

    fn matrix(&mut self, t: &TensorInfo) -> Result<GpuMatrix> {
        let m = GpuMatrix::upload(
            self.ctx,
            &t.name,
            t.ty,
            t.n_rows() as usize,
            t.row_len() as usize,
            self.file.tensor_bytes(t),
        )
        .map_err(EngineError::from)?;
        self.advance(t);
        Ok(m)
    }
}
