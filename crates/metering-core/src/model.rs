//! The model port: one prompt in, text and token counts out. `BedrockChatModel` is the real one (Converse
//! API); its endpoint comes from the standard AWS configuration chain, which is how the local stack points
//! it at the fake Bedrock Runtime without another code path.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::config::http::HttpResponse;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, InferenceConfiguration, Message};
use aws_smithy_types::event_stream::RawMessage;
use thiserror::Error;

use crate::bedrock_metadata::BedrockRequestMetadata;
use crate::error::Detail;
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

/// A failed model call, classified once from what Bedrock answered (`classify_bedrock_error`,
/// `classify_bedrock_stream_error`). Each API renders it in its own shape (`From<ModelError> for ApiError`
/// for the project's, `claude_proxy::bedrock::api_error` for Anthropic's); the `detail` causes are for the
/// logs, never for a client.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("throttled (retry after {retry_after_seconds}s)")]
    Throttled { retry_after_seconds: u64 },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("access denied to {model_id}")]
    AccessDenied {
        model_id: String,
        #[source]
        detail: Cause,
    },
    #[error("model {model_id} not found")]
    ModelNotFound {
        model_id: String,
        #[source]
        detail: Cause,
    },
    #[error("unavailable")]
    Unavailable {
        retry_after_seconds: u64,
        #[source]
        detail: Cause,
    },
    /// Bedrock's own server error (`InternalServerException`).
    #[error("server error")]
    ServerError {
        retry_after_seconds: u64,
        #[source]
        detail: Cause,
    },
    #[error("timed out")]
    Timeout(#[source] Cause),
    #[error("upstream failure")]
    Upstream(#[source] Cause),
}

/// Why a model call failed, for the logs: Bedrock's message (or the SDK's full error text) with the SDK's error
/// itself as its source (a `Detail`), and the model the call was for. Two causes are equal when their messages
/// are.
#[derive(Debug, Clone)]
pub struct Cause {
    detail: Detail,
    model_id: Option<String>,
}

impl Cause {
    /// `message` about a call to `model_id`, caused by `source` (the SDK's error).
    pub fn of_call(message: String, model_id: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { detail: Detail::caused_by(message, source), model_id: Some(model_id.to_owned()) }
    }

    pub fn message(&self) -> &str {
        self.detail.message()
    }

    pub fn model_id(&self) -> Option<&str> {
        self.model_id.as_deref()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model_id {
            Some(model_id) => write!(formatter, "{} (model {model_id})", self.detail),
            None => write!(formatter, "{}", self.detail),
        }
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.detail.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.detail == other.detail
    }
}

impl Eq for Cause {}

/// A cause known only by its message (a failure the gateway noticed itself, or a test's).
impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self { detail: Detail::new(message), model_id: None }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::from(message.to_owned())
    }
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
            .map_err(|error| classify_bedrock_error(error, &prompt.model_id, self.default_retry_after_seconds))?;
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
/// (request and tenant ids), and kept in the error's cause (with the SDK error as its source) only for the
/// logs: no API's error body shows it.
pub fn classify_bedrock_error<E>(error: SdkError<E, HttpResponse>, model_id: &str, default_retry_after: u64) -> ModelError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&error).to_string();
    tracing::warn!(model_id, error = %detail, "the Bedrock call failed");
    match &error {
        SdkError::ServiceError(service_error) => {
            let retry_after = service_error
                .raw()
                .headers()
                .get("retry-after")
                .and_then(|value| value.trim().parse::<u64>().ok())
                .filter(|seconds| *seconds > 0)
                .unwrap_or(default_retry_after);
            let code = service_error.err().code().map(str::to_owned);
            let message = service_error.err().message().unwrap_or("no message").to_owned();
            classify_bedrock_code(code.as_deref(), Cause::of_call(message, model_id, error), model_id, retry_after)
        }
        SdkError::TimeoutError(_) => ModelError::Timeout(Cause::of_call(detail, model_id, error)),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ModelError::Unavailable { retry_after_seconds: default_retry_after, detail: Cause::of_call(detail, model_id, error) }
        }
        _ => ModelError::Upstream(Cause::of_call(detail, model_id, error)),
    }
}

/// Maps a failure in the middle of an `InvokeModelWithResponseStream` stream: an exception frame is classified
/// by its type as a refused call is by its code; a connection that dropped, or a stream that could not be
/// read, is `Unavailable`.
pub fn classify_bedrock_stream_error(
    error: SdkError<ResponseStreamError, RawMessage>,
    model_id: &str,
    default_retry_after: u64,
) -> ModelError {
    let detail = DisplayErrorContext(&error).to_string();
    tracing::warn!(model_id, error = %detail, "the Bedrock stream failed");
    match &error {
        SdkError::ServiceError(service_error) => {
            let code = stream_error_code(service_error.err()).to_owned();
            let message = service_error.err().message().unwrap_or("no message").to_owned();
            classify_bedrock_code(Some(&code), Cause::of_call(message, model_id, error), model_id, default_retry_after)
        }
        _ => {
            ModelError::Unavailable { retry_after_seconds: default_retry_after, detail: Cause::of_call(detail, model_id, error) }
        }
    }
}

/// The Bedrock error code of a mid-stream exception. An exception frame names its type only in its
/// `:exception-type` header (`throttlingException`), which the SDK turns into the variant, while `code()`
/// reads the payload, which holds just `message`: the variant is the code.
pub fn stream_error_code(error: &ResponseStreamError) -> &str {
    match error {
        ResponseStreamError::ThrottlingException(_) => "ThrottlingException",
        ResponseStreamError::ValidationException(_) => "ValidationException",
        ResponseStreamError::ModelTimeoutException(_) => "ModelTimeoutException",
        ResponseStreamError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        ResponseStreamError::InternalServerException(_) => "InternalServerException",
        ResponseStreamError::ModelStreamErrorException(_) => "ModelStreamErrorException",
        other => other.code().unwrap_or_default(),
    }
}

/// Maps a Bedrock Runtime error code to a `ModelError`; `detail` is Bedrock's message (the one an
/// `InvalidInput` shows the client).
pub fn classify_bedrock_code(code: Option<&str>, detail: Cause, model_id: &str, retry_after: u64) -> ModelError {
    match code.unwrap_or_default() {
        "ThrottlingException" | "ServiceQuotaExceededException" => ModelError::Throttled { retry_after_seconds: retry_after },
        "ValidationException" => ModelError::InvalidInput(detail.message().to_owned()),
        "AccessDeniedException" => ModelError::AccessDenied { model_id: model_id.to_owned(), detail },
        "ResourceNotFoundException" => ModelError::ModelNotFound { model_id: model_id.to_owned(), detail },
        "ModelTimeoutException" => ModelError::Timeout(detail),
        "ServiceUnavailableException" | "ModelNotReadyException" => {
            ModelError::Unavailable { retry_after_seconds: retry_after, detail }
        }
        "InternalServerException" => ModelError::ServerError { retry_after_seconds: retry_after, detail },
        _ => ModelError::Upstream(detail),
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
        assert!(matches!(classify("InternalServerException"), ModelError::ServerError { retry_after_seconds: 5, .. }));
        assert!(matches!(classify("Whatever"), ModelError::Upstream(_)));
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
            classify_bedrock_error(refused("ThrottlingException", 429, Some("9")), "m", 4),
            ModelError::Throttled { retry_after_seconds: 9 }
        );
        assert_eq!(
            classify_bedrock_error(refused("ServiceUnavailableException", 503, Some(" 11 ")), "m", 4),
            ModelError::Unavailable { retry_after_seconds: 11, detail: "refused".into() }
        );
        // GIVEN no usable delay (absent, zero, not whole seconds) THEN the configured default
        for unusable in [None, Some("0"), Some("soon"), Some("-3")] {
            assert_eq!(
                classify_bedrock_error(refused("ThrottlingException", 429, unusable), "m", 4),
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
        let detail = DisplayErrorContext(&error).to_string();
        assert_eq!(
            classify_bedrock_error(error, "m", 4),
            ModelError::Unavailable { retry_after_seconds: 4, detail: detail.into() }
        );
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let error: SdkError<ConverseError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::timeout(Box::new(timed_out)));
        assert!(matches!(classify_bedrock_error(error, "m", 4), ModelError::Unavailable { retry_after_seconds: 4, .. }));
    }

    #[test]
    fn a_classified_failure_keeps_the_sdk_error_as_its_source_and_names_the_model() {
        use std::error::Error;
        let error = classify_bedrock_error(refused("AccessDeniedException", 403, None), "us.anthropic.m-v1:0", 4);
        let ModelError::AccessDenied { detail, .. } = &error else { panic!("{error:?}") };
        assert_eq!((detail.message(), detail.model_id()), ("refused", Some("us.anthropic.m-v1:0")));
        // The chain: ModelError -> Cause -> the SDK's own error.
        let cause = error.source().expect("the cause");
        assert_eq!(cause.to_string(), "refused (model us.anthropic.m-v1:0)");
        let sdk_error = cause.source().expect("the SDK error");
        assert!(sdk_error.downcast_ref::<SdkError<ConverseError, HttpResponse>>().is_some(), "{sdk_error:?}");
    }

    #[test]
    fn a_mid_stream_exception_is_classified_by_its_variant_not_its_empty_code() {
        use aws_sdk_bedrockruntime::types::error as stream;
        let classify = |error: ResponseStreamError| classify_bedrock_code(Some(stream_error_code(&error)), "msg".into(), "m", 5);
        let throttled = stream::ThrottlingException::builder().message("slow").build();
        assert_eq!(
            classify(ResponseStreamError::ThrottlingException(throttled)),
            ModelError::Throttled { retry_after_seconds: 5 }
        );
        let internal = stream::InternalServerException::builder().message("x").build();
        assert!(matches!(classify(ResponseStreamError::InternalServerException(internal)), ModelError::ServerError { .. }));
        let unavailable = stream::ServiceUnavailableException::builder().message("x").build();
        assert!(matches!(
            classify(ResponseStreamError::ServiceUnavailableException(unavailable)),
            ModelError::Unavailable { .. }
        ));
        let timeout = stream::ModelTimeoutException::builder().message("x").build();
        assert!(matches!(classify(ResponseStreamError::ModelTimeoutException(timeout)), ModelError::Timeout(_)));
        let invalid = stream::ValidationException::builder().message("x").build();
        assert!(matches!(classify(ResponseStreamError::ValidationException(invalid)), ModelError::InvalidInput(_)));
        let broken = stream::ModelStreamErrorException::builder().message("x").build();
        assert!(matches!(classify(ResponseStreamError::ModelStreamErrorException(broken)), ModelError::Upstream(_)));
    }
}
