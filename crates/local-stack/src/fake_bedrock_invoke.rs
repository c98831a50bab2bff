//! The fake Bedrock Runtime's `InvokeModel`, `InvokeModelWithResponseStream` and `CountTokens` for
//! Anthropic-native bodies (what the Claude proxy sends when it falls back). Same deterministic rules as the
//! fake Anthropic (`fake_anthropic`), with `fake-bedrock says:` replies and a prompt cache of its own.
//! Bodies are checked as Bedrock checks them: `anthropic_version: bedrock-2023-05-31`, `max_tokens`
//! present, no extraneous keys (`model`, `stream`, `metadata`, ...), no empty message except a final
//! assistant one; `max_tokens` at least 1 and within the model's limit; only known model ids
//! (`fake_bedrock_strict`). The fake Bedrock's directives apply (`[fake:throttle]`, `[fake:retry-after=N]`,
//! `[fake:stream-exception=TYPE[@N]]`, ...), plus `[fake:stream-delay=MS]`.
//! `GET /fake/requests[?contains=TEXT]` lists the bodies received.

use std::sync::Arc;

use aws_smithy_types::base64;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::fake_anthropic::{
    self, count_input_tokens, directive_text, message_json, plan_message, stream_delay, PromptCache, RequestLog,
};
use crate::fake_bedrock::{self, apply_directives, aws_error, event_frame, FakeBedrockSettings};
use crate::fake_bedrock_audit::{invoke_metadata, Invocation};
use crate::fake_bedrock_strict::{check_anthropic_max_tokens, exception_frame, stream_exception, PROFILE_PREFIXES};

const ACCEPTED_FIELDS: [&str; 13] = [
    "anthropic_version",
    "anthropic_beta",
    "max_tokens",
    "messages",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "context_management",
];

#[derive(Clone)]
struct InvokeState {
    settings: FakeBedrockSettings,
    cache: Arc<PromptCache>,
    log: Arc<RequestLog>,
}

/// The Bedrock operations (signed); `requests_router` lists what they received, for tests.
pub fn router(settings: FakeBedrockSettings) -> Router {
    Router::new()
        .route("/model/{model_id}/invoke", post(invoke))
        .route("/model/{model_id}/invoke-with-response-stream", post(invoke_stream))
        .route("/model/{model_id}/count-tokens", post(count_tokens))
        .with_state(state_of(settings))
}

/// `GET /fake/requests[?contains=TEXT]`: the bodies `router` received (the same log).
pub fn requests_router(settings: FakeBedrockSettings) -> Router {
    Router::new().route("/fake/requests", get(requests)).with_state(state_of(settings))
}

fn state_of(settings: FakeBedrockSettings) -> InvokeState {
    InvokeState { log: Arc::clone(&settings.request_log), settings, cache: Arc::default() }
}

fn validation(message: String) -> Response {
    aws_error(StatusCode::BAD_REQUEST, "ValidationException", &message)
}

/// Bedrock's own checks of an Anthropic body; `Err` is the answer.
pub fn check_body(body: &Value) -> Result<(), String> {
    let Some(fields) = body.as_object() else {
        return Err("Malformed input request, please reformat your input and try again.".into());
    };
    if let Some(extra) = fields.keys().find(|name| !ACCEPTED_FIELDS.contains(&name.as_str())) {
        return Err(format!(
            "Malformed input request: #: extraneous key [{extra}] is not permitted, please reformat your input and try again."
        ));
    }
    if body["anthropic_version"] != "bedrock-2023-05-31" {
        return Err("Invalid API Request: anthropic_version must be bedrock-2023-05-31".into());
    }
    if !body["max_tokens"].is_u64() {
        return Err(
            "Malformed input request: #: required key [max_tokens] not found, please reformat your input and try again.".into()
        );
    }
    let Some(messages) = body["messages"].as_array() else {
        return Err(
            "Malformed input request: #: required key [messages] not found, please reformat your input and try again.".into()
        );
    };
    for (index, message) in messages.iter().enumerate() {
        let empty = match &message["content"] {
            Value::String(text) => text.is_empty(),
            Value::Array(blocks) => blocks.is_empty(),
            _ => true,
        };
        let final_assistant = index + 1 == messages.len() && message["role"] == "assistant";
        if empty && !final_assistant {
            return Err(format!(
                "messages.{index}: all messages must have non-empty content except for the optional final assistant message"
            ));
        }
    }
    Ok(())
}

async fn prepare(state: &InvokeState, model_id: &str, body: &Bytes) -> Result<Value, Response> {
    let parsed: Value = serde_json::from_slice(body).map_err(|_| validation("Malformed input request.".into()))?;
    state.log.record(json!({"model_id": model_id, "body": parsed}));
    let model_id =
        state.settings.strictness.models.resolve(model_id).map_err(super::fake_bedrock_strict::Refusal::into_response)?;
    check_body(&parsed).map_err(validation)?;
    check_anthropic_max_tokens(&parsed, model_id).map_err(super::fake_bedrock_strict::Refusal::into_response)?;
    apply_directives(state.settings.fixed_delay, fake_bedrock::directives(&directive_text(&parsed))).await?;
    Ok(parsed)
}

fn message_id() -> String {
    format!("msg_bdrk_{}", uuid::Uuid::new_v4().simple())
}

async fn invoke(State(state): State<InvokeState>, Path(model_id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let metadata = match invoke_metadata(&headers) {
        Ok(metadata) => metadata,
        Err(response) => return response,
    };
    let parsed = match prepare(&state, &model_id, &body).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let plan = plan_message(&parsed, "fake-bedrock", &state.cache);
    let answer = message_json(&plan, &model_id, &message_id());
    record_invoke(&state, "InvokeModel", &model_id, metadata, &parsed, &plan, answer.clone());
    (
        [
            ("content-type", "application/json".to_owned()),
            ("x-amzn-bedrock-input-token-count", plan.input_tokens.to_string()),
            ("x-amzn-bedrock-output-token-count", plan.output_tokens.to_string()),
        ],
        answer.to_string(),
    )
        .into_response()
}

fn record_invoke(
    state: &InvokeState,
    operation: &'static str,
    model_id: &str,
    metadata: Option<std::collections::BTreeMap<String, String>>,
    body: &Value,
    plan: &fake_anthropic::PlannedMessage,
    output_body: Value,
) {
    let invocation = Invocation {
        operation,
        model_id,
        metadata,
        input_body: body,
        input_tokens: plan.input_tokens,
        cache_read_input_tokens: plan.cache_read_input_tokens,
        cache_write_input_tokens: plan.cache_creation_input_tokens,
        output_body,
        output_tokens: plan.output_tokens,
    };
    state.settings.invocation_log.record(invocation);
}

fn chunk_frame(event: &Value) -> Vec<u8> {
    event_frame("chunk", json!({"bytes": base64::encode(event.to_string())}))
}

async fn invoke_stream(
    State(state): State<InvokeState>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let metadata = match invoke_metadata(&headers) {
        Ok(metadata) => metadata,
        Err(response) => return response,
    };
    let parsed = match prepare(&state, &model_id, &body).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let plan = plan_message(&parsed, "fake-bedrock", &state.cache);
    let mut events = fake_anthropic::stream_events(&plan, &model_id, &message_id());
    record_invoke(&state, "InvokeModelWithResponseStream", &model_id, metadata, &parsed, &plan, json!(events));
    if let Some(last) = events.last_mut() {
        last["amazon-bedrock-invocationMetrics"] = json!({
            "inputTokenCount": plan.input_tokens,
            "outputTokenCount": plan.output_tokens,
            "invocationLatency": 1,
            "firstByteLatency": 1
        });
    }
    let delay = stream_delay(&parsed);
    let exception = stream_exception(&directive_text(&parsed));
    let (sender, body) = claude_proxy::body::channel();
    tokio::spawn(async move {
        let mut text_deltas = 0;
        for event in events {
            if let Some(exception) = exception.as_ref().filter(|exception| exception.after_deltas == text_deltas) {
                if event["type"] == "content_block_delta" {
                    let _ = sender.send(Bytes::from(exception_frame(exception.exception_type))).await;
                    return;
                }
            }
            if event["type"] == "content_block_delta" {
                text_deltas += 1;
            }
            if sender.send(Bytes::from(chunk_frame(&event))).await.is_err() {
                return;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    });
    ([("content-type", "application/vnd.amazon.eventstream")], Body::new(body)).into_response()
}

async fn count_tokens(State(state): State<InvokeState>, Path(model_id): Path<String>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => return validation("Malformed input request.".into()),
    };
    let inner = request["input"]["invokeModel"]["body"]
        .as_str()
        .and_then(|encoded| base64::decode(encoded).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let Some(inner) = inner else {
        return validation("input.invokeModel.body must be a base64-encoded JSON body".into());
    };
    state.log.record(json!({"model_id": model_id, "count_tokens": true, "body": inner}));
    // CountTokens takes a foundation model id: an inference profile id is refused.
    if model_id.split_once('.').is_some_and(|(prefix, _)| PROFILE_PREFIXES.contains(&prefix)) {
        return validation(format!(
            "The provided model identifier is invalid: {model_id} (CountTokens takes a foundation model id)"
        ));
    }
    if let Err(message) = check_body(&inner) {
        return validation(message);
    }
    Json(json!({"inputTokens": count_input_tokens(&inner)})).into_response()
}

#[derive(Deserialize)]
struct RequestsQuery {
    contains: Option<String>,
}

async fn requests(State(state): State<InvokeState>, Query(query): Query<RequestsQuery>) -> Json<Value> {
    Json(json!({"requests": state.log.matching(query.contains.as_deref())}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_refuses_what_the_anthropic_api_accepts() {
        let ok = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
                        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]});
        assert_eq!(check_body(&ok), Ok(()));
        let mut with_model = ok.clone();
        with_model["model"] = json!("claude-x");
        assert!(check_body(&with_model).unwrap_err().contains("extraneous key [model]"));
        let empty_middle = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": []}, {"role": "user", "content": "x"}]});
        assert!(check_body(&empty_middle).unwrap_err().contains("messages.0"));
        let no_version = json!({"max_tokens": 5, "messages": []});
        assert!(check_body(&no_version).unwrap_err().contains("anthropic_version"));
    }
}
