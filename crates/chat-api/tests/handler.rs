//! Handler tests fed from the API Gateway event files in `events/` (the files `cargo lambda invoke` uses).
//! The model and the counters are in-memory stand-ins here: these tests prove the handler's mapping
//! (claims -> identity, body -> request, result -> HTTP); the end-to-end tests prove the feature.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Bytes;
use chat_api::ChatHandler;
use http_body_util::BodyExt;
use lambda_http::tower::ServiceExt;
use metering_core::chat::ChatService;
use metering_core::metering::Metering;
use metering_core::model::{ChatModel, ModelError, ModelPrompt, ModelReply};
use metering_core::test_util::{RecordedCounters, RecordedLines};
use metering_core::usage::TokenCounts;

#[derive(Default)]
struct RecordingModel {
    prompts: Mutex<Vec<ModelPrompt>>,
}

#[async_trait]
impl ChatModel for RecordingModel {
    async fn converse(&self, prompt: &ModelPrompt) -> Result<ModelReply, ModelError> {
        self.prompts.lock().unwrap().push(prompt.clone());
        if prompt.prompt.contains("throttle me") {
            return Err(ModelError::Throttled { retry_after_seconds: 9 });
        }
        Ok(ModelReply {
            text: "Hello there, demo tenant!".into(),
            tokens: TokenCounts { input_tokens: 11, output_tokens: 5, ..TokenCounts::default() },
        })
    }
}

struct Harness {
    handler: ChatHandler,
    tenants: Arc<metering_core::tenant_registry::InMemoryTenantRegistry>,
    model: Arc<RecordingModel>,
    counters: Arc<RecordedCounters>,
    log: Arc<RecordedLines>,
}

fn harness() -> Harness {
    let model = Arc::new(RecordingModel::default());
    let counters = Arc::new(RecordedCounters::default());
    let log = Arc::new(RecordedLines::default());
    let metering = Metering::new(counters.clone(), log.clone());
    let service = ChatService::new(model.clone(), "anthropic.claude-3-haiku-20240307-v1:0".into(), metering);
    let tenants = Arc::new(metering_core::tenant_registry::InMemoryTenantRegistry::default());
    Harness { handler: ChatHandler::new(service, tenants.clone()), tenants, model, counters, log }
}

fn event(name: &str) -> lambda_http::Request {
    let path = format!("{}/../../events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    request_of(&text)
}

/// The request lambda_http makes of an event, as in the function (the stage left out of the path).
fn request_of(event: &str) -> lambda_http::Request {
    api_gateway_lambda::layers::serve_paths_without_stage();
    lambda_http::request::from_str(event).unwrap()
}

/// The function's answer to `request`, through its `Router` and the shared layers.
async fn call(handler: &ChatHandler, request: lambda_http::Request) -> http::Response<Bytes> {
    let (parts, body) = handler.router().oneshot(request).await.unwrap().into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn json_body(response: &http::Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap()
}

#[tokio::test]
async fn chat_event_answers_with_text_only_and_meters_the_verified_tenant() {
    let harness = harness();
    let response = call(&harness.handler, event("chat")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-request-id"], "c6af9ac6-7b61-11e6-9a41-93e8deadbeef");
    let body = json_body(&response);
    assert_eq!(body, serde_json::json!({"response": "Hello there, demo tenant!"}), "no token counts for the tenant");

    let prompts = harness.model.prompts.lock().unwrap().clone();
    assert_eq!(prompts[0].prompt, "Say hello to the demo tenant in five words.");
    assert_eq!(prompts[0].max_tokens, Some(256));

    harness.handler.metering().flush().await;
    let lines = harness.log.usage();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line.tenant_id, "demo-tenant");
    assert_eq!(line.user_id, "5f1c2a4e-1111-4c2b-9d3e-000000000001");
    assert_eq!(line.request_id, "c6af9ac6-7b61-11e6-9a41-93e8deadbeef");
    assert_eq!((line.input_tokens, line.output_tokens, line.total_tokens), (11, 5, 16));
    assert_eq!(line.metering_error, None);
    assert_eq!(harness.counters.batches().len(), 1);
}

#[tokio::test]
async fn accept_text_plain_gets_the_bare_text() {
    let harness = harness();
    let response = call(&harness.handler, event("chat-plain-text")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(response.body().as_ref(), b"Hello there, demo tenant!");
}

#[tokio::test]
async fn a_user_without_tenant_claim_is_forbidden_and_nothing_is_metered() {
    let harness = harness();
    let response = call(&harness.handler, event("chat-no-tenant")).await;
    assert_eq!(response.status(), 403);
    assert_eq!(json_body(&response)["error"]["type"], "permission_error");
    harness.handler.metering().flush().await;
    assert!(harness.model.prompts.lock().unwrap().is_empty());
    assert!(harness.log.usage().is_empty());
}

#[tokio::test]
async fn a_case_variant_of_a_registered_tenant_is_forbidden_and_nothing_is_metered() {
    // GIVEN `DEMO-TENANT` registered first; the event's claim is `demo-tenant`
    let harness = harness();
    harness.tenants.register("DEMO-TENANT");
    let response = call(&harness.handler, event("chat")).await;
    assert_eq!(response.status(), 403);
    assert_eq!(json_body(&response)["error"]["type"], "permission_error");
    harness.handler.metering().flush().await;
    assert!(harness.model.prompts.lock().unwrap().is_empty(), "the model was not asked");
    assert!(harness.log.usage().is_empty(), "nothing was metered");
}

#[tokio::test]
async fn an_unanswerable_tenant_registry_is_a_503_with_retry_after_not_a_pass() {
    let harness = harness();
    harness.tenants.set_unavailable(true);
    let response = call(&harness.handler, event("chat")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(json_body(&response)["error"]["type"], "overloaded_error");
    assert!(harness.model.prompts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_body_is_a_400_with_the_error_json() {
    let harness = harness();
    let response = call(&harness.handler, event("chat-bad-body")).await;
    assert_eq!(response.status(), 400);
    let body = json_body(&response);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("invalid type"));
}

#[tokio::test]
async fn a_tenant_id_in_the_body_is_refused_never_used() {
    let harness = harness();
    let response = call(&harness.handler, event("chat-tenant-in-body")).await;
    assert_eq!(response.status(), 400);
    assert!(json_body(&response)["error"]["message"].as_str().unwrap().contains("tenant_id"));
    assert!(harness.model.prompts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_request_without_authorizer_claims_is_unauthenticated() {
    let harness = harness();
    let mut raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}/../../events/chat.json", env!("CARGO_MANIFEST_DIR"))).unwrap())
            .unwrap();
    raw["requestContext"]["authorizer"] = serde_json::Value::Null;
    let request = request_of(&raw.to_string());
    let response = call(&harness.handler, request).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn model_throttling_is_a_429_with_retry_after() {
    let harness = harness();
    let mut raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}/../../events/chat.json", env!("CARGO_MANIFEST_DIR"))).unwrap())
            .unwrap();
    raw["body"] = serde_json::Value::String(r#"{"prompt": "throttle me"}"#.into());
    let response = call(&harness.handler, request_of(&raw.to_string())).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "9");
    harness.handler.metering().flush().await;
    assert!(harness.log.usage().is_empty(), "an unanswered request is not billed");
}

#[tokio::test]
async fn other_methods_and_paths_get_the_projects_405_and_404_with_the_request_id() {
    let harness = harness();
    let mut get = event("chat");
    *get.method_mut() = http::Method::GET;
    let response = call(&harness.handler, get).await;
    assert_eq!(response.status(), 405);
    assert_eq!(json_body(&response)["error"]["type"], "method_not_allowed");
    assert_eq!(response.headers()["x-request-id"], "c6af9ac6-7b61-11e6-9a41-93e8deadbeef");
    let mut raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}/../../events/chat.json", env!("CARGO_MANIFEST_DIR"))).unwrap())
            .unwrap();
    for path in ["/bedrock/chat/", "/Bedrock/chat", "/prod/bedrock/chat"] {
        raw["path"] = serde_json::Value::String(path.into());
        let response = call(&harness.handler, request_of(&raw.to_string())).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(json_body(&response)["error"]["type"], "not_found_error", "{path}");
    }
    assert!(harness.model.prompts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_clients_own_x_request_id_is_never_the_request_id() {
    let harness = harness();
    let mut request = event("chat");
    request.headers_mut().insert("x-request-id", "chosen-by-the-client".parse().unwrap());
    let response = call(&harness.handler, request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "c6af9ac6-7b61-11e6-9a41-93e8deadbeef");
    harness.handler.metering().flush().await;
    assert_eq!(harness.log.usage()[0].request_id, "c6af9ac6-7b61-11e6-9a41-93e8deadbeef");
}
