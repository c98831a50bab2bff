//! Bedrock as the fallback: `InvokeModel` and `InvokeModelWithResponseStream` with the Anthropic-native
//! body (whose answers are Messages API JSON and stream events), and `CountTokens`. The endpoint comes from
//! the standard AWS chain, which is how the local stack points it at the fake Bedrock.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::config::http::HttpResponse;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use aws_sdk_bedrockruntime::types::{CountTokensInput, InvokeModelTokensRequest, ResponseStream};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use metering_core::bedrock_metadata::BedrockRequestMetadata;
use metering_core::model::{classify_bedrock_code, classify_bedrock_error, ModelError};
use metering_core::ApiError;

use crate::model_resolution::{DiscoveryError, InferenceProfile, InferenceProfiles};

/// Stream events (each the JSON of one Messages API stream event), read one by one as they arrive.
pub type EventStream = BoxStream<'static, Result<Bytes, ModelError>>;

#[async_trait]
pub trait BedrockApi: Send + Sync {
    /// The whole answer: Messages API JSON. `metadata` goes in the `X-Amzn-Bedrock-Request-Metadata` header,
    /// which Bedrock records in its invocation logs (README "Bedrock invocation logs").
    async fn invoke(&self, model_id: &str, body: Vec<u8>, metadata: &BedrockRequestMetadata) -> Result<Bytes, ModelError>;
    async fn invoke_stream(
        &self,
        model_id: &str,
        body: Vec<u8>,
        metadata: &BedrockRequestMetadata,
    ) -> Result<EventStream, ModelError>;
    async fn count_tokens(&self, model_id: &str, body: Vec<u8>) -> Result<u64, ModelError>;
}

/// What a Bedrock failure means for the client, in the Anthropic error shape. The SDK's detail (addresses,
/// debug text) was logged where the call failed and is never put in the body.
pub fn api_error(error: ModelError, model_id: &str) -> ApiError {
    match error {
        ModelError::Throttled { retry_after_seconds } => ApiError::RateLimited {
            message: "Both Anthropic and the Bedrock fallback are rate limited; retry after the delay in retry-after".into(),
            retry_after_seconds,
        },
        ModelError::InvalidInput(message) => ApiError::InvalidRequest(format!("Bedrock refused the request: {message}")),
        ModelError::AccessDenied { .. } => ApiError::Upstream(format!(
            "the gateway may not invoke {model_id} on Bedrock (enable model access and allow bedrock:InvokeModel on it)"
        )),
        ModelError::ModelNotFound { .. } => ApiError::Upstream(format!(
            "Bedrock model {model_id} is not available in this region or account (check BEDROCK_MODEL_MAP)"
        )),
        ModelError::Unavailable { retry_after_seconds, .. } => ApiError::Unavailable {
            message: "Bedrock is temporarily unavailable; retry after the delay in retry-after".into(),
            retry_after_seconds,
        },
        ModelError::Timeout(_) => ApiError::UpstreamTimeout("Bedrock did not answer in time".into()),
        ModelError::Upstream(_) => ApiError::Upstream("the Bedrock call failed".into()),
    }
}

#[derive(Debug, Clone)]
pub struct SdkBedrock {
    client: aws_sdk_bedrockruntime::Client,
    default_retry_after_seconds: u64,
}

impl SdkBedrock {
    pub fn new(sdk_config: &aws_config::SdkConfig, timeout: Duration, default_retry_after_seconds: u64) -> Self {
        let config = aws_sdk_bedrockruntime::config::Builder::from(sdk_config)
            .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).connect_timeout(Duration::from_secs(3)).build())
            // The fallback is already the second chance: one retry at most.
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .build();
        Self { client: aws_sdk_bedrockruntime::Client::from_conf(config), default_retry_after_seconds }
    }
}

fn classify<E>(error: SdkError<E, HttpResponse>, model_id: &str, default_retry_after: u64) -> ModelError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = match &error {
        SdkError::ServiceError(service_error) => service_error.err().code().map(str::to_owned),
        _ => None,
    };
    // A 500 carries no retry-after: the default is what the header lookup would give.
    as_fallback_error(code.as_deref(), classify_bedrock_error(&error, model_id, default_retry_after), default_retry_after)
}

fn classify_code(code: Option<&str>, message: String, model_id: &str, retry_after: u64) -> ModelError {
    as_fallback_error(code, classify_bedrock_code(code, message, model_id, retry_after), retry_after)
}

/// Bedrock's own 500 is reported as "unavailable" (503/529 to the client) rather than a gateway error: the
/// fallback is itself the answer to an overloaded upstream, and clients retry an overloaded answer.
fn as_fallback_error(code: Option<&str>, classified: ModelError, retry_after: u64) -> ModelError {
    match (code, classified) {
        (Some("InternalServerException"), ModelError::Upstream(detail)) => {
            ModelError::Unavailable { retry_after_seconds: retry_after, detail }
        }
        (_, other) => other,
    }
}

/// The Bedrock error code of a mid-stream exception. An exception frame names its type only in its
/// `:exception-type` header (`throttlingException`), which the SDK turns into the variant, while `code()`
/// reads the payload, which holds just `message`: the variant is the code.
fn stream_error_code(error: &ResponseStreamError) -> &str {
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

/// A mid-stream failure: an exception frame (classified by its type) or a broken connection.
fn classify_stream_error(
    error: SdkError<ResponseStreamError, aws_smithy_types::event_stream::RawMessage>,
    model_id: &str,
    default_retry_after: u64,
) -> ModelError {
    let detail = DisplayErrorContext(&error).to_string();
    tracing::warn!(model_id, error = %detail, "the Bedrock stream failed");
    match &error {
        SdkError::ServiceError(service_error) => classify_code(
            Some(stream_error_code(service_error.err())),
            service_error.err().message().unwrap_or("no message").to_owned(),
            model_id,
            default_retry_after,
        ),
        // The connection dropped or the stream could not be read: an I/O failure.
        _ => ModelError::Unavailable { retry_after_seconds: default_retry_after, detail },
    }
}

type SdkEventReceiver = aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver<ResponseStream, ResponseStreamError>;

/// The stream's chunks as a stream of event JSON; it ends after the first error.
fn events_of(receiver: SdkEventReceiver, model_id: String, default_retry_after: u64) -> EventStream {
    stream::unfold(Some(receiver), move |receiver| {
        let model_id = model_id.clone();
        async move {
            let mut receiver = receiver?;
            loop {
                return match receiver.recv().await {
                    Ok(Some(ResponseStream::Chunk(part))) => match part.bytes {
                        Some(bytes) => Some((Ok(Bytes::from(bytes.into_inner())), Some(receiver))),
                        None => continue,
                    },
                    Ok(Some(_)) => continue,
                    Ok(None) => None,
                    Err(error) => Some((Err(classify_stream_error(error, &model_id, default_retry_after)), None)),
                };
            }
        }
    })
    .boxed()
}

#[async_trait]
impl BedrockApi for SdkBedrock {
    async fn invoke(&self, model_id: &str, body: Vec<u8>, metadata: &BedrockRequestMetadata) -> Result<Bytes, ModelError> {
        let output = self
            .client
            .invoke_model()
            .model_id(model_id)
            .request_metadata(metadata.header_json())
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body))
            .send()
            .await
            .map_err(|error| classify(error, model_id, self.default_retry_after_seconds))?;
        Ok(Bytes::from(output.body.into_inner()))
    }

    async fn invoke_stream(
        &self,
        model_id: &str,
        body: Vec<u8>,
        metadata: &BedrockRequestMetadata,
    ) -> Result<EventStream, ModelError> {
        let output = self
            .client
            .invoke_model_with_response_stream()
            .model_id(model_id)
            .request_metadata(metadata.header_json())
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body))
            .send()
            .await
            .map_err(|error| classify(error, model_id, self.default_retry_after_seconds))?;
        Ok(events_of(output.body, model_id.to_owned(), self.default_retry_after_seconds))
    }

    async fn count_tokens(&self, model_id: &str, body: Vec<u8>) -> Result<u64, ModelError> {
        let request = InvokeModelTokensRequest::builder()
            .body(Blob::new(body))
            .build()
            .map_err(|error| ModelError::InvalidInput(error.to_string()))?;
        let output = self
            .client
            .count_tokens()
            .model_id(model_id)
            .input(CountTokensInput::InvokeModel(request))
            .send()
            .await
            .map_err(|error| classify(error, model_id, self.default_retry_after_seconds))?;
        Ok(output.input_tokens().max(0) as u64)
    }
}

/// Model discovery through the control plane (`bedrock:ListInferenceProfiles`, system-defined profiles).
/// Its endpoint follows the standard AWS chain too (`AWS_ENDPOINT_URL_BEDROCK` in the local stack).
#[derive(Debug, Clone)]
pub struct SdkInferenceProfiles {
    client: aws_sdk_bedrock::Client,
}

impl SdkInferenceProfiles {
    pub fn new(sdk_config: &aws_config::SdkConfig) -> Self {
        let config = aws_sdk_bedrock::config::Builder::from(sdk_config)
            .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(10)).build())
            .build();
        Self { client: aws_sdk_bedrock::Client::from_conf(config) }
    }
}

/// `arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-x-v1:0` -> `anthropic.claude-x-v1:0`.
fn foundation_model_of(arn: &str) -> Option<&str> {
    arn.split_once(":foundation-model/").map(|(_, id)| id)
}

#[async_trait]
impl InferenceProfiles for SdkInferenceProfiles {
    async fn list(&self) -> Result<Vec<InferenceProfile>, DiscoveryError> {
        let mut profiles = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .client
                .list_inference_profiles()
                .type_equals(aws_sdk_bedrock::types::InferenceProfileType::SystemDefined)
                .max_results(1000)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|error| DiscoveryError(aws_sdk_bedrock::error::DisplayErrorContext(&error).to_string()))?;
            for summary in page.inference_profile_summaries() {
                // Every model ARN of a profile names the same foundation model (in its source regions).
                let Some(foundation_model_id) =
                    summary.models().iter().find_map(|model| model.model_arn().and_then(foundation_model_of))
                else {
                    continue;
                };
                profiles.push(InferenceProfile {
                    id: summary.inference_profile_id().to_owned(),
                    foundation_model_id: foundation_model_id.to_owned(),
                });
            }
            next_token = page.next_token().map(str::to_owned);
            if next_token.is_none() {
                return Ok(profiles);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_codes_map_to_model_errors() {
        let m = |code: &str| classify_code(Some(code), "msg".into(), "m", 5);
        assert_eq!(m("ThrottlingException"), ModelError::Throttled { retry_after_seconds: 5 });
        assert!(matches!(m("ValidationException"), ModelError::InvalidInput(_)));
        assert!(matches!(m("AccessDeniedException"), ModelError::AccessDenied { .. }));
        assert!(matches!(m("ResourceNotFoundException"), ModelError::ModelNotFound { .. }));
        assert!(matches!(m("ServiceUnavailableException"), ModelError::Unavailable { .. }));
        assert!(matches!(m("ModelTimeoutException"), ModelError::Timeout(_)));
        assert_eq!(m("InternalServerException"), ModelError::Unavailable { retry_after_seconds: 5, detail: "msg".into() });
        assert!(matches!(m("Whatever"), ModelError::Upstream(_)));
    }

    #[test]
    fn a_mid_stream_exception_is_classified_by_its_variant_not_its_empty_code() {
        use aws_sdk_bedrockruntime::types::error as stream;
        let classify = |error: ResponseStreamError| classify_code(Some(stream_error_code(&error)), "msg".into(), "m", 5);
        let throttled = stream::ThrottlingException::builder().message("slow").build();
        assert_eq!(
            classify(ResponseStreamError::ThrottlingException(throttled)),
            ModelError::Throttled { retry_after_seconds: 5 }
        );
        let internal = stream::InternalServerException::builder().message("x").build();
        assert!(matches!(classify(ResponseStreamError::InternalServerException(internal)), ModelError::Unavailable { .. }));
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

    #[test]
    fn a_profile_names_its_foundation_model_in_its_model_arns() {
        assert_eq!(
            foundation_model_of("arn:aws:bedrock:eu-west-3::foundation-model/anthropic.claude-opus-4-8-20260915-v1:0"),
            Some("anthropic.claude-opus-4-8-20260915-v1:0")
        );
        assert_eq!(foundation_model_of("arn:aws:bedrock:us-east-1:1:inference-profile/us.x"), None);
    }

    #[test]
    fn a_throttled_fallback_is_a_429_for_the_client() {
        let error = api_error(ModelError::Throttled { retry_after_seconds: 7 }, "m");
        assert_eq!(error.retry_after_seconds(), Some(7));
        assert_eq!(error.status(), http::StatusCode::TOO_MANY_REQUESTS);
    }
}
