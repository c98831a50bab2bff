//! One typed configuration of the export, read from the environment once at cold start.

use metering_core::config::{whole_number, ConfigError};
use metering_core::pricing::PricingTable;

pub const DEFAULT_LOGS_PREFIX: &str = "logs/";
/// Malformed usage lines a day may have before its export reports failure (`MAX_MALFORMED_LINES`).
pub const DEFAULT_MAX_MALFORMED_LINES: u64 = 100;
/// How far back the scheduled run looks for days without a complete export (`CATCH_UP_DAYS`): the
/// retention of the usage log groups, past which there is nothing left to export.
pub const DEFAULT_CATCH_UP_DAYS: u32 = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// CloudWatch Logs groups holding usage lines (`USAGE_LOG_GROUPS`, comma-separated).
    pub log_groups: Vec<String>,
    /// Bucket of the export (`ANALYTICS_BUCKET`).
    pub bucket: String,
    /// Key prefix above the `year=` partitions (`LOGS_PREFIX`, default `logs/`), always ending in `/`.
    pub prefix: String,
    /// The usage API's price table (`PRICING_JSON` / `PRICING_FILE`, else the built-in `pricing.json`).
    pub pricing: PricingTable,
    pub max_malformed_lines: u64,
    pub catch_up_days: u32,
}

impl ExportConfig {
    /// The given places, the built-in prices and the default limits (tests, benchmarks).
    pub fn new(log_groups: Vec<String>, bucket: &str, prefix: &str) -> Self {
        Self {
            log_groups,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            pricing: PricingTable::builtin(),
            max_malformed_lines: DEFAULT_MAX_MALFORMED_LINES,
            catch_up_days: DEFAULT_CATCH_UP_DAYS,
        }
    }
}

impl ExportConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let groups = non_empty("USAGE_LOG_GROUPS").ok_or(ConfigError::Missing("USAGE_LOG_GROUPS"))?;
        let log_groups: Vec<String> =
            groups.split(',').map(str::trim).filter(|group| !group.is_empty()).map(str::to_owned).collect();
        if log_groups.is_empty() {
            return Err(ConfigError::Invalid {
                name: "USAGE_LOG_GROUPS",
                value: groups,
                reason: "name at least one log group".to_owned(),
            });
        }
        let bucket = non_empty("ANALYTICS_BUCKET").ok_or(ConfigError::Missing("ANALYTICS_BUCKET"))?.trim().to_owned();
        let prefix = normalize_prefix(&non_empty("LOGS_PREFIX").unwrap_or_else(|| DEFAULT_LOGS_PREFIX.to_owned()));
        let (pricing, _) = PricingTable::from_lookup(&lookup).map_err(|error| ConfigError::Invalid {
            name: "PRICING_JSON/PRICING_FILE",
            value: String::new(),
            reason: error.to_string(),
        })?;
        let number = |name: &'static str, default: u64, max: u64| whole_number(name, non_empty(name), default, 0..=max);
        let max_malformed_lines = number("MAX_MALFORMED_LINES", DEFAULT_MAX_MALFORMED_LINES, u64::MAX)?;
        let catch_up_days = number("CATCH_UP_DAYS", u64::from(DEFAULT_CATCH_UP_DAYS), 31)? as u32;
        Ok(Self { log_groups, bucket, prefix, pricing, max_malformed_lines, catch_up_days })
    }
}

/// `logs`, `/logs/`, `logs/` -> `logs/`; the Glue table's location is `s3://<bucket>/<prefix>`.
fn normalize_prefix(raw: &str) -> String {
    let trimmed = raw.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
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
    fn groups_are_split_and_the_prefix_defaults_to_logs() {
        let config = ExportConfig::from_lookup(lookup(&[
            ("USAGE_LOG_GROUPS", " /aws/lambda/a , /aws/lambda/b,"),
            ("ANALYTICS_BUCKET", "bucket"),
        ]))
        .unwrap();
        assert_eq!(config.log_groups, vec!["/aws/lambda/a", "/aws/lambda/b"]);
        assert_eq!(config.prefix, "logs/");
    }

    #[test]
    fn the_prefix_always_ends_with_one_slash() {
        for (raw, expected) in [("exports", "exports/"), ("/a/b/", "a/b/"), ("/", "")] {
            let config =
                ExportConfig::from_lookup(lookup(&[("USAGE_LOG_GROUPS", "g"), ("ANALYTICS_BUCKET", "b"), ("LOGS_PREFIX", raw)]))
                    .unwrap();
            assert_eq!(config.prefix, expected, "LOGS_PREFIX={raw:?}");
        }
    }

    #[test]
    fn limits_and_prices_come_from_the_environment_or_default() {
        let base = [("USAGE_LOG_GROUPS", "g"), ("ANALYTICS_BUCKET", "b")];
        let config = ExportConfig::from_lookup(lookup(&base)).unwrap();
        assert_eq!((config.max_malformed_lines, config.catch_up_days), (100, 30));
        assert_eq!(config.pricing, PricingTable::builtin());
        let prices = r#"{"currency":"USD","as_of":"x","models":{"m":{"input_per_1k":1,"output_per_1k":1}}}"#;
        let config = ExportConfig::from_lookup(lookup(&[
            base[0],
            base[1],
            ("MAX_MALFORMED_LINES", "0"),
            ("CATCH_UP_DAYS", "7"),
            ("PRICING_JSON", prices),
        ]))
        .unwrap();
        assert_eq!((config.max_malformed_lines, config.catch_up_days), (0, 7));
        assert!(config.pricing.price_of("m").is_some());
        for (name, value) in [("CATCH_UP_DAYS", "32"), ("MAX_MALFORMED_LINES", "-1"), ("PRICING_JSON", "{")] {
            let error = ExportConfig::from_lookup(lookup(&[base[0], base[1], (name, value)])).unwrap_err();
            assert!(matches!(error, ConfigError::Invalid { .. }), "{name}={value}: {error:?}");
        }
    }

    #[test]
    fn missing_settings_are_named() {
        let error = ExportConfig::from_lookup(lookup(&[("ANALYTICS_BUCKET", "b")])).unwrap_err();
        assert_eq!(error, ConfigError::Missing("USAGE_LOG_GROUPS"));
        let error = ExportConfig::from_lookup(lookup(&[("USAGE_LOG_GROUPS", "g")])).unwrap_err();
        assert_eq!(error, ConfigError::Missing("ANALYTICS_BUCKET"));
        let error = ExportConfig::from_lookup(lookup(&[("USAGE_LOG_GROUPS", " , "), ("ANALYTICS_BUCKET", "b")]));
        assert!(matches!(error, Err(ConfigError::Invalid { name: "USAGE_LOG_GROUPS", .. })));
    }
}
