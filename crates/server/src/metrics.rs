//! Counters and gauges shared by the HTTP handlers and the scheduler, rendered in Prometheus'
//! text exposition format by `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// A histogram with fixed buckets (seconds), lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

const STEP_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const TTFT_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Why a request ended, as counted in `rwkv_requests_finished_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    Cancelled,
    Error,
}

pub struct Metrics {
    pub slots: usize,
    pub max_queue: usize,
    pub cache_capacity_bytes: u64,
    /// False once the scheduler thread has ended (the engine is gone).
    pub scheduler_alive: AtomicBool,

    pub requests_completions: AtomicU64,
    pub requests_chat: AtomicU64,
    pub rejected_invalid: AtomicU64,
    pub rejected_unauthorized: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    pub rejected_unavailable: AtomicU64,
    pub finished_stop: AtomicU64,
    pub finished_length: AtomicU64,
    pub finished_cancelled: AtomicU64,
    pub finished_error: AtomicU64,

    /// Requests accepted and not finished (queued or in a slot).
    pub inflight: AtomicUsize,
    pub slots_busy: AtomicUsize,

    pub prompt_tokens: AtomicU64,
    /// Prompt tokens actually run through the model (the rest came from the cache).
    pub prefill_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,

    pub steps: AtomicU64,
    /// Sum over steps of the slots in the step (average batch = this / steps).
    pub step_slots: AtomicU64,
    pub step_max_slots: AtomicUsize,
    pub step_seconds: Histogram,
    pub ttft_seconds: Histogram,

    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_hit_tokens: AtomicU64,
    pub cache_inserts: AtomicU64,
    pub cache_evictions: AtomicU64,
    pub cache_entries: AtomicUsize,
    pub cache_bytes: AtomicU64,
}

impl Metrics {
    pub fn new(slots: usize, max_queue: usize, cache_capacity_bytes: u64) -> Metrics {
        let z = || AtomicU64::new(0);
        Metrics {
            slots,
            max_queue,
            cache_capacity_bytes,
            scheduler_alive: AtomicBool::new(true),
            requests_completions: z(),
            requests_chat: z(),
            rejected_invalid: z(),
            rejected_unauthorized: z(),
            rejected_queue_full: z(),
            rejected_unavailable: z(),
            finished_stop: z(),
            finished_length: z(),
            finished_cancelled: z(),
            finished_error: z(),
            inflight: AtomicUsize::new(0),
            slots_busy: AtomicUsize::new(0),
            prompt_tokens: z(),
            prefill_tokens: z(),
            generated_tokens: z(),
            steps: z(),
            step_slots: z(),
            step_max_slots: AtomicUsize::new(0),
            step_seconds: Histogram::new(STEP_BOUNDS),
            ttft_seconds: Histogram::new(TTFT_BOUNDS),
            cache_hits: z(),
            cache_misses: z(),
            cache_hit_tokens: z(),
            cache_inserts: z(),
            cache_evictions: z(),
            cache_entries: AtomicUsize::new(0),
            cache_bytes: z(),
        }
    }

    pub fn finished(&self, how: Finish) {
        let c = match how {
            Finish::Stop => &self.finished_stop,
            Finish::Length => &self.finished_length,
            Finish::Cancelled => &self.finished_cancelled,
            Finish::Error => &self.finished_error,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Requests waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.inflight
            .load(Relaxed)
            .saturating_sub(self.slots_busy.load(Relaxed))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let l = |a: &AtomicU64| a.load(Relaxed);
        counter(
            &mut o,
            "rwkv_requests_total",
            "Generation requests accepted, by endpoint.",
            &[
                ("{endpoint=\"completions\"}", l(&self.requests_completions)),
                ("{endpoint=\"chat\"}", l(&self.requests_chat)),
            ],
        );
        counter(
            &mut o,
            "rwkv_requests_rejected_total",
            "Requests answered with an error before generation, by reason.",
            &[
                ("{reason=\"invalid\"}", l(&self.rejected_invalid)),
                ("{reason=\"unauthorized\"}", l(&self.rejected_unauthorized)),
                ("{reason=\"queue_full\"}", l(&self.rejected_queue_full)),
                ("{reason=\"unavailable\"}", l(&self.rejected_unavailable)),
            ],
        );
        counter(
            &mut o,
            "rwkv_requests_finished_total",
            "Generations ended, by reason (cancelled: the client went away).",
            &[
                ("{reason=\"stop\"}", l(&self.finished_stop)),
                ("{reason=\"length\"}", l(&self.finished_length)),
                ("{reason=\"cancelled\"}", l(&self.finished_cancelled)),
                ("{reason=\"error\"}", l(&self.finished_error)),
            ],
        );
        gauge(
            &mut o,
            "rwkv_queue_depth",
            "Requests waiting for a slot.",
            self.queue_depth() as f64,
        );
        gauge(
            &mut o,
            "rwkv_queue_capacity",
            "Requests that may wait for a slot before new ones are refused.",
            self.max_queue as f64,
        );
        gauge(
            &mut o,
            "rwkv_slots_busy",
            "Engine slots running a request.",
            self.slots_busy.load(Relaxed) as f64,
        );
        gauge(
            &mut o,
            "rwkv_slots_total",
            "Engine slots.",
            self.slots as f64,
        );
        counter(
            &mut o,
            "rwkv_prompt_tokens_total",
            "Prompt tokens of accepted requests.",
            &[("", l(&self.prompt_tokens))],
        );
        counter(
            &mut o,
            "rwkv_prefill_tokens_total",
            "Prompt tokens run through the model (the others came from the state cache).",
            &[("", l(&self.prefill_tokens))],
        );
        counter(
            &mut o,
            "rwkv_generated_tokens_total",
            "Tokens generated.",
            &[("", l(&self.generated_tokens))],
        );
        counter(
            &mut o,
            "rwkv_steps_total",
            "Engine steps.",
            &[("", l(&self.steps))],
        );
        counter(
            &mut o,
            "rwkv_step_slots_total",
            "Slots taking part in engine steps, summed over steps.",
            &[("", l(&self.step_slots))],
        );
        gauge(
            &mut o,
            "rwkv_step_max_slots",
            "Most slots that took part in one engine step.",
            self.step_max_slots.load(Relaxed) as f64,
        );
        self.step_seconds.render(
            &mut o,
            "rwkv_step_seconds",
            "Wall time of one engine step (all slots, prefill chunks and decode), from its submission or, when it was submitted while the step before ran, from that step's end.",
        );
        self.ttft_seconds.render(
            &mut o,
            "rwkv_time_to_first_token_seconds",
            "From a request's arrival to its first generated token.",
        );
        counter(
            &mut o,
            "rwkv_cache_hits_total",
            "Requests that started from a cached prefix state.",
            &[("", l(&self.cache_hits))],
        );
        counter(
            &mut o,
            "rwkv_cache_misses_total",
            "Requests that found no cached prefix state.",
            &[("", l(&self.cache_misses))],
        );
        counter(
            &mut o,
            "rwkv_cache_hit_tokens_total",
            "Prompt tokens skipped thanks to cached prefix states.",
            &[("", l(&self.cache_hit_tokens))],
        );
        counter(
            &mut o,
            "rwkv_cache_inserts_total",
            "Prefix states stored.",
            &[("", l(&self.cache_inserts))],
        );
        counter(
            &mut o,
            "rwkv_cache_evictions_total",
            "Prefix states dropped to make room.",
            &[("", l(&self.cache_evictions))],
        );
        gauge(
            &mut o,
            "rwkv_cache_entries",
            "Prefix states held.",
            self.cache_entries.load(Relaxed) as f64,
        );
        gauge(
            &mut o,
            "rwkv_cache_bytes",
            "Host memory held by prefix states.",
            l(&self.cache_bytes) as f64,
        );
        gauge(
            &mut o,
            "rwkv_cache_capacity_bytes",
            "Most host memory prefix states may take.",
            self.cache_capacity_bytes as f64,
        );
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut o,
                "process_resident_memory_bytes",
                "Resident memory of the server process.",
                rss as f64,
            );
        }
        o
    }
}

/// Resident set size of this process (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
