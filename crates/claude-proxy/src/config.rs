//! One typed configuration of the proxy function, read from the environment once at cold start.
//! Every variable is listed in the crate README; a bad value stops the start with its name.

use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::time::Duration;

use metering_core::config::{whole_number, ConfigError, MeteringConfig};
use metering_core::pricing::PricingTable;

use crate::model_resolution::{geographies_for_region, DiscoverySettings, Family, PROFILE_GEOGRAPHIES};
use crate::rate_limits::RateLimitScope;

pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// Anthropic model ids and the Bedrock inference profiles that serve them when Anthropic answers 429.
/// US cross-region profiles; deployments elsewhere set `BEDROCK_MODEL_MAP` (eu., apac., global., ...).
pub const DEFAULT_MODEL_MAP: [(&str, &str); 14] = [
    ("claude-opus-4-5-20251101", "us.anthropic.claude-opus-4-5-20251101-v1:0"),
    ("claude-opus-4-5", "us.anthropic.claude-opus-4-5-20251101-v1:0"),
    ("claude-sonnet-4-5-20250929", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("claude-sonnet-4-5", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("claude-haiku-4-5-20251001", "us.anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("claude-haiku-4-5", "us.anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("claude-opus-4-1-20250805", "us.anthropic.claude-opus-4-1-20250805-v1:0"),
    ("claude-opus-4-1", "us.anthropic.claude-opus-4-1-20250805-v1:0"),
    ("claude-opus-4-20250514", "us.anthropic.claude-opus-4-20250514-v1:0"),
    ("claude-sonnet-4-20250514", "us.anthropic.claude-sonnet-4-20250514-v1:0"),
    ("claude-sonnet-4-0", "us.anthropic.claude-sonnet-4-20250514-v1:0"),
    ("claude-3-7-sonnet-20250219", "us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
    ("claude-3-5-haiku-20241022", "us.anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("claude-3-haiku-20240307", "us.anthropic.claude-3-haiku-20240307-v1:0"),
];

/// `anthropic-beta` values Bedrock accepts (as `anthropic_beta` in the body); any other is dropped before
/// Bedrock, which rejects unknown betas.
pub const DEFAULT_BEDROCK_BETAS: [&str; 7] = [
    "computer-use-2025-01-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
];

/// Whose Anthropic credentials the proxy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialMode {
    /// The client presents the gateway key (`x-api-key` or `Authorization: Bearer`); the proxy calls
    /// Anthropic with the provider's own key.
    Managed,
    /// The client's own `x-api-key` / `Authorization` go to Anthropic untouched; the gateway key comes in
    /// `x-gateway-key`.
    Passthrough,
}

impl CredentialMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Managed => "managed",
            Self::Passthrough => "passthrough",
        }
    }
}

/// Where the provider's Anthropic key comes from (managed mode only).
#[derive(Clone)]
pub enum ProviderKeySource {
    /// `ANTHROPIC_API_KEY` (local stack, tests).
    Environment(SecretString),
    /// `ANTHROPIC_API_KEY_SECRET_ID`: a Secrets Manager secret (name or ARN) whose string is the key, or a
    /// JSON object with an `api_key` field.
    SecretsManager(String),
}

impl PartialEq for ProviderKeySource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Environment(mine), Self::Environment(theirs)) => mine.expose_secret() == theirs.expose_secret(),
            (Self::SecretsManager(mine), Self::SecretsManager(theirs)) => mine == theirs,
            _ => false,
        }
    }
}

impl std::fmt::Debug for ProviderKeySource {
    // Never print the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Environment(_) => f.write_str("Environment(<redacted>)"),
            Self::SecretsManager(id) => f.debug_tuple("SecretsManager").field(id).finish(),
        }
    }
}

/// Which Anthropic answers send the request to Bedrock instead (429 always, when fallback is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackPolicy {
    pub enabled: bool,
    pub on_overloaded: bool,
    pub on_server_error: bool,
}

impl FallbackPolicy {
    pub fn applies_to(&self, status: http::StatusCode) -> bool {
        if !self.enabled {
            return false;
        }
        match status.as_u16() {
            429 => true,
            529 => self.on_overloaded,
            500..=599 => self.on_server_error,
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        if !self.enabled {
            return "off".to_owned();
        }
        let mut statuses = vec!["429"];
        if self.on_overloaded {
            statuses.push("529");
        }
        if self.on_server_error {
            statuses.push("5xx");
        }
        format!("on ({})", statuses.join(","))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub usage_table_name: String,
    pub daily_ttl: Duration,
    pub weekly_ttl: Duration,
    /// DynamoDB table of the tenant API keys.
    pub api_key_table_name: String,
    /// How long a verified key is remembered in memory (0 = every request reads the table, so a revoked
    /// key stops working at once).
    pub api_key_cache: Duration,
    /// DynamoDB table of the rate-limit memory; `None` turns the memory off.
    pub rate_limit_table_name: Option<String>,
    pub rate_limit_scope: RateLimitScope,
    /// `retry-after` assumed when an Anthropic 429 carries none.
    pub default_retry_after_seconds: u64,
    pub anthropic_base_url: String,
    pub credential_mode: CredentialMode,
    pub provider_key: Option<ProviderKeySource>,
    pub anthropic_timeout: Duration,
    pub fallback: FallbackPolicy,
    /// Anthropic model id -> Bedrock model or inference profile id (checked first).
    pub model_map: BTreeMap<String, String>,
    /// Model discovery through `ListInferenceProfiles` (`None` = off), for ids the map does not name.
    pub model_discovery: Option<DiscoverySettings>,
    /// The Bedrock id per family for ids neither the map nor discovery resolve.
    pub family_fallback: BTreeMap<Family, String>,
    pub bedrock_timeout: Duration,
    pub bedrock_allowed_betas: Vec<String>,
    /// `FORCE_RATE_LIMIT_TEST=true`: every Anthropic call behaves as a 429 with this `retry-after`.
    pub forced_rate_limit_retry_after: Option<u64>,
    /// Largest request body accepted (API Gateway's own limit is 10 MB).
    pub max_body_bytes: usize,
    /// `ON_CLIENT_DISCONNECT`: `finish` (read the stream to its end, exact usage) or `abort` (estimated).
    pub on_client_disconnect: crate::streaming::ClientDisconnect,
    /// Counter timeout, drain bound and counter interval of metering (`METERING_COUNTER_TIMEOUT_MS`,
    /// `METERING_DRAIN_TIMEOUT_MS`, `METERING_COUNTER_INTERVAL_MS`).
    pub metering: MeteringConfig,
    /// Prices of `GET /v1/gateway-key/usage/me`'s estimated cost: the usage function's table (`PRICING_JSON`,
    /// `PRICING_FILE`, else the built-in one).
    pub pricing: PricingTable,
}

impl ProxyConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let required = |name: &'static str| text(name).ok_or(ConfigError::Missing(name));
        let number = |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            whole_number(name, text(name), default, range)
        };
        let flag = |name: &'static str, default: bool| parse_flag(name, text(name), default);

        let credential_mode = match text("ANTHROPIC_CREDENTIAL_MODE").as_deref() {
            None | Some("managed") => CredentialMode::Managed,
            Some("passthrough") => CredentialMode::Passthrough,
            Some(other) => return Err(invalid("ANTHROPIC_CREDENTIAL_MODE", other, "expected managed or passthrough")),
        };
        let provider_key = match (text("ANTHROPIC_API_KEY"), text("ANTHROPIC_API_KEY_SECRET_ID")) {
            (Some(key), _) => Some(ProviderKeySource::Environment(SecretString::from(key))),
            (None, Some(secret_id)) => Some(ProviderKeySource::SecretsManager(secret_id)),
            (None, None) => None,
        };
        if credential_mode == CredentialMode::Managed && provider_key.is_none() {
            return Err(ConfigError::Missing("ANTHROPIC_API_KEY_SECRET_ID (or ANTHROPIC_API_KEY) in managed mode"));
        }
        let anthropic_base_url = text("ANTHROPIC_BASE_URL").unwrap_or_else(|| DEFAULT_ANTHROPIC_BASE_URL.to_owned());
        if !(anthropic_base_url.starts_with("https://") || anthropic_base_url.starts_with("http://")) {
            return Err(invalid("ANTHROPIC_BASE_URL", &anthropic_base_url, "must start with https:// or http://"));
        }
        let fallback = parse_fallback(flag("BEDROCK_FALLBACK", true)?, text("FALLBACK_ON"))?;
        let model_map = match text("BEDROCK_MODEL_MAP") {
            None => DEFAULT_MODEL_MAP.iter().map(|(from, to)| ((*from).to_owned(), (*to).to_owned())).collect(),
            Some(json) => parse_model_map(&json)?,
        };
        let model_discovery = if flag("BEDROCK_MODEL_DISCOVERY", true)? {
            let geographies = match text("BEDROCK_PROFILE_GEOGRAPHIES") {
                Some(list) => parse_geographies(&list)?,
                None => geographies_for_region(text("AWS_REGION").as_deref().unwrap_or_default()),
            };
            Some(DiscoverySettings {
                geographies,
                cache_for: Duration::from_secs(number("BEDROCK_PROFILE_CACHE_SECONDS", 3600, 1..=86_400)?),
                refresh_on_miss_after: Duration::from_secs(number("BEDROCK_PROFILE_REFRESH_ON_MISS_SECONDS", 60, 0..=86_400)?),
            })
        } else {
            None
        };
        let family_fallback = match text("BEDROCK_FAMILY_FALLBACK") {
            None => BTreeMap::new(),
            Some(json) => parse_family_fallback(&json)?,
        };
        let bedrock_allowed_betas = match text("BEDROCK_ALLOWED_BETAS") {
            None => DEFAULT_BEDROCK_BETAS.iter().map(|beta| (*beta).to_owned()).collect(),
            Some(list) => list.split(',').map(str::trim).filter(|beta| !beta.is_empty()).map(str::to_owned).collect(),
        };
        let rate_limit_scope = match text("RATE_LIMIT_SCOPE").as_deref() {
            None | Some("user") => RateLimitScope::User,
            Some("tenant") => RateLimitScope::Tenant,
            Some("deployment") => RateLimitScope::Deployment,
            Some(other) => return Err(invalid("RATE_LIMIT_SCOPE", other, "expected user, tenant or deployment")),
        };
        let rate_limit_table_name = if flag("RATE_LIMIT_TRACKING", true)? { text("RATE_LIMIT_TABLE_NAME") } else { None };
        let forced_rate_limit_retry_after = if flag("FORCE_RATE_LIMIT_TEST", false)? {
            Some(number("FORCE_RATE_LIMIT_RETRY_AFTER", 60, 1..=86_400)?)
        } else {
            None
        };
        Ok(Self {
            usage_table_name: required("USAGE_TABLE_NAME")?,
            daily_ttl: Duration::from_secs(number("USAGE_DAILY_TTL_DAYS", 90, 1..=3650)? * 86_400),
            weekly_ttl: Duration::from_secs(number("USAGE_WEEKLY_TTL_DAYS", 400, 1..=3650)? * 86_400),
            api_key_table_name: required("API_KEY_TABLE_NAME")?,
            api_key_cache: Duration::from_secs(number("API_KEY_CACHE_SECONDS", 0, 0..=3600)?),
            rate_limit_table_name,
            rate_limit_scope,
            default_retry_after_seconds: number("RATE_LIMIT_DEFAULT_RETRY_AFTER", 30, 1..=86_400)?,
            anthropic_base_url: anthropic_base_url.trim_end_matches('/').to_owned(),
            credential_mode,
            provider_key,
            anthropic_timeout: Duration::from_millis(number("ANTHROPIC_TIMEOUT_MS", 600_000, 1_000..=900_000)?),
            fallback,
            model_map,
            model_discovery,
            family_fallback,
            bedrock_timeout: Duration::from_millis(number("BEDROCK_TIMEOUT_MS", 600_000, 100..=900_000)?),
            bedrock_allowed_betas,
            forced_rate_limit_retry_after,
            max_body_bytes: number("MAX_REQUEST_BYTES", 10 * 1024 * 1024, 1024..=64 * 1024 * 1024)? as usize,
            metering: MeteringConfig::from_lookup(&lookup)?,
            pricing: PricingTable::from_lookup(&lookup)
                .map_err(|error| invalid("PRICING_JSON or PRICING_FILE", "", &error.to_string()))?
                .0,
            on_client_disconnect: match text("ON_CLIENT_DISCONNECT") {
                None => crate::streaming::ClientDisconnect::default(),
                Some(value) => crate::streaming::ClientDisconnect::parse(&value)
                    .ok_or_else(|| invalid("ON_CLIENT_DISCONNECT", &value, "expected finish or abort"))?,
            },
        })
    }

    /// The start-up log line's summary of which modes are on.
    pub fn log_start(&self) {
        tracing::info!(
            credential_mode = self.credential_mode.as_str(),
            anthropic_base_url = %self.anthropic_base_url,
            fallback = %self.fallback.describe(),
            mapped_models = self.model_map.len(),
            model_discovery = %match &self.model_discovery {
                Some(discovery) => format!("on (geographies {})", discovery.geographies.join(",")),
                None => "off".to_owned(),
            },
            family_fallback = %self.family_fallback.iter().map(|(family, id)| format!("{}={id}", family.as_str())).collect::<Vec<_>>().join(","),
            tracking = %match &self.rate_limit_table_name {
                Some(table) => format!("on (table {table}, scope {})", self.rate_limit_scope.as_str()),
                None => "off".to_owned(),
            },
            forced_429 = %match self.forced_rate_limit_retry_after {
                Some(seconds) => format!("ON: every Anthropic call behaves as a 429 (retry-after {seconds}s)"),
                None => "off".to_owned(),
            },
            api_key_cache_seconds = self.api_key_cache.as_secs(),
            on_client_disconnect = self.on_client_disconnect.as_str(),
            "claude proxy configured"
        );
    }
}

fn invalid(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { name, value: value.to_owned(), reason: reason.to_owned() }
}

fn parse_flag(name: &'static str, value: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(invalid(name, other, "expected true or false")),
    }
}

fn parse_fallback(enabled: bool, statuses: Option<String>) -> Result<FallbackPolicy, ConfigError> {
    let mut policy = FallbackPolicy { enabled, on_overloaded: false, on_server_error: false };
    for status in statuses.as_deref().unwrap_or("429").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match status {
            "429" => {}
            "529" => policy.on_overloaded = true,
            "5xx" => policy.on_server_error = true,
            other => return Err(invalid("FALLBACK_ON", other, "expected a comma-separated list of 429, 529, 5xx")),
        }
    }
    Ok(policy)
}

fn parse_model_map(json: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let map: BTreeMap<String, String> = serde_json::from_str(json).map_err(|error| {
        invalid("BEDROCK_MODEL_MAP", json, &format!("expected a JSON object of model id -> Bedrock id: {error}"))
    })?;
    if let Some((from, _)) = map.iter().find(|(from, to)| from.trim().is_empty() || to.trim().is_empty()) {
        return Err(invalid("BEDROCK_MODEL_MAP", json, &format!("empty model id in the entry for {from:?}")));
    }
    Ok(map)
}

fn parse_geographies(list: &str) -> Result<Vec<String>, ConfigError> {
    let geographies: Vec<String> = list.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect();
    match geographies.iter().find(|geography| !PROFILE_GEOGRAPHIES.contains(&geography.as_str())) {
        _ if geographies.is_empty() => Err(invalid("BEDROCK_PROFILE_GEOGRAPHIES", list, "no geography given")),
        Some(unknown) => Err(invalid(
            "BEDROCK_PROFILE_GEOGRAPHIES",
            unknown,
            &format!("expected a comma-separated list of {}", PROFILE_GEOGRAPHIES.join(", ")),
        )),
        None => Ok(geographies),
    }
}

fn parse_family_fallback(json: &str) -> Result<BTreeMap<Family, String>, ConfigError> {
    let raw: BTreeMap<String, String> = serde_json::from_str(json).map_err(|error| {
        invalid("BEDROCK_FAMILY_FALLBACK", json, &format!("expected a JSON object of family -> Bedrock id: {error}"))
    })?;
    raw.into_iter()
        .map(|(family, id)| match Family::parse(&family) {
            Some(parsed) if !id.trim().is_empty() => Ok((parsed, id)),
            Some(_) => Err(invalid("BEDROCK_FAMILY_FALLBACK", json, &format!("empty Bedrock id for {family}"))),
            None => Err(invalid("BEDROCK_FAMILY_FALLBACK", &family, "expected the families opus, sonnet, haiku")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut map: HashMap<String, String> =
            [("USAGE_TABLE_NAME", "usage"), ("API_KEY_TABLE_NAME", "keys"), ("ANTHROPIC_API_KEY", "sk-ant-provider")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        for (k, v) in pairs {
            map.insert(k.to_string(), v.to_string());
        }
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_are_managed_with_fallback_on_429_only() {
        let config = ProxyConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(config.credential_mode, CredentialMode::Managed);
        assert_eq!(config.anthropic_base_url, DEFAULT_ANTHROPIC_BASE_URL);
        assert!(config.fallback.applies_to(http::StatusCode::TOO_MANY_REQUESTS));
        assert!(!config.fallback.applies_to(http::StatusCode::from_u16(529).unwrap()));
        assert!(!config.fallback.applies_to(http::StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(config.rate_limit_table_name, None);
        assert_eq!(config.forced_rate_limit_retry_after, None);
        assert_eq!(config.model_map["claude-sonnet-4-5-20250929"], "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
    }

    #[test]
    fn managed_mode_needs_a_provider_key_and_passthrough_does_not() {
        let without_key = |pairs: &[(&str, &str)]| {
            let base = lookup(pairs);
            move |name: &str| if name == "ANTHROPIC_API_KEY" { None } else { base(name) }
        };
        assert!(matches!(ProxyConfig::from_lookup(without_key(&[])), Err(ConfigError::Missing(_))));
        let passthrough = ProxyConfig::from_lookup(without_key(&[("ANTHROPIC_CREDENTIAL_MODE", "passthrough")])).unwrap();
        assert_eq!(passthrough.provider_key, None);
    }

    #[test]
    fn overloaded_and_server_errors_are_chosen_apart() {
        use http::StatusCode;
        let overloaded = StatusCode::from_u16(529).unwrap();
        let only_529 = FallbackPolicy { enabled: true, on_overloaded: true, on_server_error: false };
        assert!(only_529.applies_to(overloaded), "FALLBACK_ON=429,529: a 529 falls back");
        assert!(!only_529.applies_to(StatusCode::INTERNAL_SERVER_ERROR));
        let only_5xx = FallbackPolicy { enabled: true, on_overloaded: false, on_server_error: true };
        assert!(!only_5xx.applies_to(overloaded), "FALLBACK_ON=429,5xx: 529 is not one of the 5xx");
        assert!(only_5xx.applies_to(StatusCode::SERVICE_UNAVAILABLE));
        let off = FallbackPolicy { enabled: false, on_overloaded: true, on_server_error: true };
        assert!(!off.applies_to(StatusCode::TOO_MANY_REQUESTS) && !off.applies_to(overloaded));
    }

    #[test]
    fn fallback_statuses_forced_mode_and_tracking_are_configurable() {
        let config = ProxyConfig::from_lookup(lookup(&[
            ("FALLBACK_ON", "429, 529,5xx"),
            ("FORCE_RATE_LIMIT_TEST", "true"),
            ("RATE_LIMIT_TABLE_NAME", "limits"),
        ]))
        .unwrap();
        assert!(config.fallback.applies_to(http::StatusCode::from_u16(529).unwrap()));
        assert!(config.fallback.applies_to(http::StatusCode::BAD_GATEWAY));
        assert!(!config.fallback.applies_to(http::StatusCode::BAD_REQUEST));
        assert_eq!(config.forced_rate_limit_retry_after, Some(60));
        assert_eq!(config.rate_limit_table_name.as_deref(), Some("limits"));
        let off =
            ProxyConfig::from_lookup(lookup(&[("RATE_LIMIT_TABLE_NAME", "limits"), ("RATE_LIMIT_TRACKING", "false")])).unwrap();
        assert_eq!(off.rate_limit_table_name, None);
        let disabled = ProxyConfig::from_lookup(lookup(&[("BEDROCK_FALLBACK", "false")])).unwrap();
        assert!(!disabled.fallback.applies_to(http::StatusCode::TOO_MANY_REQUESTS));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("FALLBACK_ON", "404"),
            ("BEDROCK_MODEL_MAP", "not json"),
            ("ANTHROPIC_CREDENTIAL_MODE", "both"),
            ("FORCE_RATE_LIMIT_TEST", "maybe"),
            ("ANTHROPIC_BASE_URL", "api.anthropic.com"),
            ("BEDROCK_PROFILE_GEOGRAPHIES", "us,mars"),
            ("BEDROCK_FAMILY_FALLBACK", r#"{"poem": "x"}"#),
            ("BEDROCK_MODEL_DISCOVERY", "perhaps"),
        ] {
            let error = ProxyConfig::from_lookup(lookup(&[(name, value)])).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn the_provider_key_never_shows_in_debug_output() {
        let config = ProxyConfig::from_lookup(lookup(&[])).unwrap();
        assert!(!format!("{config:?}").contains("sk-ant-provider"));
    }

    #[test]
    fn a_model_map_replaces_the_default() {
        let config =
            ProxyConfig::from_lookup(lookup(&[("BEDROCK_MODEL_MAP", r#"{"claude-x": "eu.anthropic.x-v1:0"}"#)])).unwrap();
        assert_eq!(config.model_map.len(), 1);
        assert_eq!(config.model_map["claude-x"], "eu.anthropic.x-v1:0");
    }

    #[test]
    fn discovery_is_on_by_default_in_the_region_geography_and_configurable() {
        let default = ProxyConfig::from_lookup(lookup(&[("AWS_REGION", "eu-west-1")])).unwrap();
        let discovery = default.model_discovery.unwrap();
        assert_eq!(discovery.geographies, ["eu", "global"]);
        assert_eq!(discovery.cache_for, Duration::from_secs(3600));
        assert!(default.family_fallback.is_empty());
        let configured = ProxyConfig::from_lookup(lookup(&[
            ("BEDROCK_PROFILE_GEOGRAPHIES", "global, us"),
            ("BEDROCK_FAMILY_FALLBACK", r#"{"opus": "global.anthropic.claude-opus-4-8-20260915-v1:0"}"#),
        ]))
        .unwrap();
        assert_eq!(configured.model_discovery.unwrap().geographies, ["global", "us"]);
        assert_eq!(configured.family_fallback[&Family::Opus], "global.anthropic.claude-opus-4-8-20260915-v1:0");
        let off = ProxyConfig::from_lookup(lookup(&[("BEDROCK_MODEL_DISCOVERY", "false")])).unwrap();
        assert_eq!(off.model_discovery, None);
    }
}
