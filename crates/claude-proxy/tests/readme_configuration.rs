//! The crate README's configuration table is `ProxyConfig`'s: every default written there as a value is
//! the one `ProxyConfig::from_lookup` applies when the variable is absent, read from the README's own table.
//! Rows whose default is a description (a built-in list, "from AWS_REGION") are named here, so a new row
//! cannot go unchecked silently.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::collections::BTreeMap;

use claude_proxy::config::ProxyConfig;

/// Variable -> default, from the table under "## Configuration"; `A`, `B` | 1, 2 rows split in two.
fn readme_defaults() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n## Configuration").nth(1).expect("the configuration section");
    let table = section.split("| Variable | Default | Meaning |").nth(1).expect("the configuration table");
    let mut defaults = BTreeMap::new();
    for line in table.lines().skip(2).take_while(|line| line.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let names: Vec<&str> = cells[0].split(", ").map(|name| name.trim_matches('`')).collect();
        let values: Vec<&str> = if names.len() > 1 { cells[1].split(", ").collect() } else { vec![cells[1]] };
        assert_eq!(names.len(), values.len(), "{line}");
        for (name, value) in names.into_iter().zip(values) {
            defaults.insert(name.to_owned(), value.trim_matches('`').to_owned());
        }
    }
    defaults
}

const DESCRIBED_NOT_VALUES: [&str; 7] = [
    "ANTHROPIC_API_KEY_SECRET_ID",
    "ANTHROPIC_API_KEY",
    "BEDROCK_MODEL_MAP",
    "BEDROCK_PROFILE_GEOGRAPHIES",
    "BEDROCK_FAMILY_FALLBACK",
    "BEDROCK_ALLOWED_BETAS",
    "RATE_LIMIT_TABLE_NAME",
];

fn config_with(extra: &[(&str, &str)]) -> ProxyConfig {
    let mut env: BTreeMap<&str, &str> =
        [("USAGE_TABLE_NAME", "usage"), ("API_KEY_TABLE_NAME", "keys"), ("ANTHROPIC_API_KEY", "sk-ant-test")].into();
    env.extend(extra.iter().copied());
    ProxyConfig::from_lookup(|name| env.get(name).map(|value| (*value).to_owned())).unwrap()
}

#[test]
fn every_documented_default_is_the_one_applied() {
    let mut readme = readme_defaults();
    for described in DESCRIBED_NOT_VALUES {
        assert!(readme.remove(described).is_some(), "{described} is no longer in the README's table");
    }
    let config = config_with(&[("RATE_LIMIT_TABLE_NAME", "limits")]);
    let forced = config_with(&[("FORCE_RATE_LIMIT_TEST", "true")]);
    let discovery = config.model_discovery.as_ref().expect("discovery on by default");
    let days = |duration: std::time::Duration| (duration.as_secs() / 86_400).to_string();
    let applied: BTreeMap<String, String> = [
        ("USAGE_TABLE_NAME", "required".to_owned()),
        ("API_KEY_TABLE_NAME", "required".to_owned()),
        ("USAGE_DAILY_TTL_DAYS", days(config.daily_ttl)),
        ("USAGE_WEEKLY_TTL_DAYS", days(config.weekly_ttl)),
        ("API_KEY_CACHE_SECONDS", config.api_key_cache.as_secs().to_string()),
        ("RATE_LIMIT_TRACKING", config.rate_limit_table_name.is_some().to_string()),
        ("RATE_LIMIT_SCOPE", config.rate_limit_scope.as_str().to_owned()),
        ("RATE_LIMIT_DEFAULT_RETRY_AFTER", config.default_retry_after_seconds.to_string()),
        ("ANTHROPIC_CREDENTIAL_MODE", config.credential_mode.as_str().to_owned()),
        ("ANTHROPIC_BASE_URL", config.anthropic_base_url.clone()),
        ("ANTHROPIC_TIMEOUT_MS", config.anthropic_timeout.as_millis().to_string()),
        ("BEDROCK_FALLBACK", config.fallback.enabled.to_string()),
        ("FALLBACK_ON", config.fallback.describe().trim_start_matches("on (").trim_end_matches(')').to_owned()),
        ("BEDROCK_MODEL_DISCOVERY", config.model_discovery.is_some().to_string()),
        ("BEDROCK_PROFILE_CACHE_SECONDS", discovery.cache_for.as_secs().to_string()),
        ("BEDROCK_PROFILE_REFRESH_ON_MISS_SECONDS", discovery.refresh_on_miss_after.as_secs().to_string()),
        ("BEDROCK_TIMEOUT_MS", config.bedrock_timeout.as_millis().to_string()),
        ("FORCE_RATE_LIMIT_TEST", config.forced_rate_limit_retry_after.is_some().to_string()),
        ("FORCE_RATE_LIMIT_RETRY_AFTER", forced.forced_rate_limit_retry_after.unwrap().to_string()),
        ("MAX_REQUEST_BYTES", config.max_body_bytes.to_string()),
        ("ON_CLIENT_DISCONNECT", config.on_client_disconnect.as_str().to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    assert_eq!(readme, applied);
    let basics = [("USAGE_TABLE_NAME", "usage"), ("API_KEY_TABLE_NAME", "keys"), ("ANTHROPIC_API_KEY", "k")];
    for required in ["USAGE_TABLE_NAME", "API_KEY_TABLE_NAME"] {
        let env: BTreeMap<&str, &str> = basics.iter().copied().filter(|(name, _)| *name != required).collect();
        let missing = ProxyConfig::from_lookup(|name| env.get(name).map(|value| (*value).to_owned()));
        assert!(missing.is_err(), "{required} is required");
    }
}
