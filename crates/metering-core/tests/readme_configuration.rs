//! The README's configuration table of the chat function is `ChatConfig`'s: each documented default is the
//! one `ChatConfig::from_lookup` applies when the variable is absent, read from the README's own table.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test with its message

use std::collections::HashMap;
use std::time::Duration;

use metering_core::config::ChatConfig;

/// `variable` -> `default` of the table under "## Configuration", backticks removed.
fn readme_defaults() -> HashMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("\n## Configuration\n").nth(1).expect("the configuration section");
    let table = section.split("| variable | default | meaning |").nth(1).expect("the configuration table");
    let mut defaults = HashMap::new();
    for line in table.lines().skip(2).take_while(|line| line.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        // `A` / `B` | `1` / `2`: one row for two variables.
        let names = cells[0].split(" / ").map(|name| name.trim_matches('`'));
        let values = cells[1].split(" / ").map(|value| value.trim_matches('`'));
        for (name, value) in names.zip(values) {
            defaults.insert(name.to_owned(), value.to_owned());
        }
    }
    defaults
}

#[test]
fn every_documented_default_is_the_one_applied() {
    let mut readme = readme_defaults();
    // Not ChatConfig's: tracing's env filter reads it at start-up (metering_core::telemetry); not checked here.
    assert!(readme.remove("RUST_LOG").is_some());
    let config = ChatConfig::from_lookup(|name| (name == "USAGE_TABLE_NAME").then(|| "usage".to_owned())).unwrap();
    let days = |duration: Duration| (duration.as_secs() / 86_400).to_string();
    let applied = HashMap::from([
        ("USAGE_TABLE_NAME", "(required)".to_owned()),
        ("BEDROCK_MODEL_ID", config.model_id.clone()),
        ("BEDROCK_TIMEOUT_MS", config.bedrock_timeout.as_millis().to_string()),
        ("BEDROCK_MAX_ATTEMPTS", config.bedrock_max_attempts.to_string()),
        ("THROTTLE_RETRY_AFTER_SECONDS", config.throttle_retry_after_seconds.to_string()),
        ("USAGE_DAILY_TTL_DAYS", days(config.daily_ttl)),
        ("USAGE_WEEKLY_TTL_DAYS", days(config.weekly_ttl)),
    ]);
    let applied: HashMap<String, String> = applied.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    assert_eq!(readme, applied);
    assert!(ChatConfig::from_lookup(|_| None).is_err(), "USAGE_TABLE_NAME is required");
}
