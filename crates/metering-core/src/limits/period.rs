//! The periods limits count in: the UTC minute, day and month, from an injectable clock so tests can cross
//! a boundary without waiting for it.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

/// Where "now" comes from: the system clock in AWS, a settable one in tests and the local stack.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodUnit {
    Minute,
    Day,
    Month,
}

impl PeriodUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// One UTC minute, day or month: `2026-12-01T07:36`, `2026-12-01`, `2026-12`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Period {
    pub unit: PeriodUnit,
    pub label: String,
    pub starts_at: DateTime<Utc>,
    pub resets_at: DateTime<Utc>,
}

impl Period {
    /// The period of `unit` that contains `now`.
    pub fn containing(unit: PeriodUnit, now: DateTime<Utc>) -> Self {
        let day = now.date_naive();
        let midnight = |date: NaiveDate| Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default());
        match unit {
            PeriodUnit::Minute => {
                let starts_at =
                    now - Duration::seconds(i64::from(now.second())) - Duration::nanoseconds(i64::from(now.nanosecond()));
                Self {
                    unit,
                    label: starts_at.format("%Y-%m-%dT%H:%M").to_string(),
                    starts_at,
                    resets_at: starts_at + Duration::minutes(1),
                }
            }
            PeriodUnit::Day => {
                let starts_at = midnight(day);
                Self { unit, label: day.format("%Y-%m-%d").to_string(), starts_at, resets_at: starts_at + Duration::days(1) }
            }
            PeriodUnit::Month => {
                let first = day.with_day(1).unwrap_or(day);
                let next = if first.month() == 12 {
                    NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
                }
                .unwrap_or(first);
                Self { unit, label: first.format("%Y-%m").to_string(), starts_at: midnight(first), resets_at: midnight(next) }
            }
        }
    }

    /// Whole seconds from `now` until the period resets, at least 1 (the `Retry-After` of a refusal).
    pub fn seconds_until_reset(&self, now: DateTime<Utc>) -> u64 {
        let millis = (self.resets_at - now).num_milliseconds().max(0) as u64;
        millis.div_ceil(1000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn periods_are_utc_minutes_days_and_months() {
        let now = at("2026-12-31T23:59:30.250Z");
        let minute = Period::containing(PeriodUnit::Minute, now);
        assert_eq!(minute.label, "2026-12-31T23:59");
        assert_eq!(minute.resets_at, at("2027-01-01T00:00:00Z"));
        assert_eq!(minute.seconds_until_reset(now), 30);
        let day = Period::containing(PeriodUnit::Day, now);
        assert_eq!((day.label.as_str(), day.resets_at), ("2026-12-31", at("2027-01-01T00:00:00Z")));
        let month = Period::containing(PeriodUnit::Month, now);
        assert_eq!((month.label.as_str(), month.starts_at), ("2026-12", at("2026-12-01T00:00:00Z")));
        assert_eq!(month.resets_at, at("2027-01-01T00:00:00Z"));
        // One second later every period is a new one.
        let next = at("2027-01-01T00:00:00Z");
        assert_eq!(Period::containing(PeriodUnit::Month, next).label, "2027-01");
        assert_eq!(Period::containing(PeriodUnit::Day, next).label, "2027-01-01");
        assert_eq!(Period::containing(PeriodUnit::Month, at("2026-02-10T00:00:00Z")).resets_at, at("2026-03-01T00:00:00Z"));
    }

    #[test]
    fn a_timezone_offset_does_not_move_the_utc_day() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T01:30:00+02:00").unwrap().with_timezone(&Utc);
        assert_eq!(Period::containing(PeriodUnit::Day, now).label, "2026-11-30");
        assert_eq!(Period::containing(PeriodUnit::Month, now).label, "2026-11");
    }
}
