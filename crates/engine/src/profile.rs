//! Profile mode: one step with GPU timestamps between operations, summed by kind.
//!
//! Where the adapter can write timestamps inside a compute pass
//! (`TIMESTAMP_QUERY_INSIDE_PASSES`), the step is recorded as usual, in one pass, with a
//! timestamp before the first op and after every op: an op's time is from the end of the op
//! before it to its own end, so it includes the barrier and the drain in front of it and the
//! times add up to the step's GPU time (ops that overlap share it). Otherwise each op runs in
//! its own pass with timestamps at its start and end: the times are what the GPU spent inside
//! each op, and the passes add overhead that a normal step does not have.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::{Engine, SlotInput, StepTables};
use crate::error::{EngineError, Result};

/// GPU time by operation kind for one step.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// (kind, dispatch count, total GPU time), sorted by time, largest first.
    pub ops: Vec<(String, usize, Duration)>,
    /// Sum of all op times.
    pub total: Duration,
    /// The step's ops in the order they ran (those that dispatched anything): what each is
    /// (`Op::detail`), its dispatches and its time.
    pub sequence: Vec<(String, usize, Duration)>,
}

impl Engine {
    /// Runs one step of `inputs` (which must fit in one GPU step: at most `max_rows` tokens
    /// and `max_out` logits rows) with timestamps around every op.
    pub fn profile_step(&mut self, inputs: &[SlotInput]) -> Result<Profile> {
        if !self.ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(EngineError::Unsupported(
                "profiling needs the adapter feature TIMESTAMP_QUERY".into(),
            ));
        }
        self.check_inputs(inputs)?;
        let plan: Vec<(usize, usize, usize)> = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (i, 0, input.tokens.len()))
            .collect();
        let tables = StepTables::build(inputs, &plan, &self.halves);
        if tables.step.n_rows as usize > self.options.max_rows
            || tables.step.n_out as usize > self.options.max_out
        {
            return Err(EngineError::Invalid(format!(
                "a profiled step must fit in one GPU step ({} rows, {} logits rows)",
                self.options.max_rows, self.options.max_out
            )));
        }
        self.upload_tables(&tables, false);

        let device = &self.ctx.device;
        let in_pass = self
            .ctx
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
        // In one pass: stamp 0 before the first op and stamp i + 1 after op i. Else stamps
        // 2i and 2i + 1 around op i in its own pass.
        let n = if in_pass {
            self.ops.len() as u32 + 1
        } else {
            self.ops.len() as u32 * 2
        };
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: n,
        });
        let bytes = n as u64 * 8;
        let resolve = self.ctx.create_buffer_checked(
            "profile resolve",
            bytes,
            wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            None,
        )?;
        let s = tables.step;
        let mut encoder = device.create_command_encoder(&Default::default());
        if in_pass {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("profile"),
                timestamp_writes: None,
            });
            pass.write_timestamp(&queries, 0);
            for (i, op) in self.ops.iter().enumerate() {
                op.record(&mut pass, s.n_rows, s.n_out, s.n_chunks);
                pass.write_timestamp(&queries, i as u32 + 1);
            }
        }
        for (i, op) in self.ops.iter().enumerate().filter(|_| !in_pass) {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(op.kind()),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            op.record(&mut pass, s.n_rows, s.n_out, s.n_chunks);
        }
        encoder.resolve_query_set(&queries, 0..n, &resolve, 0);
        self.ctx.queue.submit([encoder.finish()]);
        for chunk in &tables.chunks {
            self.halves[chunk.slot as usize] ^= 1;
        }
        let raw = self.ctx.read_buffer_bytes(&resolve, 0, bytes)?;
        let stamps: Vec<u64> = bytemuck::pod_collect_to_vec(&raw);
        let period = self.ctx.queue.get_timestamp_period() as f64;

        let mut by_kind: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        let mut sequence = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            let (start, end) = if in_pass {
                (stamps[i], stamps[i + 1])
            } else {
                (stamps[2 * i], stamps[2 * i + 1])
            };
            let ns = end.saturating_sub(start) as f64 * period;
            // Counted as the dispatches the op makes at this step's size (ops that record
            // nothing for it, e.g. a rounding pass a one-token step fuses away, count none).
            let dispatches = op.dispatches(s.n_rows, s.n_out, s.n_chunks);
            if dispatches == 0 {
                continue;
            }
            let e = by_kind.entry(op.kind().to_string()).or_default();
            e.0 += dispatches;
            e.1 += ns;
            sequence.push((op.detail(), dispatches, Duration::from_nanos(ns as u64)));
        }
        let mut ops: Vec<(String, usize, Duration)> = by_kind
            .into_iter()
            .map(|(k, (count, ns))| (k, count, Duration::from_nanos(ns as u64)))
            .collect();
        ops.sort_by_key(|o| std::cmp::Reverse(o.2));
        let total = ops.iter().map(|o| o.2).sum();
        Ok(Profile {
            ops,
            total,
            sequence,
        })
    }
}
