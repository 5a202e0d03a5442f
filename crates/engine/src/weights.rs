//! The model's weights on the GPU, by role. Matrices stay in their GGUF encoding
//! ([`GpuMatrix`]); the small per-channel vectors are decoded to f32 and packed.

use gguf::{GgufFile, TensorInfo};
use rwkv_gpu::{GpuContext, GpuMatrix, StackedF16};
use rwkv_model::{Rwkv7Config, Rwkv7Spec};

use crate::error::{EngineError, Result};

/// Order of the vectors packed in [`LayerWeights::vecs`]; the WKV kernel reads them so.
pub const VEC_ORDER: [&str; 8] = ["w0", "a0", "v0", "k_k", "k_a", "r_k", "ln_w", "ln_b"];

pub struct LayerWeights {
    pub att_norm_w: wgpu::Buffer,
    pub att_norm_b: wgpu::Buffer,
    pub ffn_norm_w: wgpu::Buffer,
    pub ffn_norm_b: wgpu::Buffer,
    /// Time-mix lerps \[6\]\[dim\]: r, w, k, v, a, g.
    pub lerp: wgpu::Buffer,
    /// Channel-mix lerp \[dim\].
    pub ffn_lerp: wgpu::Buffer,
    /// \[8\]\[dim\] in `VEC_ORDER`.
    pub vecs: wgpu::Buffer,
    pub receptance: GpuMatrix,
    pub key: GpuMatrix,
    pub value: GpuMatrix,
    pub output: GpuMatrix,
    pub w1: GpuMatrix,
    /// Second LoRA matrices (decay, iclr, gate, value residual), transposed to \[rank\]\[dim\]
    /// and packed one after the other, f16 pairs when all four are F16 (else f32), for the
    /// WKV kernel that applies them per head. Load-time repacking: the WKV kernel reads them
    /// coalesced, one channel per thread.
    pub lora2: wgpu::Buffer,
    pub lora2_f16: bool,
    /// Value offsets of the four matrices in `lora2`, and their ranks (value rank 0 in the
    /// first layer, which has none).
    pub lora2_offsets: [u32; 4],
    pub lora2_ranks: [u32; 4],
    /// The same second LoRA matrices as stored (\[dim\] rows of \[rank\] values), for the
    /// matrix kernels that compute them for steps of many tokens (decay, iclr, gate, value
    /// residual; no value residual in the first layer).
    pub w2: GpuMatrix,
    pub a2: GpuMatrix,
    pub g2: GpuMatrix,
    pub v2: Option<GpuMatrix>,
    pub a1: GpuMatrix,
    pub g1: GpuMatrix,
    /// Value-residual LoRA; absent in the first layer.
    pub v1: Option<GpuMatrix>,
    /// The first LoRA matrices (w1, a1, g1, then v1 where present) stacked in one F16 buffer,
    /// each padded to `crate::engine::LORA_ALIGN` rows, for the one tensor-core product
    /// that computes all four in steps of many tokens; None without cooperative matrices,
    /// where they are not all F16, or with `WEB_RWKV_COOP_STACK=0`.
    pub lora1_stack: Option<StackedF16>,
    /// The second LoRA matrices (w2, a2, g2, then v2) stacked the same way (their widths, the
    /// ranks, padded too), for one product in steps of many tokens.
    pub lora2_stack: Option<StackedF16>,
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
                let second: Vec<&TensorInfo> = [
                    Some(&l.w2),
                    Some(&l.a2),
                    Some(&l.g2),
                    l.v.as_ref().map(|v| &v.2),
                ]
                .into_iter()
                .flatten()
                .collect();
                let (lora2, lora2_f16, lora2_offsets, lora2_ranks) = up.lora2(&second, c.n_embd)?;
                let first: Vec<&TensorInfo> = [Some(&l.w1), Some(&l.a1), Some(&l.g1)]
                    .into_iter()
                    .chain([l.v.as_ref().map(|v| &v.1)])
                    .flatten()
                    .collect();
                let lora1_stack = up.stack(&first)?;
                let lora2_stack = up.stack(&second)?;
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
                    lora2,
                    lora2_f16,
                    lora2_offsets,
                    lora2_ranks,
                    w2: up.matrix_again(&l.w2)?,
                    a2: up.matrix_again(&l.a2)?,
                    g2: up.matrix_again(&l.g2)?,
                    v2: l.v.as_ref().map(|v| up.matrix_again(&v.2)).transpose()?,
                    a1: up.matrix(&l.a1)?,
                    g1: up.matrix(&l.g1)?,
                    v1: l.v.as_ref().map(|v| up.matrix(&v.1)).transpose()?,
                    lora1_stack,
                    lora2_stack,
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

    /// Bytes of the LoRA matrices kept twice: the second ones (transposed for the WKV
    /// kernels, as matrices for steps of many tokens) and the stacked copies
    /// ([`LayerWeights::lora1_stack`], [`LayerWeights::lora2_stack`]). A step reads one copy
    /// or another.
    pub fn second_copy_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                [&l.w2, &l.a2, &l.g2]
                    .into_iter()
                    .chain(&l.v2)
                    .map(GpuMatrix::gpu_bytes)
                    .sum::<u64>()
                    + l.lora1_stack.as_ref().map_or(0, StackedF16::gpu_bytes)
                    + l.lora2_stack.as_ref().map_or(0, StackedF16::gpu_bytes)
            })
            .sum()
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
            total +=
                l.v1.iter()
                    .chain(&l.v2)
                    .map(GpuMatrix::gpu_bytes)
                    .sum::<u64>();
            total += l.lora2.size();
            total += [&l.lora1_stack, &l.lora2_stack]
                .into_iter()
                .flatten()
                .map(StackedF16::gpu_bytes)
                .sum::<u64>();
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

    /// Packs the second LoRA matrices ({rank, dim} in ggml order: dim rows of rank values)
    /// transposed to [rank][dim], as f16 when all are F16 (bit-exact) and f32 otherwise.
    #[allow(clippy::type_complexity)]
    fn lora2(
        &mut self,
        ts: &[&TensorInfo],
        dim: usize,
    ) -> Result<(wgpu::Buffer, bool, [u32; 4], [u32; 4])> {
        let f16 = ts.iter().all(|t| t.ty == gguf::GgmlType::F16);
        let mut offsets = [0u32; 4];
        let mut ranks = [0u32; 4];
        let mut halves: Vec<u16> = Vec::new();
        let mut floats: Vec<f32> = Vec::new();
        let mut at = 0usize;
        for (i, t) in ts.iter().enumerate() {
            let rank = t.row_len() as usize;
            offsets[i] = at as u32;
            ranks[i] = rank as u32;
            if f16 {
                let raw: Vec<u16> = bytemuck::pod_collect_to_vec(self.file.tensor_bytes(t));
                halves.extend((0..rank * dim).map(|k| raw[(k % dim) * rank + k / dim]));
            } else {
                let values = self.file.tensor_f32(&t.name)?;
                floats.extend((0..rank * dim).map(|k| values[(k % dim) * rank + k / dim]));
            }
            at += rank * dim;
            self.advance(t);
        }
        let bytes: Vec<u8> = if f16 {
            if halves.len() % 2 == 1 {
                halves.push(0);
            }
            bytemuck::cast_slice(&halves).to_vec()
        } else {
            bytemuck::cast_slice(&floats).to_vec()
        };
        let buffer = self.ctx.create_storage_buffer("lora2", &bytes)?;
        Ok((buffer, f16, offsets, ranks))
    }

    /// The LoRA matrices `ts` stacked in one F16 buffer (see [`LayerWeights::lora1_stack`]),
    /// where the device multiplies on tensor cores and all are F16.
    fn stack(&self, ts: &[&TensorInfo]) -> Result<Option<StackedF16>> {
        let stackable = self.ctx.coop_subgroup_size().is_some()
            && rwkv_gpu::env_on(crate::engine::COOP_STACK_ENV)
            && ts.iter().all(|t| t.ty == gguf::GgmlType::F16);
        let Some(first) = ts.first().filter(|_| stackable) else {
            return Ok(None);
        };
        let mats: Vec<(&[u8], usize, usize)> = ts
            .iter()
            .map(|t| {
                let (rows, cols) = (t.n_rows() as usize, t.row_len() as usize);
                (self.file.tensor_bytes(t), rows, cols)
            })
            .collect();
        let name = format!("{} (stacked)", first.name);
        Ok(Some(StackedF16::upload(
            self.ctx,
            &name,
            &mats,
            crate::engine::LORA_ALIGN,
        )?))
    }

    fn matrix(&mut self, t: &TensorInfo) -> Result<GpuMatrix> {
        let m = self.matrix_again(t)?;
        self.advance(t);
        Ok(m)
    }

    /// [`Uploader::matrix`] for a tensor already counted in the progress (uploaded in
    /// another layout too).
    fn matrix_again(&self, t: &TensorInfo) -> Result<GpuMatrix> {
        GpuMatrix::upload(
            self.ctx,
            &t.name,
            t.ty,
            t.n_rows() as usize,
            t.row_len() as usize,
            self.file.tensor_bytes(t),
        )
        .map_err(EngineError::from)
    }
}
