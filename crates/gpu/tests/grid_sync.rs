//! The grid-wide barrier (rwkv-gpu's grid_sync.wgsl): correctness on whatever device runs
//! the tests, and (ignored by default) its cost against one dependent dispatch per phase:
//! `cargo test -p rwkv-gpu --release --test grid_sync -- --ignored --nocapture`
//! (`GRID_SYNC_WGS`: comma-separated grid sizes).

mod support;

use rwkv_gpu::{ContextOptions, GpuContext, GridSync, GRID_SYNC_WGSL};

const SHADER: &str = include_str!("grid_sync.wgsl");

/// The barrier's spin bound (`GRID_SYNC_SPINS`, default 1 << 20).
fn max_spins() -> u32 {
    rwkv_gpu::env_parse("GRID_SYNC_SPINS").unwrap_or(1 << 20)
}

struct Probe {
    ctx: GpuContext,
    sync: GridSync,
    persistent: wgpu::ComputePipeline,
    persistent_atomic: wgpu::ComputePipeline,
    chained: wgpu::ComputePipeline,
    data: wgpu::Buffer,
    errors: wgpu::Buffer,
}

impl Probe {
    fn new() -> Probe {
        let ctx = GpuContext::new(&ContextOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        println!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
        let source = format!("{GRID_SYNC_WGSL}\n{SHADER}");
        let module = rwkv_gpu::shader_module(&ctx.device, "grid sync", &source);
        let pipeline = |entry: &str| support::entry_pipeline(&ctx, &module, entry);
        let (persistent, chained) = (pipeline("persistent"), pipeline("chained"));
        let persistent_atomic = pipeline("persistent_atomic");
        let sync = GridSync::new(&ctx, "sync").unwrap();
        // Fresh slots: up to 4096 rounds of 256 workgroups.
        let data = ctx
            .create_storage_buffer("data", &vec![0u8; 4 << 20])
            .unwrap();
        let errors = ctx.create_storage_buffer("errors", &[0u8; 16]).unwrap();
        Probe {
            ctx,
            sync,
            persistent,
            persistent_atomic,
            chained,
            data,
            errors,
        }
    }

    fn bind(
        &self,
        pipeline: &wgpu::ComputePipeline,
        rounds: u32,
        round: u32,
        fresh: bool,
    ) -> wgpu::BindGroup {
        let params = self
            .ctx
            .create_buffer_checked(
                "params",
                16,
                wgpu::BufferUsages::UNIFORM,
                Some(bytemuck::cast_slice(&[
                    rounds,
                    round,
                    max_spins(),
                    fresh as u32,
                ])),
            )
            .unwrap();
        let layout = pipeline.get_bind_group_layout(0);
        // (`persistent_atomic` uses only the parameters and the counters.)
        let mut used = vec![(0, &params), (1, &self.sync.buffer)];
        if !std::ptr::eq(pipeline, &self.persistent_atomic) {
            used.extend([(2, &self.data), (3, &self.errors)]);
        }
        let entries: Vec<wgpu::BindGroupEntry> = used
            .into_iter()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &entries,
            })
    }

    fn wait(&self) {
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .unwrap();
    }

    /// One dispatch of `wgs` workgroups syncing `rounds` times; (wrong words, waits given
    /// up, seconds).
    fn persistent(&self, wgs: u32, rounds: u32) -> (u32, u32, f64) {
        self.persistent_with(&self.persistent, false, wgs, rounds)
    }

    /// `persistent` with a choice of kernel and of fresh or reused slots.
    fn persistent_with(
        &self,
        pipeline: &wgpu::ComputePipeline,
        fresh: bool,
        wgs: u32,
        rounds: u32,
    ) -> (u32, u32, f64) {
        self.ctx.queue.write_buffer(&self.errors, 0, &[0u8; 4]);
        let bind = self.bind(pipeline, rounds, 0, fresh);
        self.ctx
            .queue
            .write_buffer(&self.sync.buffer, 0, &[0u8; 16]);
        self.wait();
        let secs = support::time_pass(&self.ctx, |pass| {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(wgs, 1, 1);
        });
        let errors = self.ctx.read_buffer_bytes(&self.errors, 0, 4).unwrap();
        let timeouts = self.sync.take_timeouts(&self.ctx).unwrap();
        (
            u32::from_le_bytes(errors.try_into().unwrap()),
            timeouts,
            secs,
        )
    }

    /// `rounds` dependent dispatches of `wgs` workgroups in one pass; (wrong words, seconds).
    fn chained(&self, wgs: u32, rounds: u32) -> (u32, f64) {
        self.ctx.queue.write_buffer(&self.errors, 0, &[0u8; 4]);
        let binds: Vec<_> = (0..=rounds)
            .map(|r| self.bind(&self.chained, 0, r, false))
            .collect();
        let secs = support::time_pass(&self.ctx, |pass| {
            pass.set_pipeline(&self.chained);
            for b in &binds {
                pass.set_bind_group(0, b, &[]);
                pass.dispatch_workgroups(wgs, 1, 1);
            }
        });
        let errors = self.ctx.read_buffer_bytes(&self.errors, 0, 4).unwrap();
        (u32::from_le_bytes(errors.try_into().unwrap()), secs)
    }
}

#[test]
fn one_workgroup_syncs_with_itself() {
    let probe = Probe::new();
    let (errors, timeouts, _) = probe.persistent(1, 64);
    assert_eq!((errors, timeouts), (0, 0));
    let (errors, _) = probe.chained(3, 8);
    assert_eq!(errors, 0);
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture on a real GPU"]
fn grid_sync_time() {
    let probe = Probe::new();
    let sizes: Vec<u32> = std::env::var("GRID_SYNC_WGS")
        .unwrap_or_else(|_| "1,32,66,132,264,528,1056".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds: u32 = rwkv_gpu::env_parse("GRID_SYNC_ROUNDS").unwrap_or(200);
    for wgs in sizes {
        probe.persistent(wgs, 16);
        let (_, _, base) = probe.persistent(wgs, 0);
        let (errors, timeouts, secs) = probe.persistent(wgs, rounds);
        let per = (secs - base) / rounds as f64 * 1e6;
        let rounds_fresh = rounds.min((1 << 20) / wgs);
        let (ferrors, ftimeouts, fsecs) =
            probe.persistent_with(&probe.persistent, true, wgs, rounds_fresh);
        let (aerrors, atimeouts, asecs) =
            probe.persistent_with(&probe.persistent_atomic, false, wgs, rounds);
        println!(
            "{wgs:>5} workgroups: fresh slots {:6.2} us ({ferrors} wrong, {ftimeouts} given up) | atomic loads {:6.2} us ({aerrors} wrong, {atimeouts} given up)",
            (fsecs - base) / rounds_fresh as f64 * 1e6,
            (asecs - base) / rounds as f64 * 1e6,
        );
        probe.chained(wgs, 16);
        let (cerrors, csecs) = probe.chained(wgs, rounds);
        println!(
            "{wgs:>5} workgroups: grid barrier {per:6.2} us ({errors} wrong, {timeouts} given up) | dependent dispatch {:6.2} us ({cerrors} wrong)",
            csecs / rounds as f64 * 1e6
        );
    }
}
