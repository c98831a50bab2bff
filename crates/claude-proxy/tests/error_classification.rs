//! The proxy's error classification, every branch with its exact status, `error.type` and `retry-after`:
//! Bedrock failures during a fallback (`bedrock::api_error`), the gateway's own errors in Anthropic's shape
//! (`anthropic_error::status_and_type`), Anthropic's failures (`From<UpstreamError>`) and Anthropic's
//! `retry-after` header (`anthropic::retry_after_seconds`).
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use claude_proxy::anthropic::{retry_after_seconds, UpstreamError};
use claude_proxy::anthropic_error::{error_response, status_and_type};
use claude_proxy::bedrock::api_error;
use http::{HeaderMap, HeaderValue};
use metering_core::model::ModelError;
use metering_core::ApiError;

/// The status, `error.type` and `Retry-After` an error must render with.
type Expected = (u16, &'static str, Option<&'static str>);

/// (status, Anthropic `error.type`, `retry-after` header) of what the client gets for `error`.
fn answer_for(error: &ApiError) -> (u16, &'static str, Option<String>) {
    let (status, error_type) = status_and_type(error);
    let response = error_response(error, "r-1");
    assert_eq!(response.status(), status, "the response carries the classified status");
    let retry_after = response.headers().get("retry-after").map(|value| value.to_str().unwrap().to_owned());
    (status.as_u16(), error_type, retry_after)
}

#[test]
fn every_bedrock_failure_during_a_fallback_has_its_status_type_and_retry_after() {
    let detail = || "detail".to_owned();
    let model = || "us.anthropic.m-v1:0".to_owned();
    let cases: Vec<(ModelError, Expected)> = vec![
        (ModelError::Throttled { retry_after_seconds: 7 }, (429, "rate_limit_error", Some("7"))),
        (ModelError::InvalidInput(detail()), (400, "invalid_request_error", None)),
        (ModelError::AccessDenied { model_id: model(), detail: detail().into() }, (502, "api_error", None)),
        (ModelError::ModelNotFound { model_id: model(), detail: detail().into() }, (502, "api_error", None)),
        (ModelError::Unavailable { retry_after_seconds: 11, detail: detail().into() }, (529, "overloaded_error", Some("11"))),
        (ModelError::ServerError { retry_after_seconds: 12, detail: detail().into() }, (529, "overloaded_error", Some("12"))),
        (ModelError::Timeout(detail().into()), (504, "api_error", None)),
        (ModelError::Upstream(detail().into()), (502, "api_error", None)),
    ];
    for (failure, (status, error_type, retry_after)) in cases {
        let error = api_error(failure.clone(), "us.anthropic.m-v1:0");
        assert_eq!(answer_for(&error), (status, error_type, retry_after.map(str::to_owned)), "{failure:?}");
    }
}

#[test]
fn bedrock_failure_messages_name_the_model_for_the_operator_and_never_the_sdk_detail() {
    let denied = api_error(ModelError::AccessDenied { model_id: "x".into(), detail: "secret-arn".into() }, "us.m:0");
    assert!(denied.to_string().contains("us.m:0") && !denied.to_string().contains("secret-arn"), "{denied}");
    let missing = api_error(ModelError::ModelNotFound { model_id: "x".into(), detail: "secret-arn".into() }, "us.m:0");
    assert!(missing.to_string().contains("BEDROCK_MODEL_MAP") && !missing.to_string().contains("secret-arn"), "{missing}");
    let upstream = api_error(ModelError::Upstream("http://10.0.0.1 dispatch failure".into()), "us.m:0");
    assert_eq!(upstream.to_string(), "the Bedrock call failed");
    let invalid = api_error(ModelError::InvalidInput("messages: roles must alternate".into()), "us.m:0");
    assert_eq!(invalid.to_string(), "Bedrock refused the request: messages: roles must alternate");
}

#[test]
fn every_gateway_error_has_anthropics_status_and_type() {
    let text = || "t".to_owned();
    let cases: Vec<(ApiError, Expected)> = vec![
        (ApiError::InvalidRequest(text()), (400, "invalid_request_error", None)),
        (ApiError::UnsupportedMediaType(text()), (415, "invalid_request_error", None)),
        (ApiError::MethodNotAllowed(text()), (405, "invalid_request_error", None)),
        (ApiError::Unauthenticated(text()), (401, "authentication_error", None)),
        (ApiError::Forbidden(text()), (403, "permission_error", None)),
        (ApiError::NotFound(text()), (404, "not_found_error", None)),
        (ApiError::PayloadTooLarge(text()), (413, "request_too_large", None)),
        (ApiError::RequestTimeout(text()), (408, "invalid_request_error", None)),
        (ApiError::RateLimited { message: text(), retry_after_seconds: 13 }, (429, "rate_limit_error", Some("13"))),
        (ApiError::Unavailable { message: text(), retry_after_seconds: 3 }, (529, "overloaded_error", Some("3"))),
        (ApiError::Upstream(text()), (502, "api_error", None)),
        (ApiError::UpstreamTimeout(text()), (504, "api_error", None)),
        (ApiError::Internal(text()), (500, "api_error", None)),
    ];
    for (error, (status, error_type, retry_after)) in cases {
        assert_eq!(answer_for(&error), (status, error_type, retry_after.map(str::to_owned)), "{error:?}");
    }
}

#[test]
fn anthropic_failures_are_502_or_504_without_the_http_clients_text() {
    let cases = [
        (UpstreamError::Timeout("10.1.2.3:443 timed out".into()), 504, "the Anthropic API did not answer in time"),
        (UpstreamError::Unreachable("10.1.2.3:443 refused".into()), 502, "the Anthropic API could not be reached"),
        (UpstreamError::Body("10.1.2.3:443 reset".into()), 502, "the Anthropic API's answer broke off"),
    ];
    for (failure, status, message) in cases {
        let error = ApiError::from(failure);
        assert_eq!((answer_for(&error).0, answer_for(&error).1, error.to_string().as_str()), (status, "api_error", message));
    }
}

#[test]
fn anthropics_retry_after_is_whole_seconds_rounded_up() {
    let of = |value: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static(value));
        retry_after_seconds(&headers)
    };
    assert_eq!(of("12"), Some(12));
    assert_eq!(of(" 12 "), Some(12));
    assert_eq!(of("0"), Some(0));
    assert_eq!(of("2.1"), Some(3));
    assert_eq!(of("0.5"), Some(1));
    assert_eq!(of("-1"), None);
    assert_eq!(of("NaN"), None);
    assert_eq!(of("inf"), None);
    assert_eq!(of("Wed, 21 Oct 2026 07:28:00 GMT"), None, "an HTTP date is not understood: the default applies");
    assert_eq!(retry_after_seconds(&HeaderMap::new()), None);
}
