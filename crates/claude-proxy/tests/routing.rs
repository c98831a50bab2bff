//! The routing decision of `POST /v1/messages` (and `count_tokens`), branch by branch: which upstream is
//! asked, what the client gets when the fallback is off, forced, remembered, unreachable or failing, and the
//! exact `retry-after` of every 429 the gateway answers or remembers. Anthropic, Bedrock, the key store and
//! the rate-limit table are in-memory stand-ins that answer as scripted and count their calls; the
//! end-to-end tests (`tests/e2e/test_proxy.py`) prove the same paths over real connections.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use claude_proxy::anthropic::{AnthropicApi, ChunkStream, UpstreamError, UpstreamRequest, UpstreamResponse};
use claude_proxy::api_keys::{hash_key, ApiKeyRecord, ApiKeys, KeyStore, StoredKey};
use claude_proxy::bedrock::{BedrockApi, EventStream};
use claude_proxy::config::{CredentialMode, FallbackPolicy, DEFAULT_MODEL_MAP};
use claude_proxy::model_resolution::ModelResolver;
use claude_proxy::provider_key::ProviderKey;
use claude_proxy::proxy::{Endpoint, ProxyService, ProxySettings};
use claude_proxy::rate_limits::{RateLimitEntry, RateLimitMemory, RateLimitScope};
use claude_proxy::request::ProxyRequest;
use claude_proxy::streaming::ClientDisconnect;
use claude_proxy::test_util::{MemoryKeyStore, MemoryRateLimitStore};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use metering_core::bedrock_metadata::BedrockRequestMetadata;
use metering_core::metering::Metering;
use metering_core::model::ModelError;
use metering_core::test_util::{NoCounters, RecordedLines};
use metering_core::usage::UsageRecord;
use serde_json::{json, Value};

const KEY: &str = "bmk_0123456789abcdef_abababababababababababababababababababababababababababababababab";
const TENANT: &str = "route-tenant";
const USER: &str = "route-user";
const MODEL: &str = "claude-sonnet-4-5-20250929";
const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const DEFAULT_RETRY_AFTER: u64 = 30;

// ---------------------------------------------------------------- stand-ins

/// A body in one chunk.
fn whole(bytes: Bytes) -> ChunkStream {
    Box::pin(futures::stream::once(async { Ok::<_, UpstreamError>(bytes) }))
}

/// What the Anthropic stand-in answers.
#[derive(Clone)]
enum AnthropicScript {
    Ok,
    Refuses {
        status: u16,
        retry_after: Option<&'static str>,
    },
    Unreachable,
    /// A `200` stream whose first event is an `event: error` of this type (before `message_start`).
    StreamOpensWithError(&'static str),
}

fn early_error_stream(error_type: &str) -> String {
    let data = json!({"type": "error", "error": {"type": error_type, "message": "anthropic's stream says no"}});
    format!("event: ping\ndata: {{\"type\": \"ping\"}}\n\nevent: error\ndata: {data}\n\n")
}

fn anthropic_refusal_body(status: u16) -> Value {
    let error_type = match status {
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400 => "invalid_request_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": error_type, "message": format!("anthropic says {status}")}})
}

struct ScriptedAnthropic {
    script: AnthropicScript,
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl AnthropicApi for ScriptedAnthropic {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        self.calls.lock().unwrap().push(request.path_and_query.clone());
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let (status, body) = match &self.script {
            AnthropicScript::Unreachable => return Err(UpstreamError::Unreachable("connection refused".into())),
            AnthropicScript::StreamOpensWithError(error_type) => {
                headers.insert("content-type", HeaderValue::from_static("text/event-stream; charset=utf-8"));
                let body = whole(Bytes::from(early_error_stream(error_type)));
                return Ok(UpstreamResponse { status: StatusCode::OK, headers, body });
            }
            AnthropicScript::Ok => (
                200,
                json!({"id": "msg_a", "type": "message", "role": "assistant", "model": MODEL,
                    "content": [{"type": "text", "text": "From Anthropic."}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 2, "output_tokens": 1}}),
            ),
            AnthropicScript::Refuses { status, retry_after } => {
                if let Some(seconds) = retry_after {
                    headers.insert("retry-after", HeaderValue::from_static(seconds));
                }
                (*status, anthropic_refusal_body(*status))
            }
        };
        Ok(UpstreamResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: whole(Bytes::from(body.to_string())),
        })
    }
}

struct ScriptedBedrock {
    failure: Option<ModelError>,
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl BedrockApi for ScriptedBedrock {
    async fn invoke(&self, model_id: &str, _: Vec<u8>, _: &BedrockRequestMetadata) -> Result<Bytes, ModelError> {
        self.calls.lock().unwrap().push(format!("invoke {model_id}"));
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let answer = json!({"id": "msg_b", "type": "message", "role": "assistant", "model": model_id,
            "content": [{"type": "text", "text": "From Bedrock."}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 4, "output_tokens": 3}});
        Ok(Bytes::from(answer.to_string()))
    }
    async fn invoke_stream(&self, _: &str, _: Vec<u8>, _: &BedrockRequestMetadata) -> Result<EventStream, ModelError> {
        Err(ModelError::Upstream("not used here".into()))
    }
    async fn count_tokens(&self, model_id: &str, _: Vec<u8>) -> Result<u64, ModelError> {
        self.calls.lock().unwrap().push(format!("count_tokens {model_id}"));
        match &self.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(9),
        }
    }
}

// ---------------------------------------------------------------- the setup of one case

struct Case {
    fallback: FallbackPolicy,
    anthropic: AnthropicScript,
    bedrock_failure: Option<ModelError>,
    forced_retry_after: Option<u64>,
    /// A 429 already remembered for this key's owner, `seconds` from now.
    remembered_for: Option<i64>,
    scope: RateLimitScope,
    /// A 429 already remembered under this scope key (someone else's), for 300 s.
    remembered_key: Option<String>,
}

const FALLBACK_OFF: FallbackPolicy = FallbackPolicy { enabled: false, on_overloaded: true, on_server_error: true };
const ON_429_ONLY: FallbackPolicy = FallbackPolicy { enabled: true, on_overloaded: false, on_server_error: false };
const ON_ALL: FallbackPolicy = FallbackPolicy { enabled: true, on_overloaded: true, on_server_error: true };

impl Case {
    fn new(fallback: FallbackPolicy, anthropic: AnthropicScript) -> Self {
        Self {
            fallback,
            anthropic,
            bedrock_failure: None,
            forced_retry_after: None,
            remembered_for: None,
            scope: RateLimitScope::User,
            remembered_key: None,
        }
    }
    fn bedrock_fails(mut self, error: ModelError) -> Self {
        self.bedrock_failure = Some(error);
        self
    }
    fn forced(mut self, retry_after: u64) -> Self {
        self.forced_retry_after = Some(retry_after);
        self
    }
    fn remembered_for(mut self, seconds: i64) -> Self {
        self.remembered_for = Some(seconds);
        self
    }
    fn scoped(mut self, scope: RateLimitScope, remembered_key: Option<&str>) -> Self {
        self.scope = scope;
        self.remembered_key = remembered_key.map(str::to_owned);
        self
    }
}

struct Outcome {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    anthropic_calls: Vec<String>,
    bedrock_calls: Vec<String>,
    remembered: Vec<(String, RateLimitEntry)>,
    lines: Vec<UsageRecord>,
}

impl Outcome {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

fn request(body: Value) -> ProxyRequest {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static(KEY));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    ProxyRequest { request_id: "req-route-1".into(), headers, query: None, body: Bytes::from(body.to_string()) }
}

fn message_body() -> Value {
    json!({"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
}

async fn run(case: Case, endpoint: Endpoint) -> Outcome {
    let keys = Arc::new(MemoryKeyStore::default());
    keys.insert(&StoredKey {
        record: ApiKeyRecord {
            id: "0123456789abcdef".into(),
            tenant_id: TENANT.into(),
            user_id: USER.into(),
            name: None,
            created_at: "2026-11-23T10:00:00.000Z".into(),
            revoked_at: None,
            hint: "bmk_0123456789abcdef_...".into(),
        },
        key_hash: hash_key(KEY),
    })
    .await
    .unwrap();
    let table = Arc::new(MemoryRateLimitStore::default());
    if let Some(seconds) = case.remembered_for {
        let key = case.scope.key(TENANT, USER);
        table.limit(key, Utc::now() + chrono::Duration::seconds(seconds));
    }
    if let Some(key) = case.remembered_key {
        table.limit(key, Utc::now() + chrono::Duration::seconds(300));
    }
    let anthropic = Arc::new(ScriptedAnthropic { script: case.anthropic, calls: Mutex::default() });
    let bedrock = Arc::new(ScriptedBedrock { failure: case.bedrock_failure, calls: Mutex::default() });
    let lines = Arc::new(RecordedLines::default());
    let metering = Metering::new(Arc::new(NoCounters), lines.clone());
    let settings = ProxySettings {
        credential_mode: CredentialMode::Managed,
        provider_key: ProviderKey::Ready("sk-ant-provider".into()),
        fallback: case.fallback,
        models: ModelResolver::new(
            DEFAULT_MODEL_MAP.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect(),
            BTreeMap::default(),
        ),
        bedrock_allowed_betas: vec![],
        forced_rate_limit_retry_after: case.forced_retry_after,
        default_retry_after_seconds: DEFAULT_RETRY_AFTER,
        on_client_disconnect: ClientDisconnect::default(),
        anthropic_timeout: Duration::from_secs(600),
    };
    let service = ProxyService::new(
        settings,
        ApiKeys::new(keys, Duration::ZERO),
        Some(RateLimitMemory::new(table.clone(), case.scope)),
        anthropic.clone(),
        bedrock.clone(),
        metering.clone(),
    );
    let response = service.handle(endpoint, request(message_body())).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    metering.flush().await;
    let is_event_stream =
        parts.headers.get("content-type").is_some_and(|value| value.to_str().unwrap().starts_with("text/event-stream"));
    let body = if is_event_stream {
        Value::String(String::from_utf8(bytes.to_vec()).unwrap())
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    let anthropic_calls = anthropic.calls.lock().unwrap().clone();
    let bedrock_calls = bedrock.calls.lock().unwrap().clone();
    let remembered = table.recorded();
    let lines = lines.usage();
    Outcome { status: parts.status, headers: parts.headers, body, anthropic_calls, bedrock_calls, remembered, lines }
}

async fn messages(case: Case) -> Outcome {
    run(case, Endpoint::Messages).await
}

fn refuses(status: u16, retry_after: Option<&'static str>) -> AnthropicScript {
    AnthropicScript::Refuses { status, retry_after }
}

fn assert_served_by_bedrock(outcome: &Outcome, reason: &str) {
    assert_eq!(outcome.status, StatusCode::OK, "{}", outcome.body);
    assert_eq!(outcome.body["content"][0]["text"], "From Bedrock.");
    assert_eq!(outcome.header("x-gateway-upstream"), Some("bedrock"));
    assert_eq!(outcome.header("x-gateway-fallback"), Some(reason));
    assert_eq!(outcome.bedrock_calls, vec![format!("invoke {BEDROCK_MODEL}")]);
    let line = outcome.lines.first().expect("a usage line");
    assert_eq!((line.request_type.as_str(), line.model_id.as_str()), ("bedrock", BEDROCK_MODEL));
    assert_eq!((line.tenant_id.as_str(), line.input_tokens, line.output_tokens), (TENANT, 4, 3));
}

fn assert_anthropic_refusal_as_is(outcome: &Outcome, status: u16) {
    assert_eq!(outcome.status.as_u16(), status);
    let mut expected = anthropic_refusal_body(status);
    expected["error"]["message"] = json!(format!("anthropic says {status}"));
    assert_eq!(outcome.body, expected, "Anthropic's own body, unchanged");
    assert_eq!(outcome.header("x-gateway-upstream"), Some("anthropic"));
    assert_eq!(outcome.header("x-gateway-fallback"), None);
}

fn assert_gateway_error(outcome: &Outcome, status: u16, error_type: &str) {
    assert_eq!(outcome.status.as_u16(), status, "{}", outcome.body);
    assert_eq!(outcome.body["type"], "error");
    assert_eq!(outcome.body["error"]["type"], error_type, "{}", outcome.body);
    assert_eq!(outcome.body["request_id"], "req-route-1");
    assert_eq!(outcome.header("x-request-id"), Some("req-route-1"));
}

// ---------------------------------------------------------------- Anthropic answers

#[tokio::test]
async fn a_success_is_anthropics_and_bedrock_is_never_asked() {
    let outcome = messages(Case::new(ON_ALL, AnthropicScript::Ok)).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body["content"][0]["text"], "From Anthropic.");
    assert_eq!(outcome.header("x-gateway-upstream"), Some("anthropic"));
    assert_eq!(outcome.anthropic_calls, vec!["/v1/messages"]);
    assert!(outcome.bedrock_calls.is_empty());
    assert!(outcome.remembered.is_empty());
}

#[tokio::test]
async fn with_the_fallback_off_a_429_goes_back_as_it_is_and_is_not_remembered() {
    let outcome = messages(Case::new(FALLBACK_OFF, refuses(429, Some("12")))).await;
    assert_anthropic_refusal_as_is(&outcome, 429);
    assert_eq!(outcome.header("retry-after"), Some("12"), "Anthropic's own retry-after");
    assert!(outcome.bedrock_calls.is_empty());
    assert!(outcome.remembered.is_empty(), "nothing to divert when there is no fallback");
    assert!(outcome.lines.is_empty(), "a refusal is not metered");
}

#[tokio::test]
async fn with_the_fallback_off_a_remembered_429_still_asks_anthropic_and_never_bedrock() {
    let outcome = messages(Case::new(FALLBACK_OFF, AnthropicScript::Ok).remembered_for(300)).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.header("x-gateway-upstream"), Some("anthropic"));
    assert_eq!(outcome.anthropic_calls, vec!["/v1/messages"]);
    assert!(outcome.bedrock_calls.is_empty(), "{:?}", outcome.bedrock_calls);
}

#[tokio::test]
async fn a_429_falls_back_and_is_remembered_for_anthropics_exact_retry_after() {
    let outcome = messages(Case::new(ON_429_ONLY, refuses(429, Some("12")))).await;
    assert_served_by_bedrock(&outcome, "rate_limited");
    let [(scope, entry)] = outcome.remembered.as_slice() else { panic!("{:?}", outcome.remembered) };
    assert_eq!(scope, &format!("USER#{TENANT}#{USER}"));
    assert_eq!((entry.tenant_id.as_str(), entry.user_id.as_str(), entry.retry_after_seconds), (TENANT, USER, 12));
}

#[tokio::test]
async fn a_fractional_retry_after_is_rounded_up() {
    let outcome = messages(Case::new(ON_429_ONLY, refuses(429, Some("2.1")))).await;
    assert_served_by_bedrock(&outcome, "rate_limited");
    assert_eq!(outcome.remembered[0].1.retry_after_seconds, 3);
}

#[tokio::test]
async fn a_429_without_retry_after_is_remembered_for_the_default() {
    let outcome = messages(Case::new(ON_429_ONLY, refuses(429, None))).await;
    assert_served_by_bedrock(&outcome, "rate_limited");
    assert_eq!(outcome.remembered[0].1.retry_after_seconds, DEFAULT_RETRY_AFTER);
}

#[tokio::test]
async fn a_529_falls_back_only_when_overload_is_a_reason() {
    let outcome = messages(Case::new(ON_ALL, refuses(529, None))).await;
    assert_served_by_bedrock(&outcome, "overloaded");
    assert!(outcome.remembered.is_empty(), "only a 429 is remembered");

    let outcome = messages(Case::new(ON_429_ONLY, refuses(529, None))).await;
    assert_anthropic_refusal_as_is(&outcome, 529);
    assert!(outcome.bedrock_calls.is_empty());
}

#[tokio::test]
async fn a_5xx_falls_back_only_when_server_errors_are_a_reason() {
    let outcome = messages(Case::new(ON_ALL, refuses(500, None))).await;
    assert_served_by_bedrock(&outcome, "server_error");

    let outcome = messages(Case::new(ON_429_ONLY, refuses(503, None))).await;
    assert_anthropic_refusal_as_is(&outcome, 503);
    assert!(outcome.bedrock_calls.is_empty());
}

#[tokio::test]
async fn a_client_error_goes_back_as_it_is_whatever_the_policy() {
    let outcome = messages(Case::new(ON_ALL, refuses(400, None))).await;
    assert_anthropic_refusal_as_is(&outcome, 400);
    assert!(outcome.bedrock_calls.is_empty());
    assert!(outcome.remembered.is_empty());
}

// ---------------------------------------------------------------- a 200 stream that opens with an error

#[tokio::test]
async fn a_stream_opening_with_an_error_falls_back_as_the_status_it_stands_for_would() {
    // GIVEN overload is a reason WHEN the stream opens with overloaded_error THEN Bedrock answers, as for a 529
    let outcome = messages(Case::new(ON_ALL, AnthropicScript::StreamOpensWithError("overloaded_error"))).await;
    assert_served_by_bedrock(&outcome, "overloaded");
    assert_eq!(outcome.lines.len(), 1, "metered once");
    assert!(outcome.remembered.is_empty(), "only a 429 is remembered");
    // GIVEN only 429 is a reason WHEN the stream opens with rate_limit_error THEN as a 429: Bedrock, remembered
    let outcome = messages(Case::new(ON_429_ONLY, AnthropicScript::StreamOpensWithError("rate_limit_error"))).await;
    assert_served_by_bedrock(&outcome, "rate_limited");
    assert_eq!(outcome.remembered[0].1.retry_after_seconds, DEFAULT_RETRY_AFTER);
    // GIVEN api_error WHEN server errors are a reason THEN as a 500
    let outcome = messages(Case::new(ON_ALL, AnthropicScript::StreamOpensWithError("api_error"))).await;
    assert_served_by_bedrock(&outcome, "server_error");
}

#[tokio::test]
async fn a_stream_opening_with_an_error_the_policy_does_not_cover_goes_on_byte_for_byte() {
    for (policy, error_type) in [
        (ON_429_ONLY, "overloaded_error"),
        (ON_429_ONLY, "api_error"),
        (ON_ALL, "invalid_request_error"),
        (FALLBACK_OFF, "rate_limit_error"),
    ] {
        let outcome = messages(Case::new(policy, AnthropicScript::StreamOpensWithError(error_type))).await;
        assert_eq!(outcome.status, StatusCode::OK);
        assert_eq!(outcome.body, Value::String(early_error_stream(error_type)), "as Anthropic sent it");
        assert_eq!(outcome.header("x-gateway-upstream"), Some("anthropic"));
        assert!(outcome.bedrock_calls.is_empty() && outcome.remembered.is_empty() && outcome.lines.is_empty(), "{error_type}");
    }
}

#[tokio::test]
async fn bedrock_failing_after_a_stream_opened_with_overloaded_gives_anthropics_error_as_a_529() {
    let case = Case::new(ON_ALL, AnthropicScript::StreamOpensWithError("overloaded_error"))
        .bedrock_fails(ModelError::Unavailable { retry_after_seconds: 4, detail: "down".into() });
    let outcome = messages(case).await;
    assert_eq!(outcome.status.as_u16(), 529);
    assert_eq!(outcome.body["error"]["type"], "overloaded_error");
    assert_eq!(outcome.body["error"]["message"], "anthropic's stream says no", "Anthropic's own error");
    assert_eq!(outcome.header("x-gateway-fallback"), Some("overloaded"));
    assert_eq!(outcome.header("x-gateway-fallback-error"), Some("overloaded_error"));
    assert!(outcome.lines.is_empty(), "nothing was generated");
}

/// Log lines written as JSON into a buffer the test reads.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_stream_tasks_log_lines_say_which_request_tenant_key_and_upstream_they_belong_to() {
    // GIVEN the log lines of this (single-threaded) runtime captured as JSON with their span
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().json().with_current_span(true).with_writer(move || writer.clone()).finish();
    let _default = tracing::subscriber::set_default(subscriber);
    // WHEN a stream is committed to the client and its task logs (an error before message_start: nothing metered)
    messages(Case::new(ON_429_ONLY, AnthropicScript::StreamOpensWithError("overloaded_error"))).await;
    // THEN the task's line carries the stream's span, without the fields repeated by hand
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line: Value = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["fields"]["message"] == "stream ended before message_start; nothing to meter")
        .unwrap_or_else(|| panic!("the stream task's line: {text}"));
    let span = &line["span"];
    assert_eq!(span["name"], "proxy_stream", "{line}");
    assert_eq!(
        (&span["request_id"], &span["tenant_id"], &span["key_id"], &span["upstream"]),
        (&json!("req-route-1"), &json!(TENANT), &json!("0123456789abcdef"), &json!("anthropic")),
        "{line}"
    );
    assert!(line["fields"].get("request_id").is_none(), "{line}");
}

// ---------------------------------------------------------------- Anthropic unreachable

#[tokio::test]
async fn an_unreachable_anthropic_falls_back_when_server_errors_are_a_reason() {
    let outcome = messages(Case::new(ON_ALL, AnthropicScript::Unreachable)).await;
    assert_served_by_bedrock(&outcome, "unreachable");
    assert!(outcome.remembered.is_empty());
}

#[tokio::test]
async fn an_unreachable_anthropic_is_a_502_api_error_otherwise() {
    for policy in [ON_429_ONLY, FALLBACK_OFF] {
        let outcome = messages(Case::new(policy, AnthropicScript::Unreachable)).await;
        assert_gateway_error(&outcome, 502, "api_error");
        assert_eq!(outcome.body["error"]["message"], "the Anthropic API could not be reached");
        assert!(outcome.bedrock_calls.is_empty());
    }
}

// ---------------------------------------------------------------- remembered and forced 429s

#[tokio::test]
async fn a_remembered_429_goes_straight_to_bedrock() {
    let outcome = messages(Case::new(ON_429_ONLY, AnthropicScript::Ok).remembered_for(300)).await;
    assert_served_by_bedrock(&outcome, "remembered");
    assert!(outcome.anthropic_calls.is_empty(), "no round trip that will be refused");
}

#[tokio::test]
async fn an_expired_429_asks_anthropic_again() {
    let outcome = messages(Case::new(ON_429_ONLY, AnthropicScript::Ok).remembered_for(-1)).await;
    assert_eq!(outcome.header("x-gateway-upstream"), Some("anthropic"));
    assert!(outcome.bedrock_calls.is_empty());
}

#[tokio::test]
async fn a_forced_429_goes_to_bedrock_without_asking_anthropic_and_is_remembered() {
    let outcome = messages(Case::new(ON_429_ONLY, AnthropicScript::Ok).forced(17)).await;
    assert_served_by_bedrock(&outcome, "forced");
    assert!(outcome.anthropic_calls.is_empty());
    assert_eq!(outcome.remembered.len(), 1);
    assert_eq!(outcome.remembered[0].1.retry_after_seconds, 17);
}

#[tokio::test]
async fn a_forced_429_with_the_fallback_off_is_a_429_with_the_forced_retry_after() {
    let outcome = messages(Case::new(FALLBACK_OFF, AnthropicScript::Ok).forced(17)).await;
    assert_gateway_error(&outcome, 429, "rate_limit_error");
    assert_eq!(outcome.header("retry-after"), Some("17"));
    assert!(outcome.anthropic_calls.is_empty() && outcome.bedrock_calls.is_empty());
}

// ---------------------------------------------------------------- Bedrock failing during a fallback

#[tokio::test]
async fn bedrock_failing_after_a_429_gives_the_client_anthropics_own_refusal() {
    let case = Case::new(ON_429_ONLY, refuses(429, Some("12"))).bedrock_fails(ModelError::Throttled { retry_after_seconds: 4 });
    let outcome = messages(case).await;
    assert_eq!(outcome.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(outcome.body, anthropic_refusal_body(429), "Anthropic's body, not the gateway's");
    assert_eq!(outcome.header("retry-after"), Some("12"), "Anthropic's retry-after, not Bedrock's");
    assert_eq!(outcome.header("x-gateway-upstream"), Some("bedrock"));
    assert_eq!(outcome.header("x-gateway-fallback"), Some("rate_limited"));
    assert_eq!(outcome.header("x-gateway-fallback-error"), Some("rate_limit_error"));
    assert!(outcome.lines.is_empty(), "nothing was generated");
}

#[tokio::test]
async fn bedrock_failing_after_a_5xx_names_bedrocks_error_type() {
    let case = Case::new(ON_ALL, refuses(500, None))
        .bedrock_fails(ModelError::AccessDenied { model_id: BEDROCK_MODEL.into(), detail: "no".into() });
    let outcome = messages(case).await;
    assert_eq!(outcome.status.as_u16(), 500);
    assert_eq!(outcome.body, anthropic_refusal_body(500));
    assert_eq!(outcome.header("x-gateway-fallback"), Some("server_error"));
    assert_eq!(outcome.header("x-gateway-fallback-error"), Some("api_error"));
}

#[tokio::test]
async fn bedrock_failing_on_a_forced_429_is_a_429_with_the_forced_retry_after() {
    let case = Case::new(ON_429_ONLY, AnthropicScript::Ok)
        .forced(17)
        .bedrock_fails(ModelError::Unavailable { retry_after_seconds: 4, detail: "down".into() });
    let outcome = messages(case).await;
    assert_gateway_error(&outcome, 429, "rate_limit_error");
    assert_eq!(outcome.header("retry-after"), Some("17"));
    assert_eq!(outcome.header("x-gateway-fallback"), Some("forced"));
    assert_eq!(outcome.header("x-gateway-fallback-error"), Some("overloaded_error"));
}

#[tokio::test]
async fn bedrock_failing_on_a_remembered_429_is_a_429_for_what_is_left_of_it() {
    let case = Case::new(ON_429_ONLY, AnthropicScript::Ok)
        .remembered_for(100)
        .bedrock_fails(ModelError::Throttled { retry_after_seconds: 4 });
    let outcome = messages(case).await;
    assert_gateway_error(&outcome, 429, "rate_limit_error");
    let seconds: u64 = outcome.header("retry-after").unwrap().parse().unwrap();
    // What is left of the 100 s (whole seconds; a slow machine may take a few): never the default 30.
    assert!((90..=100).contains(&seconds), "{seconds}");
    assert_eq!(outcome.header("x-gateway-fallback"), Some("remembered"));
    assert!(outcome.anthropic_calls.is_empty());
}

#[tokio::test]
async fn bedrock_failing_when_anthropic_is_unreachable_is_bedrocks_error() {
    let case = Case::new(ON_ALL, AnthropicScript::Unreachable)
        .bedrock_fails(ModelError::Unavailable { retry_after_seconds: 6, detail: "down".into() });
    let outcome = messages(case).await;
    assert_gateway_error(&outcome, 529, "overloaded_error");
    assert_eq!(outcome.header("retry-after"), Some("6"), "Bedrock's own retry-after");
    assert_eq!(outcome.header("x-gateway-fallback"), Some("unreachable"));
}

// ---------------------------------------------------------------- count_tokens

#[tokio::test]
async fn a_count_tokens_429_falls_back_for_that_call_alone() {
    let outcome = run(Case::new(ON_429_ONLY, refuses(429, Some("12"))), Endpoint::CountTokens).await;
    assert_eq!(outcome.status, StatusCode::OK, "{}", outcome.body);
    assert_eq!(outcome.body, json!({"input_tokens": 9}));
    assert_eq!(outcome.header("x-gateway-fallback"), Some("rate_limited"));
    assert_eq!(outcome.anthropic_calls, vec!["/v1/messages/count_tokens"]);
    assert_eq!(outcome.bedrock_calls, vec!["count_tokens anthropic.claude-sonnet-4-5-20250929-v1:0"]);
    assert!(outcome.remembered.is_empty(), "a count_tokens 429 is not remembered");
}

// ---------------------------------------------------------------- RATE_LIMIT_SCOPE

#[tokio::test]
async fn a_429_is_remembered_under_the_configured_scope() {
    for (scope, key) in [
        (RateLimitScope::User, format!("USER#{TENANT}#{USER}")),
        (RateLimitScope::Tenant, format!("TENANT#{TENANT}")),
        (RateLimitScope::Deployment, "DEPLOYMENT".to_owned()),
    ] {
        let outcome = messages(Case::new(ON_429_ONLY, refuses(429, Some("12"))).scoped(scope, None)).await;
        assert_served_by_bedrock(&outcome, "rate_limited");
        assert_eq!(outcome.remembered.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![key], "{scope:?}");
    }
}

#[tokio::test]
async fn whose_429_diverts_whom_follows_the_scope() {
    let other_user = format!("USER#{TENANT}#someone-else");
    let whole_tenant = format!("TENANT#{TENANT}");
    let other_tenant = "TENANT#another-tenant".to_owned();
    // (scope, the 429 remembered under this key, whether this key's owner goes straight to Bedrock)
    let cases = [
        (RateLimitScope::User, &other_user, false),
        (RateLimitScope::User, &whole_tenant, false),
        (RateLimitScope::Tenant, &whole_tenant, true),
        (RateLimitScope::Tenant, &other_tenant, false),
        (RateLimitScope::Tenant, &other_user, false),
        (RateLimitScope::Deployment, &"DEPLOYMENT".to_owned(), true),
        (RateLimitScope::Deployment, &whole_tenant, false),
    ];
    for (scope, remembered, diverted) in cases {
        let outcome = messages(Case::new(ON_429_ONLY, AnthropicScript::Ok).scoped(scope, Some(remembered))).await;
        let upstream = if diverted { "bedrock" } else { "anthropic" };
        assert_eq!(outcome.header("x-gateway-upstream"), Some(upstream), "{scope:?} with {remembered} remembered");
        assert_eq!(outcome.anthropic_calls.is_empty(), diverted, "{scope:?} with {remembered} remembered");
    }
}
