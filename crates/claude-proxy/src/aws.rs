//! The proxy wired to AWS: DynamoDB (keys, rate-limit memory, usage counters), Bedrock Runtime, Bedrock's
//! control plane (`ListInferenceProfiles`, model discovery), and the provider's Anthropic key from Secrets
//! Manager. Endpoints follow the standard AWS chain (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`,
//! `AWS_ENDPOINT_URL_BEDROCK`, ...), which is how the local stack uses moto and the fake Bedrock.

use secrecy::SecretString;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use metering_core::counters::{dynamodb_client, DynamoUsageCounters, UsageCounters};
use metering_core::error::Detail;
use metering_core::metering::Metering;
use metering_core::usage::UsageLog;

use crate::anthropic::HttpAnthropic;
use crate::api_keys::{ApiKeys, DynamoKeyStore};
use crate::bedrock::{SdkBedrock, SdkInferenceProfiles};
use crate::config::{ProviderKeySource, ProxyConfig};
use crate::model_resolution::ModelResolver;
use crate::provider_key::{ProviderKey, SecretKeySource};
use crate::proxy::{ProxyService, ProxySettings};
use crate::rate_limits::{DynamoRateLimitStore, RateLimitMemory};

/// The key inside a secret string: the string itself, or the `api_key` (or `ANTHROPIC_API_KEY`) field of a
/// JSON object.
pub fn key_from_secret(secret: &str) -> Option<String> {
    let trimmed = secret.trim();
    if trimmed.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(trimmed).ok()?;
        ["api_key", "ANTHROPIC_API_KEY"]
            .iter()
            .find_map(|field| value.get(field).and_then(|key| key.as_str()))
            .map(|key| key.trim().to_owned())
            .filter(|key| !key.is_empty())
    } else {
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }
}

/// The provider key of `config`: from a secret, read by [`ProviderKey::read_now`] once started, not at start.
pub fn provider_key(config: &ProxyConfig, sdk_config: &aws_config::SdkConfig) -> ProviderKey {
    match &config.provider_key {
        None => ProviderKey::None,
        Some(ProviderKeySource::Environment(key)) => ProviderKey::Ready(key.clone()),
        Some(ProviderKeySource::SecretsManager(secret_id)) => ProviderKey::from_secret(Arc::new(SecretsManagerKey {
            client: aws_sdk_secretsmanager::Client::new(sdk_config),
            secret_id: secret_id.clone(),
        })),
    }
}

/// The key in a Secrets Manager secret (its string, or the `api_key` field of its JSON: [`key_from_secret`]).
struct SecretsManagerKey {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

#[async_trait]
impl SecretKeySource for SecretsManagerKey {
    fn secret_id(&self) -> &str {
        &self.secret_id
    }

    async fn read(&self) -> Result<SecretString, Detail> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|error| Detail::caused_by(DisplayErrorContext(&error).to_string(), error))?;
        let secret = output.secret_string().ok_or_else(|| Detail::new("the secret has no string value"))?;
        key_from_secret(secret).map(SecretString::from).ok_or_else(|| Detail::new("the secret holds no key"))
    }
}

pub fn proxy_service_on_aws(
    config: &ProxyConfig,
    sdk_config: &aws_config::SdkConfig,
    usage_log: Arc<dyn UsageLog>,
) -> ProxyService {
    proxy_service_on_aws_with_counters(config, sdk_config, usage_log, |counters| counters)
}

/// As [`proxy_service_on_aws`], with the usage counters wrapped by `wrap_counters` (the Lambda entry point
/// puts them behind its shutdown cutoff).
pub fn proxy_service_on_aws_with_counters(
    config: &ProxyConfig,
    sdk_config: &aws_config::SdkConfig,
    usage_log: Arc<dyn UsageLog>,
    wrap_counters: impl FnOnce(Arc<dyn UsageCounters>) -> Arc<dyn UsageCounters>,
) -> ProxyService {
    let dynamodb = dynamodb_client(sdk_config);
    let keys =
        ApiKeys::new(Arc::new(DynamoKeyStore::new(dynamodb.clone(), config.api_key_table_name.clone())), config.api_key_cache);
    let rate_limits = config.rate_limit_table_name.as_ref().map(|table| {
        RateLimitMemory::new(Arc::new(DynamoRateLimitStore::new(dynamodb.clone(), table.clone())), config.rate_limit_scope)
    });
    let counters = DynamoUsageCounters::new(dynamodb, config.usage_table_name.clone(), config.daily_ttl, config.weekly_ttl);
    let anthropic = HttpAnthropic::new(&config.anthropic_base_url, config.anthropic_timeout);
    let bedrock = SdkBedrock::new(sdk_config, config.bedrock_timeout, config.default_retry_after_seconds);
    let mut models = ModelResolver::new(config.model_map.clone(), config.family_fallback.clone());
    if let Some(discovery) = &config.model_discovery {
        models = models.with_discovery(discovery.clone(), Arc::new(SdkInferenceProfiles::new(sdk_config)));
    }
    let provider_key = provider_key(config, sdk_config);
    provider_key.read_now();
    let settings = ProxySettings::from_config(config, provider_key, models);
    ProxyService::new(
        settings,
        keys,
        rate_limits,
        Arc::new(anthropic),
        Arc::new(bedrock),
        Metering::with_config(wrap_counters(Arc::new(counters)), usage_log, config.metering),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_holds_the_key_plain_or_in_json() {
        assert_eq!(key_from_secret(" sk-ant-1 \n").as_deref(), Some("sk-ant-1"));
        assert_eq!(key_from_secret(r#"{"api_key": "sk-ant-2"}"#).as_deref(), Some("sk-ant-2"));
        assert_eq!(key_from_secret(r#"{"ANTHROPIC_API_KEY": "sk-ant-3"}"#).as_deref(), Some("sk-ant-3"));
        assert_eq!(key_from_secret(r#"{"other": "x"}"#), None);
        assert_eq!(key_from_secret("  "), None);
    }
}
