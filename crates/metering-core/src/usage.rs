//! The usage record: one per answered request, written as one JSON line with a fixed schema. That line is
//! the source of truth for billing (the counters are a fast index over it); see `USAGE_SCHEMA.md`.

use std::io::Write;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Value of the `event` field that marks a usage line among all log lines.
pub const USAGE_EVENT: &str = "token_usage";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    /// Served by Amazon Bedrock.
    Bedrock,
    /// Served by the Anthropic API.
    Anthropic,
}

impl RequestType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bedrock => "bedrock",
            Self::Anthropic => "anthropic",
        }
    }
}

/// Token counts of one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl TokenCounts {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
    }
}

/// One usage line. Field order and names are the published schema: add fields, never rename them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub event: String,
    /// RFC 3339, UTC, milliseconds (`2026-11-23T10:00:00.123Z`): when the request arrived.
    pub timestamp: String,
    pub request_id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub model_id: String,
    pub request_type: RequestType,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    pub latency_ms: u64,
    /// Present only when the counters could not be updated; the line still bills the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering_error: Option<String>,
}

/// Everything needed to bill one request, before it is written.
#[derive(Debug, Clone)]
pub struct UsageEvent {
    pub received_at: DateTime<Utc>,
    pub request_id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub model_id: String,
    pub request_type: RequestType,
    pub tokens: TokenCounts,
    pub latency_ms: u64,
}

impl UsageEvent {
    pub fn to_record(&self, metering_error: Option<String>) -> UsageRecord {
        UsageRecord {
            event: USAGE_EVENT.to_owned(),
            timestamp: self.received_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            request_id: self.request_id.clone(),
            tenant_id: self.tenant_id.clone(),
            user_id: self.user_id.clone(),
            model_id: self.model_id.clone(),
            request_type: self.request_type,
            input_tokens: self.tokens.input_tokens,
            output_tokens: self.tokens.output_tokens,
            total_tokens: self.tokens.total(),
            cache_creation_input_tokens: self.tokens.cache_creation_input_tokens,
            cache_read_input_tokens: self.tokens.cache_read_input_tokens,
            latency_ms: self.latency_ms,
            metering_error,
        }
    }
}

impl UsageRecord {
    /// The record as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        // Serializing a struct of strings and integers cannot fail; fall back to a minimal line anyway.
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"event\":\"{USAGE_EVENT}\"}}"))
    }
}

/// Where usage lines go. In Lambda: standard output, which the Lambda service ships to CloudWatch Logs.
#[async_trait]
pub trait UsageLog: Send + Sync {
    async fn write(&self, record: &UsageRecord);
}

/// Writes each record as one line to standard output, in one `write_all` so lines never interleave.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdoutUsageLog;

#[async_trait]
impl UsageLog for StdoutUsageLog {
    async fn write(&self, record: &UsageRecord) {
        let mut line = record.to_line();
        line.push('\n');
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = stdout.write_all(line.as_bytes()).and_then(|()| stdout.flush()) {
            // Standard output is gone: the tracing log (stderr) is the last place the record can land.
            tracing::error!(%error, usage_record = %line.trim_end(), "could not write the usage line to stdout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event() -> UsageEvent {
        UsageEvent {
            received_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + chrono::Duration::milliseconds(5),
            request_id: "r-1".into(),
            tenant_id: "acme".into(),
            user_id: "u-1".into(),
            model_id: "m".into(),
            request_type: RequestType::Bedrock,
            tokens: TokenCounts { input_tokens: 3, output_tokens: 4, ..TokenCounts::default() },
            latency_ms: 12,
        }
    }

    #[test]
    fn the_line_has_the_published_schema() {
        let line = event().to_record(None).to_line();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "token_usage");
        assert_eq!(value["timestamp"], "2026-11-23T10:00:00.005Z");
        assert_eq!(value["request_type"], "bedrock");
        assert_eq!(value["total_tokens"], 7);
        assert!(value.get("metering_error").is_none());
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_metering_error_is_carried_on_the_line() {
        let line = event().to_record(Some("table unreachable".into())).to_line();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["metering_error"], "table unreachable");
    }

    #[test]
    fn older_lines_without_cache_fields_still_parse() {
        let line = r#"{"event":"token_usage","timestamp":"2026-01-01T00:00:00.000Z","request_id":"r","tenant_id":"t",
            "user_id":"u","model_id":"m","request_type":"bedrock","input_tokens":1,"output_tokens":2,
            "total_tokens":3,"latency_ms":4}"#;
        let record: UsageRecord = serde_json::from_str(line).unwrap();
        assert_eq!(record.cache_read_input_tokens, 0);
    }
}
