//! One typed configuration of the export, read from the environment once at cold start.

use metering_core::config::ConfigError;

pub const DEFAULT_LOGS_PREFIX: &str = "logs/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// CloudWatch Logs groups holding usage lines (`USAGE_LOG_GROUPS`, comma-separated).
    pub log_groups: Vec<String>,
    /// Bucket of the export (`ANALYTICS_BUCKET`).
    pub bucket: String,
    /// Key prefix above the `year=` partitions (`LOGS_PREFIX`, default `logs/`), always ending in `/`.
    pub prefix: String,
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
        Ok(Self { log_groups, bucket, prefix })
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
            let config = ExportConfig::from_lookup(lookup(&[
                ("USAGE_LOG_GROUPS", "g"),
                ("ANALYTICS_BUCKET", "b"),
                ("LOGS_PREFIX", raw),
            ]))
            .unwrap();
            assert_eq!(config.prefix, expected, "LOGS_PREFIX={raw:?}");
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
