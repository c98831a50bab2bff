//! The usage record: one per answered request, written as one JSON line with a fixed schema. That line is
//! the source of truth for billing (the counters are a fast index over it); see `USAGE_SCHEMA.md`.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Value of the `event` field that marks a usage line among all log lines.
pub const USAGE_EVENT: &str = "token_usage";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Kept for older readers; no longer written (counter outcomes are their own `counter_update` lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering_error: Option<String>,
    /// Present (true) only when the output count is an estimate: a stream that ended early was counted
    /// from the text it delivered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// The user id the client declared (Claude Code's `metadata.user_id`, cleaned); absent when it sent
    /// none. Never the metered user: `user_id` is whom the gateway verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_user_id: Option<String>,
    /// The Anthropic model id the client asked for (the proxy); `model_id` is the model that served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_model_id: Option<String>,
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
    /// The output count is an estimate (see `UsageRecord::usage_estimated`).
    pub usage_estimated: bool,
    pub client_user_id: Option<String>,
    pub requested_model_id: Option<String>,
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
            usage_estimated: self.usage_estimated,
            client_user_id: self.client_user_id.clone(),
            requested_model_id: self.requested_model_id.clone(),
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

/// Value of the `event` field of a line that reports a counter outcome other than "applied".
pub const COUNTER_UPDATE_EVENT: &str = "counter_update";

/// How a request's counter update ended, when it did not simply apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterOutcome {
    /// Definitely not applied (DynamoDB refused it, or it was never sent): the counters miss this request.
    Failed,
    /// May or may not have been applied (a timeout or a broken connection after it may have reached the
    /// table): the counters hold this request at most once.
    Unknown,
}

/// One `counter_update` line: written after the request's usage line, by the same writer, when its counter
/// update did not apply. The usage line still bills the request; `scripts/rebuild-counters` repairs counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterUpdateRecord {
    pub event: String,
    /// RFC 3339, UTC, milliseconds: when this line was written.
    pub timestamp: String,
    pub request_id: String,
    pub tenant_id: String,
    pub request_type: RequestType,
    pub model_id: String,
    /// `YYYY-MM-DD`: the UTC day of the request's usage line (its counters' day).
    pub day: String,
    pub outcome: CounterOutcome,
    pub error: String,
}

impl CounterUpdateRecord {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"event\":\"{COUNTER_UPDATE_EVENT}\"}}"))
    }
}

/// The `event` of a line that says a request was refused by a tenant's limit (never a bill).
pub const LIMIT_REFUSED_EVENT: &str = "limit_refused";

/// One `limit_refused` line: a request refused with 429 by a limit (README "Budgets and quotas"). It bills
/// nothing; CloudWatch counts these lines with a metric filter on `event = limit_refused`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitRefusedRecord {
    pub event: String,
    pub timestamp: String,
    pub tenant_id: String,
    pub user_id: String,
    pub request_id: String,
    /// `requests_per_minute`, `tokens_per_day`, `tokens_per_month` or `usd_per_month`.
    pub limit: String,
    /// The period that is full: `YYYY-MM-DDTHH:MM`, `YYYY-MM-DD` or `YYYY-MM`.
    pub period: String,
    /// `/bedrock/chat` or `/v1/messages`.
    pub route: String,
    /// `tenant` or `key` (a gateway key's narrowing).
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub limit_value: serde_json::Value,
    /// What the request would have added (1 request, its worst-case tokens or USD).
    pub requested: serde_json::Value,
    pub retry_after_seconds: u64,
}

impl Eq for LimitRefusedRecord {}

/// A line of the usage log: the bill of one request, a later note about its counters, or a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageLine {
    Usage(UsageRecord),
    CounterUpdate(CounterUpdateRecord),
    LimitRefused(LimitRefusedRecord),
}

impl UsageLine {
    /// The line as JSON, without the newline.
    pub fn to_line(&self) -> String {
        match self {
            Self::Usage(record) => record.to_line(),
            Self::CounterUpdate(record) => record.to_line(),
            Self::LimitRefused(record) => {
                serde_json::to_string(record).unwrap_or_else(|_| format!("{{\"event\":\"{LIMIT_REFUSED_EVENT}\"}}"))
            }
        }
    }

    pub fn request_id(&self) -> &str {
        match self {
            Self::Usage(record) => &record.request_id,
            Self::CounterUpdate(record) => &record.request_id,
            Self::LimitRefused(record) => &record.request_id,
        }
    }
}

/// Where usage lines go. In Lambda: standard output, which the Lambda service ships to CloudWatch Logs.
/// Synchronous on purpose: a line is written when the answer completes, with no await on anything remote.
pub trait UsageLog: Send + Sync {
    fn write(&self, line: &UsageLine);
}

/// Writes each line to standard output, in one `write_all` so lines never interleave, and flushes it.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdoutUsageLog;

impl UsageLog for StdoutUsageLog {
    fn write(&self, line: &UsageLine) {
        let mut text = line.to_line();
        text.push('\n');
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            // Standard output is gone: the tracing log (stderr) is the last place the line can land.
            tracing::error!(%error, usage_record = %text.trim_end(), "could not write the usage line to stdout");
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
            usage_estimated: false,
            client_user_id: None,
            requested_model_id: None,
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
        assert!(value.get("client_user_id").is_none() && value.get("requested_model_id").is_none());
        assert!(!line.contains('\n'));
    }

    #[test]
    fn the_proxy_fields_are_on_the_line_when_known() {
        let mut event = event();
        event.client_user_id = Some("acct-1".into());
        event.requested_model_id = Some("claude-opus-4-8".into());
        let value: serde_json::Value = serde_json::from_str(&event.to_record(None).to_line()).unwrap();
        assert_eq!(
            (value["client_user_id"].as_str(), value["requested_model_id"].as_str()),
            (Some("acct-1"), Some("claude-opus-4-8"))
        );
        assert_eq!(value["user_id"], "u-1");
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
