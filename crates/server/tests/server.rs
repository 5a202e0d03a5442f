//! The server end to end on loopback with a fixture model (lavapipe where there is no GPU):
//! both endpoints streaming and not, stop strings, usage, errors, the API key, the bounded
//! queue, cancellation, prompts read between decode steps, the prefix state cache, and the
//! official `openai` Python client.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rwkv_server::{Server, ServerOptions};
use serde_json::{json, Value};

const KEY: &str = "test-key";

fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
    .join(name);
    assert!(p.exists(), "missing fixture {}", p.display());
    p
}

/// The tiny model with the World tokenizer's first 4096 tokens: every byte is a token.
const MODEL: &str = "mini-q4_k_m.gguf";

fn options() -> ServerOptions {
    ServerOptions {
        slots: 4,
        max_queue: 16,
        api_key: Some(KEY.into()),
        model_name: Some("mini".into()),
        prefill_chunk: 32,
        cache_bytes: 64 << 20,
        cache_min_tokens: 4,
        max_tokens_limit: 4096,
        ..ServerOptions::new(fixture(MODEL))
    }
}

/// One server shared by the tests that do not need a server of their own.
fn shared() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(options(), "127.0.0.1:0".parse().unwrap()).unwrap())
}

/// A server for tests that compare the outputs of two requests: one test at a time, so each
/// request runs alone and its steps are the same every time (how many sequences share a step
/// may change which matrix kernel runs, and so the last bits of the logits).
fn quiet() -> &'static tokio::sync::Mutex<Server> {
    static SERVER: OnceLock<tokio::sync::Mutex<Server>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = Server::start(options(), "127.0.0.1:0".parse().unwrap()).unwrap();
        tokio::sync::Mutex::new(server)
    })
}

fn tokenizer() -> &'static rwkv_tokenizer::Tokenizer {
    static T: OnceLock<rwkv_tokenizer::Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let file = gguf::GgufFile::open(fixture(MODEL)).unwrap();
        rwkv_tokenizer::Tokenizer::from_gguf(&file).unwrap()
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post_raw(url: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}{path}"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post(url: &str, path: &str, body: Value) -> (u16, Value) {
    let r = post_raw(url, path, &body).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

async fn post_ok(url: &str, path: &str, body: Value) -> Value {
    let (status, json) = post(url, path, body).await;
    assert_eq!(status, 200, "{json}");
    json
}

async fn metrics(url: &str) -> String {
    client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Reads server-sent events' `data:` payloads.
struct Sse {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: String,
}

impl Sse {
    fn new(r: reqwest::Response) -> Sse {
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Sse {
            body: r.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event's data (`None`: the stream ended).
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(data.join("\n"));
            }
            match self.body.next().await {
                Some(chunk) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => return None,
            }
        }
    }

    /// Every chunk up to `[DONE]`, which must be last.
    async fn all(mut self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let data = self.next().await.expect("the stream ended without [DONE]");
            if data == "[DONE]" {
                assert!(self.next().await.is_none(), "data after [DONE]");
                return out;
            }
            out.push(serde_json::from_str(&data).unwrap());
        }
    }
}

async fn stream(url: &str, path: &str, mut body: Value) -> Vec<Value> {
    body["stream"] = json!(true);
    Sse::new(post_raw(url, path, &body).await).all().await
}

/// The text of completion chunks (`text`) or chat chunks (`delta.content`).
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            let choice = c["choices"].get(0)?;
            choice["text"]
                .as_str()
                .or(choice["delta"]["content"].as_str())
        })
        .collect()
}

fn finish_reason(chunks: &[Value]) -> String {
    let reasons: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["finish_reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 1, "one chunk carries the finish reason");
    reasons[0].to_string()
}

#[tokio::test]
async fn models_health_and_metrics() {
    let url = shared().url();
    let models: Value = client()
        .get(format!("{url}/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "mini");
    assert_eq!(models["data"][0]["object"], "model");
    let health = client().get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(
        (health["status"].as_str(), health["slots"].as_u64()),
        (Some("ok"), Some(4))
    );
    let m = metrics(&url).await;
    for name in [
        "rwkv_slots_total",
        "rwkv_queue_depth",
        "rwkv_slots_busy",
        "rwkv_steps_total",
        "rwkv_cache_hits_total",
        "rwkv_generated_tokens_total",
    ] {
        metric(&m, name);
    }
    assert!(m.contains("rwkv_step_seconds_bucket{le=\"+Inf\"}"), "{m}");
    assert!(m.contains("rwkv_requests_total{endpoint=\"chat\"}"), "{m}");
}

#[tokio::test]
async fn completion_streamed_and_not_agree_with_usage() {
    let server = quiet().lock().await;
    let url = server.url();
    let prompt = "The quick brown fox";
    let body = json!({"model": "mini", "prompt": prompt, "max_tokens": 8, "temperature": 0});
    let r = post_ok(&url, "/v1/completions", body.clone()).await;
    assert_eq!(r["object"], "text_completion");
    assert_eq!(r["model"], "mini");
    assert!(r["id"].as_str().unwrap().starts_with("cmpl-"));
    let choice = &r["choices"][0];
    let text = choice["text"].as_str().unwrap().to_string();
    let usage = &r["usage"];
    let prompt_tokens = tokenizer().encode_str(prompt).len() as u64;
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(prompt_tokens));
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(prompt_tokens + completion_tokens)
    );
    // Greedy: 8 tokens unless the model ends the text first.
    match choice["finish_reason"].as_str().unwrap() {
        "length" => assert_eq!(completion_tokens, 8),
        "stop" => assert!(completion_tokens < 8),
        other => panic!("finish_reason {other}"),
    }

    // The same request streamed: the same text, then the usage chunk.
    let mut body = body;
    body["stream_options"] = json!({"include_usage": true});
    let chunks = stream(&url, "/v1/completions", body).await;
    let (last, chunks) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"]["completion_tokens"].as_u64(),
        Some(completion_tokens)
    );
    assert_eq!(last["usage"]["prompt_tokens"].as_u64(), Some(prompt_tokens));
    for c in chunks {
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    assert_eq!(streamed_text(chunks), text);
    assert_eq!(
        finish_reason(chunks),
        choice["finish_reason"].as_str().unwrap()
    );

    // Token ids as the prompt.
    let ids = tokenizer().encode_str(prompt);
    let body = json!({"prompt": ids, "max_tokens": 8, "temperature": 0});
    let r = post_ok(&url, "/v1/completions", body).await;
    assert_eq!(r["choices"][0]["text"].as_str().unwrap(), text);
}

#[tokio::test]
async fn chat_streamed_and_not() {
    let server = quiet().lock().await;
    let url = server.url();
    let body = json!({
        "model": "mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something."},
        ],
        "max_tokens": 6,
        "temperature": 0.8,
        "top_p": 0.9,
        "seed": 7,
    });
    let r = post_ok(&url, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r["object"], "chat.completion");
    assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let message = &r["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    let content = message["content"].as_str().unwrap().to_string();
    let prompt = "System: You are terse.\n\nUser: Say something.\n\nAssistant:";
    let prompt_tokens = tokenizer().encode_str(prompt).len() as u64;
    assert_eq!(r["usage"]["prompt_tokens"].as_u64(), Some(prompt_tokens));
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() <= 6);

    // Same seed, same reply, streamed: a first chunk with the role, the content, the finish.
    let chunks = stream(&url, "/v1/chat/completions", body).await;
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&chunks), content);
    assert_eq!(
        finish_reason(&chunks),
        r["choices"][0]["finish_reason"].as_str().unwrap()
    );
    assert_eq!(chunks.last().unwrap()["choices"][0]["delta"], json!({}));
}

#[tokio::test]
async fn stop_strings_end_the_text_before_them() {
    let server = quiet().lock().await;
    let url = server.url();
    let body = json!({"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0});
    let r = post_ok(&url, "/v1/completions", body.clone()).await;
    let full = r["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 6, "too little text to cut: {full:?}");
    // Two characters from the middle of the text are the stop string.
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];

    let mut with_stop = body.clone();
    with_stop["stop"] = json!([stop, "never appears \u{1}"]);
    let r = post_ok(&url, "/v1/completions", with_stop.clone()).await;
    assert_eq!(r["choices"][0]["text"].as_str().unwrap(), expected);
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() < 24);

    let chunks = stream(&url, "/v1/completions", with_stop).await;
    assert_eq!(streamed_text(&chunks), expected);
    assert_eq!(finish_reason(&chunks), "stop");

    // A single string works too.
    let mut one = body;
    one["stop"] = json!(stop);
    let r = post_ok(&url, "/v1/completions", one).await;
    assert_eq!(r["choices"][0]["text"].as_str().unwrap(), expected);
}

#[tokio::test]
async fn invalid_requests_get_openai_errors() {
    let url = shared().url();
    let chat = |extra: Value| {
        let mut b = json!({"model": "mini", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "/v1/chat/completions",
            chat(json!({"temperature": -1})),
            Some("temperature"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"top_p": 0})),
            Some("top_p"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"top_p": 1.5})),
            Some("top_p"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"top_k": -3})),
            Some("top_k"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"min_p": 2})),
            Some("min_p"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"penalty_decay": 1.5})),
            Some("penalty_decay"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"max_tokens": 0})),
            Some("max_tokens"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"max_tokens": 1_000_000})),
            Some("max_tokens"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"max_completion_tokens": -1})),
            Some("max_completion_tokens"),
        ),
        ("/v1/chat/completions", chat(json!({"n": 2})), Some("n")),
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": true})),
            Some("logprobs"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"tools": [{"type": "function"}]})),
            Some("tools"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"seed": 1.5})),
            Some("seed"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"stop": vec!["x"; 17]})),
            Some("stop"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"messages": []})),
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "mini"}),
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"messages": [{"role": "tool", "content": "x"}]})),
            Some("messages[0].role"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})),
            Some("messages[0].content"),
        ),
        (
            "/v1/chat/completions",
            chat(json!({"temperature": "hot"})),
            None,
        ),
        ("/v1/completions", json!({"prompt": ""}), Some("prompt")),
        ("/v1/completions", json!({"prompt": []}), Some("prompt")),
        ("/v1/completions", json!({"max_tokens": 3}), Some("prompt")),
        (
            "/v1/completions",
            json!({"prompt": [1, 2, 99999]}),
            Some("prompt"),
        ),
        ("/v1/completions", json!({"prompt": [-1]}), Some("prompt")),
        (
            "/v1/completions",
            json!({"prompt": ["a", "b"]}),
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "echo": true}),
            Some("echo"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logprobs": 3}),
            Some("logprobs"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "best_of": 2}),
            Some("best_of"),
        ),
        ("/v1/completions", json!({"prompt": 12}), None),
        ("/v1/completions", json!([1, 2]), None),
    ];
    for (path, body, param) in cases {
        let (status, e) = post(&url, path, body.clone()).await;
        assert_eq!(status, 400, "{body} → {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty(), "{e}");
        if let Some(p) = param {
            assert_eq!(e["error"]["param"], p, "{body} → {e}");
        }
    }

    // Not JSON at all.
    let r = client()
        .post(format!("{url}/v1/completions"))
        .bearer_auth(KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");

    // Unknown routes and methods.
    let r = client()
        .get(format!("{url}/v2/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let r = client()
        .get(format!("{url}/v1/completions"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = client()
        .get(format!("{url}/v1/models/nope"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The API key: missing or wrong is 401 on /v1, health and metrics stay open.
    let body = json!({"prompt": "hi", "max_tokens": 1});
    for auth in [None, Some("wrong"), Some("test-key-but-longer")] {
        let mut req = client().post(format!("{url}/v1/completions")).json(&body);
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_api_key");
    }
    let r = client()
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The server is still fine.
    post_ok(
        &url,
        "/v1/completions",
        json!({"prompt": "hi", "max_tokens": 1}),
    )
    .await;
}

#[tokio::test]
async fn repeated_system_prompt_is_served_from_the_state_cache() {
    let server = quiet().lock().await;
    let url = server.url();
    let system = "You are a helpful assistant who answers questions about the \
                  cache test in great detail, always politely.";
    let chat = |user: &str| {
        json!({
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "max_tokens": 3,
            "temperature": 0,
        })
    };
    let system_tokens = tokenizer()
        .encode_str(&format!("System: {system}\n\n"))
        .len() as u64;
    let before = metrics(&url).await;

    let first = post_ok(&url, "/v1/chat/completions", chat("What is a cache?")).await;
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    // The same system prompt: its state comes from the cache, only the rest is read.
    let second = post_ok(&url, "/v1/chat/completions", chat("And a state?")).await;
    let usage = &second["usage"];
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(system_tokens),
        "{usage}"
    );
    let after = metrics(&url).await;
    let delta = |name| metric(&after, name) - metric(&before, name);
    assert!(delta("rwkv_cache_hits_total") >= 1.0);
    assert!(delta("rwkv_cache_hit_tokens_total") >= system_tokens as f64);
    assert!(metric(&after, "rwkv_cache_entries") >= 1.0);

    // The whole conversation again: everything up to the reply's "Assistant:" is cached.
    let third = post_ok(&url, "/v1/chat/completions", chat("And a state?")).await;
    let prompt_tokens = third["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = third["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let tail = tokenizer().encode_str("Assistant:").len() as u64;
    assert_eq!(cached, prompt_tokens - tail);
    // Greedy from the cached state gives the same reply as from the state built on the way.
    assert_eq!(
        third["choices"][0]["message"]["content"],
        second["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn concurrent_requests_are_batched() {
    let url = shared().url();
    let requests = (0..4).map(|i| {
        let url = url.clone();
        async move {
            let body = json!({"prompt": format!("Request number {i} says"), "max_tokens": 12,
                              "temperature": 1.0, "seed": i, "stream": true});
            let chunks = Sse::new(post_raw(&url, "/v1/completions", &body).await)
                .all()
                .await;
            finish_reason(&chunks)
        }
    });
    let reasons = futures_util::future::join_all(requests).await;
    assert_eq!(reasons.len(), 4);
    let m = metrics(&url).await;
    assert!(
        metric(&m, "rwkv_step_max_slots") >= 2.0,
        "no step ran two requests at once"
    );
}

/// A server with 2 slots and a queue of 1, for the tests of a full server.
#[tokio::test]
async fn full_queue_cancellation_and_chunked_prefill() {
    let server = Server::start(
        ServerOptions {
            slots: 2,
            max_queue: 1,
            prefill_chunk: 16,
            cache_bytes: 0,
            api_key: None,
            max_tokens_limit: 100_000,
            ..ServerOptions::new(fixture(MODEL))
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let url = server.url();
    // Greedy, so that the streams cannot end by themselves: sampled with fresh seeds, the
    // test model's random weights give the end of text some probability at every token,
    // and a stream that ended before the third request came would leave it no queue to wait
    // in (seen once in CI). Greedy from this prompt runs 5,000 tokens without one.
    let long = json!({
        "prompt": "Tell me a long story.",
        "max_tokens": 100_000,
        "stream": true,
        "temperature": 0
    });

    // Two streams take both slots.
    let mut a = Sse::new(post_raw(&url, "/v1/completions", &long).await);
    let mut b = Sse::new(post_raw(&url, "/v1/completions", &long).await);
    a.next().await.unwrap();
    b.next().await.unwrap();

    // A third waits in the queue...
    let queued = tokio::spawn({
        let url = url.clone();
        async move {
            post(
                &url,
                "/v1/completions",
                json!({"prompt": "Hi", "max_tokens": 2}),
            )
            .await
        }
    });
    wait_for(&url, |m| metric(m, "rwkv_queue_depth") == 1.0).await;

    // ...and a fourth is refused.
    let r = post_raw(&url, "/v1/completions", &json!({"prompt": "Hi"})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "queue_full");

    // A client going away frees its slot for the waiting request.
    drop(b);
    let (status, done) = tokio::time::timeout(Duration::from_secs(60), queued)
        .await
        .expect("the queued request was not served")
        .unwrap();
    assert_eq!(status, 200, "{done}");
    wait_for(&url, |m| {
        metric(m, "rwkv_slots_busy") == 1.0
            && m.contains("rwkv_requests_finished_total{reason=\"cancelled\"} 1")
    })
    .await;

    // A long prompt is read in chunks between the steps of the running stream: the stream
    // gets tokens while the prompt is read.
    let words: Vec<String> = (0..160).map(|i| format!("w{i}")).collect();
    let prompt = words.join(" ");
    let prompt_tokens = tokenizer().encode_str(&prompt).len();
    assert!(prompt_tokens > 8 * 16);
    let read = tokio::spawn({
        let url = url.clone();
        async move {
            post(
                &url,
                "/v1/completions",
                json!({"prompt": prompt, "max_tokens": 1}),
            )
            .await
        }
    });
    let mut during = 0;
    let started = Instant::now();
    while !read.is_finished() {
        tokio::select! {
            data = a.next() => { data.unwrap(); during += 1; }
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(120));
    }
    let (status, r) = read.await.unwrap();
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["usage"]["prompt_tokens"].as_u64(),
        Some(prompt_tokens as u64)
    );
    // One decode step per prompt chunk at least (less a few for timing at both ends).
    assert!(
        during >= prompt_tokens / 16 - 3,
        "the stream got {during} tokens while {prompt_tokens} prompt tokens were read"
    );

    // A non-streaming client that gives up cancels its generation too. (The generation is
    // sampled with a fresh seed, and the test model's random weights give the end of text
    // some probability at every token: a generation that ends that way before the client
    // gives up is tried again.)
    drop(a);
    let mut ended_early = 0;
    loop {
        let gave_up = client()
            .post(format!("{url}/v1/completions"))
            .json(&json!({"prompt": "Go on", "max_tokens": 100_000}))
            .timeout(Duration::from_millis(1500))
            .send()
            .await;
        match gave_up {
            Err(e) => {
                assert!(e.is_timeout(), "{e}");
                break;
            }
            Ok(r) => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
                ended_early += 1;
                assert!(ended_early < 5, "every generation ended by itself: {body}");
            }
        }
    }
    wait_for(&url, |m| {
        metric(m, "rwkv_slots_busy") == 0.0
            && m.contains("rwkv_requests_finished_total{reason=\"cancelled\"} 3")
    })
    .await;
    server.shutdown().unwrap();
}

/// Polls /metrics until `ok` holds (at most 60 s).
async fn wait_for(url: &str, ok: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let m = metrics(url).await;
        if ok(&m) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out; metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The official `openai` Python package against the server (`pip install openai`; `.ci/run`
/// installs it).
#[test]
fn official_openai_python_client() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        probe.status.success(),
        "the `openai` Python package is missing: run `{python} -m pip install openai` \
         (.ci/run does)\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let server = quiet().blocking_lock();
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(format!("{}/v1", server.url()))
        .arg(KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openai client test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[path = "../examples/load_test.rs"]
mod load_test;

/// The load-test example, briefly: every request started is completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_test_completes_every_request() {
    let cfg = load_test::Config {
        url: shared().url(),
        clients: 6,
        seconds: 3.0,
        max_tokens: 8,
        api_key: Some(KEY.into()),
        ..load_test::Config::default()
    };
    let report = load_test::run(cfg).await.unwrap();
    eprintln!("{}", report.summary());
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.samples.len() >= 6);
    assert!(report.tokens() > 0);
    assert!(report.ttft(0.99) >= report.ttft(0.5));
}
