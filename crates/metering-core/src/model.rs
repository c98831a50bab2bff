//! The model port: one prompt in, text and token counts out. `BedrockChatModel` is the real one (Converse
//! API); its endpoint comes from the standard AWS configuration chain, which is how the local stack points
//! it at the fake Bedrock Runtime without another code path.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::config::http::HttpResponse;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, InferenceConfiguration, Message};
use thiserror::Error;

use crate::bedrock_metadata::BedrockRequestMetadata;
use crate::usage::TokenCounts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrompt {
    pub model_id: String,
    pub prompt: String,
    pub max_tokens: Option<u32>,
    /// Sent as Converse's `requestMetadata`: Bedrock's invocation logs name the tenant and the request.
    pub metadata: BedrockRequestMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReply {
    pub text: String,
    pub tokens: TokenCounts,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("throttled (retry after {retry_after_seconds}s)")]
    Throttled { retry_after_seconds: u64 },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("access denied to {model_id}: {detail}")]
    AccessDenied { model_id: String, detail: String },
    #[error("model {model_id} not found: {detail}")]
    ModelNotFound { model_id: String, detail: String },
    #[error("unavailable: {detail}")]
    Unavailable { retry_after_seconds: u64, detail: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("upstream failure: {0}")]
    Upstream(String),
}

impl ModelError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable { .. } | Self::Timeout(_))
    }
}

#[async_trait]
pub trait ChatModel: Send + Sync {
    async fn converse(&self, prompt: &ModelPrompt) -> Result<ModelReply, ModelError>;
}

/// Amazon Bedrock through the Converse API.
#[derive(Debug, Clone)]
pub struct BedrockChatModel {
    client: aws_sdk_bedrockruntime::Client,
    default_retry_after_seconds: u64,
}

impl BedrockChatModel {
    /// Builds the client from the shared AWS config, bounding every call by `timeout` (retries included).
    pub fn new(
        sdk_config: &aws_config::SdkConfig,
        timeout: Duration,
        max_attempts: u32,
        default_retry_after_seconds: u64,
    ) -> Self {
        let config = aws_sdk_bedrockruntime::config::Builder::from(sdk_config)
            .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).connect_timeout(Duration::from_secs(3)).build())
            .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
            .build();
        Self { client: aws_sdk_bedrockruntime::Client::from_conf(config), default_retry_after_seconds }
    }
}

#[async_trait]
impl ChatModel for BedrockChatModel {
    #[tracing::instrument(skip(self, prompt), fields(model_id = %prompt.model_id))]
    async fn converse(&self, prompt: &ModelPrompt) -> Result<ModelReply, ModelError> {
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(prompt.prompt.clone()))
            .build()
            .map_err(|error| ModelError::InvalidInput(error.to_string()))?;
        let mut request = self
            .client
            .converse()
            .model_id(&prompt.model_id)
            .messages(message)
            .set_request_metadata(Some(prompt.metadata.pairs()));
        if let Some(max_tokens) = prompt.max_tokens {
            request = request.inference_config(InferenceConfiguration::builder().max_tokens(max_tokens as i32).build());
        }
        let output = request
            .send()
            .await
            .map_err(|error| classify_bedrock_error(&error, &prompt.model_id, self.default_retry_after_seconds))?;
        let text = match output.output() {
            Some(aws_sdk_bedrockruntime::types::ConverseOutput::Message(message)) => {
                message.content().iter().filter_map(|block| block.as_text().ok().map(String::as_str)).collect::<Vec<_>>().join("")
            }
            _ => return Err(ModelError::Upstream("the Converse answer carried no message".into())),
        };
        let usage = output.usage();
        let count = |value: Option<i32>| value.map(|n| n.max(0) as u64).unwrap_or_default();
        Ok(ModelReply {
            text,
            tokens: TokenCounts {
                input_tokens: count(usage.map(aws_sdk_bedrockruntime::types::TokenUsage::input_tokens)),
                output_tokens: count(usage.map(aws_sdk_bedrockruntime::types::TokenUsage::output_tokens)),
                cache_creation_input_tokens: count(
                    usage.and_then(aws_sdk_bedrockruntime::types::TokenUsage::cache_write_input_tokens),
                ),
                cache_read_input_tokens: count(
                    usage.and_then(aws_sdk_bedrockruntime::types::TokenUsage::cache_read_input_tokens),
                ),
            },
        })
    }
}

/// Maps a failed Bedrock Runtime call (any operation: Converse, InvokeModel, ...) to a `ModelError`, by the
/// error code AWS sends, so every caller of Bedrock classifies failures the same way.
///
/// A call that never got a whole answer (connection refused or reset, DNS, TLS, a connect or read timeout,
/// a response cut off) is `Unavailable`: clients retry it after `Retry-After`. The SDK's full error text
/// (which names the endpoint address and the SDK's internals) is logged here, inside the caller's span
/// (request and tenant ids), and kept in the error only for the logs: `ApiError` bodies never show it.
pub fn classify_bedrock_error<E>(error: &SdkError<E, HttpResponse>, model_id: &str, default_retry_after: u64) -> ModelError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = DisplayErrorContext(error).to_string();
    tracing::warn!(model_id, error = %detail, "the Bedrock call failed");
    match error {
        SdkError::ServiceError(service_error) => {
            let retry_after = service_error
                .raw()
                .headers()
                .get("retry-after")
                .and_then(|value| value.trim().parse::<u64>().ok())
                .filter(|seconds| *seconds > 0)
                .unwrap_or(default_retry_after);
            let message = service_error.err().message().unwrap_or("no message").to_owned();
            classify_bedrock_code(service_error.err().code(), message, model_id, retry_after)
        }
        SdkError::TimeoutError(_) => ModelError::Timeout(detail),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ModelError::Unavailable { retry_after_seconds: default_retry_after, detail }
        }
        _ => ModelError::Upstream(detail),
    }
}

/// Maps a Bedrock Runtime error code to a `ModelError`.
pub fn classify_bedrock_code(code: Option<&str>, message: String, model_id: &str, retry_after: u64) -> ModelError {
    match code.unwrap_or_default() {
        "ThrottlingException" | "ServiceQuotaExceededException" => ModelError::Throttled { retry_after_seconds: retry_after },
        "ValidationException" => ModelError::InvalidInput(message),
        "AccessDeniedException" => ModelError::AccessDenied { model_id: model_id.to_owned(), detail: message },
        "ResourceNotFoundException" => ModelError::ModelNotFound { model_id: model_id.to_owned(), detail: message },
        "ModelTimeoutException" => ModelError::Timeout(message),
        "ServiceUnavailableException" | "ModelNotReadyException" => {
            ModelError::Unavailable { retry_after_seconds: retry_after, detail: message }
        }
        _ => ModelError::Upstream(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::operation::converse::ConverseError;

    #[test]
    fn bedrock_codes_map_to_model_errors() {
        let classify = |code: &str| classify_bedrock_code(Some(code), "msg".into(), "m", 5);
        assert_eq!(classify("ThrottlingException"), ModelError::Throttled { retry_after_seconds: 5 });
        assert_eq!(classify("ServiceQuotaExceededException"), ModelError::Throttled { retry_after_seconds: 5 });
        assert!(matches!(classify("ValidationException"), ModelError::InvalidInput(_)));
        assert!(matches!(classify("AccessDeniedException"), ModelError::AccessDenied { .. }));
        assert!(matches!(classify("ResourceNotFoundException"), ModelError::ModelNotFound { .. }));
        assert!(matches!(classify("ServiceUnavailableException"), ModelError::Unavailable { .. }));
        assert!(matches!(classify("ModelNotReadyException"), ModelError::Unavailable { .. }));
        assert!(matches!(classify("ModelTimeoutException"), ModelError::Timeout(_)));
        assert!(matches!(classify("InternalServerException"), ModelError::Upstream(_)));
        assert!(matches!(classify_bedrock_code(None, "m".into(), "m", 5), ModelError::Upstream(_)));
    }

    /// A Bedrock refusal as the SDK hands it over: the error `code` and the raw response with its headers.
    fn refused(code: &str, status: u16, retry_after: Option<&'static str>) -> SdkError<ConverseError, HttpResponse> {
        let meta = aws_sdk_bedrockruntime::error::ErrorMetadata::builder().code(code).message("refused").build();
        let mut raw = HttpResponse::new(status.try_into().unwrap(), aws_smithy_types::body::SdkBody::empty());
        if let Some(seconds) = retry_after {
            raw.headers_mut().insert("retry-after", seconds);
        }
        SdkError::service_error(ConverseError::generic(meta), raw)
    }

    #[test]
    fn bedrocks_own_retry_after_wins_over_the_default() {
        // GIVEN Bedrock throttles and says when to come back THEN that delay is kept, exactly
        assert_eq!(
            classify_bedrock_error(&refused("ThrottlingException", 429, Some("9")), "m", 4),
            ModelError::Throttled { retry_after_seconds: 9 }
        );
        assert_eq!(
            classify_bedrock_error(&refused("ServiceUnavailableException", 503, Some(" 11 ")), "m", 4),
            ModelError::Unavailable { retry_after_seconds: 11, detail: "refused".into() }
        );
        // GIVEN no usable delay (absent, zero, not whole seconds) THEN the configured default
        for unusable in [None, Some("0"), Some("soon"), Some("-3")] {
            assert_eq!(
                classify_bedrock_error(&refused("ThrottlingException", 429, unusable), "m", 4),
                ModelError::Throttled { retry_after_seconds: 4 },
                "{unusable:?}"
            );
        }
    }

    #[test]
    fn connection_failures_are_unavailable_with_the_default_retry_after() {
        use aws_sdk_bedrockruntime::error::ConnectorError;
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error: SdkError<ConverseError, HttpResponse> = SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        assert_eq!(
            classify_bedrock_error(&error, "m", 4),
            ModelError::Unavailable { retry_after_seconds: 4, detail: DisplayErrorContext(&error).to_string() }
        );
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let error: SdkError<ConverseError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::timeout(Box::new(timed_out)));
        assert!(matches!(classify_bedrock_error(&error, "m", 4), ModelError::Unavailable { retry_after_seconds: 4, .. }));
    }
}
