//! The span every request's log lines carry: in its own test binary, because a log subscriber installed beside
//! other tests' requests misses lines (tracing caches each callsite's interest across threads).
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use api_gateway_lambda::{with_gateway_layers, VerifiedClaims};
use axum::body::Body;
use axum::routing::post;
use axum::Router;
use lambda_http::tower::ServiceExt;
use lambda_http::RequestExt;
use serde_json::json;

mod common;
use common::{gateway_context, request, Captured};

#[tokio::test(flavor = "current_thread")]
async fn every_log_line_of_a_request_carries_its_request_id_and_then_its_verified_tenant() {
    // GIVEN a JSON subscriber that writes the current span's fields (as the functions' does)
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let tenants = std::sync::Arc::new(metering_core::tenant_registry::InMemoryTenantRegistry::default());
    let handler = move |claims: VerifiedClaims| async move {
        tracing::info!("before the identity");
        let identity = claims.admitted(tenants.as_ref()).await.map_err(api_gateway_lambda::JsonError)?;
        tracing::info!("after the identity");
        Ok::<_, api_gateway_lambda::JsonError>(identity.tenant_id)
    };
    let router = with_gateway_layers(Router::new().route("/echo", post(handler)));
    // WHEN a request with verified claims is served
    let claims = json!({"sub": "u-1", "custom:tenant_id": "acme"});
    let request = request(Body::empty()).with_request_context(gateway_context(Some("gw-5"), Some(claims)));
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // THEN both lines name the request, and the one after the identity names the tenant too
    let lines = captured.json_lines();
    let line = |message: &str| lines.iter().find(|line| line["fields"]["message"] == message).cloned().unwrap_or_default();
    assert_eq!(line("before the identity")["span"]["request_id"], "gw-5", "{lines:?}");
    assert_eq!(line("after the identity")["span"]["request_id"], "gw-5", "{lines:?}");
    assert_eq!(line("after the identity")["span"]["tenant_id"], "acme", "{lines:?}");
}
