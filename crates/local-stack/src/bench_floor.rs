//! `local-stack bench-floor`: the floor under the gateway's overhead on this machine, measured by scripts/bench
//! beside the gateway in the same run.
//!
//! It serves the gateway's routes on the same server (`serve_http1`, the same tokio runtime) and makes the same
//! upstream call with the same client code: for `/bedrock/chat` the AWS SDK's Converse call
//! ([`BedrockChatModel`], built from the chat's own configuration), for `/v1/messages` the proxy's HTTP client
//! ([`HttpAnthropic`], the provider key set as in managed mode, the answer streamed back as it arrives). And
//! nothing else: no authorizer, no key check, no limits, no usage line, no counters, no request id, no log line.
//! So the gateway's figures minus this one's are the gateway's own work, and this one's minus the upstream's
//! alone are what any server making that call pays here. It is a benchmark instrument, never a route of the
//! gateway: it answers anyone.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use claude_proxy::anthropic::{upstream_headers, AnthropicApi, HttpAnthropic, UpstreamRequest};
use claude_proxy::config::CredentialMode;
use metering_core::bedrock_metadata::BedrockRequestMetadata;
use metering_core::model::{BedrockChatModel, ChatModel, ModelPrompt};
use metering_core::usage::RequestType;
use serde::Deserialize;
use serde_json::json;

/// The chat's floor: `POST /bedrock/chat` `{"prompt"}` -> one Converse call -> `{"response"}`.
pub fn chat_router(model: BedrockChatModel, model_id: String) -> Router {
    let state = Arc::new(ChatFloor { model, model_id });
    Router::new().route("/bedrock/chat", post(chat)).with_state(state)
}

struct ChatFloor {
    model: BedrockChatModel,
    model_id: String,
}

#[derive(Deserialize)]
struct ChatBody {
    prompt: String,
}

async fn chat(State(floor): State<Arc<ChatFloor>>, body: Bytes) -> Response {
    let Ok(ChatBody { prompt }) = serde_json::from_slice(&body) else {
        return failure(StatusCode::BAD_REQUEST, "the body must be {\"prompt\": \"...\"}");
    };
    // The metadata Bedrock's invocation log needs (the fake checks it): constant, as nobody is verified here.
    let metadata = BedrockRequestMetadata {
        tenant_id: "bench-floor".into(),
        user_id: "bench-floor".into(),
        request_id: "bench-floor".into(),
        request_type: RequestType::Bedrock,
    };
    let prompt = ModelPrompt { model_id: floor.model_id.clone(), prompt, max_tokens: None, metadata };
    match floor.model.converse(&prompt).await {
        Ok(reply) => axum::Json(json!({"response": reply.text})).into_response(),
        Err(error) => failure(StatusCode::BAD_GATEWAY, &error.to_string()),
    }
}

/// The proxy's floor: `POST /v1/messages` forwarded to `anthropic` with the provider key, its answer (plain
/// or a stream) passed back chunk by chunk.
pub fn proxy_router(anthropic: HttpAnthropic, provider_key: Option<String>) -> Router {
    let state = Arc::new(ProxyFloor { anthropic, provider_key });
    Router::new().route("/v1/messages", post(messages)).with_state(state)
}

struct ProxyFloor {
    anthropic: HttpAnthropic,
    provider_key: Option<String>,
}

async fn messages(State(floor): State<Arc<ProxyFloor>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = UpstreamRequest {
        path_and_query: "/v1/messages".into(),
        headers: upstream_headers(&headers, CredentialMode::Managed, floor.provider_key.as_deref()),
        body,
    };
    match floor.anthropic.send(request).await {
        Ok(answer) => {
            let mut response = Response::new(Body::from_stream(answer.body));
            *response.status_mut() = answer.status;
            if let Some(content_type) = answer.headers.get(http::header::CONTENT_TYPE) {
                response.headers_mut().insert(http::header::CONTENT_TYPE, content_type.clone());
            }
            response
        }
        Err(error) => failure(StatusCode::BAD_GATEWAY, &error.to_string()),
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"type": "bench_floor_error", "message": message}}))).into_response()
}
