//! A wire-compatible fake of the Amazon Bedrock Runtime, for the local stack and tests: `Converse` and
//! `ConverseStream` (restJson1 and the AWS event-stream framing), so the real aws-sdk client reaches it
//! through an endpoint override. Answers are deterministic (see README "Fake Bedrock"):
//! - input tokens = whitespace-separated words of the user text (at least 1);
//! - reply = `fake-bedrock says: ` + the prompt's first 32 words; output tokens = the reply's words,
//!   cut to `inferenceConfig.maxTokens` (stop reason `max_tokens`);
//! - directives in the prompt drive failures: `[fake:throttle]`, `[fake:validation]`,
//!   `[fake:access-denied]`, `[fake:not-found]`, `[fake:model-timeout]`, `[fake:unavailable]`,
//!   `[fake:error]`, `[fake:delay=MS]`; `[fake:retry-after=N]` adds `retry-after: N` to a failure (Bedrock
//!   sends none by itself); `[fake:stream-exception=TYPE[@N]]` ends a stream with an exception frame.
//! - requests are checked as Bedrock checks them (`fake_bedrock_strict`): SigV4 form, known model ids,
//!   Converse's role, content and `maxTokens` rules.

use std::time::{Duration, Instant};

use aws_smithy_types::event_stream::{Header, HeaderValue as EventHeaderValue, Message};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::fake_bedrock_audit::{converse_metadata, Invocation, InvocationLog};
use crate::fake_bedrock_strict::{check_converse_body, exception_frame, require_signature, stream_exception, Strictness};

pub const REPLY_PREFIX: &str = "fake-bedrock says:";
const ECHOED_WORDS: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct FakeBedrockSettings {
    /// Delay added to every answer (for benchmarks).
    pub fixed_delay: Duration,
    /// The record of served calls (`fake_bedrock_audit`).
    pub invocation_log: InvocationLog,
    /// The region signatures must be scoped to, and the model ids served (`fake_bedrock_strict`).
    pub strictness: Strictness,
    /// The InvokeModel bodies received (`GET /fake/requests`).
    pub request_log: std::sync::Arc<crate::fake_anthropic::RequestLog>,
}

pub fn router(settings: FakeBedrockSettings) -> Router {
    // Bedrock's own operations: SigV4-signed, as the SDK signs them.
    let bedrock = Router::new()
        .route("/model/{model_id}/converse", post(converse))
        .route("/model/{model_id}/converse-stream", post(converse_stream))
        .with_state(settings.clone())
        // InvokeModel, InvokeModelWithResponseStream and CountTokens (the Claude proxy's fallback).
        .merge(crate::fake_bedrock_invoke::router(settings.clone()))
        // The control plane's ListInferenceProfiles (the Claude proxy's model discovery).
        .merge(crate::fake_bedrock_profiles::router())
        .layer(axum::middleware::from_fn_with_state(settings.strictness.clone(), require_signature));
    // The fake's own endpoints, for tests: unsigned.
    bedrock
        .route("/health", axum::routing::get(|| async { "ok" }))
        // GET /fake/requests: the InvokeModel bodies received.
        .merge(crate::fake_bedrock_invoke::requests_router(settings.clone()))
        // GET /fake/invocation-logs: what the fake recorded, in Bedrock's invocation log format.
        .merge(crate::fake_bedrock_audit::router(settings.invocation_log.clone()))
}

/// What the fake will answer for one request body.
#[derive(Debug, PartialEq)]
pub struct PlannedReply {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stop_reason: &'static str,
}

#[derive(Debug, PartialEq)]
pub enum Directive {
    Fail {
        status: StatusCode,
        error_type: &'static str,
        message: &'static str,
    },
    Delay(Duration),
    /// `retry-after: N` on the failure (`[fake:retry-after=N]`).
    RetryAfter(u64),
}

pub fn directives(text: &str) -> Vec<Directive> {
    let mut found = Vec::new();
    for (marker, status, error_type, message) in [
        (
            "[fake:throttle]",
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        ("[fake:validation]", StatusCode::BAD_REQUEST, "ValidationException", "The provided request is not valid."),
        (
            "[fake:access-denied]",
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        ("[fake:not-found]", StatusCode::NOT_FOUND, "ResourceNotFoundException", "The specified model could not be found."),
        (
            "[fake:model-timeout]",
            StatusCode::REQUEST_TIMEOUT,
            "ModelTimeoutException",
            "Model has timed out in processing the request.",
        ),
        (
            "[fake:unavailable]",
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "The service is unavailable. Try again later.",
        ),
        ("[fake:error]", StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", "An internal server error occurred."),
    ] {
        if text.contains(marker) {
            found.push(Directive::Fail { status, error_type, message });
        }
    }
    for (start, _) in text.match_indices("[fake:delay=") {
        let rest = &text[start + "[fake:delay=".len()..];
        if let Some(millis) = rest.split(']').next().and_then(|digits| digits.parse::<u64>().ok()) {
            found.push(Directive::Delay(Duration::from_millis(millis)));
        }
    }
    for (start, _) in text.match_indices("[fake:retry-after=") {
        let rest = &text[start + "[fake:retry-after=".len()..];
        if let Some(seconds) = rest.split(']').next().and_then(|digits| digits.parse::<u64>().ok()) {
            found.push(Directive::RetryAfter(seconds));
        }
    }
    found
}

/// The failure the directives ask for, if any (the first one), with its `retry-after`, after their delays.
pub(crate) async fn apply_directives(fixed_delay: Duration, found: Vec<Directive>) -> Result<(), Response> {
    let mut delay = fixed_delay;
    let mut failure = None;
    let mut retry_after = None;
    for directive in found {
        match directive {
            Directive::Delay(extra) => delay += extra,
            Directive::RetryAfter(seconds) => {
                retry_after.get_or_insert(seconds);
            }
            Directive::Fail { status, error_type, message } => {
                failure.get_or_insert((status, error_type, message));
            }
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match failure {
        Some((status, error_type, message)) => Err(aws_error_with_retry_after(status, error_type, message, retry_after)),
        None => Ok(()),
    }
}

/// The user text of a Converse body: every text block of every user message, joined by newlines.
pub fn user_text(body: &Value) -> String {
    let mut parts = Vec::new();
    for message in body["messages"].as_array().into_iter().flatten() {
        if message["role"] == "user" {
            for block in message["content"].as_array().into_iter().flatten() {
                if let Some(text) = block["text"].as_str() {
                    parts.push(text);
                }
            }
        }
    }
    parts.join("\n")
}

pub fn plan_reply(body: &Value) -> PlannedReply {
    let prompt = user_text(body);
    let words: Vec<&str> = prompt.split_whitespace().collect();
    let mut reply: Vec<&str> = REPLY_PREFIX.split_whitespace().collect();
    reply.extend(words.iter().take(ECHOED_WORDS));
    let max_tokens = body["inferenceConfig"]["maxTokens"].as_u64().filter(|n| *n > 0);
    let mut stop_reason = "end_turn";
    if let Some(limit) = max_tokens {
        if (reply.len() as u64) > limit {
            reply.truncate(limit as usize);
            stop_reason = "max_tokens";
        }
    }
    PlannedReply {
        text: reply.join(" "),
        input_tokens: words.len().max(1) as u64,
        output_tokens: reply.len() as u64,
        stop_reason,
    }
}

pub(crate) fn aws_error(status: StatusCode, error_type: &'static str, message: &str) -> Response {
    aws_error_with_retry_after(status, error_type, message, None)
}

fn aws_error_with_retry_after(status: StatusCode, error_type: &'static str, message: &str, retry_after: Option<u64>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(request_id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", request_id);
    }
    if let Some(seconds) = retry_after {
        headers.insert("retry-after", seconds.into());
    }
    (status, headers, json!({ "message": message }).to_string()).into_response()
}

/// Parses the body and applies delays and failure directives. `Ok` carries the parsed body.
async fn prepare(settings: &FakeBedrockSettings, model_id: &str, body: &Bytes) -> Result<Value, Response> {
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|_| aws_error(StatusCode::BAD_REQUEST, "ValidationException", "Malformed input request."))?;
    if parsed["messages"].as_array().is_none_or(Vec::is_empty) {
        return Err(aws_error(StatusCode::BAD_REQUEST, "ValidationException", "messages must not be empty"));
    }
    let model_id = settings.strictness.models.resolve(model_id).map_err(super::fake_bedrock_strict::Refusal::into_response)?;
    check_converse_body(&parsed, model_id).map_err(super::fake_bedrock_strict::Refusal::into_response)?;
    converse_metadata(&parsed)?;
    apply_directives(settings.fixed_delay, directives(&user_text(&parsed))).await?;
    Ok(parsed)
}

async fn converse(State(settings): State<FakeBedrockSettings>, Path(model_id): Path<String>, body: Bytes) -> Response {
    let started = Instant::now();
    let parsed = match prepare(&settings, &model_id, &body).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let reply = plan_reply(&parsed);
    let metadata = converse_metadata(&parsed).unwrap_or_default();
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
        "stopReason": reply.stop_reason,
        "usage": {
            "inputTokens": reply.input_tokens,
            "outputTokens": reply.output_tokens,
            "totalTokens": reply.input_tokens + reply.output_tokens
        },
        "metrics": {"latencyMs": started.elapsed().as_millis() as u64}
    });
    record_converse(&settings, "Converse", &model_id, metadata, &parsed, &reply, answer.clone());
    ([("content-type", "application/json")], answer.to_string()).into_response()
}

fn record_converse(
    settings: &FakeBedrockSettings,
    operation: &'static str,
    model_id: &str,
    metadata: Option<std::collections::BTreeMap<String, String>>,
    body: &Value,
    reply: &PlannedReply,
    output_body: Value,
) {
    let invocation = Invocation {
        operation,
        model_id,
        metadata,
        input_body: body,
        input_tokens: reply.input_tokens,
        cache_read_input_tokens: 0,
        cache_write_input_tokens: 0,
        output_body,
        output_tokens: reply.output_tokens,
    };
    settings.invocation_log.record(invocation);
}

pub(crate) fn event_frame(event_type: &'static str, payload: Value) -> Vec<u8> {
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(":event-type", EventHeaderValue::String(event_type.into())))
        .add_header(Header::new(":content-type", EventHeaderValue::String("application/json".into())))
        .add_header(Header::new(":message-type", EventHeaderValue::String("event".into())));
    let mut frame = Vec::new();
    if let Err(error) = aws_smithy_eventstream::frame::write_message_to(&message, &mut frame) {
        tracing::error!(%error, "could not encode an event-stream frame");
    }
    frame
}

async fn converse_stream(State(settings): State<FakeBedrockSettings>, Path(model_id): Path<String>, body: Bytes) -> Response {
    let started = Instant::now();
    let parsed = match prepare(&settings, &model_id, &body).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let reply = plan_reply(&parsed);
    let metadata = converse_metadata(&parsed).unwrap_or_default();
    let output =
        json!({"output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}}, "stopReason": reply.stop_reason});
    record_converse(&settings, "ConverseStream", &model_id, metadata, &parsed, &reply, output);
    let exception = stream_exception(&user_text(&parsed));
    let mut stream = event_frame("messageStart", json!({"role": "assistant"}));
    let words: Vec<&str> = reply.text.split(' ').collect();
    for (index, word) in words.iter().enumerate() {
        if let Some(exception) = exception.as_ref().filter(|exception| exception.after_deltas == index) {
            stream.extend(exception_frame(exception.exception_type));
            return ([("content-type", "application/vnd.amazon.eventstream")], stream).into_response();
        }
        let text = if index == 0 { (*word).to_owned() } else { format!(" {word}") };
        stream.extend(event_frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": text}})));
    }
    stream.extend(event_frame("contentBlockStop", json!({"contentBlockIndex": 0})));
    stream.extend(event_frame("messageStop", json!({"stopReason": reply.stop_reason})));
    stream.extend(event_frame(
        "metadata",
        json!({
            "usage": {
                "inputTokens": reply.input_tokens,
                "outputTokens": reply.output_tokens,
                "totalTokens": reply.input_tokens + reply.output_tokens
            },
            "metrics": {"latencyMs": started.elapsed().as_millis() as u64}
        }),
    ));
    ([("content-type", "application/vnd.amazon.eventstream")], stream).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(prompt: &str, max_tokens: Option<u64>) -> Value {
        let mut body = json!({"messages": [{"role": "user", "content": [{"text": prompt}]}]});
        if let Some(max) = max_tokens {
            body["inferenceConfig"] = json!({"maxTokens": max});
        }
        body
    }

    #[test]
    fn replies_are_deterministic_with_exact_counts() {
        let reply = plan_reply(&body("hello there  world", None));
        assert_eq!(reply.text, "fake-bedrock says: hello there world");
        assert_eq!((reply.input_tokens, reply.output_tokens), (3, 5));
        assert_eq!(reply.stop_reason, "end_turn");
    }

    #[test]
    fn max_tokens_cuts_the_reply() {
        let reply = plan_reply(&body("one two three four", Some(3)));
        assert_eq!(reply.text, "fake-bedrock says: one");
        assert_eq!(reply.output_tokens, 3);
        assert_eq!(reply.stop_reason, "max_tokens");
    }

    #[test]
    fn directives_are_found_in_the_prompt() {
        let found = directives("please [fake:throttle] and [fake:delay=250] now");
        assert!(found.contains(&Directive::Delay(Duration::from_millis(250))));
        assert!(matches!(found[0], Directive::Fail { error_type: "ThrottlingException", .. }));
        assert!(directives("plain prompt").is_empty());
    }
}
