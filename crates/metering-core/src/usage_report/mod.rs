//! Usage reports: one tenant's usage over the last N days, and every tenant's totals, read from the counters.
//!
//! The cost of a report grows with the days asked for (and the request types and models used), never with
//! the number of requests: a counter item holds a whole day (or ISO week) of one tenant, request type and
//! model. One tenant's report is two `Query` calls (its daily items and its weekly items); the all-tenants
//! list is one `Query` on the `gsi1` index per day.

pub mod access;
pub mod aggregate;
pub mod cursor;
pub mod params;
pub mod period;
pub mod reader;

use std::sync::Arc;

use chrono::{Datelike, Days, NaiveDate};
use futures::StreamExt;
use serde::Serialize;

pub use aggregate::{RequestTypeFilter, TenantTotals, TenantUsageReport, UsageSummary};
pub use cursor::{InvalidCursor, RankingCursor};
pub use period::{InvalidPeriod, ReportPeriod, DEFAULT_DAYS, MAX_DAYS};
pub use reader::{CounterRead, DynamoUsageReader, ReadStats, UsageReadError, UsageReader};

use crate::counters::{day_label, week_label, PeriodKind};
use crate::pricing::PricingTable;

/// Response header: items DynamoDB read for a report (`ScannedCount` summed), the cost of the report.
pub const ITEMS_READ_HEADER: &str = "x-usage-items-read";
/// Response header: `Query` calls made for a report.
pub const QUERIES_HEADER: &str = "x-usage-queries";

/// How long the chat function keeps counter items (its `USAGE_DAILY_TTL_DAYS` / `USAGE_WEEKLY_TTL_DAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterRetention {
    pub daily_days: u32,
    pub weekly_days: u32,
}

impl Default for CounterRetention {
    fn default() -> Self {
        Self { daily_days: 90, weekly_days: 400 }
    }
}

/// A report and what it cost to read.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub report: T,
    pub stats: ReadStats,
}

/// The body of `GET /v1/usage`: one page of every tenant's totals, most tokens first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantRankingPage {
    pub period_days: u32,
    pub from: String,
    pub to: String,
    pub request_type: &'static str,
    /// Tenants with usage in the period (all pages).
    pub tenant_count: usize,
    /// Every tenant together (all pages).
    pub summary: UsageSummary,
    pub tenants: Vec<TenantTotals>,
    pub limit: usize,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Clone)]
pub struct UsageReports {
    reader: Arc<dyn UsageReader>,
    pricing: Arc<PricingTable>,
    retention: CounterRetention,
    /// `Query` calls in flight at once for the all-tenants list.
    concurrency: usize,
}

impl UsageReports {
    pub fn new(reader: Arc<dyn UsageReader>, pricing: Arc<PricingTable>, retention: CounterRetention) -> Self {
        Self { reader, pricing, retention, concurrency: 8 }
    }

    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// One tenant's report; `today` only dates the retention warnings.
    #[tracing::instrument(skip(self), fields(items_read))]
    pub async fn tenant_report(
        &self,
        tenant_id: &str,
        period: ReportPeriod,
        filter: RequestTypeFilter,
        today: NaiveDate,
    ) -> Result<Answer<TenantUsageReport>, UsageReadError> {
        let (first_day, last_day) = (day_label(period.from), day_label(period.to));
        let (first_week, last_week) = (week_label(period.from), week_label(period.to));
        let (days, weeks) = tokio::try_join!(
            self.reader.tenant_counters(tenant_id, PeriodKind::Day, &first_day, &last_day, filter.0),
            self.reader.tenant_counters(tenant_id, PeriodKind::Week, &first_week, &last_week, filter.0),
        )?;
        let mut report = aggregate::tenant_report(tenant_id, &period, filter, &days.rows, &weeks.rows, &self.pricing);
        report.warnings.extend(retention_warnings(&period, today, self.retention));
        let mut stats = days.stats;
        stats += weeks.stats;
        tracing::Span::current().record("items_read", stats.items_read);
        Ok(Answer { report, stats })
    }

    /// One page of every tenant's totals over `cursor.period`, starting at `cursor.offset`.
    #[tracing::instrument(skip(self), fields(items_read))]
    pub async fn tenant_ranking(
        &self,
        cursor: RankingCursor,
        limit: usize,
        today: NaiveDate,
    ) -> Result<Answer<TenantRankingPage>, UsageReadError> {
        let RankingCursor { period, filter, offset } = cursor;
        let reader = &self.reader;
        let mut reads = futures::stream::iter(period.day_labels())
            .map(|day| async move { reader.day_counters_of_all_tenants(&day, filter.0).await })
            .buffer_unordered(self.concurrency);
        let mut builder = aggregate::RankingBuilder::new(filter);
        let mut stats = ReadStats::default();
        while let Some(read) = reads.next().await {
            let read = read?;
            builder.add(&read.rows);
            stats += read.stats;
        }
        let ranking = builder.finish(&self.pricing);
        let (tenants, next_offset) = aggregate::page(&ranking.tenants, offset, limit);
        let mut warnings = ranking.warnings;
        warnings.extend(retention_warnings(&period, today, self.retention));
        tracing::Span::current().record("items_read", stats.items_read);
        Ok(Answer {
            report: TenantRankingPage {
                period_days: period.days(),
                from: day_label(period.from),
                to: day_label(period.to),
                request_type: filter.label(),
                tenant_count: ranking.tenants.len(),
                summary: ranking.summary,
                tenants,
                limit,
                next: next_offset.map(|offset| RankingCursor { period, filter, offset }.encode()),
                warnings,
            },
            stats,
        })
    }
}

/// Says when part of the period is older than the counters are kept (TTL), instead of silently showing zeros.
pub fn retention_warnings(period: &ReportPeriod, today: NaiveDate, retention: CounterRetention) -> Vec<String> {
    let mut warnings = Vec::new();
    // A daily item of day D expires D + 1 + daily_days days after D's start.
    if let Some(oldest_kept) = today.checked_sub_days(Days::new(u64::from(retention.daily_days))) {
        if period.from < oldest_kept {
            warnings.push(format!(
                "daily counters are kept {} days: the summary and daily_stats of days before {} may show zeros \
                 (weekly_stats are kept {} days)",
                retention.daily_days,
                day_label(oldest_kept),
                retention.weekly_days
            ));
        }
    }
    let first_week_expires = period
        .from
        .checked_sub_days(Days::new(u64::from(period.from.weekday().num_days_from_monday())))
        .and_then(|first_monday| first_monday.checked_add_days(Days::new(7 + u64::from(retention.weekly_days))));
    if first_week_expires.is_some_and(|expiry| expiry <= today) {
        warnings.push(format!(
            "weekly counters are kept {} days: the oldest weeks of weekly_stats may show zeros",
            retention.weekly_days
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::TokenCounts;
    use aggregate::CounterRow;
    use async_trait::async_trait;
    use std::sync::Mutex;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Rows kept in memory; answers queries like the table would and records them.
    #[derive(Default)]
    struct MemoryReader {
        days: Vec<CounterRow>,
        weeks: Vec<CounterRow>,
        calls: Mutex<Vec<String>>,
    }

    fn in_range(row: &CounterRow, first: &str, last: &str) -> bool {
        row.period.as_str() >= first && row.period.as_str() <= last
    }

    #[async_trait]
    impl UsageReader for MemoryReader {
        async fn tenant_counters(
            &self,
            tenant_id: &str,
            kind: PeriodKind,
            first: &str,
            last: &str,
            _request_type: Option<crate::usage::RequestType>,
        ) -> Result<CounterRead, UsageReadError> {
            self.calls.lock().unwrap().push(format!("{tenant_id} {kind:?} {first}..{last}"));
            let source = if kind == PeriodKind::Day { &self.days } else { &self.weeks };
            let rows: Vec<CounterRow> =
                source.iter().filter(|row| row.tenant_id == tenant_id && in_range(row, first, last)).cloned().collect();
            Ok(CounterRead { stats: ReadStats { items_read: rows.len() as u64, queries: 1 }, rows })
        }

        async fn day_counters_of_all_tenants(
            &self,
            day: &str,
            _request_type: Option<crate::usage::RequestType>,
        ) -> Result<CounterRead, UsageReadError> {
            self.calls.lock().unwrap().push(format!("all {day}"));
            let rows: Vec<CounterRow> = self.days.iter().filter(|row| row.period == day).cloned().collect();
            Ok(CounterRead { stats: ReadStats { items_read: rows.len() as u64, queries: 1 }, rows })
        }
    }

    fn row(tenant: &str, period: &str, input: u64) -> CounterRow {
        CounterRow {
            tenant_id: tenant.into(),
            period: period.into(),
            request_type: "bedrock".into(),
            model_id: "anthropic.claude-3-haiku-20240307-v1:0".into(),
            tokens: TokenCounts { input_tokens: input, ..TokenCounts::default() },
            total_tokens: input,
            requests: 1,
        }
    }

    fn reports(reader: MemoryReader) -> (UsageReports, Arc<MemoryReader>) {
        let reader = Arc::new(reader);
        let reports = UsageReports::new(reader.clone(), Arc::new(PricingTable::builtin()), CounterRetention::default());
        (reports, reader)
    }

    #[tokio::test]
    async fn a_tenant_report_queries_its_day_and_week_ranges_once_each() {
        let (reports, reader) = reports(MemoryReader {
            days: vec![row("acme", "2026-11-20", 5), row("acme", "2026-10-01", 99), row("globex", "2026-11-20", 7)],
            weeks: vec![row("acme", "2026-W47", 5)],
            ..MemoryReader::default()
        });
        let today = date(2026, 11, 23);
        let period = ReportPeriod::last_days(today, 7).unwrap();
        let answer = reports.tenant_report("acme", period, RequestTypeFilter(None), today).await.unwrap();
        assert_eq!(answer.report.summary.total_input_tokens, 5);
        assert_eq!(answer.report.weekly_stats["2026-W47"].input_tokens, 5);
        assert_eq!(answer.stats, ReadStats { items_read: 2, queries: 2 });
        let mut calls = reader.calls.lock().unwrap().clone();
        calls.sort();
        assert_eq!(calls, vec!["acme Day 2026-11-17..2026-11-23", "acme Week 2026-W47..2026-W48"]);
    }

    #[tokio::test]
    async fn the_ranking_reads_each_day_once_and_pages_with_a_cursor() {
        let (reports, reader) = reports(MemoryReader {
            days: vec![row("a", "2026-11-22", 1), row("b", "2026-11-23", 2), row("c", "2026-11-23", 3)],
            ..MemoryReader::default()
        });
        let today = date(2026, 11, 23);
        let period = ReportPeriod::last_days(today, 3).unwrap();
        let first = RankingCursor { period, filter: RequestTypeFilter(None), offset: 0 };
        let page_one = reports.tenant_ranking(first, 2, today).await.unwrap().report;
        assert_eq!(reader.calls.lock().unwrap().len(), 3, "one query per day");
        assert_eq!(page_one.tenant_count, 3);
        assert_eq!(page_one.tenants.iter().map(|t| t.tenant_id.as_str()).collect::<Vec<_>>(), vec!["c", "b"]);
        let next = RankingCursor::decode(page_one.next.as_deref().unwrap()).unwrap();
        assert_eq!((next.period, next.offset), (period, 2));
        let page_two = reports.tenant_ranking(next, 2, today).await.unwrap().report;
        assert_eq!(page_two.tenants.iter().map(|t| t.tenant_id.as_str()).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(page_two.next, None);
        assert_eq!(page_two.summary.total_tokens, 6);
    }

    #[test]
    fn periods_older_than_the_counters_are_flagged() {
        let today = date(2026, 11, 23);
        let retention = CounterRetention::default();
        let recent = ReportPeriod::last_days(today, 90).unwrap();
        assert!(retention_warnings(&recent, today, retention).is_empty());
        let year = ReportPeriod::last_days(today, 366).unwrap();
        let warnings = retention_warnings(&year, today, retention);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("2026-08-25"), "{warnings:?}");
        let short = CounterRetention { daily_days: 1, weekly_days: 7 };
        assert_eq!(retention_warnings(&ReportPeriod::last_days(today, 30).unwrap(), today, short).len(), 2);
    }
}
