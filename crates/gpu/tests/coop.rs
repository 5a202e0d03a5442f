//! The semantics of wgpu's cooperative matrices (16x16x16, f16 x f16 -> f32) on the device
//! at hand, pinned down with small integer matrices: what `coopLoad`/`coopLoadT` and
//! `coopStore`/`coopStoreT` mean for the data layout and what `coopMultiplyAdd` computes.
//! The tensor-core matmul kernel (`matmul_coop.wgsl`) relies on exactly this.
//!
//! It runs where the device offers the tensor-core path (unless `WEB_RWKV_COOPMAT=0`)
//! (the H100 run also sets `RWKV_REQUIRE_COOPMAT=1`, which makes a missing path a failure);
//! on other devices (CI's lavapipe) there is nothing to run and it says so. The kernel's WGSL is validated for
//! every weight type on every machine by the unit test in `matmul.rs`.

mod support;

use rwkv_gpu::{ContextOptions, GpuContext};

const N: usize = 16;

fn m1(i: usize, j: usize) -> f32 {
    ((i * 3 + j * 5) % 7) as f32 - 3.0
}

fn m2(i: usize, j: usize) -> f32 {
    ((i * 2 + j * 7) % 5) as f32 - 2.0
}

/// Row-major 16x16 values of `f`.
fn matrix(f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    (0..N * N).map(|k| f(k / N, k % N)).collect()
}

fn product(a: &[f32], b: &[f32]) -> Vec<f32> {
    matrix(|i, j| (0..N).map(|k| a[i * N + k] * b[k * N + j]).sum())
}

const SHADER: &str = "
enable f16;
enable wgpu_cooperative_matrix;

// Row-major 16x16 matrices: M1, M2.
@group(0) @binding(0) var<storage, read> inp: array<f16>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

var<workgroup> sh: array<f16, 768>;
var<workgroup> sh2: array<vec2<f16>, 384>;
var<workgroup> sh4: array<vec4<f16>, 192>;
var<workgroup> sh_c: array<f32, 256>;

@compute @workgroup_size(SG)
fn main(@builtin(local_invocation_index) li: u32) {
    let zero = coop_mat16x16<f32, C>();
    // 0: row-major everywhere (the 'T' forms): M1 * M2.
    let a = coopLoadT<coop_mat16x16<f16, A>>(&inp[0], 16u);
    let b = coopLoadT<coop_mat16x16<f16, B>>(&inp[256], 16u);
    coopStoreT(coopMultiplyAdd(a, b, zero), &out[0], 16u);
    // 1: M1 row-major as A, M2 read column-major as B (so B = M2^T), result stored
    // column-major.
    let b2 = coopLoad<coop_mat16x16<f16, B>>(&inp[256], 16u);
    coopStore(coopMultiplyAdd(a, b2, zero), &out[256], 16u);
    // 2: the plain forms everywhere.
    let a3 = coopLoad<coop_mat16x16<f16, A>>(&inp[0], 16u);
    coopStore(coopMultiplyAdd(a3, b2, zero), &out[512], 16u);
    // 3: as 1, through workgroup memory with padded rows (stride 24), as the matmul kernel
    // stages its tiles.
    for (var i = li; i < 512u; i += SGu) {
        sh[(i / 16u) * 24u + i % 16u] = inp[i];
    }
    workgroupBarrier();
    let a4 = coopLoadT<coop_mat16x16<f16, A>>(&sh[0], 24u);
    let b4 = coopLoad<coop_mat16x16<f16, B>>(&sh[16u * 24u], 24u);
    coopStore(coopMultiplyAdd(a4, b4, zero), &sh_c[0], 16u);
    workgroupBarrier();
    for (var i = li; i < 256u; i += SGu) {
        out[768u + i] = sh_c[i];
    }
    // 4: as 1, accumulated over a loop (twice), in a function variable.
    var acc = coop_mat16x16<f32, C>();
    for (var k = 0u; k < 2u; k++) {
        acc = coopMultiplyAdd(a, b2, acc);
    }
    coopStore(acc, &out[1024], 16u);
    // 9: as 3, through workgroup memory of f16 pairs (the matmul kernel's staging): the
    // stride and the offsets count pairs (12 pairs = 24 values per padded row).
    for (var i = li; i < 256u; i += SGu) {
        sh2[(i / 8u) * 12u + i % 8u] = vec2<f16>(inp[2u * i], inp[2u * i + 1u]);
    }
    workgroupBarrier();
    let a9 = coopLoadT<coop_mat16x16<f16, A>>(&sh2[0], 12u);
    let b9 = coopLoad<coop_mat16x16<f16, B>>(&sh2[16u * 12u], 12u);
    coopStore(coopMultiplyAdd(a9, b9, zero), &out[9u * 256u], 16u);
    // 10: the same through f16 quads (6 quads per padded row).
    for (var i = li; i < 128u; i += SGu) {
        let v = 4u * i;
        sh4[(i / 4u) * 6u + i % 4u] = vec4<f16>(inp[v], inp[v + 1u], inp[v + 2u], inp[v + 3u]);
    }
    workgroupBarrier();
    let a10 = coopLoadT<coop_mat16x16<f16, A>>(&sh4[0], 6u);
    let b10 = coopLoad<coop_mat16x16<f16, B>>(&sh4[16u * 6u], 6u);
    coopStore(coopMultiplyAdd(a10, b10, zero), &out[10u * 256u], 16u);
}

// 5..8: four subgroups, each storing case 1 at the block its subgroup_id names.
@compute @workgroup_size(SG4)
fn main4(@builtin(subgroup_id) sg: u32) {
    let zero = coop_mat16x16<f32, C>();
    let a = coopLoadT<coop_mat16x16<f16, A>>(&inp[0], 16u);
    let b = coopLoad<coop_mat16x16<f16, B>>(&inp[256], 16u);
    coopStore(coopMultiplyAdd(a, b, zero), &out[(5u + sg) * 256u], 16u);
}
";

#[test]
fn cooperative_matrix_layouts_and_product() {
    let ctx = GpuContext::new(&ContextOptions::default()).expect("GPU context");
    let Some(sg) = ctx.coop_subgroup_size() else {
        assert!(
            std::env::var_os("RWKV_REQUIRE_COOPMAT").is_none(),
            "RWKV_REQUIRE_COOPMAT is set but {} has no usable cooperative matrices",
            ctx.info.name
        );
        eprintln!(
            "{}: no cooperative matrices, nothing to check",
            ctx.info.name
        );
        return;
    };
    let (x, y) = (matrix(m1), matrix(m2));
    let input: Vec<half::f16> = x
        .iter()
        .chain(&y)
        .map(|&v| half::f16::from_f32(v))
        .collect();
    let inp = ctx
        .create_storage_buffer("coop in", bytemuck::cast_slice(&input))
        .unwrap();
    let out = ctx
        .create_storage_buffer("coop out", &vec![0u8; 11 * 256 * 4])
        .unwrap();
    let source = SHADER
        .replace("SG)", &format!("{sg})"))
        .replace("SGu", &format!("{sg}u"))
        .replace("SG4)", &format!("{})", 4 * sg));
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("coop probe"),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    for entry in ["main", "main4"] {
        let pipeline = support::entry_pipeline(&ctx, &module, entry);
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: inp.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: out.as_entire_binding(),
                },
            ],
        });
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    ctx.queue.submit([enc.finish()]);
    let got = ctx.read_buffer_f32(&out, 0, 11 * 256).unwrap();

    let transpose = |m: &[f32]| matrix(|i, j| m[j * N + i]);
    let want = [
        product(&x, &y),
        // Column-major store of M1 * M2^T.
        transpose(&product(&x, &transpose(&y))),
        // Column-major store of M1^T * M2^T = (M2 * M1)^T.
        transpose(&product(&transpose(&x), &transpose(&y))),
        transpose(&product(&x, &transpose(&y))),
        transpose(&product(&x, &transpose(&y)))
            .iter()
            .map(|v| 2.0 * v)
            .collect(),
        transpose(&product(&x, &transpose(&y))),
        transpose(&product(&x, &transpose(&y))),
        transpose(&product(&x, &transpose(&y))),
        transpose(&product(&x, &transpose(&y))),
        transpose(&product(&x, &transpose(&y))),
        transpose(&product(&x, &transpose(&y))),
    ];
    let mut wrong = Vec::new();
    for (case, want) in want.iter().enumerate() {
        let got = &got[case * 256..][..256];
        eprintln!("case {case}: got  {:?}", &got[..20]);
        eprintln!("case {case}: want {:?}", &want[..20]);
        if got != &want[..] {
            wrong.push(case);
        }
    }
    assert!(wrong.is_empty(), "cases {wrong:?} differ");
}
