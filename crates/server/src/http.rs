//! The HTTP side: routes, API key, admission (the bounded queue), and the OpenAI response
//! shapes, streaming (server-sent events) and not.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rwkv_tokenizer::Tokenizer;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::{ApiError, ChatRequest, CompletionRequest, Generation, Limits};
use crate::metrics::Metrics;
use crate::scheduler::{Event, FinishReason, Job, Usage};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 << 20;

/// What every handler shares.
pub struct AppState {
    pub jobs: mpsc::Sender<Job>,
    pub tokenizer: Arc<Tokenizer>,
    pub vocab_size: usize,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub api_key: Option<String>,
    pub model_id: String,
    /// When the server started (Unix seconds), the model's `created`.
    pub created: u64,
}

pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Compares without stopping at the first difference.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| same_key(g.as_bytes(), key.as_bytes())) {
            s.metrics.rejected_unauthorized.fetch_add(1, Relaxed);
            let message = if given.is_some() {
                "Incorrect API key provided"
            } else {
                "Missing API key: send it as `Authorization: Bearer KEY`"
            };
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: message.into(),
                kind: "invalid_request_error",
                param: None,
                code: Some("invalid_api_key"),
                retry_after: None,
            }
            .into_response();
        }
    }
    next.run(request).await
}

async fn not_found(request: Request) -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no route for {} {}", request.method(), request.uri().path()),
        kind: "invalid_request_error",
        param: None,
        code: Some("not_found"),
        retry_after: None,
    }
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
        kind: "invalid_request_error",
        param: None,
        code: None,
        retry_after: None,
    }
    .into_response()
}

fn model_object(s: &AppState) -> Value {
    json!({"id": s.model_id, "object": "model", "created": s.created, "owned_by": "web-rwkv-gguf"})
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    Json(json!({"object": "list", "data": [model_object(&s)]})).into_response()
}

async fn model(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if id == s.model_id {
        Json(model_object(&s)).into_response()
    } else {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model {id:?} does not exist (this server has {:?})",
                s.model_id
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
            retry_after: None,
        }
        .into_response()
    }
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    let m = &s.metrics;
    let alive = m.scheduler_alive.load(Relaxed);
    let body = json!({
        "status": if alive { "ok" } else { "unavailable" },
        "model": s.model_id,
        "slots": m.slots,
        "slots_busy": m.slots_busy.load(Relaxed),
        "queue_depth": m.queue_depth(),
    });
    let status = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// The body as JSON of type `T`, or a 400 in OpenAI's shape.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| ApiError {
        status: r.status(),
        message: r.body_text(),
        kind: "invalid_request_error",
        param: None,
        code: None,
        retry_after: None,
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid: {e}"), None))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

async fn completions(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let checked = parse::<CompletionRequest>(body)
        .and_then(|r| r.check(&s.tokenizer, s.vocab_size, &s.limits));
    match checked {
        Ok(g) => s.generate(g, Kind::Completion).await,
        Err(e) => s.reject(e),
    }
}

async fn chat(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let checked = parse::<ChatRequest>(body).and_then(|r| r.check(&s.tokenizer, &s.limits));
    match checked {
        Ok(g) => s.generate(g, Kind::Chat).await,
        Err(e) => s.reject(e),
    }
}

fn request_id(kind: Kind) -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let prefix = match kind {
        Kind::Completion => "cmpl",
        Kind::Chat => "chatcmpl",
    };
    format!("{prefix}-{n:x}{t:08x}")
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn server_error(message: String) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message,
        kind: "server_error",
        param: None,
        code: None,
        retry_after: None,
    }
}

impl AppState {
    fn reject(&self, e: ApiError) -> Response {
        self.metrics.rejected_invalid.fetch_add(1, Relaxed);
        e.into_response()
    }

    /// Admits the request (or refuses it when the queue is full), hands it to the scheduler
    /// and answers with its result.
    async fn generate(self: &Arc<Self>, g: Generation, kind: Kind) -> Response {
        let m = &self.metrics;
        let capacity = m.slots + m.max_queue;
        let admitted = m
            .inflight
            .fetch_update(Relaxed, Relaxed, |n| (n < capacity).then_some(n + 1));
        if admitted.is_err() {
            m.rejected_queue_full.fetch_add(1, Relaxed);
            return ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "the server is busy ({} requests running, {} waiting); retry later",
                    m.slots, m.max_queue
                ),
                kind: "rate_limit_error",
                param: None,
                code: Some("queue_full"),
                retry_after: Some(1),
            }
            .into_response();
        }
        let (tx, rx) = unbounded_channel();
        let prompt_tokens = g.prompt.len();
        let job = Job {
            prompt: g.prompt,
            cache_points: g.cache_points,
            params: g.params,
            max_tokens: g.max_tokens,
            stop: g.stop,
            events: tx,
            arrived: Instant::now(),
        };
        if self.jobs.send(job).is_err() {
            m.inflight.fetch_sub(1, Relaxed);
            m.rejected_unavailable.fetch_add(1, Relaxed);
            return ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the engine is not running".into(),
                kind: "server_error",
                param: None,
                code: Some("unavailable"),
                retry_after: Some(5),
            }
            .into_response();
        }
        match kind {
            Kind::Completion => m.requests_completions.fetch_add(1, Relaxed),
            Kind::Chat => m.requests_chat.fetch_add(1, Relaxed),
        };
        m.prompt_tokens.fetch_add(prompt_tokens as u64, Relaxed);
        let reply = Reply {
            kind,
            id: request_id(kind),
            created: unix_now(),
            model: self.model_id.clone(),
        };
        if g.stream {
            reply.stream(rx, g.include_usage).into_response()
        } else {
            reply.collect(rx).await
        }
    }
}

/// The fixed fields of one request's response.
struct Reply {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        })
    }

    /// Waits for the whole generation. If the client goes away, this future is dropped with
    /// the receiver, which cancels the generation.
    async fn collect(self, mut rx: UnboundedReceiver<Event>) -> Response {
        let mut text = String::new();
        let (reason, usage) = loop {
            match rx.recv().await {
                Some(Event::Text(t)) => text.push_str(&t),
                Some(Event::Done(reason, usage)) => break (reason, usage),
                Some(Event::Error(e)) => return server_error(e).into_response(),
                None => {
                    return server_error("the generation ended unexpectedly".into()).into_response()
                }
            }
        };
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": reason.as_str(),
            }),
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text.trim_start()},
                "logprobs": null,
                "finish_reason": reason.as_str(),
            }),
        };
        let mut body = self.envelope(false, json!([choice]));
        body["usage"] = usage_json(&usage);
        Json(body).into_response()
    }

    fn stream(self, rx: UnboundedReceiver<Event>, include_usage: bool) -> impl IntoResponse {
        let mut queue = VecDeque::new();
        if self.kind == Kind::Chat {
            let delta = json!({"role": "assistant", "content": ""});
            queue.push_back(self.chunk_event(delta, None, include_usage));
        }
        let state = Stream {
            reply: self,
            rx,
            queue,
            done: false,
            include_usage,
            started: false,
        };
        let events = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(event) = st.queue.pop_front() {
                    return Some((Ok::<_, Infallible>(event), st));
                }
                if st.done {
                    return None;
                }
                let event = st.rx.recv().await;
                st.push(event);
            }
        });
        Sse::new(events).keep_alive(KeepAlive::default())
    }

    /// One chunk: a delta (chat) or text (completions), with the finish reason at the end.
    fn chunk_event(
        &self,
        content: Value,
        finish: Option<FinishReason>,
        include_usage: bool,
    ) -> SseEvent {
        let finish = finish.map(FinishReason::as_str);
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": 0, "text": content, "logprobs": null, "finish_reason": finish,
            }),
            Kind::Chat => json!({
                "index": 0, "delta": content, "logprobs": null, "finish_reason": finish,
            }),
        };
        let mut body = self.envelope(true, json!([choice]));
        if include_usage {
            body["usage"] = Value::Null;
        }
        SseEvent::default().data(body.to_string())
    }
}

/// A streaming response in progress.
struct Stream {
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    queue: VecDeque<SseEvent>,
    done: bool,
    include_usage: bool,
    /// Chat: some non-blank text was sent (leading blanks of a reply are dropped).
    started: bool,
}

impl Stream {
    fn push(&mut self, event: Option<Event>) {
        let r = &self.reply;
        match event {
            Some(Event::Text(mut text)) => {
                if r.kind == Kind::Chat && !self.started {
                    text = text.trim_start().to_string();
                    if text.is_empty() {
                        return;
                    }
                    self.started = true;
                }
                let content = match r.kind {
                    Kind::Completion => json!(text),
                    Kind::Chat => json!({"content": text}),
                };
                let event = r.chunk_event(content, None, self.include_usage);
                self.queue.push_back(event);
            }
            Some(Event::Done(reason, usage)) => {
                let content = match r.kind {
                    Kind::Completion => json!(""),
                    Kind::Chat => json!({}),
                };
                let event = r.chunk_event(content, Some(reason), self.include_usage);
                self.queue.push_back(event);
                if self.include_usage {
                    let mut body = r.envelope(true, json!([]));
                    body["usage"] = usage_json(&usage);
                    self.queue
                        .push_back(SseEvent::default().data(body.to_string()));
                }
                self.finish();
            }
            Some(Event::Error(e)) => {
                let body = server_error(e).body();
                self.queue
                    .push_back(SseEvent::default().data(body.to_string()));
                self.finish();
            }
            None => {
                let body = server_error("the generation ended unexpectedly".into()).body();
                self.queue
                    .push_back(SseEvent::default().data(body.to_string()));
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        self.queue.push_back(SseEvent::default().data("[DONE]"));
        self.done = true;
    }
}
