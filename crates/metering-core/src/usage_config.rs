//! One typed configuration for the usage function (and the dashboard it serves), read once at cold start.

use crate::config::{whole_number, ConfigError};
use crate::pricing::{PricingError, PricingSource, PricingTable};
use crate::usage_report::CounterRetention;

pub const DEFAULT_ADMIN_GROUP: &str = "admin";

/// What the dashboard page needs to sign a user in (served as `GET /ui/config.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardConfig {
    /// Where the browser sends `InitiateAuth`: Cognito's regional endpoint, or moto's locally.
    pub cognito_endpoint: String,
    /// The user pool's app client (no secret, `USER_PASSWORD_AUTH` allowed); `None` disables sign-in.
    pub cognito_client_id: Option<String>,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageApiConfig {
    /// DynamoDB table of the usage counters.
    pub usage_table_name: String,
    /// Cognito group whose members read every tenant.
    pub admin_group: String,
    /// How long the chat function keeps counter items; only used to warn about older days.
    pub retention: CounterRetention,
    /// `Query` calls in flight at once for the all-tenants list.
    pub query_concurrency: usize,
    pub pricing: PricingTable,
    pub pricing_source: PricingSource,
    pub dashboard: DashboardConfig,
}

impl UsageApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let usage_table_name = non_empty("USAGE_TABLE_NAME").ok_or(ConfigError::Missing("USAGE_TABLE_NAME"))?;
        let admin_group = non_empty("ADMIN_GROUP").unwrap_or_else(|| DEFAULT_ADMIN_GROUP.to_owned());
        let number = |name: &'static str, default: u32, max: u32| whole_number(name, non_empty(name), default, 1..=max);
        let retention = CounterRetention {
            daily_days: number("USAGE_DAILY_TTL_DAYS", 90, 3650)?,
            weekly_days: number("USAGE_WEEKLY_TTL_DAYS", 400, 3650)?,
        };
        let query_concurrency = number("USAGE_QUERY_CONCURRENCY", 8, 64)? as usize;
        let (pricing, pricing_source) = PricingTable::from_lookup(&lookup).map_err(pricing_error)?;
        let region =
            non_empty("AWS_REGION").or_else(|| non_empty("AWS_DEFAULT_REGION")).ok_or(ConfigError::Missing("AWS_REGION"))?;
        // Like the SDK's own endpoint resolution, so the local stack (AWS_ENDPOINT_URL = moto) needs nothing more.
        let cognito_endpoint = non_empty("COGNITO_ENDPOINT")
            .or_else(|| non_empty("AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"))
            .or_else(|| non_empty("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://cognito-idp.{region}.amazonaws.com/"));
        if !(cognito_endpoint.starts_with("https://") || cognito_endpoint.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                name: "COGNITO_ENDPOINT",
                value: cognito_endpoint,
                reason: "must be an http(s) URL".into(),
            });
        }
        Ok(Self {
            usage_table_name,
            admin_group,
            retention,
            query_concurrency,
            pricing,
            pricing_source,
            dashboard: DashboardConfig { cognito_endpoint, cognito_client_id: non_empty("COGNITO_CLIENT_ID"), region },
        })
    }
}

fn pricing_error(error: PricingError) -> ConfigError {
    let name = match &error {
        PricingError::File { .. } => "PRICING_FILE",
        PricingError::Parse { source_name, .. } | PricingError::Invalid { source_name, .. } => {
            if source_name.starts_with("PRICING_FILE") {
                "PRICING_FILE"
            } else {
                "PRICING_JSON"
            }
        }
    };
    ConfigError::Invalid { name, value: String::new(), reason: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_with_only_the_table_and_region() {
        let config = UsageApiConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "usage"), ("AWS_REGION", "eu-west-1")])).unwrap();
        assert_eq!(config.admin_group, "admin");
        assert_eq!(config.retention, CounterRetention { daily_days: 90, weekly_days: 400 });
        assert_eq!(config.pricing_source, PricingSource::Builtin);
        assert_eq!(config.dashboard.cognito_endpoint, "https://cognito-idp.eu-west-1.amazonaws.com/");
        assert_eq!(config.dashboard.cognito_client_id, None);
    }

    #[test]
    fn the_local_stack_points_the_dashboard_at_moto() {
        let config = UsageApiConfig::from_lookup(lookup(&[
            ("USAGE_TABLE_NAME", "usage"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("COGNITO_CLIENT_ID", "abc"),
            ("ADMIN_GROUP", "ops"),
        ]))
        .unwrap();
        assert_eq!(config.dashboard.cognito_endpoint, "http://127.0.0.1:5000");
        assert_eq!(config.dashboard.cognito_client_id.as_deref(), Some("abc"));
        assert_eq!(config.admin_group, "ops");
    }

    #[test]
    fn missing_or_bad_settings_fail_fast_by_name() {
        assert_eq!(UsageApiConfig::from_lookup(lookup(&[("AWS_REGION", "r")])), Err(ConfigError::Missing("USAGE_TABLE_NAME")));
        assert_eq!(UsageApiConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "t")])), Err(ConfigError::Missing("AWS_REGION")));
        let base = [("USAGE_TABLE_NAME", "t"), ("AWS_REGION", "r")];
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = base.to_vec();
            pairs.push(extra);
            UsageApiConfig::from_lookup(lookup(&pairs))
        };
        assert!(matches!(with(("USAGE_DAILY_TTL_DAYS", "0")), Err(ConfigError::Invalid { name: "USAGE_DAILY_TTL_DAYS", .. })));
        assert!(matches!(with(("PRICING_JSON", "{")), Err(ConfigError::Invalid { name: "PRICING_JSON", .. })));
        assert!(matches!(with(("PRICING_FILE", "/nope.json")), Err(ConfigError::Invalid { name: "PRICING_FILE", .. })));
        assert!(matches!(with(("COGNITO_ENDPOINT", "cognito")), Err(ConfigError::Invalid { name: "COGNITO_ENDPOINT", .. })));
    }
}
