//! A wire-compatible fake of the Anthropic Messages API, for the local stack, the tests and the benchmark:
//! `POST /v1/messages` (whole or streamed as server-sent events) and `POST /v1/messages/count_tokens`.
//! Answers are deterministic, and the same rules serve the fake Bedrock's `InvokeModel` (Anthropic-native
//! bodies), so a request costs the same tokens on either path:
//! - words = whitespace-separated words of the system text and of every user message's text;
//! - prompt caching: the blocks up to the last one with `cache_control` are the cached prefix; the first
//!   time a fake sees a prefix its words are `cache_creation_input_tokens`, later `cache_read_input_tokens`;
//! - input tokens = the other words (at least 1);
//! - reply = `fake-anthropic says:` (or `fake-bedrock says:`) + the first 32 user words; output tokens = its
//!   words, cut to `max_tokens` (stop reason `max_tokens`);
//! - directives in the text: `[fake:rate-limit]` / `[fake:rate-limit=N]` -> 429 `rate_limit_error` with
//!   `retry-after: 7` (or N); `[fake:overloaded]` -> 529; `[fake:error]` -> 500 `api_error`;
//!   `[fake:invalid]` -> 400; `[fake:delay=MS]` before answering; `[fake:stream-delay=MS]` between events.
//! - `x-api-key: sk-ant-invalid` (or no credentials at all) -> 401.
//!
//! `GET /fake/requests[?contains=TEXT]` lists the requests received (credential headers included), so
//! tests can see what reached the upstream.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

const ECHOED_WORDS: usize = 32;
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 7;
const RECORDED_REQUESTS: usize = 2000;
pub const INVALID_API_KEY: &str = "sk-ant-invalid";

#[derive(Debug, Clone, Default)]
pub struct FakeAnthropicSettings {
    /// Delay added to every answer (for benchmarks).
    pub fixed_delay: Duration,
}

/// Prompt prefixes a fake has seen (its prompt cache).
#[derive(Debug, Default)]
pub struct PromptCache(Mutex<HashSet<u64>>);

impl PromptCache {
    /// True when the prefix was cached already; caches it either way.
    fn hit(&self, prefix_hash: u64) -> bool {
        !self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(prefix_hash)
    }
}

/// The requests a fake received, newest last.
#[derive(Debug, Default)]
pub struct RequestLog(Mutex<VecDeque<Value>>);

impl RequestLog {
    pub fn record(&self, entry: Value) {
        let mut entries = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= RECORDED_REQUESTS {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub fn matching(&self, contains: Option<&str>) -> Vec<Value> {
        let entries = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .iter()
            .filter(|entry| contains.is_none_or(|text| entry["body"].to_string().contains(text)))
            .cloned()
            .collect()
    }
}

#[derive(Clone)]
struct FakeState {
    settings: FakeAnthropicSettings,
    cache: Arc<PromptCache>,
    log: Arc<RequestLog>,
}

pub fn router(settings: FakeAnthropicSettings) -> Router {
    let state = FakeState { settings, cache: Arc::default(), log: Arc::default() };
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/fake/requests", get(requests))
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
}

/// The text blocks of a message's content (a string is one block), each with whether it has `cache_control`.
fn text_blocks(content: &Value) -> Vec<(String, bool)> {
    match content {
        Value::String(text) => vec![(text.clone(), false)],
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|block| {
                let text = block["text"].as_str()?;
                Some((text.to_owned(), !block["cache_control"].is_null()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The user text of a body: every text block of every user message, joined by newlines.
pub fn user_text(body: &Value) -> String {
    let mut parts = Vec::new();
    for message in body["messages"].as_array().into_iter().flatten() {
        if message["role"] == "user" {
            parts.extend(text_blocks(&message["content"]).into_iter().map(|(text, _)| text));
        }
    }
    parts.join("\n")
}

/// Every text the rules read (system, then user messages), in order, with the cache marks.
fn counted_blocks(body: &Value) -> Vec<(String, bool)> {
    let mut blocks = text_blocks(&body["system"]);
    for message in body["messages"].as_array().into_iter().flatten() {
        if message["role"] == "user" {
            blocks.extend(text_blocks(&message["content"]));
        }
    }
    blocks
}

/// System and user text together: where directives are looked for.
pub fn directive_text(body: &Value) -> String {
    counted_blocks(body).into_iter().map(|(text, _)| text).collect::<Vec<_>>().join("\n")
}

/// What a fake answers for one body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMessage {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub stop_reason: &'static str,
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// All input words, cache or not (what count_tokens reports), at least 1.
pub fn count_input_tokens(body: &Value) -> u64 {
    (counted_blocks(body).iter().map(|(text, _)| words(text)).sum::<usize>() as u64).max(1)
}

pub fn plan_message(body: &Value, speaker: &str, cache: &PromptCache) -> PlannedMessage {
    let blocks = counted_blocks(body);
    let total: usize = blocks.iter().map(|(text, _)| words(text)).sum();
    let (mut cache_creation, mut cache_read) = (0, 0);
    if let Some(last_marked) = blocks.iter().rposition(|(_, marked)| *marked) {
        let prefix = &blocks[..=last_marked];
        let prefix_words: usize = prefix.iter().map(|(text, _)| words(text)).sum();
        let mut hasher = DefaultHasher::new();
        body["model"].as_str().unwrap_or_default().hash(&mut hasher);
        for (text, _) in prefix {
            text.hash(&mut hasher);
        }
        if cache.hit(hasher.finish()) {
            cache_read = prefix_words;
        } else {
            cache_creation = prefix_words;
        }
    }
    let prompt = user_text(body);
    let mut reply: Vec<&str> = vec![speaker, "says:"];
    reply.extend(prompt.split_whitespace().take(ECHOED_WORDS));
    let mut stop_reason = "end_turn";
    if let Some(limit) = body["max_tokens"].as_u64().filter(|n| *n > 0) {
        if reply.len() as u64 > limit {
            reply.truncate(limit as usize);
            stop_reason = "max_tokens";
        }
    }
    PlannedMessage {
        text: reply.join(" "),
        input_tokens: (total - cache_creation - cache_read).max(1) as u64,
        output_tokens: reply.len() as u64,
        cache_creation_input_tokens: cache_creation as u64,
        cache_read_input_tokens: cache_read as u64,
        stop_reason,
    }
}

fn usage_json(plan: &PlannedMessage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": plan.input_tokens,
        "cache_creation_input_tokens": plan.cache_creation_input_tokens,
        "cache_read_input_tokens": plan.cache_read_input_tokens,
        "output_tokens": output_tokens
    })
}

/// The whole answer, as the Messages API returns it.
pub fn message_json(plan: &PlannedMessage, model: &str, id: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": plan.text}],
        "stop_reason": plan.stop_reason,
        "stop_sequence": null,
        "usage": usage_json(plan, plan.output_tokens)
    })
}

/// The stream events of the answer: one text delta per word.
pub fn stream_events(plan: &PlannedMessage, model: &str, id: &str) -> Vec<Value> {
    let mut message = message_json(plan, model, id);
    message["content"] = json!([]);
    message["stop_reason"] = Value::Null;
    message["usage"] = usage_json(plan, 1);
    let mut events = vec![
        json!({"type": "message_start", "message": message}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    for (index, word) in plan.text.split(' ').enumerate() {
        let text = if index == 0 { word.to_owned() } else { format!(" {word}") };
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({
        "type": "message_delta",
        "delta": {"stop_reason": plan.stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": plan.output_tokens}
    }));
    events.push(json!({"type": "message_stop"}));
    events
}

/// A failure or a timing a directive asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    Fail { status: u16, error_type: &'static str, message: &'static str, retry_after: Option<u64> },
    Delay(Duration),
    StreamDelay(Duration),
}

fn numbers_after<'a>(text: &'a str, marker: &'a str) -> impl Iterator<Item = u64> + 'a {
    text.match_indices(marker)
        .filter_map(move |(start, _)| text[start + marker.len()..].split(']').next()?.parse::<u64>().ok())
}

pub fn directives(text: &str) -> Vec<Directive> {
    let mut found = Vec::new();
    let rate_limit = |retry_after| Directive::Fail {
        status: 429,
        error_type: "rate_limit_error",
        message: "Number of request tokens has exceeded your per-minute rate limit",
        retry_after: Some(retry_after),
    };
    if text.contains("[fake:rate-limit]") {
        found.push(rate_limit(DEFAULT_RETRY_AFTER_SECONDS));
    }
    found.extend(numbers_after(text, "[fake:rate-limit=").map(rate_limit));
    for (marker, status, error_type, message) in [
        ("[fake:overloaded]", 529, "overloaded_error", "Overloaded"),
        ("[fake:error]", 500, "api_error", "Internal server error"),
        ("[fake:invalid]", 400, "invalid_request_error", "messages: the fake was asked to refuse this request"),
    ] {
        if text.contains(marker) {
            found.push(Directive::Fail { status, error_type, message, retry_after: None });
        }
    }
    found.extend(numbers_after(text, "[fake:delay=").map(|ms| Directive::Delay(Duration::from_millis(ms))));
    found.extend(numbers_after(text, "[fake:stream-delay=").map(|ms| Directive::StreamDelay(Duration::from_millis(ms))));
    found
}

/// The delay between stream events a body asks for.
pub fn stream_delay(body: &Value) -> Duration {
    directives(&directive_text(body))
        .into_iter()
        .filter_map(|directive| match directive {
            Directive::StreamDelay(delay) => Some(delay),
            _ => None,
        })
        .sum()
}

fn anthropic_error(status: u16, error_type: &str, message: &str, retry_after: Option<u64>) -> Response {
    let request_id = format!("req_fake_{}", uuid::Uuid::new_v4().simple());
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("request-id", value);
    }
    if let Some(seconds) = retry_after {
        headers.insert("retry-after", seconds.into());
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
    }
    let body = json!({"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id});
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, headers, body.to_string()).into_response()
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

/// Records the request, checks credentials, parses the body, applies delays and failure directives.
async fn prepare(state: &FakeState, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    state.log.record(json!({
        "path": uri.path(),
        "query": uri.query(),
        "x-api-key": header_text(headers, "x-api-key"),
        "authorization": header_text(headers, "authorization"),
        "x-gateway-key": header_text(headers, "x-gateway-key"),
        "anthropic-version": header_text(headers, "anthropic-version"),
        "anthropic-beta": header_text(headers, "anthropic-beta"),
        "body": parsed.clone().unwrap_or(Value::Null),
    }));
    let api_key = header_text(headers, "x-api-key");
    if api_key.is_none() && header_text(headers, "authorization").is_none() {
        return Err(anthropic_error(401, "authentication_error", "x-api-key header is required", None));
    }
    if api_key.as_deref() == Some(INVALID_API_KEY) {
        return Err(anthropic_error(401, "authentication_error", "invalid x-api-key", None));
    }
    let Some(parsed) = parsed.filter(Value::is_object) else {
        return Err(anthropic_error(400, "invalid_request_error", "The request body is not valid JSON.", None));
    };
    if parsed["model"].as_str().is_none_or(str::is_empty) || !parsed["messages"].is_array() {
        return Err(anthropic_error(400, "invalid_request_error", "model and messages are required", None));
    }
    let mut delay = state.settings.fixed_delay;
    let mut failure = None;
    for directive in directives(&directive_text(&parsed)) {
        match directive {
            Directive::Delay(extra) => delay += extra,
            Directive::Fail { status, error_type, message, retry_after } => {
                failure.get_or_insert((status, error_type, message, retry_after));
            }
            Directive::StreamDelay(_) => {}
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match failure {
        Some((status, error_type, message, retry_after)) => Err(anthropic_error(status, error_type, message, retry_after)),
        None => Ok(parsed),
    }
}

async fn messages(State(state): State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = match prepare(&state, &uri, &headers, &body).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let model = parsed["model"].as_str().unwrap_or_default().to_owned();
    let plan = plan_message(&parsed, "fake-anthropic", &state.cache);
    let id = format!("msg_fake_{}", uuid::Uuid::new_v4().simple());
    let request_id = format!("req_fake_{}", uuid::Uuid::new_v4().simple());
    if parsed["stream"] != Value::Bool(true) {
        return ([("content-type", "application/json"), ("request-id", request_id.as_str())], message_json(&plan, &model, &id).to_string())
            .into_response();
    }
    let delay = stream_delay(&parsed);
    let events = stream_events(&plan, &model, &id);
    let (sender, body) = claude_proxy::body::channel();
    tokio::spawn(async move {
        for event in events {
            let event_type = event["type"].as_str().unwrap_or_default().to_owned();
            let frame = format!("event: {event_type}\ndata: {event}\n\n");
            if sender.send(Bytes::from(frame)).await.is_err() {
                return; // the client hung up
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    });
    (
        [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"), ("request-id", request_id.as_str())],
        Body::new(body),
    )
        .into_response()
}

async fn count_tokens(State(state): State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    match prepare(&state, &uri, &headers, &body).await {
        Ok(parsed) => Json(json!({"input_tokens": count_input_tokens(&parsed)})).into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct RequestsQuery {
    contains: Option<String>,
}

async fn requests(State(state): State<FakeState>, Query(query): Query<RequestsQuery>) -> Json<Value> {
    Json(json!({"requests": state.log.matching(query.contains.as_deref())}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(prompt: &str, max_tokens: u64) -> Value {
        json!({"model": "claude-x", "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]})
    }

    #[test]
    fn replies_are_deterministic_with_exact_counts() {
        let plan = plan_message(&body("hello there  world", 100), "fake-anthropic", &PromptCache::default());
        assert_eq!(plan.text, "fake-anthropic says: hello there world");
        assert_eq!((plan.input_tokens, plan.output_tokens), (3, 5));
        let cut = plan_message(&body("one two three", 3), "fake-bedrock", &PromptCache::default());
        assert_eq!((cut.text.as_str(), cut.output_tokens, cut.stop_reason), ("fake-bedrock says: one", 3, "max_tokens"));
    }

    #[test]
    fn a_cached_prefix_is_written_once_then_read() {
        let cache = PromptCache::default();
        let request = json!({
            "model": "claude-x", "max_tokens": 50,
            "system": [{"type": "text", "text": "a b c d e", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "question here"}]}]
        });
        let first = plan_message(&request, "fake-anthropic", &cache);
        assert_eq!((first.input_tokens, first.cache_creation_input_tokens, first.cache_read_input_tokens), (2, 5, 0));
        let second = plan_message(&request, "fake-anthropic", &cache);
        assert_eq!((second.input_tokens, second.cache_creation_input_tokens, second.cache_read_input_tokens), (2, 0, 5));
        assert_eq!(count_input_tokens(&request), 7);
    }

    #[test]
    fn the_stream_carries_input_first_and_output_last() {
        let plan = plan_message(&body("a b", 100), "fake-anthropic", &PromptCache::default());
        let events = stream_events(&plan, "claude-x", "msg_1");
        assert_eq!(events[0]["message"]["usage"]["input_tokens"], 2);
        let delta = events.iter().find(|e| e["type"] == "message_delta").unwrap();
        assert_eq!(delta["usage"]["output_tokens"], 4);
        let text: String = events.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
        assert_eq!(text, plan.text);
    }

    #[test]
    fn directives_are_found() {
        assert_eq!(
            directives("x [fake:rate-limit=3] y"),
            vec![Directive::Fail { status: 429, error_type: "rate_limit_error", message: "Number of request tokens has exceeded your per-minute rate limit", retry_after: Some(3) }]
        );
        assert!(matches!(directives("[fake:overloaded]")[0], Directive::Fail { status: 529, .. }));
        assert_eq!(stream_delay(&body("[fake:stream-delay=40] go", 10)), Duration::from_millis(40));
        assert!(directives("plain").is_empty());
    }
}
