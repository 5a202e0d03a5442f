//! The activation-rounding kernels (round_activations.wgsl) against ggml's Q8_K and Q8_0
//! roundings on the CPU: one tile of 256 per workgroup (with and without subgroup
//! operations) and four per workgroup (round_q8k.wgsl's `main_q8k`, for long steps), with
//! the f16 copies the tensor-core products read.

mod support;

use gguf::GgmlType;
use half::f16;
use rwkv_engine::kernels::{bind, uniform, Kernels, RoundParams, StepUniform};
use rwkv_model::round_activation;
use support::context;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

#[test]
fn q8k_and_q8_0_roundings_match_ggml() {
    // Every value gets ggml's 8-bit code (the decoded value within an ulp or two of the CPU's:
    // the GPU's quotients may differ by an ulp; a code off by one would be 1/127 of the
    // block's largest value off), and the kernels' three variants give the same bits.
    let ctx = context();
    // 11 tiles of 256 (four-tile groups for main_q8k: two whole, one of three), two blocks of
    // rows with room for 6 rows each, 5 rows in the step.
    let (cols, max_rows, rows, blocks) = (256 * 11, 6u32, 5u32, 2u32);
    let block_stride = max_rows * cols;
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut x: Vec<f32> = (0..blocks * block_stride)
        .map(|i| rng.uniform() * (1 + i % 7) as f32)
        .collect();
    // Special blocks: all zeros; the largest magnitude twice with opposite signs; one huge
    // value (codes of the others round to 0; small enough that Q8_0's f16 scale of its
    // square stays finite); values on a code's rounding tie.
    let block = |b: u32, r: u32, t: u32| ((b * block_stride + r * cols + t * 256) as usize)..;
    x[block(0, 0, 0)][..256].fill(0.0);
    x[block(0, 1, 3)][10] = 4.0;
    x[block(0, 1, 3)][200] = -4.0;
    x[block(1, 2, 9)][77] = 2000.0;
    for (j, v) in x[block(1, 4, 10)][..256].iter_mut().enumerate() {
        *v = (j as f32 - 127.0) * 0.5;
    }
    let input = ctx
        .create_storage_buffer("x", bytemuck::cast_slice(&x))
        .unwrap();
    let step = uniform(
        &ctx.device,
        "step",
        &StepUniform {
            n_rows: rows,
            n_chunks: 1,
            n_out: 0,
            _pad: 0,
        },
    );
    let tiles = cols / 256;
    // The kernels' three variants: one tile per workgroup with subgroup operations and
    // without, and main_q8k.
    let variants: Vec<(bool, bool, Kernels)> =
        [(false, false), (ctx.has_subgroups(), false), (false, true)]
            .into_iter()
            .map(|(subgroups, wide)| {
                let kernels = Kernels::new(&ctx.device, [32, 32, 32, 32], None, subgroups, 0, None);
                (subgroups, wide, kernels)
            })
            .collect();
    // ggml's Q8_K blocks (as the CPU reference rounds for K-quant weights) and Q8_0 blocks
    // (for Q8_0 and Q4_0 weights); of the input, or of its ReLU² in steps of at least
    // `relu_from` rows (the channel mix's key output, stored as plain sums there): from the
    // step's rows (it applies), from one more (it does not).
    for (mode, weights, relu_from) in [
        (rwkv_gpu::ROUND_Q8_K, GgmlType::Q4_K, 0),
        (rwkv_gpu::ROUND_Q8_0, GgmlType::Q8_0, 0),
        (rwkv_gpu::ROUND_Q8_K, GgmlType::Q4_K, rows),
        (rwkv_gpu::ROUND_Q8_0, GgmlType::Q8_0, rows),
        (rwkv_gpu::ROUND_Q8_K, GgmlType::Q4_K, rows + 1),
    ] {
        let relu = relu_from != 0 && rows >= relu_from;
        let mut want: Vec<f32> = match relu {
            true => x.iter().map(|&v| v.max(0.0) * v.max(0.0)).collect(),
            false => x.clone(),
        };
        for b in 0..blocks {
            for r in 0..rows {
                let at = (b * block_stride + r * cols) as usize;
                for chunk in 0..cols as usize / 256 {
                    let s = at + chunk * 256;
                    round_activation(weights, &mut want[s..s + 256]);
                }
            }
        }
        let mut first: Option<Vec<f32>> = None;
        for (subgroups, wide, kernels) in &variants {
            let (pipeline, per_block) = match wide {
                false => (&kernels.round_activations, tiles),
                true => (&kernels.round_q8k, tiles.div_ceil(4)),
            };
            let params = uniform(
                &ctx.device,
                "round params",
                &RoundParams {
                    cols,
                    block_stride,
                    mode,
                    count_out: 0,
                    write_x16: 1,
                    relu_from,
                    _pad: [0; 2],
                },
            );
            let zeros = vec![0u8; x.len() * 4];
            let output = ctx.create_storage_buffer("out", &zeros).unwrap();
            let x16 = ctx
                .create_storage_buffer("x16", &zeros[..x.len() * 2])
                .unwrap();
            let group = bind(
                &ctx.device,
                pipeline,
                "round",
                &[&params, &step, &input, &output, &x16],
            );
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(rows, blocks * per_block, 1);
            }
            ctx.queue.submit([enc.finish()]);
            let got = ctx.read_buffer_f32(&output, 0, x.len()).unwrap();
            let halves = ctx.read_buffer_bytes(&x16, 0, x.len() as u64 * 2).unwrap();
            let what = format!(
                "{weights:?} inputs (ReLU²: {relu}): subgroups {subgroups}, main_q8k {wide}"
            );
            for b in 0..blocks {
                for r in 0..max_rows {
                    let at = (b * block_stride + r * cols) as usize;
                    for c in 0..cols as usize {
                        let i = at + c;
                        // Rows past the step's are left alone.
                        let (w, h) = if r < rows {
                            (want[i], f16::from_f32(want[i]))
                        } else {
                            (0.0, f16::ZERO)
                        };
                        assert!(
                            (got[i] - w).abs() <= w.abs() * 1e-6,
                            "{what}: block {b} row {r} column {c}: {} against {w}",
                            got[i]
                        );
                        let g16 = f16::from_le_bytes([halves[2 * i], halves[2 * i + 1]]);
                        assert_eq!(
                            g16,
                            // (Clamped to f16's finite range, as the kernels do.)
                            if r < rows {
                                f16::from_f32(got[i].clamp(-65504.0, 65504.0))
                            } else {
                                h
                            },
                            "{what}: f16 copy, block {b} row {r} column {c}"
                        );
                    }
                }
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}: not the bits of the first variant"
                ),
            }
        }
    }
}
