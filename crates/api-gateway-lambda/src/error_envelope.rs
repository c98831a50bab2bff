//! The domain's `ApiError` rendered at the edge, in one of the two envelopes the gateway answers with:
//! - the project's `{"error": {"type": ..., "message": ...}}` (chat, usage, limits): [`JsonError`];
//! - Anthropic's `{"type": "error", "error": {...}, "request_id": ...}` (the Claude proxy), so the SDKs raise
//!   their usual exceptions: [`AnthropicError`].
//!
//! Both set the status, `Content-Type` and `Retry-After` where the error carries a delay; the request id
//! header is set by the shared layers ([`crate::layers`]), and by [`AnthropicError`] itself (the body names it).

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use metering_core::ApiError;
use serde_json::json;

/// Response header carrying the request id that the usage line also carries.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Anthropic's own request id header (the SDKs' `request_id`); the gateway sets it on its own answers.
pub const ANTHROPIC_REQUEST_ID_HEADER: &str = "request-id";
/// Anthropic's "overloaded" status, which its SDKs retry.
pub const OVERLOADED: u16 = 529;

/// The HTTP status of the project's envelope for this error.
pub fn status_of(error: &ApiError) -> StatusCode {
    match error {
        ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        ApiError::RateLimited { .. } | ApiError::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
        ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The machine-readable `error.type` of the project's envelope.
pub fn error_type_of(error: &ApiError) -> &'static str {
    match error {
        ApiError::InvalidRequest(_) => "invalid_request_error",
        ApiError::Unauthenticated(_) => "authentication_error",
        ApiError::Forbidden(_) => "permission_error",
        ApiError::NotFound(_) => "not_found_error",
        ApiError::MethodNotAllowed(_) => "method_not_allowed",
        ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
        ApiError::PayloadTooLarge(_) => "request_too_large",
        ApiError::RequestTimeout(_) => "request_timeout",
        ApiError::RateLimited { .. } => "rate_limit_error",
        ApiError::BudgetExceeded { .. } => "budget_exceeded",
        ApiError::Upstream(_) => "upstream_error",
        ApiError::Unavailable { .. } => "overloaded_error",
        ApiError::UpstreamTimeout(_) => "timeout_error",
        ApiError::Internal(_) => "api_error",
    }
}

/// The project's error body.
pub fn json_error_body(error: &ApiError) -> serde_json::Value {
    json!({"error": {"type": error_type_of(error), "message": error.to_string()}})
}

/// The project's error answer: `{"error": {"type", "message"}}`, its status, and `Retry-After` where it helps.
pub fn json_error_response(error: &ApiError) -> http::Response<String> {
    answer(status_of(error), json_error_body(error).to_string(), error)
}

/// The status and `error.type` Anthropic would answer with for this error.
pub fn anthropic_status_and_type(error: &ApiError) -> (StatusCode, &'static str) {
    match error {
        ApiError::InvalidRequest(_) | ApiError::UnsupportedMediaType(_) | ApiError::MethodNotAllowed(_) => {
            (status_of(error), "invalid_request_error")
        }
        ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "authentication_error"),
        ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error"),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found_error"),
        ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
        ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "invalid_request_error"),
        // A tenant budget is a rate limit to Anthropic's clients: the SDKs know only `rate_limit_error`.
        ApiError::RateLimited { .. } | ApiError::BudgetExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        ApiError::Unavailable { .. } => {
            (StatusCode::from_u16(OVERLOADED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), "overloaded_error")
        }
        ApiError::Upstream(_) | ApiError::UpstreamTimeout(_) | ApiError::Internal(_) => (status_of(error), "api_error"),
    }
}

/// Anthropic's error body, naming the request id.
pub fn anthropic_error_body(error: &ApiError, request_id: &str) -> serde_json::Value {
    let (_, error_type) = anthropic_status_and_type(error);
    json!({"type": "error", "error": {"type": error_type, "message": error.to_string()}, "request_id": request_id})
}

/// Anthropic's error answer; it carries the request id as `x-request-id` and as Anthropic's `request-id`.
pub fn anthropic_error_response(error: &ApiError, request_id: &str) -> http::Response<String> {
    let (status, _) = anthropic_status_and_type(error);
    let mut response = answer(status, anthropic_error_body(error, request_id).to_string(), error);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        let headers = response.headers_mut();
        headers.insert(REQUEST_ID_HEADER, value.clone());
        headers.insert(ANTHROPIC_REQUEST_ID_HEADER, value);
    }
    response
}

/// An `event: error` server-sent event in Anthropic's shape, for failures after a stream has started.
pub fn anthropic_error_event(error: &ApiError, request_id: &str) -> String {
    format!("event: error\ndata: {}\n\n", anthropic_error_body(error, request_id))
}

fn answer(status: StatusCode, body: String, error: &ApiError) -> http::Response<String> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(seconds) = error.retry_after_seconds() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// An `ApiError` answered in the project's envelope: what the chat and usage handlers return.
#[derive(Debug)]
pub struct JsonError(pub ApiError);

impl From<ApiError> for JsonError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        // Server errors, and 429s (the operations dashboard's RateLimitedAnswers metric counts these lines: see
        // infra/lib/operations/log-metrics.ts). In the request's span (request id, tenant): the body says less.
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!(status = status.as_u16(), error = %self.0, "request failed");
        }
        json_error_response(&self.0).map(axum::body::Body::from).into_response()
    }
}

/// The project's 404 for a path no route serves (the chat and usage functions' fallback).
#[allow(clippy::unused_async)] // an axum handler is an async fn
pub async fn no_such_route() -> JsonError {
    JsonError(ApiError::NotFound("no such route".into()))
}

/// An `ApiError` answered in Anthropic's envelope: what the Claude proxy's handlers return.
#[derive(Debug)]
pub struct AnthropicError {
    pub error: ApiError,
    pub request_id: String,
}

impl AnthropicError {
    pub fn new(error: ApiError, request_id: impl Into<String>) -> Self {
        Self { error, request_id: request_id.into() }
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        anthropic_error_response(&self.error, &self.request_id).map(axum::body::Body::from).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metering_core::model::ModelError;

    fn body_of(response: &http::Response<String>) -> serde_json::Value {
        serde_json::from_str(response.body()).unwrap()
    }

    #[test]
    fn every_error_renders_the_same_json_shape() {
        let response = json_error_response(&ApiError::InvalidRequest("prompt must not be empty".into()));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = body_of(&response);
        assert_eq!(body, json!({"error": {"type": "invalid_request_error", "message": "prompt must not be empty"}}));
    }

    #[test]
    fn throttling_becomes_429_with_retry_after() {
        let response = json_error_response(&ApiError::from(ModelError::Throttled { retry_after_seconds: 7 }));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn model_errors_map_to_the_documented_statuses() {
        let cases = [
            (ModelError::InvalidInput("bad".into()), StatusCode::BAD_REQUEST),
            (ModelError::AccessDenied { model_id: "m".into(), detail: "d".into() }, StatusCode::BAD_GATEWAY),
            (ModelError::ModelNotFound { model_id: "m".into(), detail: "d".into() }, StatusCode::BAD_GATEWAY),
            (ModelError::Timeout("slow".into()), StatusCode::GATEWAY_TIMEOUT),
            (ModelError::Unavailable { retry_after_seconds: 3, detail: "d".into() }, StatusCode::SERVICE_UNAVAILABLE),
            (ModelError::Upstream("boom".into()), StatusCode::BAD_GATEWAY),
            (ModelError::ServerError { retry_after_seconds: 3, detail: "d".into() }, StatusCode::BAD_GATEWAY),
        ];
        for (model_error, status) in cases {
            assert_eq!(status_of(&ApiError::from(model_error)), status);
        }
    }

    #[test]
    fn no_error_body_carries_the_upstream_detail() {
        let detail = "dispatch failure: io error: Connection refused (os error 111) connecting to 127.0.0.1:4010";
        for model_error in [
            ModelError::AccessDenied { model_id: "m".into(), detail: detail.into() },
            ModelError::ModelNotFound { model_id: "m".into(), detail: detail.into() },
            ModelError::Unavailable { retry_after_seconds: 1, detail: detail.into() },
            ModelError::Timeout(detail.into()),
            ModelError::Upstream(detail.into()),
            ModelError::ServerError { retry_after_seconds: 1, detail: detail.into() },
        ] {
            let error = ApiError::from(model_error);
            for body in [json_error_response(&error).into_body(), anthropic_error_response(&error, "r").into_body()] {
                assert!(!body.contains("127.0.0.1") && !body.contains("dispatch") && !body.contains("os error"), "{body}");
            }
        }
    }

    #[test]
    fn unavailable_is_overloaded_with_retry_after() {
        let response =
            json_error_response(&ApiError::from(ModelError::Unavailable { retry_after_seconds: 2, detail: "d".into() }));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(body_of(&response)["error"]["type"], "overloaded_error");
    }

    #[test]
    fn anthropic_errors_have_anthropics_shape_and_both_request_id_headers() {
        let response = anthropic_error_response(&ApiError::Unauthenticated("invalid x-api-key".into()), "req-1");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
        assert_eq!(response.headers()[ANTHROPIC_REQUEST_ID_HEADER], "req-1");
        assert_eq!(
            body_of(&response),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}, "request_id": "req-1"})
        );
    }

    #[test]
    fn anthropic_rate_limits_keep_retry_after_and_overload_is_529() {
        let limited = anthropic_error_response(&ApiError::RateLimited { message: "slow".into(), retry_after_seconds: 9 }, "r");
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "9");
        let overloaded = ApiError::Unavailable { message: "busy".into(), retry_after_seconds: 3 };
        assert_eq!(anthropic_status_and_type(&overloaded), (StatusCode::from_u16(529).unwrap(), "overloaded_error"));
        assert_eq!(anthropic_status_and_type(&ApiError::UpstreamTimeout("t".into())).1, "api_error");
        let budget = ApiError::BudgetExceeded { message: "spent".into(), retry_after_seconds: 60 };
        assert_eq!(anthropic_status_and_type(&budget), (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"));
        assert_eq!(error_type_of(&budget), "budget_exceeded");
    }

    #[test]
    fn an_error_event_is_one_sse_event_in_anthropics_shape() {
        let event = anthropic_error_event(&ApiError::Unavailable { message: "busy".into(), retry_after_seconds: 1 }, "r-2");
        let data = event.strip_prefix("event: error\ndata: ").and_then(|rest| rest.strip_suffix("\n\n")).unwrap();
        let value: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!((value["error"]["type"].as_str(), value["request_id"].as_str()), (Some("overloaded_error"), Some("r-2")));
    }
}
