//! What one invocation exports. The payload decides:
//! - the EventBridge scheduled event (daily, 01:00 UTC): the UTC day before the event's `time`;
//! - `{}`: today (UTC) so far;
//! - `{"date": "YYYY-MM-DD"}`: that day;
//! - `{"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}`: every day of the range, both ends included, at most
//!   [`MAX_RANGE_DAYS`].
//!
//! Anything else is refused before a single object is written.

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ExportError;

pub const MAX_RANGE_DAYS: u64 = 31;

const USAGE_HINT: &str = r#"send {} (today so far), {"date": "YYYY-MM-DD"} or {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportRequest {
    /// The daily schedule fired at `fired_at`: export the previous UTC day.
    Scheduled {
        fired_at: DateTime<Utc>,
    },
    /// Today so far.
    Today,
    Day(NaiveDate),
    Range {
        from: NaiveDate,
        to: NaiveDate,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualPayload {
    date: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl ExportRequest {
    /// Reads an invocation payload (see the module documentation).
    pub fn from_payload(payload: &Value) -> Result<Self, ExportError> {
        let Some(object) = payload.as_object() else {
            return Err(bad(format!("the payload must be a JSON object, got {payload}; {USAGE_HINT}")));
        };
        if object.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
            let time = object.get("time").and_then(Value::as_str).unwrap_or_default();
            let fired_at = DateTime::parse_from_rfc3339(time)
                .map_err(|error| bad(format!("scheduled event with an unreadable time {time:?}: {error}")))?;
            return Ok(Self::Scheduled { fired_at: fired_at.with_timezone(&Utc) });
        }
        let manual: ManualPayload = serde_json::from_value(payload.clone())
            .map_err(|error| bad(format!("unexpected payload {payload}: {error}; {USAGE_HINT}")))?;
        match (manual.date, manual.from, manual.to) {
            (None, None, None) => Ok(Self::Today),
            (Some(date), None, None) => Ok(Self::Day(parse_day("date", &date)?)),
            (None, Some(from), Some(to)) => Ok(Self::Range { from: parse_day("from", &from)?, to: parse_day("to", &to)? }),
            (Some(_), _, _) => Err(bad(format!("give either \"date\" or \"from\"/\"to\", not both; {USAGE_HINT}"))),
            (None, _, _) => Err(bad(format!("\"from\" and \"to\" go together; {USAGE_HINT}"))),
        }
    }

    /// The UTC days to export, oldest first. `now` bounds them: no day after today.
    pub fn days(&self, now: DateTime<Utc>) -> Result<Vec<NaiveDate>, ExportError> {
        let today = now.date_naive();
        let (from, to) = match *self {
            Self::Scheduled { fired_at } => {
                let day = fired_at.date_naive().pred_opt().ok_or_else(|| bad("no day before the schedule"))?;
                (day, day)
            }
            Self::Today => (today, today),
            Self::Day(day) => (day, day),
            Self::Range { from, to } => (from, to),
        };
        if to < from {
            return Err(bad(format!("\"from\" ({from}) is after \"to\" ({to})")));
        }
        let count = (to - from).num_days() as u64 + 1;
        if count > MAX_RANGE_DAYS {
            return Err(bad(format!("{from}..{to} is {count} days; export at most {MAX_RANGE_DAYS} days per invocation")));
        }
        if to > today {
            return Err(bad(format!("{to} is in the future (today is {today} UTC)")));
        }
        Ok((0..count).filter_map(|offset| from.checked_add_days(Days::new(offset))).collect())
    }

    /// A short name for the summary.
    pub fn trigger(&self) -> &'static str {
        match self {
            Self::Scheduled { .. } => "schedule",
            Self::Today => "today",
            Self::Day(_) => "date",
            Self::Range { .. } => "range",
        }
    }
}

/// `YYYY-MM-DD`, exactly (chrono alone would take `2026-1-5`).
pub fn parse_day(field: &str, text: &str) -> Result<NaiveDate, ExportError> {
    let well_formed = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    well_formed
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| bad(format!("\"{field}\" must be a date like 2026-11-23, got {text:?}")))
}

fn bad(message: impl Into<String>) -> ExportError {
    ExportError::BadRequest(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 14, 30, 0).unwrap()
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn days_of(payload: Value) -> Result<Vec<NaiveDate>, ExportError> {
        ExportRequest::from_payload(&payload)?.days(now())
    }

    #[test]
    fn the_daily_schedule_exports_the_previous_utc_day() {
        // GIVEN the event EventBridge sends at 01:00 UTC (events/log-processor-scheduled.json)
        let event: Value = serde_json::from_str(include_str!("../../../events/log-processor-scheduled.json")).unwrap();
        // WHEN it is read
        let request = ExportRequest::from_payload(&event).unwrap();
        // THEN the day before its time is exported
        assert_eq!(request.trigger(), "schedule");
        assert_eq!(request.days(now()).unwrap(), vec![day("2026-11-22")]);
    }

    #[test]
    fn every_event_file_of_the_log_processor_is_a_valid_request() {
        for (file, trigger) in [
            (include_str!("../../../events/log-processor-scheduled.json"), "schedule"),
            (include_str!("../../../events/log-processor-today.json"), "today"),
            (include_str!("../../../events/log-processor-date.json"), "date"),
            (include_str!("../../../events/log-processor-range.json"), "range"),
        ] {
            let request = ExportRequest::from_payload(&serde_json::from_str(file).unwrap()).unwrap();
            assert_eq!(request.trigger(), trigger);
            assert!(!request.days(now()).unwrap().is_empty());
        }
    }

    #[test]
    fn an_empty_payload_exports_today() {
        assert_eq!(days_of(json!({})).unwrap(), vec![day("2026-11-23")]);
    }

    #[test]
    fn one_date_or_a_range_both_ends_included() {
        assert_eq!(days_of(json!({"date": "2026-02-28"})).unwrap(), vec![day("2026-02-28")]);
        let range = days_of(json!({"from": "2026-02-27", "to": "2026-03-02"})).unwrap();
        assert_eq!(range, ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"].map(day));
    }

    #[test]
    fn thirty_one_days_pass_and_thirty_two_do_not() {
        assert_eq!(days_of(json!({"from": "2026-10-01", "to": "2026-10-31"})).unwrap().len(), 31);
        let error = days_of(json!({"from": "2026-10-01", "to": "2026-11-01"})).unwrap_err();
        assert!(error.to_string().contains("at most 31 days"), "{error}");
    }

    #[test]
    fn bad_payloads_are_refused_with_the_reason() {
        let cases = [
            (json!([]), "JSON object"),
            (json!({"date": "2026-1-5"}), "a date like"),
            (json!({"date": "2026-02-30"}), "a date like"),
            (json!({"date": "yesterday"}), "a date like"),
            (json!({"day": "2026-11-01"}), "unknown field"),
            (json!({"from": "2026-11-01"}), "go together"),
            (json!({"date": "2026-11-01", "from": "2026-11-01", "to": "2026-11-02"}), "not both"),
            (json!({"from": "2026-11-05", "to": "2026-11-01"}), "after"),
            (json!({"date": "2026-11-24"}), "future"),
            (json!({"date": 20_261_101}), "invalid type"),
            (json!({"detail-type": "Scheduled Event", "time": "noon"}), "unreadable time"),
        ];
        for (payload, expected) in cases {
            let error = days_of(payload.clone()).unwrap_err();
            assert!(matches!(error, ExportError::BadRequest(_)), "{payload}: {error:?}");
            assert!(error.to_string().contains(expected), "{payload}: {error}");
        }
    }
}
