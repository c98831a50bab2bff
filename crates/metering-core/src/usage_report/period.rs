//! The period of a report: the last N UTC days ending today, and the day and ISO-week labels it covers.

use chrono::{Days, NaiveDate};
use thiserror::Error;

use crate::counters::{day_label, week_label};

pub const DEFAULT_DAYS: u32 = 7;
/// A year, leap years included.
pub const MAX_DAYS: u32 = 366;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("days must be a whole number from 1 to {MAX_DAYS}")]
pub struct InvalidPeriod;

/// Consecutive UTC days `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportPeriod {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl ReportPeriod {
    /// The last `days` UTC days ending with `today` (included).
    pub fn last_days(today: NaiveDate, days: u32) -> Result<Self, InvalidPeriod> {
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(InvalidPeriod);
        }
        let from = today.checked_sub_days(Days::new(u64::from(days - 1))).ok_or(InvalidPeriod)?;
        Ok(Self { from, to: today })
    }

    /// A period given by its bounds (a pagination cursor carries them); refused if not 1..=366 days.
    pub fn between(from: NaiveDate, to: NaiveDate) -> Result<Self, InvalidPeriod> {
        let days = (to - from).num_days() + 1;
        if !(1..=i64::from(MAX_DAYS)).contains(&days) {
            return Err(InvalidPeriod);
        }
        Ok(Self { from, to })
    }

    pub fn days(&self) -> u32 {
        ((self.to - self.from).num_days() + 1) as u32
    }

    pub fn dates(&self) -> impl Iterator<Item = NaiveDate> {
        self.from.iter_days().take(self.days() as usize)
    }

    /// `YYYY-MM-DD` of every day, oldest first.
    pub fn day_labels(&self) -> Vec<String> {
        self.dates().map(day_label).collect()
    }

    /// `YYYY-Www` of every ISO week that has at least one day in the period, oldest first.
    pub fn week_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = Vec::new();
        for label in self.dates().map(week_label) {
            if labels.last() != Some(&label) {
                labels.push(label);
            }
        }
        labels
    }

    pub fn contains(&self, date: NaiveDate) -> bool {
        (self.from..=self.to).contains(&date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn the_period_ends_today_and_counts_today() {
        let period = ReportPeriod::last_days(date(2026, 11, 23), 7).unwrap();
        assert_eq!(period.from, date(2026, 11, 17));
        assert_eq!(period.days(), 7);
        assert_eq!(period.day_labels().first().unwrap(), "2026-11-17");
        assert_eq!(period.day_labels().last().unwrap(), "2026-11-23");
        let today_only = ReportPeriod::last_days(date(2026, 11, 23), 1).unwrap();
        assert_eq!((today_only.from, today_only.to), (date(2026, 11, 23), date(2026, 11, 23)));
    }

    #[test]
    fn a_366_day_period_across_a_leap_day_and_a_year_boundary() {
        // GIVEN today is 2025-02-28, one leap year (2024) ago
        let period = ReportPeriod::last_days(date(2025, 2, 28), 366).unwrap();
        // THEN the period starts on the leap day itself and has 366 distinct days
        assert_eq!(period.from, date(2024, 2, 29));
        let labels = period.day_labels();
        assert_eq!(labels.len(), 366);
        assert!(labels.contains(&"2024-02-29".to_string()));
        assert!(labels.contains(&"2024-12-31".to_string()) && labels.contains(&"2025-01-01".to_string()));
        let unique: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(unique.len(), 366);
        assert!(labels.windows(2).all(|pair| pair[0] < pair[1]), "labels sort like dates");
    }

    #[test]
    fn a_366_day_period_without_a_leap_day_spans_more_than_a_year() {
        let period = ReportPeriod::last_days(date(2027, 3, 1), 366).unwrap();
        assert_eq!(period.from, date(2026, 3, 1));
        assert_eq!(period.days(), 366);
    }

    #[test]
    fn weeks_around_new_year_use_the_iso_year() {
        // 2026-12-28 (Monday) .. 2027-01-03 (Sunday) is ISO week 2026-W53
        let period = ReportPeriod::last_days(date(2027, 1, 3), 7).unwrap();
        assert_eq!(period.week_labels(), vec!["2026-W53"]);
        let period = ReportPeriod::last_days(date(2027, 1, 4), 8).unwrap();
        assert_eq!(period.week_labels(), vec!["2026-W53", "2027-W01"]);
        // 2024-12-30 (Monday) already belongs to 2025-W01; Sunday 2024-12-29 to 2024-W52
        let period = ReportPeriod::last_days(date(2025, 1, 1), 3).unwrap();
        assert_eq!(period.week_labels(), vec!["2025-W01"]);
        let period = ReportPeriod::last_days(date(2025, 1, 1), 4).unwrap();
        assert_eq!(period.week_labels(), vec!["2024-W52", "2025-W01"]);
    }

    #[test]
    fn days_outside_1_to_366_are_refused() {
        let today = date(2026, 11, 23);
        assert_eq!(ReportPeriod::last_days(today, 0), Err(InvalidPeriod));
        assert_eq!(ReportPeriod::last_days(today, 367), Err(InvalidPeriod));
        assert!(ReportPeriod::between(today, date(2026, 11, 22)).is_err());
        assert!(ReportPeriod::between(date(2025, 11, 22), today).is_err());
        assert_eq!(ReportPeriod::between(date(2026, 11, 17), today).unwrap().days(), 7);
    }

    #[test]
    fn a_30_day_period_touches_five_or_six_iso_weeks() {
        for day in 1..=28 {
            let weeks = ReportPeriod::last_days(date(2026, 2, day), 30).unwrap().week_labels().len();
            assert!((5..=6).contains(&weeks), "{day}: {weeks}");
        }
    }
}
