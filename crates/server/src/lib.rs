//! An OpenAI-compatible HTTP server for RWKV-7 GGUF models.
//!
//! - `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (streaming as
//!   server-sent events in OpenAI's chunk format, or not), `GET /health`, `GET /metrics`
//!   (Prometheus text format);
//! - one scheduler thread owns the GPU engine and batches every request in flight into each
//!   step (continuous batching, prompts read in chunks between decode steps), see
//!   [`scheduler`];
//! - a prefix state cache skips re-reading prompt prefixes seen before (a system prompt, the
//!   earlier turns of a chat), see [`cache`];
//! - a bounded queue (429 with `Retry-After` when full), an optional API key, OpenAI-style
//!   error bodies, and cancellation when a client goes away.
//!
//! [`Server::start`] runs it on a thread of its own (tests, embedding); [`run`] is the `serve`
//! command.

pub mod api;
pub mod cache;
mod http;
pub mod metrics;
pub mod scheduler;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};

pub use http::{router, AppState};

/// Everything the server is started with.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub model: PathBuf,
    /// GPU adapter (index or part of its name); `None`: the default choice.
    pub adapter: Option<String>,
    /// Requests generated at once (engine slots).
    pub slots: usize,
    /// Requests that may wait for a slot; more are answered with 429.
    pub max_queue: usize,
    /// Required as `Authorization: Bearer KEY` on `/v1/*` when set.
    pub api_key: Option<String>,
    /// The model id clients see (default: the file name without `.gguf`).
    pub model_name: Option<String>,
    /// Prompt tokens read per engine step over all requests.
    pub prefill_chunk: usize,
    /// Keep f16 copies of quantized weights for batch steps (the engine's `f16_weights`).
    pub f16_weights: bool,
    /// Host memory for cached prefix states.
    pub cache_bytes: u64,
    /// Prefixes shorter than this are not cached.
    pub cache_min_tokens: usize,
    /// `max_tokens` of a chat request that gives none.
    pub default_max_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// Longest prompt accepted, in tokens.
    pub max_prompt_tokens: usize,
}

impl ServerOptions {
    /// Defaults for everything but the model.
    pub fn new(model: impl Into<PathBuf>) -> ServerOptions {
        ServerOptions {
            model: model.into(),
            adapter: None,
            slots: 8,
            max_queue: 64,
            api_key: None,
            model_name: None,
            prefill_chunk: 256,
            f16_weights: false,
            cache_bytes: 1 << 30,
            cache_min_tokens: 16,
            default_max_tokens: 1024,
            max_tokens_limit: 16384,
            max_prompt_tokens: 65536,
        }
    }
}

/// A server running on threads of its own; shut down when dropped.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
    scheduler: Option<JoinHandle<()>>,
}

impl Server {
    /// Loads the model, binds `addr` (port 0: any free port) and starts serving. Returns once
    /// requests can be made.
    pub fn start(options: ServerOptions, addr: SocketAddr) -> Result<Server> {
        Server::start_with_progress(options, addr, Box::new(|_, _| {}))
    }

    /// [`Server::start`], reporting model loading as (bytes done, bytes in all).
    pub fn start_with_progress(
        options: ServerOptions,
        addr: SocketAddr,
        progress: Box<dyn FnMut(u64, u64) + Send>,
    ) -> Result<Server> {
        if options.slots == 0 {
            bail!("--slots must be at least 1");
        }
        if options.prefill_chunk == 0 {
            bail!("--prefill-chunk must be at least 1");
        }
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let metrics = Arc::new(metrics::Metrics::new(
            options.slots,
            options.max_queue,
            options.cache_bytes,
        ));
        let (jobs, info, scheduler) = scheduler::spawn(
            options.model.clone(),
            options.adapter.clone(),
            scheduler::SchedulerOptions {
                slots: options.slots,
                prefill_chunk: options.prefill_chunk,
                f16_weights: options.f16_weights,
                cache_bytes: options.cache_bytes,
                cache_min_tokens: options.cache_min_tokens,
            },
            metrics.clone(),
            progress,
        )?;
        let model_id = options.model_name.clone().unwrap_or_else(|| {
            let name = options
                .model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            name.strip_suffix(".gguf").unwrap_or(&name).to_string()
        });
        let state = Arc::new(AppState {
            jobs,
            tokenizer: info.tokenizer,
            vocab_size: info.vocab_size,
            metrics,
            limits: api::Limits {
                default_max_tokens: options.default_max_tokens,
                max_tokens_limit: options.max_tokens_limit,
                max_prompt_tokens: options.max_prompt_tokens,
            },
            api_key: options.api_key.clone(),
            model_id,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        });
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rwkv-http")
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        let thread = std::thread::Builder::new()
            .name("rwkv-http-main".into())
            .spawn(move || -> Result<()> {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, router(state))
                        .with_graceful_shutdown(async {
                            let _ = shutdown_rx.await;
                        })
                        .await?;
                    Ok(())
                })
            })?;
        Ok(Server {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
            scheduler: Some(scheduler),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, waits for open ones to end and for the engine to stop.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))??;
        }
        if let Some(t) = self.scheduler.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// `web-rwkv-gguf serve`: an OpenAI-compatible HTTP server.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// The GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests generated at once (engine slots).
    #[arg(long, default_value_t = 8)]
    pub slots: usize,
    /// Requests that may wait for a slot; more are answered with 429 and Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Require `Authorization: Bearer KEY` on /v1/* (default: the WEB_RWKV_API_KEY variable,
    /// else none).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model id clients see (default: the file name without .gguf).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Prompt tokens read per engine step over all requests (long prompts are read in chunks
    /// between decode steps).
    #[arg(long, default_value_t = 256)]
    pub prefill_chunk: usize,
    /// Keep f16 copies of quantized weights for batch steps: faster with many users on GPUs
    /// with tensor cores, for 2 bytes more GPU memory per weight (5.9 GB for 2.9B).
    #[arg(long)]
    pub f16_weights: bool,
    /// Host memory for cached prefix states, in MiB (0: no cache).
    #[arg(long, default_value_t = 1024)]
    pub cache_mb: u64,
    /// `max_tokens` of a chat request that gives none.
    #[arg(long, default_value_t = 1024)]
    pub default_max_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 16384)]
    pub max_tokens_limit: usize,
    /// Longest prompt accepted, in tokens.
    #[arg(long, default_value_t = 65536)]
    pub max_prompt_tokens: usize,
}

impl ServeArgs {
    pub fn options(&self, adapter: Option<String>) -> ServerOptions {
        ServerOptions {
            model: self.model.clone(),
            adapter,
            slots: self.slots,
            max_queue: self.max_queue,
            api_key: self
                .api_key
                .clone()
                .or_else(|| std::env::var("WEB_RWKV_API_KEY").ok())
                .filter(|k| !k.is_empty()),
            model_name: self.model_name.clone(),
            prefill_chunk: self.prefill_chunk,
            f16_weights: self.f16_weights,
            cache_bytes: self.cache_mb << 20,
            default_max_tokens: self.default_max_tokens,
            max_tokens_limit: self.max_tokens_limit,
            max_prompt_tokens: self.max_prompt_tokens,
            ..ServerOptions::new(&self.model)
        }
    }
}

/// Runs the server until Ctrl-C.
pub fn run(args: ServeArgs, adapter: Option<String>) -> Result<()> {
    let addr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}:{}", args.host, args.port))?
        .next()
        .with_context(|| format!("{} has no address", args.host))?;
    let options = args.options(adapter);
    eprintln!("loading {}", options.model.display());
    let started = std::time::Instant::now();
    let mut shown = 0;
    let progress = Box::new(move |done: u64, total: u64| {
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if tenth > shown {
            shown = tenth;
            eprint!("\r{}%", tenth * 10);
        }
    });
    let server = Server::start_with_progress(options.clone(), addr, progress)?;
    eprintln!(
        "\rloaded in {:.1}s; {} slots, queue {}{}",
        started.elapsed().as_secs_f64(),
        options.slots,
        options.max_queue,
        if options.api_key.is_some() {
            ", API key required"
        } else {
            ""
        }
    );
    eprintln!(
        "listening on {} (OpenAI API at {}/v1)",
        server.url(),
        server.url()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    eprintln!("shutting down");
    server.shutdown()
}
