//! The one error type every API answers with, and its one mapping to HTTP:
//! `{"error": {"type": ..., "message": ...}}` with the right status (and `Retry-After` where it helps).

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;
use thiserror::Error;

use crate::model::ModelError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The request itself is wrong (body, parameters): the client must change it.
    #[error("{0}")]
    InvalidRequest(String),
    /// No valid credentials were presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client did not send the whole request in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The model provider asked us to slow down.
    #[error("{message}")]
    RateLimited { message: String, retry_after_seconds: u64 },
    /// The tenant's (or its key's) token or USD budget for the period is used up.
    #[error("{message}")]
    BudgetExceeded { message: String, retry_after_seconds: u64 },
    /// The upstream model failed in a way the client cannot fix (misconfiguration, model error).
    #[error("{0}")]
    Upstream(String),
    /// The upstream model is temporarily unavailable.
    #[error("{message}")]
    Unavailable { message: String, retry_after_seconds: u64 },
    /// The upstream model did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A defect on our side; the message is safe to show.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } | Self::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `error.type` of the body.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request_error",
            Self::Unauthenticated(_) => "authentication_error",
            Self::Forbidden(_) => "permission_error",
            Self::NotFound(_) => "not_found_error",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "request_too_large",
            Self::RequestTimeout(_) => "request_timeout",
            Self::RateLimited { .. } => "rate_limit_error",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::Upstream(_) => "upstream_error",
            Self::Unavailable { .. } => "overloaded_error",
            Self::UpstreamTimeout(_) => "timeout_error",
            Self::Internal(_) => "api_error",
        }
    }

    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_seconds, .. }
            | Self::BudgetExceeded { retry_after_seconds, .. }
            | Self::Unavailable { retry_after_seconds, .. } => Some(*retry_after_seconds),
            _ => None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"type": self.error_type(), "message": self.to_string()}})
    }

    /// The HTTP answer for this error; `request_id` is echoed so an operator can find the log lines.
    pub fn to_response(&self, request_id: Option<&str>) -> Response<String> {
        let mut response = Response::new(self.body().to_string());
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after_seconds() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert(REQUEST_ID_HEADER, value);
        }
        response
    }
}

/// Response header carrying the request id that the usage line also carries.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The one message of every 401: which check failed (signature, audience, expiry...) would be an oracle for
/// whoever forges tokens, so it goes to the logs with the request id, never to the caller.
pub const TOKEN_NOT_ACCEPTED: &str = "Unauthorized: the token was not accepted";

/// What a failed model call means for the client. The bodies name the model and what an operator can do,
/// never the SDK's debug text, an address or Bedrock's own message for a server-side failure: those are
/// logged where the call failed (`model::classify_bedrock_error`), with the request id of the span, and kept
/// in the error's source chain.
impl From<ModelError> for ApiError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Throttled { retry_after_seconds } => Self::RateLimited {
                message: "The model is receiving too many requests; retry after the delay in Retry-After.".into(),
                retry_after_seconds,
            },
            ModelError::InvalidInput(message) => Self::InvalidRequest(format!("The model rejected the request: {message}")),
            ModelError::AccessDenied { model_id, .. } => Self::Upstream(format!(
                "The gateway may not invoke model {model_id}: enable model access for it in the Amazon Bedrock console \
                 of this region and allow bedrock:InvokeModel on it in the function's role"
            )),
            ModelError::ModelNotFound { model_id, .. } => Self::Upstream(format!(
                "Model {model_id} is not available in this region or account: check BEDROCK_MODEL_ID and model access \
                 in the Amazon Bedrock console"
            )),
            ModelError::Unavailable { retry_after_seconds, .. } => Self::Unavailable {
                message: "The model is temporarily unavailable; retry after the delay in Retry-After.".into(),
                retry_after_seconds,
            },
            ModelError::Timeout(_) => Self::UpstreamTimeout("The model did not answer in time.".into()),
            // Bedrock's own 500: a failure of the model call, as any other the client cannot fix.
            ModelError::ServerError { .. } | ModelError::Upstream(_) => Self::Upstream("The model call failed.".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_renders_the_same_json_shape() {
        let error = ApiError::InvalidRequest("prompt must not be empty".into());
        let response = error.to_response(Some("req-1"));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "prompt must not be empty");
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
    }

    #[test]
    fn throttling_becomes_429_with_retry_after() {
        let error = ApiError::from(ModelError::Throttled { retry_after_seconds: 7 });
        let response = error.to_response(None);
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
            assert_eq!(ApiError::from(model_error).status(), status);
        }
    }

    #[test]
    fn access_denied_tells_the_operator_what_to_do() {
        let message = ApiError::from(ModelError::AccessDenied { model_id: "anthropic.x".into(), detail: "d".into() }).to_string();
        assert!(message.contains("anthropic.x") && message.contains("model access"));
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
            let body = ApiError::from(model_error.clone()).to_response(None).into_body();
            assert!(!body.contains("127.0.0.1") && !body.contains("dispatch") && !body.contains("os error"), "{body}");
        }
    }

    #[test]
    fn unavailable_is_overloaded_with_retry_after() {
        let response = ApiError::from(ModelError::Unavailable { retry_after_seconds: 2, detail: "d".into() }).to_response(None);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["error"]["type"], "overloaded_error");
    }
}
