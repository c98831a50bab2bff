//! Errors in the Anthropic API's own shape, so the SDKs raise their usual exceptions:
//! `{"type": "error", "error": {"type": "authentication_error", "message": "..."}, "request_id": "..."}`.
//! Rendered at the edge (`api_gateway_lambda::error_envelope`); here as the proxy's body type.

use http::Response;
use metering_core::ApiError;

pub use api_gateway_lambda::error_envelope::{
    anthropic_error_body as error_body, anthropic_error_event as error_event, anthropic_status_and_type as status_and_type,
    ANTHROPIC_REQUEST_ID_HEADER, OVERLOADED,
};

use crate::body::{full, ProxyBody};

/// Anthropic's error answer with the proxy's body type.
pub fn error_response(error: &ApiError, request_id: &str) -> Response<ProxyBody> {
    api_gateway_lambda::error_envelope::anthropic_error_response(error, request_id).map(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_gateway_lambda::REQUEST_ID_HEADER;
    use http::StatusCode;
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
}
