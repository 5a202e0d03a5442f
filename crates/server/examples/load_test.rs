//! A bounded load test against a running server: `--clients` concurrent streaming clients send
//! requests back to back for `--seconds`, every request that was started is finished, and the
//! report gives time to first token (p50/p99), aggregate generated tokens/s, failures and the
//! server's resident memory over the run (from /metrics).
//!
//! ```sh
//! web-rwkv-gguf serve --model ../shared/fixtures/mini-q4_k_m.gguf --slots 32 &
//! cargo run --release --example load_test -p rwkv-server -- --url http://127.0.0.1:8080 --clients 32 --seconds 60
//! ```
//!
//! Exits with 1 if any request failed.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct Config {
    pub url: String,
    pub clients: usize,
    pub seconds: f64,
    pub max_tokens: usize,
    pub prompt: String,
    pub chat: bool,
    pub api_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "http://127.0.0.1:8080".into(),
            clients: 32,
            seconds: 60.0,
            max_tokens: 64,
            prompt: "Tell me about the history of the river and the town beside it.".into(),
            chat: false,
            api_key: None,
        }
    }
}

/// What one request measured.
#[derive(Clone, Debug)]
pub struct Sample {
    pub ttft: Duration,
    pub total: Duration,
    pub tokens: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub failures: Vec<String>,
    pub elapsed: Duration,
    /// Server resident memory (bytes) sampled over the run.
    pub rss: Vec<u64>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

impl Report {
    pub fn tokens(&self) -> u64 {
        self.samples.iter().map(|s| s.tokens).sum()
    }

    pub fn tokens_per_second(&self) -> f64 {
        self.tokens() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ttft(&self, p: f64) -> Duration {
        let mut t: Vec<Duration> = self.samples.iter().map(|s| s.ttft).collect();
        t.sort();
        percentile(&t, p)
    }

    /// Median over requests of tokens/s after the first token.
    pub fn stream_rate(&self) -> f64 {
        let mut r: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.tokens > 1 && s.total > s.ttft)
            .map(|s| (s.tokens - 1) as f64 / (s.total - s.ttft).as_secs_f64())
            .collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    }

    pub fn summary(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let rss = match (self.rss.first(), self.rss.last(), self.rss.iter().max()) {
            (Some(a), Some(b), Some(m)) => format!(
                "server RSS {:.1} MiB at start, {:.1} MiB at end, {:.1} MiB peak",
                mib(*a),
                mib(*b),
                mib(*m)
            ),
            _ => "server RSS unknown".into(),
        };
        format!(
            "{} requests ok, {} failed in {:.1}s | TTFT p50 {:.1} ms, p99 {:.1} ms | {} tokens, {:.1} tok/s aggregate, {:.1} tok/s per stream (p50) | {rss}",
            self.samples.len(),
            self.failures.len(),
            self.elapsed.as_secs_f64(),
            self.ttft(0.5).as_secs_f64() * 1e3,
            self.ttft(0.99).as_secs_f64() * 1e3,
            self.tokens(),
            self.tokens_per_second(),
            self.stream_rate(),
        )
    }
}

async fn resident_bytes(client: &reqwest::Client, url: &str) -> Option<u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// One streaming request: time to the first text, tokens from the usage chunk.
async fn one_request(
    client: &reqwest::Client,
    cfg: &Config,
    model: &str,
    n: usize,
) -> Result<Sample, String> {
    let (path, mut body) = if cfg.chat {
        (
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": cfg.prompt}]}),
        )
    } else {
        (
            "/v1/completions",
            json!({"model": model, "prompt": cfg.prompt}),
        )
    };
    body["max_tokens"] = json!(cfg.max_tokens);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["seed"] = json!(n);
    let start = Instant::now();
    let mut req = client.post(format!("{}{path}", cfg.url)).json(&body);
    if let Some(k) = &cfg.api_key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        let status = r.status();
        return Err(format!("{status}: {}", r.text().await.unwrap_or_default()));
    }
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut ttft = None;
    let mut tokens = None;
    let mut done = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if data == "[DONE]" {
                    done = true;
                    continue;
                }
                let v: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
                if let Some(e) = v.get("error") {
                    return Err(e.to_string());
                }
                let choice = &v["choices"][0];
                let text = choice["text"]
                    .as_str()
                    .or(choice["delta"]["content"].as_str());
                if ttft.is_none() && text.is_some_and(|t| !t.is_empty()) {
                    ttft = Some(start.elapsed());
                }
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    tokens = Some(n);
                }
            }
        }
    }
    if !done {
        return Err("the stream ended without [DONE]".into());
    }
    let total = start.elapsed();
    Ok(Sample {
        ttft: ttft.unwrap_or(total),
        total,
        tokens: tokens.ok_or("no usage chunk")?,
    })
}

/// Runs the load: every client sends requests back to back until the time is up; requests
/// under way then are finished, not abandoned.
pub async fn run(cfg: Config) -> Result<Report, String> {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("{}/v1/models", cfg.url));
    if let Some(k) = &cfg.api_key {
        req = req.bearer_auth(k);
    }
    let models: Value = req
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", cfg.url))?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let model = models["data"][0]["id"]
        .as_str()
        .ok_or_else(|| format!("no model listed: {models}"))?
        .to_string();

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(cfg.seconds);
    let mut rss: Vec<u64> = resident_bytes(&client, &cfg.url)
        .await
        .into_iter()
        .collect();
    let workers: Vec<_> = (0..cfg.clients)
        .map(|c| {
            let (client, cfg, model) = (client.clone(), cfg.clone(), model.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut failures = Vec::new();
                let mut n = c;
                while Instant::now() < deadline {
                    match one_request(&client, &cfg, &model, n).await {
                        Ok(s) => samples.push(s),
                        Err(e) => failures.push(e),
                    }
                    n += cfg.clients;
                }
                (samples, failures)
            })
        })
        .collect();
    let mut all = futures_util::future::join_all(workers);
    let results = loop {
        tokio::select! {
            r = &mut all => break r,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                rss.extend(resident_bytes(&client, &cfg.url).await);
            }
        }
    };
    let elapsed = start.elapsed();
    rss.extend(resident_bytes(&client, &cfg.url).await);
    let mut report = Report {
        elapsed,
        rss,
        ..Report::default()
    };
    for r in results {
        let (s, f) = r.map_err(|e| e.to_string())?;
        report.samples.extend(s);
        report.failures.extend(f);
    }
    Ok(report)
}

#[allow(dead_code)]
fn main() {
    let mut cfg = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value");
                std::process::exit(2)
            })
        };
        let number = |v: String| -> f64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("not a number: {v}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--url" => cfg.url = value().trim_end_matches('/').to_string(),
            "--clients" => cfg.clients = number(value()) as usize,
            "--seconds" => cfg.seconds = number(value()),
            "--max-tokens" => cfg.max_tokens = number(value()) as usize,
            "--prompt" => cfg.prompt = value(),
            "--api-key" => cfg.api_key = Some(value()),
            "--chat" => cfg.chat = true,
            "-h" | "--help" => {
                println!(
                    "load_test [--url URL] [--clients N] [--seconds S] [--max-tokens N] \
                     [--prompt TEXT] [--api-key KEY] [--chat]"
                );
                return;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2)
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cfg)) {
        Ok(report) => {
            println!("{}", report.summary());
            for f in report.failures.iter().take(5) {
                eprintln!("failure: {f}");
            }
            if !report.failures.is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
