//! Pipelines compiled on worker threads (rwkv-gpu's `Pipeline`): kernels whose bind group
//! layouts were worked out from their WGSL and bound before their compiles finished compute
//! the right values, and a pipeline that fails to compile is reported by
//! `wait_for_compiles`. (One test: `wait_for_compiles` reports every compile of the
//! process, so a second test running beside it could take this one's error.)

use rwkv_gpu::{ContextOptions, GpuContext, Pipeline};

const SOURCE: &str = "
@group(0) @binding(0) var<uniform> add: vec4<u32>;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
@group(0) @binding(3) var<storage, read_write> unused: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&y) {
        y[id.x] = x[id.x] * FACTORu + add.x;
    }
}";

#[test]
fn worker_compiled_pipelines_compute_and_report_errors() {
    let ctx = GpuContext::new(&ContextOptions::default()).expect("a GPU adapter");
    let device = &ctx.device;
    let n = 1000u32;
    let x: Vec<u32> = (0..n).map(|i| i * 7 + 1).collect();
    let x_buf = ctx
        .create_storage_buffer("x", bytemuck::cast_slice(&x))
        .unwrap();
    let add = ctx
        .create_buffer_checked(
            "add",
            16,
            wgpu::BufferUsages::UNIFORM,
            Some(bytemuck::cast_slice(&[5u32, 0, 0, 0])),
        )
        .unwrap();
    // Eight kernels at once, each bound as soon as it is asked for: the layout has no
    // binding 3, which main does not use (a bind group giving it would be refused).
    let mut runs = Vec::new();
    for factor in 2..10u32 {
        let source = SOURCE.replace("FACTOR", &factor.to_string());
        let module = rwkv_gpu::shader_module(device, "scale", &source);
        let pipeline = Pipeline::compile(device, "scale", &module, &source, "main", None);
        let y = ctx
            .create_storage_buffer("y", &vec![0u8; 4 * n as usize])
            .unwrap();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("scale"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: add.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: x_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: y.as_entire_binding(),
                },
            ],
        });
        runs.push((factor, pipeline, bind_group, y));
    }
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        for (_, pipeline, bind_group, _) in &runs {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(n.div_ceil(64), 1, 1);
        }
    }
    ctx.queue.submit([encoder.finish()]);
    for (factor, _, _, y) in &runs {
        let got: Vec<u32> =
            bytemuck::pod_collect_to_vec(&ctx.read_buffer_bytes(y, 0, 4 * n as u64).unwrap());
        let want: Vec<u32> = x.iter().map(|v| v * factor + 5).collect();
        assert_eq!(got, want, "factor {factor}");
    }
    rwkv_gpu::wait_for_compiles().expect("every kernel compiled");

    // An explicit layout the shader does not fit (y read-only there): the compile's error
    // comes back from wait_for_compiles, with the pipeline's label.
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("wrong"),
        entries: &[0, 1, 2].map(|binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: if binding == 0 {
                    wgpu::BufferBindingType::Uniform
                } else {
                    wgpu::BufferBindingType::Storage { read_only: true }
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }),
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("wrong"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let source = SOURCE.replace("FACTOR", "3");
    let module = rwkv_gpu::shader_module(device, "mismatched", &source);
    let _bad = Pipeline::compile(
        device,
        "mismatched layout",
        &module,
        &source,
        "main",
        Some(&pipeline_layout),
    );
    let err = rwkv_gpu::wait_for_compiles().expect_err("the layout does not fit");
    assert!(err.to_string().contains("mismatched layout"), "{err}");
    rwkv_gpu::wait_for_compiles().expect("an error is reported once");
}
