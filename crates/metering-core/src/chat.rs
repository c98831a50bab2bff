//! The chat use case: validate the body, ask the model, meter the answer. Knows nothing of HTTP or Lambda.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Deserialize;

use crate::bedrock_metadata::BedrockRequestMetadata;
use crate::error::ApiError;
use crate::identity::TenantIdentity;
use crate::limits::service::{Admission, AdmissionRequest, LimitsService};
use crate::metering::Metering;
use crate::model::{ChatModel, ModelPrompt};
use crate::usage::{RequestType, UsageEvent};

pub const MAX_PROMPT_CHARS: usize = 100_000;
pub const MAX_OUTPUT_TOKENS: i64 = 4096;
/// Added to a prompt's UTF-8 bytes for the upper bound of its input tokens: the message framing the model
/// counts (a Claude token is never shorter than one byte of text).
pub const PROMPT_FRAMING_TOKENS: u64 = 16;
/// The route name of `limit_refused` lines.
pub const CHAT_ROUTE: &str = "/bedrock/chat";

/// The validated body of `POST /bedrock/chat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    pub prompt: String,
    pub max_tokens: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequestBody {
    prompt: String,
    #[serde(default)]
    max_tokens: Option<i64>,
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::InvalidRequest("the request body is empty; send JSON like {\"prompt\": \"...\"}".into()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|error| ApiError::InvalidRequest(format!("invalid request body: {error}")))?;
        // Checked first: serde would otherwise read a JSON array as the fields in order.
        if !value.is_object() {
            return Err(ApiError::InvalidRequest(
                "invalid request body: expected a JSON object like {\"prompt\": \"...\"}".into(),
            ));
        }
        let parsed: ChatRequestBody =
            serde_json::from_value(value).map_err(|error| ApiError::InvalidRequest(format!("invalid request body: {error}")))?;
        if parsed.prompt.trim().is_empty() {
            return Err(ApiError::InvalidRequest("prompt must not be empty".into()));
        }
        let prompt_chars = parsed.prompt.chars().count();
        if prompt_chars > MAX_PROMPT_CHARS {
            return Err(ApiError::InvalidRequest(format!(
                "prompt is too long: {prompt_chars} characters, at most {MAX_PROMPT_CHARS}"
            )));
        }
        let max_tokens = match parsed.max_tokens {
            None => None,
            Some(value @ 1..=MAX_OUTPUT_TOKENS) => Some(value as u32),
            Some(value) => {
                return Err(ApiError::InvalidRequest(format!(
                    "max_tokens must be between 1 and {MAX_OUTPUT_TOKENS}, got {value}"
                )))
            }
        };
        Ok(Self { prompt: parsed.prompt, max_tokens })
    }
}

#[derive(Clone)]
pub struct ChatService {
    model: Arc<dyn ChatModel>,
    model_id: String,
    metering: Metering,
    limits: Option<LimitsService>,
}

impl ChatService {
    pub fn new(model: Arc<dyn ChatModel>, model_id: String, metering: Metering) -> Self {
        Self { model, model_id, metering, limits: None }
    }

    /// Enforces the tenants' limits (README "Budgets and quotas") before the model is called.
    pub fn with_limits(mut self, limits: LimitsService) -> Self {
        self.limits = Some(limits);
        self
    }

    pub fn limits(&self) -> Option<&LimitsService> {
        self.limits.as_ref()
    }

    pub fn metering(&self) -> &Metering {
        &self.metering
    }

    /// Answers one chat request for `identity`; its usage is metered in the background.
    #[tracing::instrument(skip(self, identity, body), fields(tenant_id = %identity.tenant_id, request_id = %request_id))]
    pub async fn chat(&self, identity: &TenantIdentity, request_id: &str, body: &[u8]) -> Result<String, ApiError> {
        let received_at = Utc::now();
        let started = Instant::now();
        let request = ChatRequest::parse(body)?;
        let admission = match &self.limits {
            Some(limits) => {
                let admission_request = AdmissionRequest {
                    tenant_id: &identity.tenant_id,
                    user_id: &identity.user_id,
                    request_id,
                    key_id: None,
                    route: CHAT_ROUTE,
                    model_id: &self.model_id,
                    input_tokens_bound: request.prompt.len() as u64 + PROMPT_FRAMING_TOKENS,
                    max_output_tokens: request.max_tokens.map_or(MAX_OUTPUT_TOKENS as u64, u64::from),
                };
                limits.admit(&admission_request, false).await?
            }
            None => Admission::default(),
        };
        // Under a token budget the output bound is sent to the model, so the reservation is a true bound.
        let max_tokens = match request.max_tokens {
            None if admission.has_token_budget => Some(MAX_OUTPUT_TOKENS as u32),
            other => other,
        };
        let metadata = BedrockRequestMetadata {
            tenant_id: identity.tenant_id.clone(),
            user_id: identity.user_id.clone(),
            request_id: request_id.to_owned(),
            request_type: RequestType::Bedrock,
        };
        let prompt = ModelPrompt { model_id: self.model_id.clone(), prompt: request.prompt, max_tokens, metadata };
        let reply = self.model.converse(&prompt).await.map_err(|error| {
            tracing::warn!(%error, retryable = error.is_retryable(), "model call failed");
            ApiError::from(error)
        })?;
        self.metering.record(UsageEvent {
            received_at,
            request_id: request_id.to_owned(),
            tenant_id: identity.tenant_id.clone(),
            user_id: identity.user_id.clone(),
            model_id: self.model_id.clone(),
            request_type: RequestType::Bedrock,
            tokens: reply.tokens,
            latency_ms: started.elapsed().as_millis() as u64,
            usage_estimated: false,
            client_user_id: None,
            requested_model_id: None,
        });
        // After the line (the bill): the reservation becomes the metered use. A failed call above dropped
        // the reservation, which releases it.
        if let Some(reservation) = admission.reservation {
            reservation.settle(&self.model_id, &reply.tokens);
        }
        Ok(reply.text)
    }
}

/// Wires the chat service to the real AWS clients (Bedrock Runtime, DynamoDB) from one shared SDK config.
/// Endpoints follow the standard chain (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, ...).
pub fn chat_service_on_aws(
    config: &crate::config::ChatConfig,
    sdk_config: &aws_config::SdkConfig,
    usage_log: Arc<dyn crate::usage::UsageLog>,
) -> ChatService {
    chat_service_on_aws_with_counters(config, sdk_config, usage_log, |counters| counters)
}

/// As [`chat_service_on_aws`], with the DynamoDB counters wrapped by `wrap_counters` (the Lambda entry point
/// puts them behind its shutdown cutoff).
pub fn chat_service_on_aws_with_counters(
    config: &crate::config::ChatConfig,
    sdk_config: &aws_config::SdkConfig,
    usage_log: Arc<dyn crate::usage::UsageLog>,
    wrap_counters: impl FnOnce(Arc<dyn crate::counters::UsageCounters>) -> Arc<dyn crate::counters::UsageCounters>,
) -> ChatService {
    let model = crate::model::BedrockChatModel::new(
        sdk_config,
        config.bedrock_timeout,
        config.bedrock_max_attempts,
        config.throttle_retry_after_seconds,
    );
    let counters = crate::counters::DynamoUsageCounters::new(
        crate::counters::dynamodb_client(sdk_config),
        config.usage_table_name.clone(),
        config.daily_ttl,
        config.weekly_ttl,
    );
    ChatService::new(
        Arc::new(model),
        config.model_id.clone(),
        Metering::with_config(wrap_counters(Arc::new(counters)), usage_log, config.metering),
    )
}

/// The limits service on the usage table, with EventBridge alerts unless `LIMITS_EVENT_BUS_NAME=none`.
pub fn limits_service_on_aws(
    config: &crate::limits::config::LimitsConfig,
    sdk_config: &aws_config::SdkConfig,
    usage_table_name: String,
    pricing: Arc<crate::pricing::PricingTable>,
    usage_log: Arc<dyn crate::usage::UsageLog>,
) -> LimitsService {
    let store = crate::limits::dynamo::DynamoLimitsStore::new(crate::counters::dynamodb_client(sdk_config), usage_table_name);
    let alerts = config.event_bus_name.clone().map(|bus| {
        Arc::new(crate::limits::alerts::EventBridgeAlerts::new(sdk_config, bus)) as Arc<dyn crate::limits::alerts::AlertPublisher>
    });
    LimitsService::new(Arc::new(store), config.clone(), pricing, usage_log, alerts)
}

/// Loads the shared AWS SDK configuration (region, credentials, endpoints) from the standard chain, with the
/// process's one SDK HTTP client ([`crate::sdk_http::process_http_client`]).
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(crate::sdk_http::process_http_client()).load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_message(body: &str) -> String {
        match ChatRequest::parse(body.as_bytes()) {
            Err(ApiError::InvalidRequest(message)) => message,
            other => panic!("expected a 400 for {body:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_prompt_is_accepted() {
        let request = ChatRequest::parse(br#"{"prompt": "hi", "max_tokens": 4096}"#).unwrap();
        assert_eq!(request, ChatRequest { prompt: "hi".into(), max_tokens: Some(4096) });
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(error_message("").contains("empty"));
        assert!(error_message("{not json").contains("invalid request body"));
        assert!(error_message("{}").contains("prompt"));
        assert!(error_message(r#"["hi"]"#).contains("JSON object"));
        assert!(error_message(r#""hi""#).contains("JSON object"));
        assert!(error_message(r#"{"prompt": 5}"#).contains("invalid type"));
        assert!(error_message(r#"{"prompt": "  \n "}"#).contains("must not be empty"));
        assert!(error_message(r#"{"prompt": "x", "max_tokens": 0}"#).contains("max_tokens"));
        assert!(error_message(r#"{"prompt": "x", "max_tokens": 4097}"#).contains("max_tokens"));
        assert!(error_message(r#"{"prompt": "x", "max_tokens": "9"}"#).contains("invalid type"));
        assert!(error_message(r#"{"prompt": "x", "tenant_id": "other"}"#).contains("unknown field"));
    }

    #[test]
    fn the_prompt_limit_counts_characters_not_bytes() {
        let at_limit = format!(r#"{{"prompt": "{}"}}"#, "é".repeat(MAX_PROMPT_CHARS));
        assert!(ChatRequest::parse(at_limit.as_bytes()).is_ok());
        let over = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(MAX_PROMPT_CHARS + 1));
        assert!(error_message(&over).contains("too long"));
    }
}
