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
//!   `[fake:invalid]` -> 400; `[fake:delay=MS]` before answering; `[fake:stream-delay=MS]` between events;
//!   `[fake:stream-cut=N]` -> a stream that ends after N text deltas, without `message_delta`/`message_stop`
//!   (the fake Bedrock's stream too); `[fake:stream-error=N]` -> after N text deltas an `event: error`
//!   (`overloaded_error`), then the end (the fake Anthropic only); `[fake:stream-overloaded]` -> a `200`
//!   stream whose first and only event is that `event: error`, before `message_start` (as Anthropic does
//!   when it is overloaded after accepting a stream);
//!   `[fake:tool=NAME key=value ...]` -> when the request offers a tool NAME and its last message holds no
//!   `tool_result`, the answer is one `tool_use` block calling NAME with `{"key": "value", ...}` (stop
//!   reason `tool_use`, output tokens = 1 + the words of the values); once the `tool_result` comes back, the
//!   reply is `<speaker> read:` + the first 32 words of the result.
//! - `x-api-key: sk-ant-invalid` (or no credentials at all) -> 401.
//!
//! Requests are validated as the real API validates them (the fake Bedrock's `InvokeModel` keeps Bedrock's
//! own checks): `anthropic-version` header required; bodies over 32 MiB -> 413 `request_too_large`; a JSON
//! object with `model`, `messages` and (for `/v1/messages`) a positive `max_tokens`; roles `user`,
//! `assistant` (or `system`, which Claude Code sends mid-conversation); no empty text block and no empty
//! message except a final assistant one -> 400 `invalid_request_error`; a model that is not a `claude-*` id,
//! or whose id holds `nonexistent`, -> 404 `not_found_error`.
//!
//! `GET /fake/requests[?contains=TEXT]` lists the requests received (credential headers included), so
//! tests can see what reached the upstream.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
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
/// The Messages API's request size limit.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// Request headers the fake does not record under `headers` (credentials are recorded apart).
const UNRECORDED_HEADERS: [&str; 4] = ["x-api-key", "authorization", "x-gateway-key", "cookie"];

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
        !self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(prefix_hash)
    }
}

/// The requests a fake received, newest last.
#[derive(Debug, Default)]
pub struct RequestLog(Mutex<VecDeque<Value>>);

impl RequestLog {
    pub fn record(&self, entry: Value) {
        let mut entries = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= RECORDED_REQUESTS {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub fn matching(&self, contains: Option<&str>) -> Vec<Value> {
        let entries = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.iter().filter(|entry| contains.is_none_or(|text| entry["body"].to_string().contains(text))).cloned().collect()
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
        // Larger than the API's limit, so that the fake answers 413 in Anthropic's shape itself.
        .layer(DefaultBodyLimit::max(2 * MAX_REQUEST_BYTES))
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
    /// The tool the answer calls (`[fake:tool=...]`), instead of a text reply.
    pub tool_call: Option<ToolCall>,
    /// A stream ends after this many text deltas (`[fake:stream-cut=N]`).
    pub stream_cut_after: Option<usize>,
}

/// A `tool_use` a directive asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub input: serde_json::Map<String, Value>,
}

/// `[fake:tool=NAME key=value ...]`: the tool name and its input.
fn tool_directive(text: &str) -> Option<ToolCall> {
    let (_, rest) = text.split_once("[fake:tool=")?;
    let inside = rest.split(']').next()?;
    let mut parts = inside.split_whitespace();
    let name = parts.next()?.to_owned();
    let input = parts
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), Value::String(value.to_owned())))
        .collect();
    Some(ToolCall { name, input })
}

fn offers_tool(body: &Value, name: &str) -> bool {
    body["tools"].as_array().into_iter().flatten().any(|tool| tool["name"] == name)
}

/// The text of the `tool_result` blocks of the last message, if it holds any.
fn last_tool_result_text(body: &Value) -> Option<String> {
    let last = body["messages"].as_array()?.last()?;
    let results: Vec<&Value> = last["content"].as_array()?.iter().filter(|block| block["type"] == "tool_result").collect();
    if results.is_empty() {
        return None;
    }
    let texts: Vec<String> = results.iter().flat_map(|result| text_blocks(&result["content"])).map(|(text, _)| text).collect();
    Some(texts.join("\n"))
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
    let directives_in = directive_text(body);
    let stream_cut_after = numbers_after(&directives_in, "[fake:stream-cut=").next().map(|n| n as usize);
    let tool_result = last_tool_result_text(body);
    if tool_result.is_none() {
        if let Some(call) = tool_directive(&directives_in).filter(|call| offers_tool(body, &call.name)) {
            let value_words: usize = call.input.values().filter_map(Value::as_str).map(words).sum();
            return PlannedMessage {
                text: String::new(),
                input_tokens: (total - cache_creation - cache_read).max(1) as u64,
                output_tokens: 1 + value_words as u64,
                cache_creation_input_tokens: cache_creation as u64,
                cache_read_input_tokens: cache_read as u64,
                stop_reason: "tool_use",
                tool_call: Some(call),
                stream_cut_after,
            };
        }
    }
    let (verb, prompt) = match tool_result {
        Some(result) => ("read:", result),
        None => ("says:", user_text(body)),
    };
    let mut reply: Vec<&str> = vec![speaker, verb];
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
        tool_call: None,
        stream_cut_after,
    }
}

fn tool_use_id(message_id: &str) -> String {
    format!("toolu_{}", message_id.rsplit('_').next().unwrap_or(message_id))
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
        "content": match &plan.tool_call {
            Some(call) => json!([{"type": "tool_use", "id": tool_use_id(id), "name": call.name, "input": call.input}]),
            None => json!([{"type": "text", "text": plan.text}]),
        },
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
    let mut events = vec![json!({"type": "message_start", "message": message})];
    if let Some(call) = &plan.tool_call {
        events.push(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": tool_use_id(id), "name": call.name, "input": {}}}));
        events.push(json!({"type": "ping"}));
        let input = Value::Object(call.input.clone()).to_string();
        events.push(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input}}),
        );
    } else {
        events.push(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
        events.push(json!({"type": "ping"}));
        for (index, word) in plan.text.split(' ').enumerate() {
            let text = if index == 0 { word.to_owned() } else { format!(" {word}") };
            if plan.stream_cut_after == Some(index) {
                return events; // `[fake:stream-cut=N]`: the connection ends here
            }
            events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}));
        }
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
    Fail {
        status: u16,
        error_type: &'static str,
        message: &'static str,
        retry_after: Option<u64>,
    },
    Delay(Duration),
    StreamDelay(Duration),
    /// An `event: error` after this many text deltas.
    StreamError(usize),
    /// A stream that opens with an `event: error`, before `message_start`.
    StreamOpensWithError,
}

fn numbers_after<'a>(text: &'a str, marker: &'a str) -> impl Iterator<Item = u64> + 'a {
    text.match_indices(marker).filter_map(move |(start, _)| text[start + marker.len()..].split(']').next()?.parse::<u64>().ok())
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
    found.extend(numbers_after(text, "[fake:stream-error=").map(|n| Directive::StreamError(n as usize)));
    if text.contains("[fake:stream-overloaded]") {
        found.push(Directive::StreamOpensWithError);
    }
    found
}

/// After how many text deltas a stream breaks off with an error, if the body asks for it.
fn stream_error_after(body: &Value) -> Option<usize> {
    directives(&directive_text(body)).into_iter().find_map(|directive| match directive {
        Directive::StreamError(after) => Some(after),
        _ => None,
    })
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

fn invalid_request(message: String) -> Response {
    anthropic_error(400, "invalid_request_error", &message, None)
}

/// A model the fake serves: any `claude-*` id, except those holding `nonexistent`.
fn is_known_model(model: &str) -> bool {
    model.starts_with("claude-") && model.len() > "claude-".len() && !model.contains("nonexistent")
}

fn is_empty_text_block(block: &Value) -> bool {
    block["type"] == "text" && block["text"].as_str().is_none_or(|text| text.trim().is_empty())
}

/// The Messages API's own checks of a body, in its words; `Err` is the answer.
fn validate(body: &Value, needs_max_tokens: bool) -> Result<(), Response> {
    let model = body["model"].as_str().unwrap_or_default();
    if model.is_empty() {
        return Err(invalid_request("model: Field required".into()));
    }
    let Some(messages) = body["messages"].as_array() else {
        return Err(invalid_request("messages: Field required".into()));
    };
    if needs_max_tokens && body["max_tokens"].as_u64().is_none_or(|n| n == 0) {
        let problem = if body.get("max_tokens").is_none() { "Field required" } else { "Input should be a positive integer" };
        return Err(invalid_request(format!("max_tokens: {problem}")));
    }
    if let Some(blocks) = body["system"].as_array() {
        if blocks.iter().any(is_empty_text_block) {
            return Err(invalid_request("system: text content blocks must be non-empty".into()));
        }
    }
    for (index, message) in messages.iter().enumerate() {
        if !matches!(message["role"].as_str(), Some("user" | "assistant" | "system")) {
            return Err(invalid_request(format!("messages.{index}.role: Input should be 'user' or 'assistant'")));
        }
        let final_assistant = index + 1 == messages.len() && message["role"] == "assistant";
        let empty = match &message["content"] {
            Value::String(text) => text.is_empty(),
            Value::Array(blocks) => {
                if let Some(at) = blocks.iter().position(is_empty_text_block) {
                    return Err(invalid_request(format!(
                        "messages.{index}.content.{at}.text: text content blocks must be non-empty"
                    )));
                }
                blocks.is_empty()
            }
            _ => true,
        };
        if empty && !final_assistant {
            return Err(invalid_request(format!(
                "messages.{index}: all messages must have non-empty content except for the optional final assistant message"
            )));
        }
    }
    if !is_known_model(model) {
        return Err(anthropic_error(404, "not_found_error", &format!("model: {model}"), None));
    }
    Ok(())
}

/// Every request header but the credentials (recorded apart), for `GET /fake/requests`.
fn recorded_headers(headers: &HeaderMap) -> Value {
    let mut recorded = serde_json::Map::new();
    for (name, value) in headers {
        if !UNRECORDED_HEADERS.contains(&name.as_str()) {
            recorded.insert(name.as_str().to_owned(), Value::String(value.to_str().unwrap_or("<binary>").to_owned()));
        }
    }
    Value::Object(recorded)
}

/// Records the request, checks credentials, validates the body, applies delays and failure directives.
async fn prepare(
    state: &FakeState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    needs_max_tokens: bool,
) -> Result<Value, Response> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    state.log.record(json!({
        "path": uri.path(),
        "query": uri.query(),
        "x-api-key": header_text(headers, "x-api-key"),
        "authorization": header_text(headers, "authorization"),
        "x-gateway-key": header_text(headers, "x-gateway-key"),
        "anthropic-version": header_text(headers, "anthropic-version"),
        "anthropic-beta": header_text(headers, "anthropic-beta"),
        "headers": recorded_headers(headers),
        "body_bytes": body.len(),
        "body": parsed.clone().unwrap_or(Value::Null),
    }));
    let api_key = header_text(headers, "x-api-key");
    if api_key.is_none() && header_text(headers, "authorization").is_none() {
        return Err(anthropic_error(401, "authentication_error", "x-api-key header is required", None));
    }
    if api_key.as_deref() == Some(INVALID_API_KEY) {
        return Err(anthropic_error(401, "authentication_error", "invalid x-api-key", None));
    }
    if body.len() > MAX_REQUEST_BYTES {
        return Err(anthropic_error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", None));
    }
    if header_text(headers, "anthropic-version").is_none() {
        return Err(invalid_request("anthropic-version: header is required".into()));
    }
    let Some(parsed) = parsed.filter(Value::is_object) else {
        return Err(anthropic_error(400, "invalid_request_error", "The request body is not valid JSON.", None));
    };
    let mut delay = state.settings.fixed_delay;
    let mut failure = None;
    for directive in directives(&directive_text(&parsed)) {
        match directive {
            Directive::Delay(extra) => delay += extra,
            Directive::Fail { status, error_type, message, retry_after } => {
                failure.get_or_insert((status, error_type, message, retry_after));
            }
            Directive::StreamDelay(_) | Directive::StreamError(_) | Directive::StreamOpensWithError => {}
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // A failure directive answers before the body's own checks, as a rate limit at the edge does.
    match failure {
        Some((status, error_type, message, retry_after)) => Err(anthropic_error(status, error_type, message, retry_after)),
        None => validate(&parsed, needs_max_tokens).map(|()| parsed),
    }
}

async fn messages(State(state): State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = match prepare(&state, &uri, &headers, &body, true).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let model = parsed["model"].as_str().unwrap_or_default().to_owned();
    let plan = plan_message(&parsed, "fake-anthropic", &state.cache);
    let id = format!("msg_fake_{}", uuid::Uuid::new_v4().simple());
    let request_id = format!("req_fake_{}", uuid::Uuid::new_v4().simple());
    if parsed["stream"] != Value::Bool(true) {
        return (
            [("content-type", "application/json"), ("request-id", request_id.as_str())],
            message_json(&plan, &model, &id).to_string(),
        )
            .into_response();
    }
    let delay = stream_delay(&parsed);
    let mut events = stream_events(&plan, &model, &id);
    if let Some(after) = stream_error_after(&parsed) {
        let deltas = events.iter().enumerate().filter(|(_, event)| event["type"] == "content_block_delta");
        if let Some((cut_at, _)) = deltas.clone().nth(after) {
            events.truncate(cut_at);
        }
        events.push(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    }
    if directives(&directive_text(&parsed)).contains(&Directive::StreamOpensWithError) {
        events = vec![json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})];
    }
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
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("request-id", request_id.as_str()),
        ],
        Body::new(body),
    )
        .into_response()
}

async fn count_tokens(State(state): State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    match prepare(&state, &uri, &headers, &body, false).await {
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
            vec![Directive::Fail {
                status: 429,
                error_type: "rate_limit_error",
                message: "Number of request tokens has exceeded your per-minute rate limit",
                retry_after: Some(3)
            }]
        );
        assert!(matches!(directives("[fake:overloaded]")[0], Directive::Fail { status: 529, .. }));
        assert_eq!(stream_delay(&body("[fake:stream-delay=40] go", 10)), Duration::from_millis(40));
        assert_eq!(directives("[fake:stream-overloaded] go"), vec![Directive::StreamOpensWithError]);
        assert!(directives("plain").is_empty());
    }

    fn refusal(body: &Value, needs_max_tokens: bool) -> (u16, String, String) {
        let response = validate(body, needs_max_tokens).unwrap_err();
        let status = response.status().as_u16();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = runtime.block_on(axum::body::to_bytes(response.into_body(), 1 << 20)).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        (status, value["error"]["type"].as_str().unwrap().to_owned(), value["error"]["message"].as_str().unwrap().to_owned())
    }

    #[test]
    fn bodies_are_validated_like_the_real_api() {
        let mut no_max_tokens = body("hi", 1);
        no_max_tokens.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(refusal(&no_max_tokens, true), (400, "invalid_request_error".into(), "max_tokens: Field required".into()));
        assert!(validate(&no_max_tokens, false).is_ok(), "count_tokens needs no max_tokens");
        let empty_block = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]});
        assert_eq!(refusal(&empty_block, true).0, 400);
        let bad_role = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "robot", "content": "hi"}]});
        assert!(refusal(&bad_role, true).2.starts_with("messages.0.role"));
        let unknown = json!({"model": "claude-nonexistent-1", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(refusal(&unknown, true).1, "not_found_error");
        let prefill = json!({"model": "claude-x", "max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"}, {"role": "system", "content": "note"}, {"role": "assistant", "content": ""}]});
        assert!(validate(&prefill, true).is_ok());
    }

    #[test]
    fn a_tool_directive_calls_the_offered_tool_then_reads_its_result() {
        let mut request = body("look [fake:tool=Read file_path=/tmp/notes.txt]", 100);
        assert!(plan_message(&request, "fake-anthropic", &PromptCache::default()).tool_call.is_none(), "no such tool offered");
        request["tools"] = json!([{"name": "Read", "input_schema": {"type": "object"}}]);
        let plan = plan_message(&request, "fake-anthropic", &PromptCache::default());
        assert_eq!(plan.stop_reason, "tool_use");
        let message = message_json(&plan, "claude-x", "msg_fake_1");
        assert_eq!(message["content"][0]["name"], "Read");
        assert_eq!(message["content"][0]["input"], json!({"file_path": "/tmp/notes.txt"}));
        let streamed = stream_events(&plan, "claude-x", "msg_fake_1");
        assert_eq!(streamed[3]["delta"]["partial_json"], "{\"file_path\":\"/tmp/notes.txt\"}");
        request["messages"].as_array_mut().unwrap().extend([
            json!({"role": "assistant", "content": [message["content"][0].clone()]}),
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "secret words here"}]}),
        ]);
        let second = plan_message(&request, "fake-anthropic", &PromptCache::default());
        assert_eq!((second.text.as_str(), second.stop_reason), ("fake-anthropic read: secret words here", "end_turn"));
    }

    #[test]
    fn a_cut_stream_stops_after_n_deltas_without_message_stop() {
        let plan = plan_message(&body("a b c d e [fake:stream-cut=3]", 100), "fake-anthropic", &PromptCache::default());
        let events = stream_events(&plan, "claude-x", "msg_1");
        assert_eq!(events.iter().filter(|e| e["type"] == "content_block_delta").count(), 3);
        assert!(events.iter().all(|e| e["type"] != "message_stop" && e["type"] != "message_delta"));
        assert_eq!(stream_error_after(&body("x [fake:stream-error=2]", 5)), Some(2));
    }
}
