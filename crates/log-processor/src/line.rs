//! One CloudWatch Logs message -> one export row, or the reason it is not one. Pure.
//!
//! The server-side filter `{ $.event = "token_usage" }` already drops most other lines on AWS, but not all
//! (and moto ignores it): every message is checked here again.

use chrono::{DateTime, NaiveDate, Utc};
use metering_core::usage::{UsageRecord, USAGE_EVENT};
use serde::Deserialize;

/// What a log message turned out to be. Returned by value and consumed at once, line by line: boxing the
/// large variant would cost an allocation per row for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    /// A usage line; `day` is the UTC day of its own `timestamp` (the partition it belongs to).
    Usage { day: NaiveDate, record: UsageRecord },
    /// Some other line (a platform line, a tracing line, plain text): not ours to export.
    NotUsage,
    /// Claims to be a usage line (`"event":"token_usage"`) but cannot be read as one.
    Malformed(String),
}

/// Just the discriminating field, read when a message is not a complete usage line.
#[derive(Deserialize)]
struct EventProbe<'a> {
    #[serde(borrow, default)]
    event: Option<std::borrow::Cow<'a, str>>,
}

pub fn classify(message: &str) -> LineOutcome {
    let message = message.trim();
    if !message.starts_with('{') {
        return LineOutcome::NotUsage;
    }
    match serde_json::from_str::<UsageRecord>(message) {
        Ok(record) if record.event == USAGE_EVENT => check(record),
        Ok(_) => LineOutcome::NotUsage,
        Err(error) => match serde_json::from_str::<EventProbe>(message) {
            Ok(EventProbe { event: Some(event) }) if event == USAGE_EVENT => LineOutcome::Malformed(error.to_string()),
            _ => LineOutcome::NotUsage,
        },
    }
}

fn check(record: UsageRecord) -> LineOutcome {
    let timestamp = match DateTime::parse_from_rfc3339(&record.timestamp) {
        Ok(timestamp) => timestamp,
        Err(error) => return LineOutcome::Malformed(format!("timestamp {:?}: {error}", record.timestamp)),
    };
    // The columns are Parquet INT64 (Athena bigint): a count past i64::MAX would wrap.
    let counts = [
        record.input_tokens,
        record.output_tokens,
        record.total_tokens,
        record.latency_ms,
        record.cache_creation_input_tokens,
        record.cache_read_input_tokens,
    ];
    if counts.iter().any(|&count| i64::try_from(count).is_err()) {
        return LineOutcome::Malformed("a count does not fit a bigint".to_owned());
    }
    LineOutcome::Usage { day: timestamp.with_timezone(&Utc).date_naive(), record }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"event":"token_usage","timestamp":"2026-11-23T10:00:00.123Z","request_id":"r-1","tenant_id":"acme","user_id":"u-1","model_id":"anthropic.claude-3-haiku-20240307-v1:0","request_type":"bedrock","input_tokens":12,"output_tokens":30,"total_tokens":42,"latency_ms":250}"#;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_usage_line_becomes_a_row_of_its_own_day() {
        let LineOutcome::Usage { day: of, record } = classify(LINE) else { panic!("not a usage line") };
        assert_eq!(of, day("2026-11-23"));
        assert_eq!(record.tenant_id, "acme");
        assert_eq!(record.timestamp, "2026-11-23T10:00:00.123Z", "kept as logged");
        assert_eq!((record.total_tokens, record.cache_read_input_tokens), (42, 0));
    }

    #[test]
    fn the_day_is_the_utc_day_even_with_an_offset() {
        // GIVEN a line stamped 00:30 on the 24th in UTC+02:00, that is 22:30 UTC on the 23rd
        let line = LINE.replace("2026-11-23T10:00:00.123Z", "2026-11-24T00:30:00.000+02:00");
        // THEN it belongs to the 23rd, and its timestamp string is kept unchanged
        let LineOutcome::Usage { day: of, record } = classify(&line) else { panic!("not a usage line") };
        assert_eq!(of, day("2026-11-23"));
        assert_eq!(record.timestamp, "2026-11-24T00:30:00.000+02:00");
    }

    #[test]
    fn cache_fields_and_a_metering_error_are_read() {
        let line = LINE.replace(
            r#""latency_ms":250"#,
            r#""latency_ms":250,"cache_creation_input_tokens":5,"cache_read_input_tokens":7,"metering_error":"x""#,
        );
        let LineOutcome::Usage { record, .. } = classify(&line) else { panic!("not a usage line") };
        assert_eq!((record.cache_creation_input_tokens, record.cache_read_input_tokens), (5, 7));
    }

    #[test]
    fn other_lines_are_not_usage() {
        for line in [
            "START RequestId: 8f5a Version: $LATEST",
            r#"{"time":"2026-11-23T10:00:00Z","type":"platform.start","record":{"requestId":"8f5a"}}"#,
            r#"{"timestamp":"2026-11-23T10:00:00Z","level":"INFO","fields":{"message":"answered"}}"#,
            r#"{"event":"something_else","tenant_id":"acme"}"#,
            &LINE.replace("token_usage", "token_usage_v0"),
            "",
            "{not json",
        ] {
            assert_eq!(classify(line), LineOutcome::NotUsage, "{line}");
        }
    }

    #[test]
    fn broken_usage_lines_are_malformed() {
        for line in [
            LINE.replace(r#""tenant_id":"acme","#, ""),
            LINE.replace(r#""input_tokens":12"#, r#""input_tokens":-1"#),
            LINE.replace(r#""input_tokens":12"#, r#""input_tokens":"12""#),
            LINE.replace("2026-11-23T10:00:00.123Z", "yesterday"),
            LINE.replace(r#""latency_ms":250"#, r#""latency_ms":18446744073709551615"#),
            LINE.replace(r#""request_type":"bedrock""#, r#""request_type":"carrier-pigeon""#),
            r#"{"event":"token_usage"}"#.to_owned(),
        ] {
            assert!(matches!(classify(&line), LineOutcome::Malformed(_)), "{line}");
        }
    }
}
