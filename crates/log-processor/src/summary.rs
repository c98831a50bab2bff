//! The JSON summary an export returns (Lambda response, CLI output) and logs.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DaySummary {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The CloudWatch Logs window read, RFC 3339: the day, a little before (clock skew) and after (lines
    /// written when a slow request ended, stamped with the time it arrived).
    pub read_from: String,
    pub read_to: String,
    /// Messages returned by FilterLogEvents.
    pub events_read: u64,
    pub rows_written: u64,
    /// Messages that are not usage lines (moto ignores the filter pattern; AWS lets a few through).
    pub skipped_not_usage: u64,
    /// Messages that claim `"event":"token_usage"` but cannot be read; see the warnings in the log.
    pub skipped_malformed: u64,
    /// The first malformed lines (reason and the line's start), at most 5.
    pub malformed_samples: Vec<String>,
    /// `counter_update` lines read (the counters of a request billed by its usage line): not rows.
    pub counter_updates: u64,
    /// Usage lines read in the window whose own timestamp is on the day before or after: exported with it.
    pub outside_day: u64,
    /// `s3://` URIs of the objects written.
    pub objects: Vec<String>,
    pub bytes: u64,
    /// Objects of an earlier export of the day that were deleted.
    pub stale_objects_deleted: u64,
    /// The day had ended (with its late lines) when it was read: its manifest marks it complete.
    pub complete: bool,
    /// The `_SUCCESS` manifest written (`s3://` URI), when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The price table of the rows' `cost_usd`.
    pub price_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSummary {
    /// `schedule`, `today`, `date` or `range`.
    pub trigger: String,
    pub from: String,
    pub to: String,
    pub events_read: u64,
    pub rows_written: u64,
    /// Not-usage plus malformed messages.
    pub skipped: u64,
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub days: Vec<DaySummary>,
}

impl ExportSummary {
    pub fn new(trigger: &str, days: Vec<DaySummary>, elapsed: Duration) -> Self {
        let total = |field: fn(&DaySummary) -> u64| days.iter().map(field).sum::<u64>();
        Self {
            trigger: trigger.to_owned(),
            from: days.first().map(|day| day.day.clone()).unwrap_or_default(),
            to: days.last().map(|day| day.day.clone()).unwrap_or_default(),
            events_read: total(|day| day.events_read),
            rows_written: total(|day| day.rows_written),
            skipped: total(|day| day.skipped_not_usage + day.skipped_malformed),
            objects: total(|day| day.objects.len() as u64),
            bytes: total(|day| day.bytes),
            seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            days,
        }
    }
}
