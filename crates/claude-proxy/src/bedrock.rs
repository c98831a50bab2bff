//! Bedrock as the fallback: `InvokeModel` and `InvokeModelWithResponseStream` with the Anthropic-native
//! body (whose answers are Messages API JSON and stream events), and `CountTokens`. The endpoint comes from
//! the standard AWS chain, which is how the local stack points it at the fake Bedrock.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use aws_sdk_bedrockruntime::types::{CountTokensInput, InvokeModelTokensRequest, ResponseStream};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use metering_core::bedrock_metadata::BedrockRequestMetadata;
use metering_core::error::Detail;
use metering_core::model::{classify_bedrock_error, classify_bedrock_stream_error, ModelError};
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
        // Bedrock's own 500 is reported as "unavailable" (529 to the client) rather than a gateway error: the
        // fallback is itself the answer to an overloaded upstream, and clients retry an overloaded answer.
        ModelError::Unavailable { retry_after_seconds, .. } | ModelError::ServerError { retry_after_seconds, .. } => {
            ApiError::Unavailable {
                message: "Bedrock is temporarily unavailable; retry after the delay in retry-after".into(),
                retry_after_seconds,
            }
        }
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
                    Err(error) => Some((Err(classify_bedrock_stream_error(error, &model_id, default_retry_after)), None)),
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
            .map_err(|error| classify_bedrock_error(error, model_id, self.default_retry_after_seconds))?;
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
            .map_err(|error| classify_bedrock_error(error, model_id, self.default_retry_after_seconds))?;
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
            .map_err(|error| classify_bedrock_error(error, model_id, self.default_retry_after_seconds))?;
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
                .map_err(|error| {
                    DiscoveryError(Detail::caused_by(aws_sdk_bedrock::error::DisplayErrorContext(&error).to_string(), error))
                })?;
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
    fn bedrocks_own_server_error_is_overloaded_for_the_proxys_client() {
        // Classified once (metering-core); rendered here as Anthropic's retryable overloaded answer.
        let error = api_error(ModelError::ServerError { retry_after_seconds: 5, detail: "msg".into() }, "m");
        assert_eq!(
            (api_gateway_lambda::error_envelope::status_of(&error), error.retry_after_seconds()),
            (http::StatusCode::SERVICE_UNAVAILABLE, Some(5))
        );
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
        assert_eq!(api_gateway_lambda::error_envelope::status_of(&error), http::StatusCode::TOO_MANY_REQUESTS);
    }
}
