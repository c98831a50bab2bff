//! One typed configuration for the chat function, read from the environment once at cold start.

use std::time::Duration;

use thiserror::Error;

pub const DEFAULT_MODEL_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} has an invalid value {value:?}: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// Bedrock model id (or inference profile id) every chat request goes to.
    pub model_id: String,
    /// DynamoDB table of the usage counters.
    pub usage_table_name: String,
    /// How long daily counter items live (DynamoDB TTL).
    pub daily_ttl: Duration,
    /// How long weekly counter items live (DynamoDB TTL).
    pub weekly_ttl: Duration,
    /// Upper bound of one Bedrock call, retries included; past it the tenant gets 504.
    pub bedrock_timeout: Duration,
    /// Attempts per Bedrock call (1 = no retry).
    pub bedrock_max_attempts: u32,
    /// Seconds advertised in `Retry-After` when Bedrock throttles without saying how long to wait.
    pub throttle_retry_after_seconds: u64,
    /// Bounds of the counter updates behind the usage lines.
    pub metering: MeteringConfig,
    /// Tenant limits (README "Budgets and quotas").
    pub limits: crate::limits::config::LimitsConfig,
}

/// Time bounds of metering, shared by every function that meters (chat, proxy, local server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeteringConfig {
    /// How long one request's (or batch's) counter update is retried before its outcome is reported as
    /// `failed` or `unknown` (`METERING_COUNTER_TIMEOUT_MS`, default 10 s).
    pub counter_timeout: Duration,
    /// How long a flush, and the drain at shutdown, wait for pending counter updates
    /// (`METERING_DRAIN_TIMEOUT_MS`, default 20 s: under Lambda's and the local server's shutdown budgets).
    pub drain_timeout: Duration,
    /// The least time between the starts of two counter writes of one counter key (tenant, request type,
    /// model, day) in a long-running process; what arrives in between is coalesced into the next write. A
    /// key's first write after a quiet interval and every flush go at once (`METERING_COUNTER_INTERVAL_MS`,
    /// default 250 ms, so counters stay within a second of the requests; 0 = write as soon as a slot is free).
    pub counter_interval: Duration,
}

/// Default of [`MeteringConfig::counter_timeout`]; the CDK's timeout budget reads it from here
/// (`infra/lib/lambda/timeout-budget.ts`).
pub const DEFAULT_COUNTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`MeteringConfig::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default of [`MeteringConfig::counter_interval`].
pub const DEFAULT_COUNTER_INTERVAL: Duration = Duration::from_millis(250);

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            counter_timeout: DEFAULT_COUNTER_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            counter_interval: DEFAULT_COUNTER_INTERVAL,
        }
    }
}

impl MeteringConfig {
    /// Reads `METERING_COUNTER_TIMEOUT_MS`, `METERING_DRAIN_TIMEOUT_MS` and `METERING_COUNTER_INTERVAL_MS`
    /// through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let defaults = Self::default();
        let millis = |name: &'static str, default: Duration, range| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(whole_number(name, non_empty(name), default.as_millis() as u64, range)?))
        };
        Ok(Self {
            counter_timeout: millis("METERING_COUNTER_TIMEOUT_MS", defaults.counter_timeout, 100..=600_000)?,
            drain_timeout: millis("METERING_DRAIN_TIMEOUT_MS", defaults.drain_timeout, 100..=600_000)?,
            counter_interval: millis("METERING_COUNTER_INTERVAL_MS", defaults.counter_interval, 0..=60_000)?,
        })
    }
}

impl ChatConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let model_id = non_empty("BEDROCK_MODEL_ID").unwrap_or_else(|| DEFAULT_MODEL_ID.to_owned());
        let usage_table_name = non_empty("USAGE_TABLE_NAME").ok_or(ConfigError::Missing("USAGE_TABLE_NAME"))?;
        let days = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            let value = whole_number(name, non_empty(name), default, 1..=3650)?;
            Ok(Duration::from_secs(value * 86_400))
        };
        Ok(Self {
            model_id,
            usage_table_name,
            daily_ttl: days("USAGE_DAILY_TTL_DAYS", 90)?,
            weekly_ttl: days("USAGE_WEEKLY_TTL_DAYS", 400)?,
            bedrock_timeout: Duration::from_millis(whole_number(
                "BEDROCK_TIMEOUT_MS",
                non_empty("BEDROCK_TIMEOUT_MS"),
                60_000,
                100..=900_000,
            )?),
            bedrock_max_attempts: whole_number("BEDROCK_MAX_ATTEMPTS", non_empty("BEDROCK_MAX_ATTEMPTS"), 2, 1..=5)? as u32,
            throttle_retry_after_seconds: whole_number(
                "THROTTLE_RETRY_AFTER_SECONDS",
                non_empty("THROTTLE_RETRY_AFTER_SECONDS"),
                5,
                1..=3600,
            )?,
            metering: MeteringConfig::from_lookup(&lookup)?,
            limits: crate::limits::config::LimitsConfig::from_lookup(&lookup)?,
        })
    }
}

/// The one reader of a numeric setting, for every function: unset (`None`) is `default`; otherwise exactly a whole
/// number (digits only: no sign, no blanks) within `range`, else the error that names the variable, its value and
/// the range.
pub fn whole_number<T>(
    name: &'static str,
    value: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(value) = value else { return Ok(default) };
    let digits_only = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    match value.parse::<T>() {
        Ok(parsed) if digits_only && range.contains(&parsed) => Ok(parsed),
        _ => Err(ConfigError::Invalid {
            name,
            reason: format!("must be a whole number from {} to {}", range.start(), range.end()),
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_numeric_setting_is_read_by_one_rule() {
        let read = |value: Option<&str>| whole_number("N", value.map(str::to_owned), 7u64, 1..=10);
        assert_eq!(read(None), Ok(7));
        assert_eq!(read(Some("1")), Ok(1));
        assert_eq!(read(Some("10")), Ok(10));
        for refused in ["0", "11", "", " 5", "5 ", "+5", "-1", "5.0", "1e1", "five", "99999999999999999999999"] {
            let error = read(Some(refused)).unwrap_err();
            assert_eq!(
                error,
                ConfigError::Invalid {
                    name: "N",
                    value: refused.to_owned(),
                    reason: "must be a whole number from 1 to 10".into()
                },
                "{refused:?}"
            );
        }
        assert_eq!(whole_number("M", Some("3".into()), 1u32, 0..=3), Ok(3u32));
    }
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_apply_when_only_the_table_is_set() {
        let config = ChatConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "usage")])).unwrap();
        assert_eq!(config.model_id, DEFAULT_MODEL_ID);
        assert_eq!(config.daily_ttl, Duration::from_secs(90 * 86_400));
        assert_eq!(config.bedrock_timeout, Duration::from_secs(60));
        assert_eq!(config.metering.drain_timeout, Duration::from_secs(20));
        assert_eq!(config.metering.counter_interval, Duration::from_millis(250));
    }

    #[test]
    fn the_metering_bounds_are_configurable_and_checked() {
        let config = ChatConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "t"), ("METERING_DRAIN_TIMEOUT_MS", "3000")]));
        assert_eq!(config.unwrap().metering.drain_timeout, Duration::from_secs(3));
        let zero = ChatConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "t"), ("METERING_COUNTER_TIMEOUT_MS", "0")]));
        assert!(matches!(zero, Err(ConfigError::Invalid { name: "METERING_COUNTER_TIMEOUT_MS", .. })));
        let no_interval = ChatConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "t"), ("METERING_COUNTER_INTERVAL_MS", "0")]));
        assert_eq!(no_interval.unwrap().metering.counter_interval, Duration::ZERO);
        let too_long = ChatConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "t"), ("METERING_COUNTER_INTERVAL_MS", "60001")]));
        assert!(matches!(too_long, Err(ConfigError::Invalid { name: "METERING_COUNTER_INTERVAL_MS", .. })));
    }

    #[test]
    fn missing_table_fails_fast_with_its_name() {
        let error = ChatConfig::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(error, ConfigError::Missing("USAGE_TABLE_NAME"));
        assert!(error.to_string().contains("USAGE_TABLE_NAME"));
    }

    #[test]
    fn out_of_range_or_garbage_numbers_are_refused() {
        let garbage = ChatConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "t"), ("BEDROCK_TIMEOUT_MS", "soon")]));
        assert!(matches!(garbage, Err(ConfigError::Invalid { name: "BEDROCK_TIMEOUT_MS", .. })));
        let zero_ttl = ChatConfig::from_lookup(lookup(&[("USAGE_TABLE_NAME", "t"), ("USAGE_DAILY_TTL_DAYS", "0")]));
        assert!(matches!(zero_ttl, Err(ConfigError::Invalid { name: "USAGE_DAILY_TTL_DAYS", .. })));
    }
}
