//! The OpenAI request bodies this server accepts, their validation, and the RWKV chat format.

use serde::Deserialize;
use serde_json::{json, Value};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rwkv_engine::SamplingParams;
use rwkv_tokenizer::Tokenizer;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after: None,
        }
    }

    pub fn unsupported(param: &str, what: &str) -> ApiError {
        ApiError::invalid(
            format!("{what} is not supported by this server"),
            Some(param),
        )
    }

    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        response
    }
}

/// One prompt: text or token ids (a list of one of either is accepted too).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<i64>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<i64>>),
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and length fields both endpoints share (`top_k`, `min_p` and `penalty_decay`
/// are extensions; the rest are OpenAI's).
#[derive(Deserialize, Debug, Default)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub penalty_decay: Option<f64>,
    pub seed: Option<serde_json::Number>,
    pub stop: Option<Stop>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Option<Prompt>,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
    pub logprobs: Option<Value>,
    pub suffix: Option<String>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: Option<Vec<Message>>,
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub tools: Option<Vec<Value>>,
    pub functions: Option<Vec<Value>>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Deserialize, Debug)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// Limits a request is checked against.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `max_tokens` when a chat request gives none (completions default to 16, as OpenAI's).
    pub default_max_tokens: usize,
    pub max_tokens_limit: usize,
    pub max_prompt_tokens: usize,
}

/// Most stop strings per request, and most bytes per stop string.
const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 1024;
/// Stop strings chat adds: a new turn by anyone ends the reply.
pub const CHAT_STOPS: &[&str] = &["\n\nUser:", "\n\nSystem:"];

/// A checked request, ready for the scheduler.
#[derive(Debug)]
pub struct Generation {
    pub prompt: Vec<u32>,
    pub cache_points: Vec<usize>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

fn finite(name: &str, v: Option<f64>) -> Result<Option<f32>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(Some(x as f32)),
        Some(x) => Err(ApiError::invalid(
            format!("{name} = {x} is not a usable number"),
            Some(name),
        )),
    }
}

impl Common {
    /// Sampling parameters, `max_tokens` (`max_tokens` overrides `default`), stop strings.
    fn check(
        &self,
        limits: &Limits,
        default_max_tokens: usize,
        max_tokens_field: (&str, Option<i64>),
    ) -> Result<(SamplingParams, usize, Vec<String>), ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::unsupported("n", "n other than 1"));
            }
        }
        let d = SamplingParams::default();
        let seed = match &self.seed {
            None => fresh_seed(),
            Some(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u,
                (None, Some(i)) => i as u64,
                _ => {
                    return Err(ApiError::invalid(
                        format!("seed = {n} is not an integer"),
                        Some("seed"),
                    ))
                }
            },
        };
        let top_k = match self.top_k {
            None => d.top_k,
            Some(k) if k >= 0 => k.min(u32::MAX as i64) as u32,
            Some(k) => {
                return Err(ApiError::invalid(
                    format!("top_k = {k} must be ≥ 0 (0: off)"),
                    Some("top_k"),
                ))
            }
        };
        let params = SamplingParams {
            temperature: finite("temperature", self.temperature)?.unwrap_or(d.temperature),
            top_k,
            top_p: finite("top_p", self.top_p)?.unwrap_or(d.top_p),
            min_p: finite("min_p", self.min_p)?.unwrap_or(d.min_p),
            presence_penalty: finite("presence_penalty", self.presence_penalty)?
                .unwrap_or(d.presence_penalty),
            frequency_penalty: finite("frequency_penalty", self.frequency_penalty)?
                .unwrap_or(d.frequency_penalty),
            penalty_decay: finite("penalty_decay", self.penalty_decay)?.unwrap_or(d.penalty_decay),
            seed,
        };
        params
            .validate()
            .map_err(|e| ApiError::invalid(e.to_string(), Some(e.name)))?;

        let (field, value) = max_tokens_field;
        let max_tokens = match value {
            None => default_max_tokens.min(limits.max_tokens_limit),
            Some(n) if n >= 1 && n as u64 <= limits.max_tokens_limit as u64 => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    format!(
                        "{field} = {n} must be between 1 and {}",
                        limits.max_tokens_limit
                    ),
                    Some(field),
                ))
            }
        };

        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                format!("at most {MAX_STOPS} stop strings are allowed"),
                Some("stop"),
            ));
        }
        if stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::invalid(
                format!("a stop string may have at most {MAX_STOP_BYTES} bytes"),
                Some("stop"),
            ));
        }
        Ok((params, max_tokens, stop))
    }

    fn stream(&self) -> (bool, bool) {
        let stream = self.stream.unwrap_or(false);
        let usage = self
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        (stream, usage)
    }
}

/// A seed for requests that give none.
fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 of the two, so close calls get unrelated seeds.
    let mut z = t ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn check_prompt_len(tokens: &[u32], limits: &Limits) -> Result<(), ApiError> {
    if tokens.is_empty() {
        return Err(ApiError::invalid(
            "the prompt is empty (it must encode to at least one token)",
            Some("prompt"),
        ));
    }
    if tokens.len() > limits.max_prompt_tokens {
        return Err(ApiError::invalid(
            format!(
                "the prompt has {} tokens; this server takes at most {}",
                tokens.len(),
                limits.max_prompt_tokens
            ),
            Some("prompt"),
        ));
    }
    Ok(())
}

fn token_ids(ids: &[i64], vocab: usize) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .map(|&id| {
            if id >= 0 && (id as u64) < vocab as u64 {
                Ok(id as u32)
            } else {
                Err(ApiError::invalid(
                    format!("token id {id} is outside the vocabulary of {vocab} tokens"),
                    Some("prompt"),
                ))
            }
        })
        .collect()
}

impl CompletionRequest {
    pub fn check(
        &self,
        tokenizer: &Tokenizer,
        vocab: usize,
        limits: &Limits,
    ) -> Result<Generation, ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::unsupported("echo", "echo"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::unsupported("best_of", "best_of other than 1"));
        }
        if self.logprobs.as_ref().is_some_and(|l| !l.is_null()) {
            return Err(ApiError::unsupported("logprobs", "logprobs"));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::unsupported("suffix", "suffix"));
        }
        let prompt = match &self.prompt {
            None => return Err(ApiError::invalid("prompt is required", Some("prompt"))),
            Some(Prompt::Text(t)) => tokenizer.encode_str(t),
            Some(Prompt::Tokens(ids)) => token_ids(ids, vocab)?,
            Some(Prompt::Texts(v)) if v.len() == 1 => tokenizer.encode_str(&v[0]),
            Some(Prompt::TokenLists(v)) if v.len() == 1 => token_ids(&v[0], vocab)?,
            Some(Prompt::Texts(v)) if v.is_empty() => Vec::new(),
            Some(_) => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "more than one prompt per request",
                ))
            }
        };
        check_prompt_len(&prompt, limits)?;
        let (params, max_tokens, stop) =
            self.common
                .check(limits, 16, ("max_tokens", self.common.max_tokens))?;
        let (stream, include_usage) = self.common.stream();
        // The state before the last prompt token: an identical prompt then skips all but it.
        let cache_points = vec![prompt.len() - 1];
        Ok(Generation {
            prompt,
            cache_points,
            params,
            max_tokens,
            stop,
            stream,
            include_usage,
        })
    }
}

/// A message's text for the RWKV chat format: trimmed, with blank lines removed (an empty line
/// ends a turn in that format).
pub fn normalize_content(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len());
    for line in text.trim().split('\n') {
        if line.trim().is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// The RWKV chat prompt of `messages`: `System: …\n\nUser: …\n\nAssistant: …\n\n…Assistant:`,
/// and the byte offsets after which the state is worth caching: the end of the leading system
/// messages and the end of the last message (the next turn of the conversation starts with
/// both).
pub fn chat_prompt(messages: &[Message]) -> Result<(String, Vec<usize>), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages must hold at least one message",
            Some("messages"),
        ));
    }
    let mut text = String::new();
    let mut points = Vec::new();
    let mut leading_system = true;
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "System",
            "user" => "User",
            "assistant" => "Assistant",
            other => {
                return Err(ApiError::invalid(
                    format!("role {other:?} is not supported (system, developer, user, assistant)"),
                    Some(&format!("messages[{i}].role")),
                ))
            }
        };
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut s = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => s.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                format!("content parts of type {:?} are not supported", p.kind),
                                Some(&format!("messages[{i}].content")),
                            ))
                        }
                    }
                }
                s
            }
        };
        if role != "System" && leading_system {
            leading_system = false;
            if !text.is_empty() {
                points.push(text.len());
            }
        }
        let content = normalize_content(&content);
        text.push_str(role);
        text.push(':');
        if !content.is_empty() {
            text.push(' ');
            text.push_str(&content);
        }
        text.push_str("\n\n");
    }
    points.push(text.len());
    text.push_str("Assistant:");
    Ok((text, points))
}

impl ChatRequest {
    pub fn check(&self, tokenizer: &Tokenizer, limits: &Limits) -> Result<Generation, ApiError> {
        if self.logprobs == Some(true) {
            return Err(ApiError::unsupported("logprobs", "logprobs"));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::unsupported("tools", "tool calling"));
        }
        if self.functions.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::unsupported("functions", "function calling"));
        }
        let Some(messages) = &self.messages else {
            return Err(ApiError::invalid("messages is required", Some("messages")));
        };
        let (text, offsets) = chat_prompt(messages)?;
        let prompt = tokenizer.encode_str(&text);
        check_prompt_len(&prompt, limits)?;
        // A cache point is a prefix of the prompt's own tokens; a boundary the tokenizer
        // merged across is dropped.
        let mut cache_points: Vec<usize> = offsets
            .into_iter()
            .map(|b| tokenizer.encode_str(&text[..b]))
            .filter(|pre| prompt.starts_with(pre))
            .map(|pre| pre.len())
            .filter(|&n| n > 0 && n < prompt.len())
            .collect();
        cache_points.dedup();
        let field = match self.max_completion_tokens {
            Some(n) => ("max_completion_tokens", Some(n)),
            None => ("max_tokens", self.common.max_tokens),
        };
        let (params, max_tokens, mut stop) =
            self.common
                .check(limits, limits.default_max_tokens, field)?;
        stop.extend(CHAT_STOPS.iter().map(|s| s.to_string()));
        let (stream, include_usage) = self.common.stream();
        Ok(Generation {
            prompt,
            cache_points,
            params,
            max_tokens,
            stop,
            stream,
            include_usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: Some(Content::Text(content.into())),
        }
    }

    #[test]
    fn chat_format_and_cache_points() {
        let (text, points) = chat_prompt(&[
            msg("system", "Be brief.\n\n Really."),
            msg("user", "Hi!"),
            msg("assistant", "Hello."),
            msg("user", "Bye\r\n"),
        ])
        .unwrap();
        assert_eq!(
            text,
            "System: Be brief.\n Really.\n\nUser: Hi!\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:"
        );
        let system_end = "System: Be brief.\n Really.\n\n".len();
        assert_eq!(points, vec![system_end, text.len() - "Assistant:".len()]);
        let (text, points) = chat_prompt(&[msg("user", "x")]).unwrap();
        assert_eq!(text, "User: x\n\nAssistant:");
        assert_eq!(points, vec!["User: x\n\n".len()]);
        assert!(chat_prompt(&[]).is_err());
        assert!(chat_prompt(&[msg("tool", "x")]).is_err());
    }

    #[test]
    fn content_normalized() {
        assert_eq!(normalize_content("  a\n\n\nb \n"), "a\nb");
        assert_eq!(normalize_content("\n\n"), "");
    }
}
