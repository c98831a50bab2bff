//! The one error type every API answers with. It knows no HTTP: the edge renders it
//! (`api_gateway_lambda::error_envelope`: the project's `{"error": {"type", "message"}}` or Anthropic's
//! envelope, with the status and `Retry-After`).

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::model::ModelError;

/// What lies under a domain error (a store's, the counters'): the operator's text, and the error that caused
/// it when there is one (an SDK error, kept whole), so a log or a test can walk the chain with
/// `std::error::Error::source` and downcast it. The text is what the logs have always shown (for an SDK error,
/// its full `DisplayErrorContext`); the source adds the typed error behind it. Two details are equal when
/// their texts are: the source is context, not identity.
#[derive(Debug, Clone)]
pub struct Detail {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Detail {
    /// A failure the gateway noticed itself (a timeout it enforced, an item it could not read): no source.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), source: None }
    }

    /// `message` about a failure caused by `source`.
    pub fn caused_by(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { message: message.into(), source: Some(Arc::new(source)) }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for Detail {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for Detail {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Detail {}

impl From<String> for Detail {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Detail {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

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
    /// The delay the caller should wait before retrying, where the error carries one (rendered as
    /// `Retry-After` at the edge).
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_seconds, .. }
            | Self::BudgetExceeded { retry_after_seconds, .. }
            | Self::Unavailable { retry_after_seconds, .. } => Some(*retry_after_seconds),
            _ => None,
        }
    }
}

/// The one message of every 401: which check failed (signature, audience, expiry...) would be an oracle for
/// whoever forges tokens, so it goes to the logs with the request id, never to the caller.
pub const TOKEN_NOT_ACCEPTED: &str = "Unauthorized: the token was not accepted";

/// What a failed model call means for the client. The bodies name the model and what an operator can do,
/// never the SDK's debug text, an address or Bedrock's own message for a server-side failure: those are
/// logged where the call failed (`model::classify_bedrock_error`), with the request id of the span, from
/// `ModelError`'s source chain (its `Cause`: message, model id, the SDK error). The `ApiError` keeps only the
/// message that is safe to show.
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

    #[derive(Debug, Error)]
    #[error("the store said no")]
    struct StoreSaidNo;

    #[test]
    fn a_detail_keeps_its_source_for_the_chain_and_compares_by_its_text() {
        use std::error::Error as _;
        let detail = Detail::caused_by("UpdateItem on table t failed", StoreSaidNo);
        assert_eq!(detail.to_string(), "UpdateItem on table t failed");
        let source = detail.source().expect("the cause is kept");
        assert!(source.downcast_ref::<StoreSaidNo>().is_some(), "{source:?}");
        assert!(Detail::new("x").source().is_none());
        assert_eq!(detail, Detail::new("UpdateItem on table t failed"));
        assert_eq!(detail.clone().source().map(ToString::to_string).as_deref(), Some("the store said no"));
    }

    #[test]
    fn model_errors_map_to_the_documented_variants() {
        let cases = [
            (ModelError::Throttled { retry_after_seconds: 7 }, "RateLimited", Some(7)),
            (ModelError::InvalidInput("bad".into()), "InvalidRequest", None),
            (ModelError::AccessDenied { model_id: "m".into(), detail: "d".into() }, "Upstream", None),
            (ModelError::ModelNotFound { model_id: "m".into(), detail: "d".into() }, "Upstream", None),
            (ModelError::Timeout("slow".into()), "UpstreamTimeout", None),
            (ModelError::Unavailable { retry_after_seconds: 3, detail: "d".into() }, "Unavailable", Some(3)),
            (ModelError::Upstream("boom".into()), "Upstream", None),
            (ModelError::ServerError { retry_after_seconds: 3, detail: "d".into() }, "Upstream", None),
        ];
        for (model_error, variant, retry_after) in cases {
            let error = ApiError::from(model_error);
            assert!(format!("{error:?}").starts_with(variant), "{error:?} is not {variant}");
            assert_eq!(error.retry_after_seconds(), retry_after, "{error:?}");
        }
    }

    #[test]
    fn access_denied_tells_the_operator_what_to_do() {
        let message = ApiError::from(ModelError::AccessDenied { model_id: "anthropic.x".into(), detail: "d".into() }).to_string();
        assert!(message.contains("anthropic.x") && message.contains("model access"));
    }
}
