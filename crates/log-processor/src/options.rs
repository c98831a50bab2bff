//! What an invocation asks besides the days (kept apart from `request.rs`, which reads the days):
//! - `"allow_shrink": true` next to the days: replace a day's export even with fewer rows than its manifest;
//! - `{"check_export": "<RFC 3339 time>"}`: the 03:00 UTC schedule's check that the day before that time
//!   has a complete export (EventBridge fills in the time).

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::error::ExportError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    pub allow_shrink: bool,
}

/// Takes the options out of `payload`, leaving what `ExportRequest::from_payload` reads.
pub fn split_options(payload: &Value) -> Result<(Value, ExportOptions), ExportError> {
    let mut rest = payload.clone();
    let Some(object) = rest.as_object_mut() else {
        return Ok((rest, ExportOptions::default()));
    };
    let allow_shrink = match object.remove("allow_shrink") {
        None => false,
        Some(Value::Bool(allow)) => allow,
        Some(other) => return Err(ExportError::BadRequest(format!("\"allow_shrink\" must be true or false, got {other}"))),
    };
    Ok((rest, ExportOptions { allow_shrink }))
}

/// The day a `{"check_export": time}` payload asks about, or `None` for any other payload.
pub fn check_request(payload: &Value) -> Option<Result<NaiveDate, ExportError>> {
    let time = payload.as_object()?.get("check_export")?;
    let bad = || ExportError::BadRequest(format!("\"check_export\" must be an RFC 3339 time, got {time}"));
    Some(
        time.as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .and_then(|at| at.with_timezone(&Utc).date_naive().pred_opt())
            .ok_or_else(bad),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allow_shrink_is_taken_out_and_the_rest_left_for_the_days() {
        let (rest, options) = split_options(&json!({"date": "2026-11-22", "allow_shrink": true})).unwrap();
        assert_eq!((rest, options.allow_shrink), (json!({"date": "2026-11-22"}), true));
        let (rest, options) = split_options(&json!({})).unwrap();
        assert_eq!((rest, options.allow_shrink), (json!({}), false));
        let error = split_options(&json!({"allow_shrink": "yes"})).unwrap_err();
        assert_eq!(error.kind(), "BadRequest");
    }

    #[test]
    fn the_check_asks_about_the_day_before_its_time() {
        let day = check_request(&json!({"check_export": "2026-11-23T03:00:00Z"})).unwrap().unwrap();
        assert_eq!(day.to_string(), "2026-11-22");
        assert!(check_request(&json!({"date": "2026-11-22"})).is_none());
        assert!(check_request(&json!({"check_export": "3am"})).unwrap().is_err());
    }
}
