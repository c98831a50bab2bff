//! The line the operations dashboard's RateLimitedAnswers metric counts (infra/lib/operations/log-metrics.ts):
//! in its own test binary, because a log subscriber installed beside other tests' requests misses lines
//! (tracing caches each callsite's interest across threads).
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use api_gateway_lambda::with_gateway_layers;
use axum::body::Body;
use axum::routing::post;
use axum::Router;
use lambda_http::tower::ServiceExt;
use serde_json::{json, Value};

mod common;
use common::Captured;

#[tokio::test(flavor = "current_thread")]
async fn throttled_and_failed_answers_are_logged_as_the_rate_limit_metric_reads_them() {
    // GIVEN a JSON subscriber, and a route that answers the error it is asked for
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let answer = |axum::extract::Path(kind): axum::extract::Path<String>| async move {
        Err::<(), _>(api_gateway_lambda::JsonError(match kind.as_str() {
            "throttled" => metering_core::ApiError::RateLimited { message: "slow down".into(), retry_after_seconds: 1 },
            "failed" => metering_core::ApiError::Upstream("the model call failed".into()),
            _ => metering_core::ApiError::InvalidRequest("bad".into()),
        }))
    };
    let router = with_gateway_layers(Router::new().route("/answer/{kind}", post(answer)));
    // WHEN a 429, a 502 and a 400 are answered
    for kind in ["throttled", "failed", "invalid"] {
        let request = http::Request::post(format!("/answer/{kind}")).body(Body::empty()).unwrap();
        router.clone().oneshot(request).await.unwrap();
    }
    // THEN the 429 and the 502 are lines with the message and status infra/lib/operations/log-metrics.ts matches
    let lines = captured.json_lines();
    let failed: Vec<Value> = lines
        .iter()
        .filter(|line| line["fields"]["message"] == "request failed")
        .map(|line| line["fields"]["status"].clone())
        .collect();
    assert_eq!(failed, vec![json!(429), json!(502)], "{lines:?}");
}
