//! The limits' settings, shared by every function that enforces or serves limits (chat, proxy, usage API,
//! local server), read once at start-up.

use std::time::Duration;

use super::lease::LeaseSettings;
use crate::config::{whole_number, ConfigError};

/// What a request gets when the limits store cannot be read or written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Admit it, unlimited, with a `limits_unavailable` warning in the log (the default).
    #[default]
    Open,
    /// Refuse it with 503.
    Closed,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `LIMITS_ENABLED` (default `true`): `false` skips every check (no DynamoDB call at all).
    pub enabled: bool,
    /// `LIMITS_FAIL_MODE`: `open` (default) or `closed`.
    pub fail_mode: FailMode,
    /// `LIMITS_CACHE_SECONDS` (default 30, at most 30): how long a tenant's limits are kept in memory.
    pub cache_ttl: Duration,
    /// `LIMITS_ALERT_THRESHOLDS` (default `50,80,100`): percentages of a budget that raise an event.
    pub alert_thresholds: Vec<u32>,
    /// `LIMITS_EVENT_BUS_NAME` (default `default`): the EventBridge bus of `BudgetThresholdCrossed`;
    /// `none` turns alerts off.
    pub event_bus_name: Option<String>,
    /// `LIMITS_STORE_TIMEOUT_MS` (default 1500, 100 to 30000): how long the hot path waits for a limits read or
    /// a reservation before the fail mode decides.
    pub store_timeout: Duration,
    /// `LIMITS_LEASE_REQUESTS`, `LIMITS_LEASE_SHARE_PERCENT`, `LIMITS_LEASE_IDLE_MS`: budget reserved in
    /// advance by a process serving concurrent requests (off by default; see `lease`).
    pub lease: LeaseSettings,
}

pub const DEFAULT_ALERT_THRESHOLDS: [u32; 3] = [50, 80, 100];
pub const MAX_CACHE_SECONDS: u64 = 30;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            fail_mode: FailMode::Open,
            cache_ttl: Duration::from_secs(MAX_CACHE_SECONDS),
            alert_thresholds: DEFAULT_ALERT_THRESHOLDS.to_vec(),
            event_bus_name: Some("default".to_owned()),
            store_timeout: Duration::from_millis(1500),
            lease: LeaseSettings::default(),
        }
    }
}

impl LimitsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let invalid =
            |name: &'static str, value: String, reason: &str| ConfigError::Invalid { name, value, reason: reason.to_owned() };
        let defaults = Self::default();
        let enabled = match non_empty("LIMITS_ENABLED").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(invalid("LIMITS_ENABLED", other.to_owned(), "must be true or false")),
        };
        let fail_mode = match non_empty("LIMITS_FAIL_MODE").as_deref() {
            None | Some("open") => FailMode::Open,
            Some("closed") => FailMode::Closed,
            Some(other) => return Err(invalid("LIMITS_FAIL_MODE", other.to_owned(), "must be open or closed")),
        };
        let cache_ttl = Duration::from_secs(whole_number(
            "LIMITS_CACHE_SECONDS",
            non_empty("LIMITS_CACHE_SECONDS"),
            defaults.cache_ttl.as_secs(),
            0..=MAX_CACHE_SECONDS,
        )?);
        let alert_thresholds = match non_empty("LIMITS_ALERT_THRESHOLDS") {
            None => defaults.alert_thresholds,
            Some(value) => {
                let parsed: Result<Vec<u32>, _> = value.split(',').map(|part| part.trim().parse::<u32>()).collect();
                match parsed {
                    Ok(mut thresholds) if thresholds.iter().all(|t| (1..=1000).contains(t)) => {
                        thresholds.sort_unstable();
                        thresholds.dedup();
                        thresholds
                    }
                    _ => {
                        return Err(invalid(
                            "LIMITS_ALERT_THRESHOLDS",
                            value,
                            "must be comma-separated whole percentages from 1 to 1000, like 50,80,100",
                        ))
                    }
                }
            }
        };
        let event_bus_name = match non_empty("LIMITS_EVENT_BUS_NAME") {
            None => defaults.event_bus_name,
            Some(value) if value == "none" => None,
            Some(value) => Some(value),
        };
        let store_timeout = Duration::from_millis(whole_number(
            "LIMITS_STORE_TIMEOUT_MS",
            non_empty("LIMITS_STORE_TIMEOUT_MS"),
            defaults.store_timeout.as_millis() as u64,
            100..=30_000,
        )?);
        let whole = |name: &'static str, range: std::ops::RangeInclusive<u64>, default: u64| {
            whole_number(name, non_empty(name), default, range)
        };
        let lease = LeaseSettings {
            requests: whole("LIMITS_LEASE_REQUESTS", 0..=1000, defaults.lease.requests)?,
            share_percent: whole("LIMITS_LEASE_SHARE_PERCENT", 1..=100, defaults.lease.share_percent)?,
            idle: Duration::from_millis(whole("LIMITS_LEASE_IDLE_MS", 100..=60_000, defaults.lease.idle.as_millis() as u64)?),
        };
        Ok(Self { enabled, fail_mode, cache_ttl, alert_thresholds, event_bus_name, store_timeout, lease })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<LimitsConfig, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LimitsConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_fail_open_cache_30_seconds_and_alert_at_50_80_100() {
        assert_eq!(config(&[]).unwrap(), LimitsConfig::default());
        assert_eq!(LimitsConfig::default().alert_thresholds, vec![50, 80, 100]);
    }

    #[test]
    fn settings_are_read_and_checked() {
        let set = config(&[
            ("LIMITS_FAIL_MODE", "closed"),
            ("LIMITS_CACHE_SECONDS", "0"),
            ("LIMITS_ALERT_THRESHOLDS", "90, 25"),
            ("LIMITS_EVENT_BUS_NAME", "none"),
            ("LIMITS_ENABLED", "false"),
            ("LIMITS_LEASE_REQUESTS", "16"),
            ("LIMITS_LEASE_SHARE_PERCENT", "5"),
            ("LIMITS_LEASE_IDLE_MS", "250"),
        ])
        .unwrap();
        assert_eq!(set.lease, LeaseSettings { requests: 16, share_percent: 5, idle: Duration::from_millis(250) });
        assert_eq!(set.fail_mode, FailMode::Closed);
        assert_eq!(set.cache_ttl, Duration::ZERO);
        assert_eq!(set.alert_thresholds, vec![25, 90]);
        assert_eq!(set.event_bus_name, None);
        assert!(!set.enabled);
        for (name, value) in [
            ("LIMITS_FAIL_MODE", "maybe"),
            ("LIMITS_CACHE_SECONDS", "31"),
            ("LIMITS_ALERT_THRESHOLDS", "50,x"),
            ("LIMITS_ALERT_THRESHOLDS", "0"),
            ("LIMITS_ENABLED", "yes"),
            ("LIMITS_STORE_TIMEOUT_MS", "50"),
            ("LIMITS_LEASE_REQUESTS", "-1"),
            ("LIMITS_LEASE_REQUESTS", " 16"),
            ("LIMITS_LEASE_SHARE_PERCENT", "0"),
            ("LIMITS_LEASE_IDLE_MS", "99"),
        ] {
            assert!(matches!(config(&[(name, value)]), Err(ConfigError::Invalid { name: n, .. }) if n == name), "{name}={value}");
        }
    }
}
