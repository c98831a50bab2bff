//! Handler tests fed from the API Gateway event files in `events/` (proxy-*.json). Anthropic, Bedrock and
//! the tables are in-memory stand-ins: these tests prove the handler's mapping (key -> tenant, body and
//! headers -> upstream request, answer -> HTTP and usage); the end-to-end tests prove the feature.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use claude_proxy::anthropic::{AnthropicApi, ChunkStream, UpstreamError, UpstreamRequest, UpstreamResponse};
use claude_proxy::api_keys::{hash_key, ApiKeyRecord, ApiKeys, KeyStore, StoredKey};
use claude_proxy::bedrock::{BedrockApi, EventStream};
use claude_proxy::config::{CredentialMode, FallbackPolicy, DEFAULT_MODEL_MAP};
use claude_proxy::model_resolution::ModelResolver;
use claude_proxy::provider_key::ProviderKey;
use claude_proxy::proxy::{ProxyService, ProxySettings};
use claude_proxy::streaming::ClientDisconnect;
use claude_proxy::test_util::MemoryKeyStore;
use claude_proxy::ProxyHandler;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use lambda_http::tower::ServiceExt;
use metering_core::bedrock_metadata::BedrockRequestMetadata;
use metering_core::metering::Metering;
use metering_core::model::ModelError;
use metering_core::test_util::{NoCounters, RecordedLines};
use serde_json::{json, Value};

/// The key in events/proxy-*.json (a test fixture, not a secret).
const EVENT_KEY: &str = "bmk_0123456789abcdef_abababababababababababababababababababababababababababababababab";

/// A body in one chunk.
fn whole(bytes: Bytes) -> ChunkStream {
    Box::pin(futures::stream::once(async { Ok::<_, UpstreamError>(bytes) }))
}

/// Answers like Anthropic; a body containing `[stub:429]` gets a 429 with `retry-after: 12`.
#[derive(Default)]
struct StubAnthropic {
    seen: Mutex<Vec<(String, HeaderMap, Bytes)>>,
}

#[async_trait]
impl AnthropicApi for StubAnthropic {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        self.seen.lock().unwrap().push((request.path_and_query.clone(), request.headers.clone(), request.body.clone()));
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if String::from_utf8_lossy(&request.body).contains("[stub:429]") {
            headers.insert("retry-after", HeaderValue::from_static("12"));
            let body = json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}});
            return Ok(UpstreamResponse {
                status: StatusCode::TOO_MANY_REQUESTS,
                headers,
                body: whole(Bytes::from(body.to_string())),
            });
        }
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "Hello, demo tenant!"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 11, "output_tokens": 5, "cache_read_input_tokens": 7}});
        Ok(UpstreamResponse { status: StatusCode::OK, headers, body: whole(Bytes::from(body.to_string())) })
    }
}

#[derive(Default)]
struct StubBedrock {
    bodies: Mutex<Vec<(String, Value)>>,
}

#[async_trait]
impl BedrockApi for StubBedrock {
    async fn invoke(&self, model_id: &str, body: Vec<u8>, _: &BedrockRequestMetadata) -> Result<Bytes, ModelError> {
        self.bodies.lock().unwrap().push((model_id.to_owned(), serde_json::from_slice(&body).unwrap()));
        let answer = json!({"id": "msg_bdrk_1", "type": "message", "role": "assistant", "model": model_id,
            "content": [{"type": "text", "text": "From Bedrock."}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 4, "output_tokens": 3}});
        Ok(Bytes::from(answer.to_string()))
    }
    async fn invoke_stream(&self, _: &str, _: Vec<u8>, _: &BedrockRequestMetadata) -> Result<EventStream, ModelError> {
        Err(ModelError::Upstream("not used here".into()))
    }
    async fn count_tokens(&self, _: &str, _: Vec<u8>) -> Result<u64, ModelError> {
        Ok(1)
    }
}

struct Harness {
    handler: ProxyHandler,
    anthropic: Arc<StubAnthropic>,
    bedrock: Arc<StubBedrock>,
    lines: Arc<RecordedLines>,
    metering: Metering,
}

async fn harness() -> Harness {
    let store = Arc::new(MemoryKeyStore::default());
    store
        .insert(&StoredKey {
            record: ApiKeyRecord {
                id: "0123456789abcdef".into(),
                tenant_id: "demo-tenant".into(),
                user_id: "5f1c2a4e-1111-4c2b-9d3e-000000000001".into(),
                name: None,
                created_at: "2026-11-23T10:00:00.000Z".into(),
                revoked_at: None,
                hint: "bmk_0123456789abcdef_...".into(),
            },
            key_hash: hash_key(EVENT_KEY),
        })
        .await
        .unwrap();
    let anthropic = Arc::new(StubAnthropic::default());
    let bedrock = Arc::new(StubBedrock::default());
    let lines = Arc::new(RecordedLines::default());
    let metering = Metering::new(Arc::new(NoCounters), lines.clone());
    let settings = ProxySettings {
        credential_mode: CredentialMode::Managed,
        provider_key: ProviderKey::Ready("sk-ant-provider".into()),
        fallback: FallbackPolicy { enabled: true, on_overloaded: false, on_server_error: false },
        models: ModelResolver::new(
            DEFAULT_MODEL_MAP.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect(),
            BTreeMap::default(),
        ),
        bedrock_allowed_betas: vec![],
        forced_rate_limit_retry_after: None,
        default_retry_after_seconds: 30,
        on_client_disconnect: ClientDisconnect::default(),
        anthropic_timeout: Duration::from_secs(600),
    };
    let service = ProxyService::new(
        settings,
        ApiKeys::new(store, Duration::ZERO),
        None,
        anthropic.clone(),
        bedrock.clone(),
        metering.clone(),
    );
    let tenants = Arc::new(metering_core::tenant_registry::InMemoryTenantRegistry::default());
    Harness { handler: ProxyHandler::new(service, 1024 * 1024, tenants), anthropic, bedrock, lines, metering }
}

fn event(name: &str) -> lambda_http::Request {
    let path = format!("{}/../../events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    // As in the function: the stage (`prod` in every event) is left out of the path.
    api_gateway_lambda::layers::serve_paths_without_stage();
    lambda_http::request::from_str(&text).unwrap()
}

/// The function's answer to `request`, through its `Router` and the shared layers.
async fn call(handler: &ProxyHandler, request: lambda_http::Request) -> http::Response<axum::body::Body> {
    handler.router().oneshot(request).await.unwrap()
}

async fn json_of(response: http::Response<axum::body::Body>) -> (StatusCode, HeaderMap, Value) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_message_goes_to_anthropic_with_the_providers_key_and_is_metered() {
    let h = harness().await;
    let (status, headers, body) = json_of(call(&h.handler, event("proxy-messages")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["content"][0]["text"], "Hello, demo tenant!");
    assert_eq!(headers["x-request-id"], "c6af9ac6-7b61-11e6-9a41-93e8deadbee0", "API Gateway's request id");
    assert_eq!(headers["request-id"], "c6af9ac6-7b61-11e6-9a41-93e8deadbee0", "Anthropic's answer had none of its own");
    assert_eq!(headers["x-gateway-upstream"], "anthropic");

    let seen = h.anthropic.seen.lock().unwrap().clone();
    let (path, upstream_headers, _) = &seen[0];
    assert_eq!(path, "/v1/messages?beta=true", "the query string goes on");
    assert_eq!(upstream_headers["x-api-key"], "sk-ant-provider");
    assert!(!format!("{upstream_headers:?}").contains(EVENT_KEY), "the gateway key never goes upstream");

    h.metering.flush().await;
    let lines = h.lines.usage();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    // Metered to the key's owner; what the client said (metadata.user_id) is kept apart.
    assert_eq!((line.tenant_id.as_str(), line.user_id.as_str()), ("demo-tenant", "5f1c2a4e-1111-4c2b-9d3e-000000000001"));
    assert_eq!(line.client_user_id.as_deref(), Some("7c1e"));
    assert_eq!(line.requested_model_id.as_deref(), Some("claude-sonnet-4-5-20250929"));
    assert_eq!((line.request_type.as_str(), line.model_id.as_str()), ("anthropic", "claude-sonnet-4-5-20250929"));
    assert_eq!((line.input_tokens, line.output_tokens, line.cache_read_input_tokens, line.total_tokens), (11, 5, 7, 23));
    assert_eq!(line.request_id, "c6af9ac6-7b61-11e6-9a41-93e8deadbee0");
}

#[tokio::test]
async fn a_429_is_served_by_bedrock_with_a_bedrock_body() {
    let h = harness().await;
    let (status, headers, body) = json_of(call(&h.handler, event("proxy-messages-rate-limited")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["content"][0]["text"], "From Bedrock.");
    assert_eq!(headers["x-gateway-fallback"], "rate_limited");
    let (model_id, sent) = h.bedrock.bodies.lock().unwrap()[0].clone();
    assert_eq!(model_id, "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert!(sent.get("model").is_none());
    h.metering.flush().await;
    let line = h.lines.usage()[0].clone();
    assert_eq!((line.request_type.as_str(), line.model_id.as_str()), ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"));
    assert_eq!(line.user_id, "5f1c2a4e-1111-4c2b-9d3e-000000000001", "no metadata: the key's user");
    assert_eq!(line.requested_model_id.as_deref(), Some("claude-sonnet-4-5-20250929"));
}

#[tokio::test]
async fn an_unknown_key_is_an_anthropic_authentication_error_and_nothing_goes_upstream() {
    let h = harness().await;
    let (status, _, body) = json_of(call(&h.handler, event("proxy-messages-bad-key")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(h.anthropic.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_signed_in_user_creates_a_key_for_their_tenant() {
    let h = harness().await;
    let response = call(&h.handler, event("proxy-keys-create")).await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    for name in ["x-request-id", "request-id"] {
        assert_eq!(response.headers()[name], "c6af9ac6-7b61-11e6-9a41-93e8deadbee0", "{name}");
    }
    assert_eq!(response.headers()["x-gateway-upstream"], "gateway");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["tenant_id"], "demo-tenant");
    assert_eq!(body["name"], "laptop");
    let key = body["key"].as_str().unwrap();
    assert!(key.starts_with("bmk_"));
    assert!(h.handler.service().keys().verify(Some(key)).await.is_ok());
}

#[tokio::test]
async fn the_keys_route_without_claims_is_unauthenticated() {
    let h = harness().await;
    let mut request = event("proxy-messages");
    *request.uri_mut() = "https://abc123.execute-api.us-east-1.amazonaws.com/v1/keys".parse().unwrap();
    *request.method_mut() = http::Method::GET;
    let (status, _, body) = json_of(call(&h.handler, request).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// `event` with another method and path (and body).
fn request(method: &str, path: &str, body: &str) -> lambda_http::Request {
    let mut request = event("proxy-messages");
    *request.method_mut() = method.parse().unwrap();
    *request.uri_mut() = format!("https://abc123.execute-api.us-east-1.amazonaws.com{path}").parse().unwrap();
    *request.body_mut() = lambda_http::Body::from(body);
    request
}

#[tokio::test]
async fn routes_match_exactly_and_answer_405_and_404_in_anthropics_envelope() {
    let h = harness().await;
    let cases = [
        ("GET", "/v1/messages", 405, "use POST for /v1/messages"),
        ("GET", "/v1/messages/count_tokens", 405, "use POST for /v1/messages/count_tokens"),
        ("PUT", "/v1/keys", 405, "use GET or POST for /v1/keys"),
        ("POST", "/v1/keys/abc", 405, "use DELETE for /v1/keys/{id}"),
        ("POST", "/v1/gateway-key/usage/me", 405, "use GET for /v1/gateway-key/usage/me"),
        ("POST", "/v1/other", 404, "no route for /v1/other"),
        ("POST", "/prod/v1/messages", 404, "no route for /prod/v1/messages"),
        ("POST", "/V1/messages", 404, "no route for /V1/messages"),
        ("GET", "/v1/gateway-key/usage/me", 404, "this gateway does not serve gateway-key reports"),
    ];
    for (method, path, status, message) in cases {
        let (got, headers, body) = json_of(call(&h.handler, request(method, path, "{}")).await).await;
        assert_eq!((got.as_u16(), body["error"]["message"].as_str()), (status, Some(message)), "{method} {path}: {body}");
        assert_eq!(body["type"], "error", "{method} {path}");
        assert_eq!(body["request_id"], "c6af9ac6-7b61-11e6-9a41-93e8deadbee0", "{method} {path}");
        assert_eq!(headers["x-request-id"], "c6af9ac6-7b61-11e6-9a41-93e8deadbee0", "{method} {path}");
        assert_eq!(headers["request-id"], "c6af9ac6-7b61-11e6-9a41-93e8deadbee0", "{method} {path}");
        assert_eq!(headers["x-gateway-upstream"], "gateway", "{method} {path}");
    }
    for other in ["/v1/gateway-key/usage/acme", "/v1/gateway-key/usage", "/v1/gateway-key/", "/v1/gateway-key/usage/me/x"] {
        let (status, _, body) = json_of(call(&h.handler, request("GET", other, "")).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{other}");
        assert_eq!(
            body["error"]["message"], "no such route; /v1/gateway-key/ serves usage/me",
            "the path is not echoed: {other}"
        );
    }
    assert!(h.anthropic.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_anthropics_413_and_nothing_goes_upstream() {
    let h = harness().await;
    let big = format!("{{\"padding\": \"{}\"}}", "x".repeat(1024 * 1024));
    let (status, _, body) = json_of(call(&h.handler, request("POST", "/v1/messages", &big)).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!((body["type"].as_str(), body["error"]["type"].as_str()), (Some("error"), Some("request_too_large")));
    assert!(h.anthropic.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn every_route_reads_its_body_under_the_proxys_own_limit() {
    // GIVEN a proxy whose MAX_BODY_BYTES is 64, well under the gateway's default
    let h = harness().await;
    let tenants = Arc::new(metering_core::tenant_registry::InMemoryTenantRegistry::default());
    let small = ProxyHandler::new(h.handler.service().clone(), 64, tenants);
    let over = format!("{{\"padding\": \"{}\"}}", "x".repeat(100));
    // THEN a message and a key creation over it are Anthropic's 413, with the answer headers
    let mut create = event("proxy-keys-create");
    *create.body_mut() = lambda_http::Body::from(over.as_str());
    for request in [request("POST", "/v1/messages", &over), create] {
        let (status, headers, body) = json_of(call(&small, request).await).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"]["type"], "request_too_large");
        assert_eq!(headers["x-gateway-upstream"], "gateway");
    }
    assert!(h.anthropic.seen.lock().unwrap().is_empty());
}
