//! One CloudWatch Logs message -> one export row, or the reason it is not one. Pure.
//!
//! The server-side filter `{ $.event = "token_usage" }` already drops most other lines on AWS, but not all
//! (and moto ignores it): every message is checked here again.
//!
//! The line is read into [`UsageLine`], which borrows its strings from the message (no allocation unless a
//! string holds an escape): the transform's hot path. Fields added to the usage line by newer writers
//! (`client_user_id`, `requested_model_id`, `usage_estimated`) are optional, so older lines still read.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use metering_core::usage::{RequestType, USAGE_EVENT};
use serde::Deserialize;

/// `"event"` of the line a service writes when a request's counter update failed or its outcome is unknown.
/// It is not a usage row (the usage line of that request is); it is counted, never exported as malformed.
pub const COUNTER_UPDATE_EVENT: &str = "counter_update";

/// A usage line as logged, its strings borrowed from the message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UsageLine<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    /// RFC 3339 (`2026-11-23T10:00:00.123Z`): when the request arrived. Kept as logged.
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    #[serde(borrow)]
    pub tenant_id: Cow<'a, str>,
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    #[serde(borrow)]
    pub model_id: Cow<'a, str>,
    pub request_type: RequestType,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    pub latency_ms: u64,
    /// The end user the client named (the proxy's `metadata.user_id`), when there is one.
    #[serde(borrow, default)]
    pub client_user_id: Option<Cow<'a, str>>,
    /// The model the client asked for, when the gateway served another one.
    #[serde(borrow, default)]
    pub requested_model_id: Option<Cow<'a, str>>,
    /// True when the token counts are the gateway's estimate (the upstream reported none).
    #[serde(default)]
    pub usage_estimated: Option<bool>,
    /// Older writers put the counter update's error on the usage line itself: its outcome is unknown.
    #[serde(default, deserialize_with = "present")]
    pub metering_error: bool,
}

/// True when the field is there with any value but null (its text is not needed).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let value = Option::<serde::de::IgnoredAny>::deserialize(deserializer)?;
    Ok(value.is_some())
}

/// The `counter_outcome` of a row: `applied` unless a `counter_update` line of the same request says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterOutcome {
    Applied,
    /// Definitely not applied: the counters miss this request.
    Failed,
    /// May or may not have applied (a timeout after the write may have reached the table).
    Unknown,
}

impl CounterOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    /// Every outcome, in the order of [`CounterOutcome::index`].
    pub const ALL: [Self; 3] = [Self::Applied, Self::Failed, Self::Unknown];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Two lines about one request: the surer "not applied" wins (`failed` over `unknown` over `applied`).
    pub fn worst(self, other: Self) -> Self {
        match (self, other) {
            (Self::Failed, _) | (_, Self::Failed) => Self::Failed,
            (Self::Unknown, _) | (_, Self::Unknown) => Self::Unknown,
            _ => Self::Applied,
        }
    }
}

/// The fields of a `counter_update` line the export needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CounterUpdateLine<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    /// `YYYY-MM-DD`: the UTC day of the request's usage line.
    #[serde(borrow)]
    pub day: Cow<'a, str>,
    pub outcome: CounterOutcome,
}

/// The `counter_update` line in `message`, if it is one (a cheap text check first: most messages are not).
pub fn counter_update(message: &str) -> Option<CounterUpdateLine<'_>> {
    let message = message.trim();
    if !message.starts_with('{') || !message.contains(COUNTER_UPDATE_EVENT) {
        return None;
    }
    serde_json::from_str::<CounterUpdateLine>(message).ok().filter(|line| line.event == COUNTER_UPDATE_EVENT)
}

/// What a log message turned out to be. Returned by value and consumed at once, line by line: boxing the
/// large variant would cost an allocation per row for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome<'a> {
    /// A usage line; `day` is the UTC day of its own `timestamp` (the partition it belongs to).
    Usage { day: NaiveDate, line: UsageLine<'a> },
    /// A `counter_update` line: the counters of a request that is billed by its usage line anyway.
    CounterUpdate,
    /// Some other line (a platform line, a tracing line, plain text): not ours to export.
    NotUsage,
    /// Claims to be a usage line (`"event":"token_usage"`) but cannot be read as one.
    Malformed(String),
}

/// Just the discriminating field, read when a message is not a complete usage line.
#[derive(Deserialize)]
struct EventProbe<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
}

pub fn classify(message: &str) -> LineOutcome<'_> {
    let message = message.trim();
    if !message.starts_with('{') {
        return LineOutcome::NotUsage;
    }
    match serde_json::from_str::<UsageLine>(message) {
        Ok(line) if line.event == USAGE_EVENT => check(line),
        Ok(_) => LineOutcome::NotUsage,
        Err(error) => match serde_json::from_str::<EventProbe>(message) {
            Ok(EventProbe { event: Some(event) }) if event == USAGE_EVENT => LineOutcome::Malformed(error.to_string()),
            Ok(EventProbe { event: Some(event) }) if event == COUNTER_UPDATE_EVENT => LineOutcome::CounterUpdate,
            _ => LineOutcome::NotUsage,
        },
    }
}

fn check(line: UsageLine<'_>) -> LineOutcome<'_> {
    let Some(day) = utc_day(&line.timestamp) else {
        return LineOutcome::Malformed(format!("timestamp {:?} is not RFC 3339", line.timestamp));
    };
    // The columns are Parquet INT64 (Athena bigint): a count past i64::MAX would wrap.
    let counts = [
        line.input_tokens,
        line.output_tokens,
        line.total_tokens,
        line.latency_ms,
        line.cache_creation_input_tokens,
        line.cache_read_input_tokens,
    ];
    if counts.iter().any(|&count| i64::try_from(count).is_err()) {
        return LineOutcome::Malformed("a count does not fit a bigint".to_owned());
    }
    LineOutcome::Usage { day, line }
}

/// The UTC day of an RFC 3339 timestamp. The form every writer of usage lines uses,
/// `YYYY-MM-DDTHH:MM:SS.sssZ`, is read digit by digit (a full RFC 3339 parse per line costs more than the
/// rest of the line); anything else (an offset, other fractions) goes through chrono.
pub fn utc_day(timestamp: &str) -> Option<NaiveDate> {
    let bytes = timestamp.as_bytes();
    let canonical = bytes.len() == 24
        && bytes[23] == b'Z'
        && [4, 7].iter().all(|&at| bytes[at] == b'-')
        && bytes[10] == b'T'
        && [13, 16].iter().all(|&at| bytes[at] == b':')
        && bytes[19] == b'.'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22].iter().all(|&at| bytes[at].is_ascii_digit());
    if canonical {
        let number = |from: usize, to: usize| bytes[from..to].iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
        let in_range = number(11, 13) < 24 && number(14, 16) < 60 && number(17, 19) < 60;
        return in_range.then(|| NaiveDate::from_ymd_opt(number(0, 4) as i32, number(5, 7), number(8, 10))).flatten();
    }
    DateTime::parse_from_rfc3339(timestamp).ok().map(|at| at.with_timezone(&Utc).date_naive())
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
        let LineOutcome::Usage { day: of, line } = classify(LINE) else { panic!("not a usage line") };
        assert_eq!(of, day("2026-11-23"));
        assert_eq!(line.tenant_id, "acme");
        assert_eq!(line.timestamp, "2026-11-23T10:00:00.123Z", "kept as logged");
        assert_eq!((line.total_tokens, line.cache_read_input_tokens), (42, 0));
        assert!(matches!(line.tenant_id, Cow::Borrowed(_)), "no copy of a plain string");
        assert_eq!((line.client_user_id, line.requested_model_id, line.usage_estimated), (None, None, None));
    }

    #[test]
    fn the_day_is_the_utc_day_even_with_an_offset() {
        // GIVEN a line stamped 00:30 on the 24th in UTC+02:00, that is 22:30 UTC on the 23rd
        let text = LINE.replace("2026-11-23T10:00:00.123Z", "2026-11-24T00:30:00.000+02:00");
        // THEN it belongs to the 23rd, and its timestamp string is kept unchanged
        let LineOutcome::Usage { day: of, line } = classify(&text) else { panic!("not a usage line") };
        assert_eq!(of, day("2026-11-23"));
        assert_eq!(line.timestamp, "2026-11-24T00:30:00.000+02:00");
    }

    #[test]
    fn the_fast_day_agrees_with_chrono() {
        for (text, expected) in [
            ("2026-11-23T23:59:59.999Z", Some("2026-11-23")),
            ("2024-02-29T00:00:00.000Z", Some("2024-02-29")),
            ("2026-11-23T10:00:00Z", Some("2026-11-23")),
            ("2026-11-23T10:00:00.123456Z", Some("2026-11-23")),
            ("2026-02-29T00:00:00.000Z", None),
            ("2026-11-23T24:00:00.000Z", None),
            ("2026-11-23T23:60:00.000Z", None),
            ("2026-11-23T23:59:60.000Z", None),
            ("2026-13-01T00:00:00.000Z", None),
            ("2026-11-23 10:00:00.000Z", Some("2026-11-23")),
            // The canonical length, one separator wrong: not a timestamp, whichever way it is read
            ("2026-11-23T10:00:00.0001", None),
            ("2026x11x23T10:00:00.000Z", None),
            ("2026-11-23x10:00:00.000Z", None),
            ("2026-11-23T10x00x00.000Z", None),
            ("2026-11-23T10:00:00x000Z", None),
            ("yesterday", None),
        ] {
            assert_eq!(utc_day(text), expected.map(day), "{text}");
        }
    }

    #[test]
    fn cache_fields_the_newer_optional_fields_and_a_metering_error_are_read() {
        let text = LINE.replace(
            r#""latency_ms":250"#,
            r#""latency_ms":250,"cache_creation_input_tokens":5,"cache_read_input_tokens":7,"metering_error":"x","client_user_id":"end-user 7","requested_model_id":"claude-sonnet-4-5","usage_estimated":true"#,
        );
        let LineOutcome::Usage { line, .. } = classify(&text) else { panic!("not a usage line") };
        assert_eq!((line.cache_creation_input_tokens, line.cache_read_input_tokens), (5, 7));
        assert_eq!(line.client_user_id.as_deref(), Some("end-user 7"), "never trimmed");
        assert_eq!(line.requested_model_id.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(line.usage_estimated, Some(true));
        assert!(line.metering_error, "an older line's metering_error: outcome unknown");
    }

    #[test]
    fn a_null_or_absent_metering_error_is_no_error() {
        for text in [LINE.to_owned(), LINE.replace(r#""latency_ms":250"#, r#""latency_ms":250,"metering_error":null"#)] {
            let LineOutcome::Usage { line, .. } = classify(&text) else { panic!("not a usage line: {text}") };
            assert!(!line.metering_error, "{text}");
        }
    }

    #[test]
    fn a_counter_update_line_is_neither_usage_nor_malformed() {
        let text = r#"{"event":"counter_update","timestamp":"2026-11-23T10:00:00.200Z","request_id":"r-1","tenant_id":"acme","request_type":"bedrock","model_id":"m","day":"2026-11-23","outcome":"failed","error":"throttled"}"#;
        assert_eq!(classify(text), LineOutcome::CounterUpdate);
    }

    #[test]
    fn a_counter_update_line_gives_its_request_day_and_outcome() {
        let text = r#"{"event":"counter_update","timestamp":"2026-11-24T00:00:00.200Z","request_id":"r-1","tenant_id":"acme","request_type":"bedrock","model_id":"m","day":"2026-11-23","outcome":"unknown","error":"timeout"}"#;
        let update = counter_update(text).unwrap();
        assert_eq!(
            (update.request_id.as_ref(), update.day.as_ref(), update.outcome),
            ("r-1", "2026-11-23", CounterOutcome::Unknown)
        );
        assert_eq!(counter_update(LINE), None);
        assert_eq!(counter_update(&text.replace(r#""event":"counter_update""#, r#""event":"x","note":"counter_update""#)), None);
        assert_eq!(CounterOutcome::Unknown.worst(CounterOutcome::Failed), CounterOutcome::Failed);
        assert_eq!(CounterOutcome::Applied.worst(CounterOutcome::Unknown), CounterOutcome::Unknown);
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
            LINE.replace(r#""latency_ms":250"#, r#""latency_ms":250,"usage_estimated":"yes""#),
            r#"{"event":"token_usage"}"#.to_owned(),
        ] {
            assert!(matches!(classify(&line), LineOutcome::Malformed(_)), "{line}");
        }
    }
}
