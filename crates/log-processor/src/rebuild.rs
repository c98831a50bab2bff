//! Rebuilding the usage counters of a UTC day, and of its ISO week, from the usage lines: the invocation
//! `{"rebuild_counters": "YYYY-MM-DD"[, "tenant_id": "..."][, "allow_today": true]}`, the same as
//! `scripts/rebuild-counters` (README "Rebuilding counters").
//!
//! - The lines are the bill: one per request id (a repeated id counts once).
//! - Every counter item of the period is SET (never ADD) to what the lines say, items no line backs to zero:
//!   running it twice changes nothing. Items that are not counters (other sort-key prefixes) are left alone.
//! - Only closed periods, unless `allow_today`: a day closes [`LATE_LINES`] after its end. The week is
//!   rebuilt from all its days' lines when it is closed; while it holds today it is left alone (and said so).
//!
//! Limits: the week's lines are read with `FilterLogEvents` and their request ids held in memory (about
//! 60 bytes each), so one invocation suits weeks up to a few million lines within 15 minutes and 512 MB.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use metering_core::counters::{day_label, expiry_epoch_seconds, week_label, CounterKey, PeriodKind};
use metering_core::usage::UsageRecord;
use metering_core::usage_report::CounterRetention;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::error::BoxError;
use crate::line::{classify, LineOutcome};
use crate::ports::{LogQuery, LogSource, USAGE_FILTER_PATTERN};
use crate::request::parse_day;

/// How long after a day's end a line or a counter update of it may still arrive (the export's window too).
pub const LATE_LINES: chrono::Duration = chrono::Duration::minutes(20);
/// Lines are stamped when the request arrived: read from a little before the period.
const READ_BEFORE: chrono::Duration = chrono::Duration::minutes(5);

#[derive(Debug, Error)]
pub enum RebuildError {
    /// The payload asks for something the rebuild cannot do; nothing was written.
    #[error("bad rebuild request: {0}")]
    BadRequest(String),
    #[error("reading log group {log_group}: {source}")]
    ReadLogs {
        log_group: String,
        #[source]
        source: BoxError,
    },
    #[error("counters of {period}: {source}")]
    Counters {
        period: String,
        #[source]
        source: BoxError,
    },
}

impl From<RebuildError> for lambda_runtime::Diagnostic {
    fn from(error: RebuildError) -> Self {
        let error_type = match error {
            RebuildError::BadRequest(_) => "BadRequest",
            RebuildError::ReadLogs { .. } => "ReadLogsFailed",
            RebuildError::Counters { .. } => "CountersFailed",
        };
        lambda_runtime::Diagnostic { error_type: error_type.to_owned(), error_message: error.to_string() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildRequest {
    pub day: NaiveDate,
    /// Only this tenant (exact id).
    pub tenant_id: Option<String>,
    /// Rebuild open periods too (only when no traffic flows for the tenant(s)).
    pub allow_today: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebuildPayload {
    rebuild_counters: String,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    allow_today: bool,
}

impl RebuildRequest {
    /// `None` when the payload is not a rebuild (it is the export's then).
    pub fn from_payload(payload: &Value) -> Option<Result<Self, RebuildError>> {
        payload.get("rebuild_counters")?;
        Some(Self::parse(payload))
    }

    fn parse(payload: &Value) -> Result<Self, RebuildError> {
        let hint = r#"send {"rebuild_counters": "YYYY-MM-DD"} (optional "tenant_id", "allow_today": true)"#;
        let parsed: RebuildPayload = serde_json::from_value(payload.clone())
            .map_err(|error| RebuildError::BadRequest(format!("unexpected payload {payload}: {error}; {hint}")))?;
        let day = parse_day("rebuild_counters", &parsed.rebuild_counters)
            .map_err(|error| RebuildError::BadRequest(error.to_string()))?;
        if parsed.tenant_id.as_deref() == Some("") {
            return Err(RebuildError::BadRequest("\"tenant_id\" is empty".to_owned()));
        }
        Ok(Self { day, tenant_id: parsed.tenant_id, allow_today: parsed.allow_today })
    }
}

/// What one counter item holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSums {
    pub request_count: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl CounterSums {
    fn add(&mut self, record: &UsageRecord) {
        self.request_count += 1;
        self.input_tokens += record.input_tokens;
        self.output_tokens += record.output_tokens;
        self.total_tokens += record.total_tokens;
        self.cache_creation_input_tokens += record.cache_creation_input_tokens;
        self.cache_read_input_tokens += record.cache_read_input_tokens;
    }
}

/// One counter item: its keys (the core's key design) and the names they are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterItem {
    pub key: CounterKey,
    pub tenant_id: String,
    pub request_type: String,
    pub model_id: String,
}

impl CounterItem {
    pub fn new(kind: PeriodKind, period: &str, tenant_id: &str, request_type: &str, model_id: &str) -> Self {
        Self {
            key: CounterKey::new(kind, period, tenant_id, request_type, model_id),
            tenant_id: tenant_id.to_owned(),
            request_type: request_type.to_owned(),
            model_id: model_id.to_owned(),
        }
    }
}

/// The counter items of the usage table, as the rebuild needs them.
#[async_trait]
pub trait CounterStore: Send + Sync {
    /// The counter items of one day or week (of one tenant when given); anything else is not returned.
    async fn read_period(
        &self,
        kind: PeriodKind,
        period: &str,
        tenant_id: Option<&str>,
    ) -> Result<Vec<(CounterItem, CounterSums)>, BoxError>;
    /// SETs the item to `sums` (the ttl only when the item has none).
    async fn set(&self, item: &CounterItem, sums: &CounterSums, ttl: i64) -> Result<(), BoxError>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebuildSummary {
    pub day: String,
    /// The ISO week rebuilt, or `None` when it is still open.
    pub week: Option<String>,
    pub tenant_id: Option<String>,
    pub lines: u64,
    pub repeated_request_ids: u64,
    pub items_set: u64,
    pub items_zeroed: u64,
    pub items_unchanged: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub struct CounterRebuilder {
    logs: Arc<dyn LogSource>,
    counters: Arc<dyn CounterStore>,
    log_groups: Vec<String>,
    retention: CounterRetention,
}

fn day_end(day: NaiveDate) -> DateTime<Utc> {
    day.checked_add_days(Days::new(1))
        .and_then(|next| next.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |at| at.and_utc())
}

/// No line or counter update can still belong to `day`.
pub fn is_closed(day: NaiveDate, now: DateTime<Utc>) -> bool {
    now >= day_end(day) + LATE_LINES
}

fn monday_of(day: NaiveDate) -> NaiveDate {
    day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

/// What every counter item of `day` (and of its week, when `with_week`) must hold according to `records`.
pub fn expected_items<'a>(
    records: impl IntoIterator<Item = &'a UsageRecord>,
    day: NaiveDate,
    with_week: bool,
) -> BTreeMap<(String, String), (CounterItem, CounterSums)> {
    let (day_period, week_period) = (day_label(day), week_label(day));
    let mut items: BTreeMap<(String, String), (CounterItem, CounterSums)> = BTreeMap::new();
    for record in records {
        let Ok(at) = DateTime::parse_from_rfc3339(&record.timestamp) else {
            continue;
        };
        let line_day = at.with_timezone(&Utc).date_naive();
        let mut periods = Vec::with_capacity(2);
        if line_day == day {
            periods.push((PeriodKind::Day, day_period.as_str()));
        }
        if with_week && week_label(line_day) == week_period {
            periods.push((PeriodKind::Week, week_period.as_str()));
        }
        for (kind, period) in periods {
            let item = CounterItem::new(kind, period, &record.tenant_id, record.request_type.as_str(), &record.model_id);
            let entry = items.entry((item.key.pk.clone(), item.key.sk.clone())).or_insert_with(|| (item, CounterSums::default()));
            entry.1.add(record);
        }
    }
    items
}

impl CounterRebuilder {
    pub fn new(
        logs: Arc<dyn LogSource>,
        counters: Arc<dyn CounterStore>,
        log_groups: Vec<String>,
        retention: CounterRetention,
    ) -> Self {
        Self { logs, counters, log_groups, retention }
    }

    #[tracing::instrument(skip(self), fields(day = %request.day, tenant_id = request.tenant_id.as_deref().unwrap_or("*")))]
    pub async fn rebuild(&self, request: &RebuildRequest, now: DateTime<Utc>) -> Result<RebuildSummary, RebuildError> {
        let day = request.day;
        if day > now.date_naive() {
            return Err(RebuildError::BadRequest(format!("{day} is in the future (today is {} UTC)", now.date_naive())));
        }
        if !is_closed(day, now) && !request.allow_today {
            return Err(RebuildError::BadRequest(format!(
                "{day} is still open (its lines and counter updates may arrive until {} UTC): a rebuild now would race \
                 with the API's own updates; rebuild it later, or send \"allow_today\": true when no traffic flows",
                (day_end(day) + LATE_LINES).format("%Y-%m-%d %H:%M")
            )));
        }
        let monday = monday_of(day);
        let sunday = monday + chrono::Duration::days(6);
        let with_week = is_closed(sunday, now) || request.allow_today;
        let (first, last) = if with_week { (monday, sunday.min(now.date_naive())) } else { (day, day) };

        let records = self.read_lines(first, last, request.tenant_id.as_deref(), now).await?;
        let expected = expected_items(records.lines.values(), day, with_week);
        let mut summary = RebuildSummary {
            day: day_label(day),
            week: with_week.then(|| week_label(day)),
            tenant_id: request.tenant_id.clone(),
            lines: records.lines.values().filter(|record| record.timestamp.get(..10) == Some(day_label(day).as_str())).count()
                as u64,
            repeated_request_ids: records.repeated,
            note: (!with_week)
                .then(|| format!("week {} is still open (it holds today): its items were not rebuilt", week_label(day))),
            ..RebuildSummary::default()
        };
        let mut periods = vec![(PeriodKind::Day, day_label(day))];
        if with_week {
            periods.push((PeriodKind::Week, week_label(day)));
        }
        for (kind, period) in periods {
            let counter_error = |source| RebuildError::Counters { period: format!("{}#{period}", kind.prefix()), source };
            let current = self.counters.read_period(kind, &period, request.tenant_id.as_deref()).await.map_err(counter_error)?;
            let mut targets: BTreeMap<(String, String), (CounterItem, CounterSums, Option<CounterSums>)> = expected
                .iter()
                .filter(|(_, (item, _))| item.key.kind == kind)
                .map(|(key, (item, sums))| (key.clone(), (item.clone(), *sums, None)))
                .collect();
            for (item, sums) in current {
                let key = (item.key.pk.clone(), item.key.sk.clone());
                targets.entry(key).or_insert_with(|| (item, CounterSums::default(), None)).2 = Some(sums);
            }
            for (item, wanted, present) in targets.into_values() {
                if present == Some(wanted) {
                    summary.items_unchanged += 1;
                    continue;
                }
                let ttl = self.ttl(kind, day);
                self.counters.set(&item, &wanted, ttl).await.map_err(counter_error)?;
                summary.items_set += 1;
                summary.items_zeroed += u64::from(wanted == CounterSums::default());
                tracing::info!(sk = %item.key.sk, tenant_id = %item.tenant_id, ?present, ?wanted, "counter item rebuilt");
            }
        }
        Ok(summary)
    }

    fn ttl(&self, kind: PeriodKind, day: NaiveDate) -> i64 {
        let (start, days) = match kind {
            PeriodKind::Day => (day, self.retention.daily_days),
            PeriodKind::Week => (monday_of(day), self.retention.weekly_days),
        };
        expiry_epoch_seconds(start, kind, std::time::Duration::from_secs(u64::from(days) * 86_400))
    }

    async fn read_lines(
        &self,
        first: NaiveDate,
        last: NaiveDate,
        tenant_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<BilledLines, RebuildError> {
        let start = first.and_hms_opt(0, 0, 0).map_or(DateTime::<Utc>::MIN_UTC, |at| at.and_utc()) - READ_BEFORE;
        let end = (day_end(last) + LATE_LINES).min(now);
        let mut billed = BilledLines::default();
        let mut seen = HashSet::new();
        for group in &self.log_groups {
            let query = LogQuery {
                log_group: group.clone(),
                start_ms: start.timestamp_millis(),
                end_ms: end.timestamp_millis(),
                filter_pattern: USAGE_FILTER_PATTERN.to_owned(),
            };
            let mut next_token = None;
            loop {
                let page = self
                    .logs
                    .page(&query, next_token)
                    .await
                    .map_err(|source| RebuildError::ReadLogs { log_group: group.clone(), source })?;
                for message in &page.messages {
                    let LineOutcome::Usage { day, .. } = classify(message) else {
                        continue;
                    };
                    // A valid usage line (just classified) is also a `UsageRecord`, which owns its fields.
                    let Ok(record) = serde_json::from_str::<UsageRecord>(message.trim()) else {
                        continue;
                    };
                    if day < first || day > last || tenant_id.is_some_and(|tenant| tenant != record.tenant_id) {
                        continue;
                    }
                    if seen.insert(record.request_id.clone()) {
                        billed.lines.insert(record.request_id.clone(), record);
                    } else {
                        billed.repeated += 1;
                    }
                }
                match page.next_token {
                    Some(token) => next_token = Some(token),
                    None => break,
                }
            }
        }
        Ok(billed)
    }
}

/// The rebuild on CloudWatch Logs and the usage table (`USAGE_TABLE_NAME`; without it there is no rebuild),
/// read from the environment once at cold start.
pub fn rebuild_on_aws(
    config: &crate::ExportConfig,
    sdk_config: &aws_config::SdkConfig,
) -> Result<Option<CounterRebuilder>, metering_core::config::ConfigError> {
    let Some(table) = std::env::var("USAGE_TABLE_NAME").ok().filter(|name| !name.trim().is_empty()) else {
        return Ok(None);
    };
    let days = |name: &'static str, default: u32| -> Result<u32, metering_core::config::ConfigError> {
        match std::env::var(name).ok().filter(|value| !value.trim().is_empty()) {
            None => Ok(default),
            Some(value) => value.trim().parse::<u32>().ok().filter(|days| (1..=3650).contains(days)).ok_or(
                metering_core::config::ConfigError::Invalid { name, value, reason: "a whole number of days, 1 to 3650".into() },
            ),
        }
    };
    let retention =
        CounterRetention { daily_days: days("USAGE_DAILY_TTL_DAYS", 90)?, weekly_days: days("USAGE_WEEKLY_TTL_DAYS", 400)? };
    Ok(Some(CounterRebuilder::new(
        Arc::new(crate::aws::CloudWatchLogSource::new(sdk_config)),
        Arc::new(crate::rebuild_dynamodb::DynamoCounterStore::new(sdk_config, table)),
        config.log_groups.clone(),
        retention,
    )))
}

/// One rebuild invocation: its summary as JSON, or the error Lambda reports.
pub async fn handle_rebuild(
    rebuilder: Option<&CounterRebuilder>,
    request: Result<RebuildRequest, RebuildError>,
) -> Result<Value, lambda_runtime::Diagnostic> {
    let request = request?;
    let Some(rebuilder) = rebuilder else {
        return Err(
            RebuildError::BadRequest("this log processor has no USAGE_TABLE_NAME: it cannot rebuild counters".into()).into()
        );
    };
    let summary = rebuilder.rebuild(&request, Utc::now()).await?;
    tracing::info!(?summary, "counters rebuilt");
    serde_json::to_value(summary)
        .map_err(|error| lambda_runtime::Diagnostic { error_type: "EncodeFailed".into(), error_message: error.to_string() })
}

#[derive(Default)]
struct BilledLines {
    lines: BTreeMap<String, UsageRecord>,
    repeated: u64,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::TimeZone;
    use metering_core::usage::{RequestType, TokenCounts, UsageEvent};
    use serde_json::json;

    use super::*;
    use crate::ports::fakes::PagedLogs;

    /// Counter items in memory, keyed (pk, sk), with the ttl of their first write.
    type StoredItems = BTreeMap<(String, String), (CounterItem, CounterSums, i64)>;

    #[derive(Default)]
    struct MemoryCounters {
        items: Mutex<StoredItems>,
        sets: Mutex<u64>,
    }

    #[async_trait]
    impl CounterStore for MemoryCounters {
        async fn read_period(
            &self,
            kind: PeriodKind,
            period: &str,
            tenant_id: Option<&str>,
        ) -> Result<Vec<(CounterItem, CounterSums)>, BoxError> {
            Ok(self
                .items
                .lock()
                .unwrap()
                .values()
                .filter(|(item, _, _)| item.key.kind == kind && item.key.period == period)
                .filter(|(item, _, _)| tenant_id.is_none_or(|tenant| tenant == item.tenant_id))
                .map(|(item, sums, _)| (item.clone(), *sums))
                .collect())
        }

        async fn set(&self, item: &CounterItem, sums: &CounterSums, ttl: i64) -> Result<(), BoxError> {
            *self.sets.lock().unwrap() += 1;
            let mut items = self.items.lock().unwrap();
            let entry = items.entry((item.key.pk.clone(), item.key.sk.clone())).or_insert((item.clone(), *sums, ttl));
            entry.1 = *sums;
            Ok(())
        }
    }

    fn record(at: &str, tenant: &str, model: &str, input: u64, request_id: &str) -> UsageRecord {
        UsageEvent {
            received_at: DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc),
            request_id: request_id.into(),
            tenant_id: tenant.into(),
            user_id: "u".into(),
            model_id: model.into(),
            request_type: RequestType::Bedrock,
            tokens: TokenCounts {
                input_tokens: input,
                output_tokens: 2,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 1,
            },
            latency_ms: 5,
            client_user_id: None,
            requested_model_id: None,
            usage_estimated: false,
        }
        .to_record(None)
    }

    fn logs_of(records: &[UsageRecord]) -> Arc<PagedLogs> {
        let events = records
            .iter()
            .map(|r| (DateTime::parse_from_rfc3339(&r.timestamp).unwrap().timestamp_millis() + 100, r.to_line()))
            .collect();
        Arc::new(PagedLogs::new(events, 2))
    }

    fn rebuilder(logs: Arc<PagedLogs>, counters: Arc<MemoryCounters>) -> CounterRebuilder {
        CounterRebuilder::new(logs, counters, vec!["group".into()], CounterRetention { daily_days: 90, weekly_days: 400 })
    }

    fn sums(request_count: u64, input: u64) -> CounterSums {
        CounterSums {
            request_count,
            input_tokens: input,
            output_tokens: 2 * request_count,
            total_tokens: input + 3 * request_count,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: request_count,
        }
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_payload_is_a_rebuild_only_when_it_says_so() {
        assert!(RebuildRequest::from_payload(&json!({"date": "2026-11-20"})).is_none());
        let request =
            RebuildRequest::from_payload(&json!({"rebuild_counters": "2026-11-20", "tenant_id": "acme"})).unwrap().unwrap();
        assert_eq!(request, RebuildRequest { day: day("2026-11-20"), tenant_id: Some("acme".into()), allow_today: false });
        for (payload, reason) in [
            (json!({"rebuild_counters": "2026-11-31"}), "a date like"),
            (json!({"rebuild_counters": "2026-11-20", "date": "2026-11-20"}), "unknown field"),
            (json!({"rebuild_counters": "2026-11-20", "tenant_id": ""}), "empty"),
            (json!({"rebuild_counters": 20_261_120}), "invalid type"),
        ] {
            let error = RebuildRequest::from_payload(&payload).unwrap().unwrap_err();
            assert!(error.to_string().contains(reason), "{payload}: {error}");
        }
    }

    #[tokio::test]
    async fn a_closed_week_is_set_from_its_lines_once_each_and_a_rerun_changes_nothing() {
        // GIVEN lines of Wednesday 2026-11-18 (one repeated) and Monday 2026-11-16, both of week 2026-W47,
        // and counters that over-count the day, lack the week and hold a stale model
        let lines = [
            record("2026-11-18T10:00:00.000Z", "acme", "m1", 10, "r1"),
            record("2026-11-18T11:00:00.000Z", "acme", "m1", 20, "r2"),
            record("2026-11-18T11:00:00.000Z", "acme", "m1", 20, "r2"),
            record("2026-11-16T09:00:00.000Z", "acme", "m1", 5, "r3"),
            record("2026-11-18T12:00:00.000Z", "beta", "m2", 7, "r4"),
        ];
        let counters = Arc::new(MemoryCounters::default());
        let over = CounterItem::new(PeriodKind::Day, "2026-11-18", "acme", "bedrock", "m1");
        let stale = CounterItem::new(PeriodKind::Day, "2026-11-18", "acme", "bedrock", "gone");
        for (item, sums) in [(over, sums(5, 99)), (stale, sums(3, 3))] {
            counters.set(&item, &sums, 1).await.unwrap();
        }
        let rebuilder = rebuilder(logs_of(&lines), Arc::clone(&counters));
        let request = RebuildRequest { day: day("2026-11-18"), tenant_id: Some("acme".into()), allow_today: false };
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();

        // WHEN rebuilt for acme
        let summary = rebuilder.rebuild(&request, now).await.unwrap();

        // THEN the day holds r1 + r2, the week r1 + r2 + r3, the stale item zero; beta untouched
        assert_eq!((summary.lines, summary.repeated_request_ids, summary.week.as_deref()), (2, 1, Some("2026-W47")));
        assert_eq!((summary.items_set, summary.items_zeroed), (3, 1));
        let read = |kind, period: &'static str| {
            let counters = Arc::clone(&counters);
            async move { counters.read_period(kind, period, None).await.unwrap() }
        };
        let days = read(PeriodKind::Day, "2026-11-18").await;
        let by_model: BTreeMap<_, _> = days.iter().map(|(item, sums)| (item.model_id.clone(), *sums)).collect();
        assert_eq!(by_model["m1"], sums(2, 30));
        assert_eq!(by_model["gone"], CounterSums::default());
        assert!(!by_model.contains_key("m2"), "another tenant's item is not written");
        let weeks = read(PeriodKind::Week, "2026-W47").await;
        assert_eq!(weeks.len(), 1);
        assert_eq!(weeks[0].1, sums(3, 35));
        assert_eq!(weeks[0].0.key.gsi1sk, "TENANT#acme#bedrock#m1");

        // WHEN rebuilt again THEN nothing is written
        let writes = *counters.sets.lock().unwrap();
        let again = rebuilder.rebuild(&request, now).await.unwrap();
        assert_eq!((again.items_set, again.items_unchanged), (0, 3));
        assert_eq!(*counters.sets.lock().unwrap(), writes);
    }

    #[tokio::test]
    async fn today_is_refused_and_an_open_week_is_left_alone() {
        let lines = [
            record("2026-11-30T10:00:00.000Z", "acme", "m1", 10, "r1"),
            record("2026-12-01T00:05:00.000Z", "acme", "m1", 1, "r2"),
        ];
        let counters = Arc::new(MemoryCounters::default());
        let rebuilder = rebuilder(logs_of(&lines), Arc::clone(&counters));
        let monday = RebuildRequest { day: day("2026-11-30"), tenant_id: None, allow_today: false };

        // WHEN yesterday is rebuilt 10 minutes after midnight THEN it is still open: refused, nothing written
        let early = Utc.with_ymd_and_hms(2026, 12, 1, 0, 10, 0).unwrap();
        let error = rebuilder.rebuild(&monday, early).await.unwrap_err();
        assert!(matches!(error, RebuildError::BadRequest(ref m) if m.contains("still open")), "{error}");
        assert_eq!(*counters.sets.lock().unwrap(), 0);

        // WHEN it is rebuilt once closed THEN the day is set, the open week is not, and the summary says so
        let later = Utc.with_ymd_and_hms(2026, 12, 1, 0, 30, 0).unwrap();
        let summary = rebuilder.rebuild(&monday, later).await.unwrap();
        assert_eq!((summary.week, summary.items_set), (None, 1));
        assert!(summary.note.unwrap().contains("still open"));
        assert!(counters.read_period(PeriodKind::Week, "2026-W49", None).await.unwrap().is_empty());

        // WHEN allowed THEN the week is rebuilt from its days so far
        let allowed = RebuildRequest { allow_today: true, ..monday };
        let summary = rebuilder.rebuild(&allowed, later).await.unwrap();
        assert_eq!(summary.week.as_deref(), Some("2026-W49"));
        let week = counters.read_period(PeriodKind::Week, "2026-W49", None).await.unwrap();
        assert_eq!(week[0].1, sums(2, 11));
    }

    #[tokio::test]
    async fn a_failing_read_names_the_log_group_and_writes_nothing() {
        let mut logs = PagedLogs::new(vec![], 10);
        logs.failing_group = Some("group".into());
        let counters = Arc::new(MemoryCounters::default());
        let counter_store: Arc<dyn CounterStore> = counters.clone();
        let rebuilder = CounterRebuilder::new(
            Arc::new(logs),
            counter_store,
            vec!["group".into()],
            CounterRetention { daily_days: 90, weekly_days: 400 },
        );
        let request = RebuildRequest { day: day("2026-11-18"), tenant_id: None, allow_today: false };
        let error = rebuilder.rebuild(&request, Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap()).await.unwrap_err();
        assert!(matches!(error, RebuildError::ReadLogs { ref log_group, .. } if log_group == "group"), "{error}");
        assert_eq!(*counters.sets.lock().unwrap(), 0);
    }
}
