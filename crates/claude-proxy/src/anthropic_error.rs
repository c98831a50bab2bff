//! Errors in the Anthropic API's own shape, so the SDKs raise their usual exceptions:
//! `{"type": "error", "error": {"type": "authentication_error", "message": "..."}, "request_id": "..."}`.

use http::{header, HeaderValue, Response, StatusCode};
use metering_core::error::REQUEST_ID_HEADER;
use metering_core::ApiError;
use serde_json::json;

use crate::body::{full, ProxyBody};

/// Anthropic's own request id header (the SDKs' `request_id`); the gateway sets it on its own answers.
pub const ANTHROPIC_REQUEST_ID_HEADER: &str = "request-id";

/// Anthropic's "overloaded" status, which its SDKs retry.
pub const OVERLOADED: u16 = 529;

/// The status and `error.type` Anthropic would answer with for this error.
pub fn status_and_type(error: &ApiError) -> (StatusCode, &'static str) {
    match error {
        ApiError::InvalidRequest(_) | ApiError::UnsupportedMediaType(_) => (error.status(), "invalid_request_error"),
        ApiError::MethodNotAllowed(_) => (error.status(), "invalid_request_error"),
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
        ApiError::Upstream(_) | ApiError::UpstreamTimeout(_) | ApiError::Internal(_) => (error.status(), "api_error"),
    }
}

pub fn error_body(error: &ApiError, request_id: &str) -> serde_json::Value {
    let (_, error_type) = status_and_type(error);
    json!({"type": "error", "error": {"type": error_type, "message": error.to_string()}, "request_id": request_id})
}

pub fn error_response(error: &ApiError, request_id: &str) -> Response<ProxyBody> {
    let (status, _) = status_and_type(error);
    let mut response = Response::new(full(error_body(error, request_id).to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(seconds) = error.retry_after_seconds() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value.clone());
        headers.insert(ANTHROPIC_REQUEST_ID_HEADER, value);
    }
    response
}

/// An `event: error` server-sent event, for failures after a stream has started.
pub fn error_event(error: &ApiError, request_id: &str) -> String {
    format!("event: error\ndata: {}\n\n", error_body(error, request_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_have_the_anthropic_shape() {
        let response = error_response(&ApiError::Unauthenticated("invalid x-api-key".into()), "req-1");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["type"], "error");
        assert_eq!(value["error"]["type"], "authentication_error");
        assert_eq!(value["error"]["message"], "invalid x-api-key");
    }

    #[test]
    fn rate_limits_keep_retry_after_and_overload_is_529() {
        let limited = error_response(&ApiError::RateLimited { message: "slow".into(), retry_after_seconds: 9 }, "r");
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "9");
        let overloaded = ApiError::Unavailable { message: "busy".into(), retry_after_seconds: 3 };
        assert_eq!(status_and_type(&overloaded), (StatusCode::from_u16(529).unwrap(), "overloaded_error"));
        assert_eq!(status_and_type(&ApiError::UpstreamTimeout("t".into())).1, "api_error");
    }
}
