//! The shared layers and extractors on a small Router, fed with requests as lambda_http and the local server
//! make them: the request id (never the client's), the claims (a local layer's extension, else API Gateway's
//! authorizer context, object or JSON string), and the body rules (413 / 408 / 400 in the project's envelope).
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::collections::HashMap;

use api_gateway_lambda::{with_body_rules, with_gateway_layers, BodyRules, GatewayRequestId, RequestBody, VerifiedClaims};
use axum::body::{Body, Bytes};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use lambda_http::tower::ServiceExt;
use lambda_http::RequestExt;
use serde_json::{json, Value};

mod common;
use common::{gateway_context, request};

/// Echoes what the extractors gave: the request id, the claims, the body's length.
fn router(rules: BodyRules) -> Router {
    let echo = |GatewayRequestId(id): GatewayRequestId, claims: VerifiedClaims, RequestBody(body): RequestBody| async move {
        let claims: HashMap<String, Value> = (*claims.0).clone();
        axum::Json(json!({"request_id": id, "claims": claims, "body_bytes": body.len()}))
    };
    with_gateway_layers(with_body_rules(Router::new().route("/echo", post(echo)), rules))
}

async fn call(router: Router, request: http::Request<Body>) -> (http::StatusCode, http::HeaderMap, Value) {
    let (parts, body) = router.oneshot(request).await.unwrap().into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn api_gateways_request_id_and_claims_are_read_and_the_clients_x_request_id_is_not() {
    let mut request = request(Body::from("{}")).with_request_context(gateway_context(Some("gw-1"), Some(json!({"sub": "u-1"}))));
    request.headers_mut().insert("x-request-id", "chosen-by-the-client".parse().unwrap());
    let (status, headers, body) = call(router(BodyRules::default()), request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["request_id"].as_str(), headers["x-request-id"].to_str().unwrap()), (Some("gw-1"), "gw-1"));
    assert_eq!(body["claims"], json!({"sub": "u-1"}));
    assert_eq!(body["body_bytes"], 2);
}

#[tokio::test]
async fn without_a_gateway_id_the_invocations_then_a_fresh_one_never_the_clients() {
    let mut context = lambda_http::Context::default();
    context.request_id = "invocation-7".into();
    let claims = VerifiedClaims::from(json!({"sub": "u-1"}).as_object().unwrap().clone());
    let mut from_lambda = request(Body::empty()).with_lambda_context(context);
    from_lambda.extensions_mut().insert(claims.clone());
    let (_, headers, body) = call(router(BodyRules::default()), from_lambda).await;
    assert_eq!((body["request_id"].as_str(), headers["x-request-id"].to_str().unwrap()), (Some("invocation-7"), "invocation-7"));

    let mut local = request(Body::empty());
    local.extensions_mut().insert(claims);
    local.headers_mut().insert("x-request-id", "chosen-by-the-client".parse().unwrap());
    let (_, headers, body) = call(router(BodyRules::default()), local).await;
    let fresh = body["request_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(fresh).is_ok(), "{fresh}");
    assert_eq!(headers["x-request-id"], fresh);
}

#[tokio::test]
async fn claims_as_a_json_string_are_read_exactly_and_anything_else_is_a_401() {
    let text = json!({"custom:tenant_id": " Acme ", "cognito:groups": "admin"}).to_string();
    let request_with =
        |claims: Option<Value>| request(Body::from("{}")).with_request_context(gateway_context(Some("gw-2"), claims));
    let (status, _, body) = call(router(BodyRules::default()), request_with(Some(Value::String(text)))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["claims"]["custom:tenant_id"], " Acme ", "never trimmed or folded");
    for claims in [None, Some(Value::String("not json".into())), Some(json!(["sub"]))] {
        let (status, headers, body) = call(router(BodyRules::default()), request_with(claims.clone())).await;
        assert_eq!(status, 401, "{claims:?}");
        assert_eq!(body["error"]["type"], "authentication_error", "{claims:?}");
        assert_eq!(headers["x-request-id"], "gw-2");
    }
}

fn with_claims(body: Body) -> http::Request<Body> {
    request(body).with_request_context(gateway_context(Some("gw-3"), Some(json!({"sub": "u"}))))
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_in_the_projects_envelope() {
    let rules = BodyRules { max_bytes: 8, ..BodyRules::default() };
    let (status, _, body) = call(router(rules), with_claims(Body::from("123456789"))).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["type"], "request_too_large");
    let (status, _, _) = call(router(rules), with_claims(Body::from("12345678"))).await;
    assert_eq!(status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_body_not_received_in_time_is_a_408_and_broken_framing_a_400() {
    let stalled = Body::from_stream(part_then_nothing());
    let (status, _, body) = call(router(BodyRules::default()), with_claims(stalled)).await;
    assert_eq!(status, 408);
    assert_eq!(body["error"]["type"], "request_timeout");

    let broken = Body::from_stream(failing());
    let (status, _, body) = call(router(BodyRules::default()), with_claims(broken)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn an_unknown_path_still_carries_the_request_id() {
    let request =
        http::Request::get("/nowhere").body(Body::empty()).unwrap().with_request_context(gateway_context(Some("gw-4"), None));
    let response = router(BodyRules::default()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "gw-4");
}

/// A body that sends one chunk, then nothing (a client that stopped short of its `Content-Length`).
fn part_then_nothing() -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    PartThenNothing { sent: false }
}

/// A body whose transfer fails (a malformed chunk).
fn failing() -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    Failing
}

struct PartThenNothing {
    sent: bool,
}

impl futures::Stream for PartThenNothing {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(Bytes::from_static(b"{\"prom"))))
    }
}

struct Failing;

impl futures::Stream for Failing {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::other("invalid chunk size"))))
    }
}
