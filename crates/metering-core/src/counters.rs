//! Usage counters in DynamoDB: one item per tenant, period (UTC day or ISO week), request type and model,
//! incremented with `ADD` so concurrent requests never lose an update.
//!
//! Exactly once: one request's (or one coalesced batch's) day and week updates go in one
//! `TransactWriteItems` with a marker item `pk = COUNTED#<batch id>` put under `attribute_not_exists(pk)`.
//! A retry of a batch that already applied is cancelled by the marker's condition, which means "applied";
//! nothing is ever added twice, and day and week move together or not at all.
//!
//! Key design (one table, one index):
//! - `pk = TENANT#<tenant>`, `sk = DAY#<YYYY-MM-DD>#<request_type>#<model>` (or `WEEK#<YYYY-Www>#...`):
//!   one tenant's N days is one `Query` on `pk` with `sk BETWEEN DAY#<from> AND DAY#<to>#~`.
//! - index `gsi1`: `gsi1pk = DAY#<YYYY-MM-DD>`, `gsi1sk = TENANT#<tenant>#<request_type>#<model>`:
//!   every tenant of a day is one `Query` on the index, never a `Scan`.
//!
//! Items read grow with days × request types × models, never with the number of requests.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chrono::{Datelike, NaiveDate};
use thiserror::Error;

use crate::usage::{RequestType, TokenCounts, UsageEvent};

pub const GSI1_NAME: &str = "gsi1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    Day,
    Week,
}

impl PeriodKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Day => "DAY",
            Self::Week => "WEEK",
        }
    }
}

/// `YYYY-MM-DD` of a UTC date.
pub fn day_label(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// ISO 8601 week label `YYYY-Www` (the ISO year, which differs from the calendar year around New Year).
pub fn week_label(date: NaiveDate) -> String {
    let week = date.iso_week();
    format!("{}-W{:02}", week.year(), week.week())
}

/// The keys of one counter item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterKey {
    pub pk: String,
    pub sk: String,
    pub gsi1pk: String,
    pub gsi1sk: String,
    pub period: String,
    pub kind: PeriodKind,
}

impl CounterKey {
    pub fn new(kind: PeriodKind, period: &str, tenant_id: &str, request_type: &str, model_id: &str) -> Self {
        let prefix = kind.prefix();
        Self {
            pk: tenant_partition(tenant_id),
            sk: format!("{prefix}#{period}#{request_type}#{model_id}"),
            gsi1pk: format!("{prefix}#{period}"),
            gsi1sk: format!("TENANT#{tenant_id}#{request_type}#{model_id}"),
            period: period.to_owned(),
            kind,
        }
    }

    /// The day and the ISO week items one request adds to.
    pub fn for_event(event: &UsageEvent) -> [Self; 2] {
        Self::for_day(event.received_at.date_naive(), &event.tenant_id, event.request_type, &event.model_id)
    }

    /// The day and the ISO week items of one UTC day's usage.
    pub fn for_day(date: NaiveDate, tenant_id: &str, request_type: RequestType, model_id: &str) -> [Self; 2] {
        let request_type = request_type.as_str();
        [
            Self::new(PeriodKind::Day, &day_label(date), tenant_id, request_type, model_id),
            Self::new(PeriodKind::Week, &week_label(date), tenant_id, request_type, model_id),
        ]
    }
}

pub fn tenant_partition(tenant_id: &str) -> String {
    format!("TENANT#{tenant_id}")
}

/// When an item for `period_start` (a UTC date) should expire.
pub fn expiry_epoch_seconds(period_start: NaiveDate, kind: PeriodKind, time_to_live: Duration) -> i64 {
    let period_days = match kind {
        PeriodKind::Day => 1,
        PeriodKind::Week => 7,
    };
    let start = period_start.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc().timestamp()).unwrap_or_default();
    start + period_days * 86_400 + time_to_live.as_secs() as i64
}

/// The `pk` prefix of the marker items that make a batch count once. The usage API only reads `TENANT#`
/// partitions and the `gsi1` index (markers have no `gsi1pk`), so markers never show in a report.
pub const MARKER_PARTITION_PREFIX: &str = "COUNTED#";
/// The `sk` of every marker item.
pub const MARKER_SORT_KEY: &str = "COUNTED";
/// How long a marker lives: far longer than any retry of its batch.
pub const MARKER_TIME_TO_LIVE: Duration = Duration::from_secs(2 * 86_400);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MeteringError {
    /// Definitely not applied, and worth retrying: throttled, or the transaction was cancelled (a conflict).
    #[error("usage counter update failed: {0}")]
    UpdateFailed(String),
    /// Definitely not applied, and a retry would not help: the request is invalid, the table is missing, ...
    #[error("usage counter update refused: {0}")]
    Refused(String),
    /// Not known whether it applied: a timeout or a broken connection after the write may have reached the table.
    #[error("usage counter update outcome unknown: {0}")]
    OutcomeUnknown(String),
}

impl MeteringError {
    /// True when the write may have reached the table.
    pub fn may_have_applied(&self) -> bool {
        matches!(self, Self::OutcomeUnknown(_))
    }

    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }

    /// The cause, without the variant's prefix.
    pub fn detail(&self) -> &str {
        match self {
            Self::UpdateFailed(detail) | Self::Refused(detail) | Self::OutcomeUnknown(detail) => detail,
        }
    }
}

/// The increments of one or more requests of the same tenant, request type, model and UTC day, applied as one
/// write. `batch_id` makes the write idempotent; `request_ids` says whom its outcome concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterBatch {
    pub batch_id: String,
    pub tenant_id: String,
    pub request_type: RequestType,
    pub model_id: String,
    pub day: NaiveDate,
    pub tokens: TokenCounts,
    pub request_ids: Vec<String>,
}

impl CounterBatch {
    /// A batch of one request.
    pub fn of_event(event: &UsageEvent) -> Self {
        Self {
            batch_id: uuid::Uuid::new_v4().simple().to_string(),
            tenant_id: event.tenant_id.clone(),
            request_type: event.request_type,
            model_id: event.model_id.clone(),
            day: event.received_at.date_naive(),
            tokens: event.tokens,
            request_ids: vec![event.request_id.clone()],
        }
    }

    /// Whether `event` adds to the same counter items as this batch.
    pub fn same_counters(&self, event: &UsageEvent) -> bool {
        self.day == event.received_at.date_naive()
            && self.request_type == event.request_type
            && self.tenant_id == event.tenant_id
            && self.model_id == event.model_id
    }

    /// Adds one more request of the same counters.
    pub fn absorb(&mut self, event: &UsageEvent) {
        let (sum, more) = (&mut self.tokens, &event.tokens);
        sum.input_tokens += more.input_tokens;
        sum.output_tokens += more.output_tokens;
        sum.cache_creation_input_tokens += more.cache_creation_input_tokens;
        sum.cache_read_input_tokens += more.cache_read_input_tokens;
        self.request_ids.push(event.request_id.clone());
    }

    pub fn request_count(&self) -> u64 {
        self.request_ids.len() as u64
    }

    pub fn keys(&self) -> [CounterKey; 2] {
        CounterKey::for_day(self.day, &self.tenant_id, self.request_type, &self.model_id)
    }
}

/// The port metering needs: apply one batch to its day and week counters, at most once however often it is
/// called with the same `batch_id`.
#[async_trait]
pub trait UsageCounters: Send + Sync {
    async fn add(&self, batch: &CounterBatch) -> Result<(), MeteringError>;
}

/// Counters in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoUsageCounters {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
    daily_ttl: Duration,
    weekly_ttl: Duration,
}

impl DynamoUsageCounters {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: String, daily_ttl: Duration, weekly_ttl: Duration) -> Self {
        Self { client, table_name, daily_ttl, weekly_ttl }
    }

    fn marker_put(&self, batch: &CounterBatch) -> Result<TransactWriteItem, MeteringError> {
        let expires = chrono::Utc::now().timestamp() + MARKER_TIME_TO_LIVE.as_secs() as i64;
        let put = Put::builder()
            .table_name(&self.table_name)
            .item("pk", AttributeValue::S(format!("{MARKER_PARTITION_PREFIX}{}", batch.batch_id)))
            .item("sk", AttributeValue::S(MARKER_SORT_KEY.to_owned()))
            .item("request_count", AttributeValue::N(batch.request_count().to_string()))
            .item("day", AttributeValue::S(day_label(batch.day)))
            .item("ttl", AttributeValue::N(expires.to_string()))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|error| MeteringError::Refused(error.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn counter_update(&self, key: &CounterKey, batch: &CounterBatch) -> Result<TransactWriteItem, MeteringError> {
        let ttl = match key.kind {
            PeriodKind::Day => expiry_epoch_seconds(batch.day, key.kind, self.daily_ttl),
            PeriodKind::Week => {
                let monday = batch.day - chrono::Duration::days(i64::from(batch.day.weekday().num_days_from_monday()));
                expiry_epoch_seconds(monday, key.kind, self.weekly_ttl)
            }
        };
        let tokens = &batch.tokens;
        let number = |value: u64| AttributeValue::N(value.to_string());
        let values: HashMap<String, AttributeValue> = [
            (":input", number(tokens.input_tokens)),
            (":output", number(tokens.output_tokens)),
            (":total", number(tokens.total())),
            (":cache_creation", number(tokens.cache_creation_input_tokens)),
            (":cache_read", number(tokens.cache_read_input_tokens)),
            (":requests", number(batch.request_count())),
            (":tenant", AttributeValue::S(batch.tenant_id.clone())),
            (":period", AttributeValue::S(key.period.clone())),
            (":request_type", AttributeValue::S(batch.request_type.as_str().to_owned())),
            (":model", AttributeValue::S(batch.model_id.clone())),
            (":gsi1pk", AttributeValue::S(key.gsi1pk.clone())),
            (":gsi1sk", AttributeValue::S(key.gsi1sk.clone())),
            (":ttl", AttributeValue::N(ttl.to_string())),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let names: HashMap<String, String> = [
            ("#input", "input_tokens"),
            ("#output", "output_tokens"),
            ("#total", "total_tokens"),
            ("#cache_creation", "cache_creation_input_tokens"),
            ("#cache_read", "cache_read_input_tokens"),
            ("#requests", "request_count"),
            ("#tenant", "tenant_id"),
            ("#period", "period"),
            ("#request_type", "request_type"),
            ("#model", "model_id"),
            ("#gsi1pk", "gsi1pk"),
            ("#gsi1sk", "gsi1sk"),
            ("#ttl", "ttl"),
        ]
        .into_iter()
        .map(|(placeholder, name)| (placeholder.to_owned(), name.to_owned()))
        .collect();
        let update = Update::builder()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(key.pk.clone()))
            .key("sk", AttributeValue::S(key.sk.clone()))
            .update_expression(
                "ADD #input :input, #output :output, #total :total, #cache_creation :cache_creation, \
                 #cache_read :cache_read, #requests :requests \
                 SET #tenant = :tenant, #period = :period, #request_type = :request_type, #model = :model, \
                 #gsi1pk = :gsi1pk, #gsi1sk = :gsi1sk, #ttl = :ttl",
            )
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|error| MeteringError::Refused(error.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// What a failed `TransactWriteItems` means for the counters.
fn classify_transaction_error(error: SdkError<TransactWriteItemsError>) -> Result<(), MeteringError> {
    let detail = DisplayErrorContext(&error).to_string();
    match error {
        SdkError::ServiceError(service) if service.raw().status().is_server_error() => {
            Err(MeteringError::OutcomeUnknown(detail))
        }
        SdkError::ServiceError(service) => match service.into_err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                let marker_code = cancelled.cancellation_reasons().first().and_then(|reason| reason.code());
                if marker_code == Some("ConditionalCheckFailed") {
                    // The marker exists: an earlier attempt of this very batch applied it.
                    Ok(())
                } else {
                    Err(MeteringError::UpdateFailed(detail))
                }
            }
            TransactWriteItemsError::InternalServerError(_) => Err(MeteringError::OutcomeUnknown(detail)),
            TransactWriteItemsError::ProvisionedThroughputExceededException(_)
            | TransactWriteItemsError::RequestLimitExceeded(_)
            | TransactWriteItemsError::ThrottlingException(_)
            | TransactWriteItemsError::TransactionInProgressException(_) => Err(MeteringError::UpdateFailed(detail)),
            _ => Err(MeteringError::Refused(detail)),
        },
        SdkError::ConstructionFailure(_) => Err(MeteringError::Refused(detail)),
        // Timeouts, broken connections and unreadable answers: the request may have reached the table.
        _ => Err(MeteringError::OutcomeUnknown(detail)),
    }
}

/// A DynamoDB client whose calls are bounded in time, so metering never hangs. Retrying is safe for the
/// counters: their writes are idempotent (see the module's documentation).
pub fn dynamodb_client(sdk_config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{retry::RetryConfig, timeout::TimeoutConfig};
    let config = aws_sdk_dynamodb::config::Builder::from(sdk_config)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(8))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

#[async_trait]
impl UsageCounters for DynamoUsageCounters {
    #[tracing::instrument(skip(self, batch), fields(tenant_id = %batch.tenant_id, batch_id = %batch.batch_id, requests = batch.request_ids.len()))]
    async fn add(&self, batch: &CounterBatch) -> Result<(), MeteringError> {
        let [day, week] = batch.keys();
        let items = vec![self.marker_put(batch)?, self.counter_update(&day, batch)?, self.counter_update(&week, batch)?];
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            // DynamoDB's own idempotency for 10 minutes; the marker covers longer and moto, which ignores it.
            .client_request_token(&batch.batch_id)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => classify_transaction_error(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{RequestType, TokenCounts};
    use chrono::{TimeZone, Utc};

    #[test]
    fn keys_let_one_query_read_a_tenants_days() {
        let key = CounterKey::new(PeriodKind::Day, "2026-11-23", "acme", "bedrock", "m-1");
        assert_eq!(key.pk, "TENANT#acme");
        assert_eq!(key.sk, "DAY#2026-11-23#bedrock#m-1");
        assert_eq!(key.gsi1pk, "DAY#2026-11-23");
        assert_eq!(key.gsi1sk, "TENANT#acme#bedrock#m-1");
    }

    #[test]
    fn iso_weeks_use_the_iso_year_around_new_year() {
        assert_eq!(week_label(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()), "2026-W53");
        assert_eq!(week_label(NaiveDate::from_ymd_opt(2024, 12, 30).unwrap()), "2025-W01");
        assert_eq!(week_label(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()), "2026-W48");
    }

    #[test]
    fn an_event_adds_to_its_utc_day_and_week() {
        let event = UsageEvent {
            received_at: Utc.with_ymd_and_hms(2026, 11, 22, 23, 59, 59).unwrap(),
            request_id: "r".into(),
            tenant_id: "t".into(),
            user_id: "u".into(),
            model_id: "m".into(),
            request_type: RequestType::Bedrock,
            tokens: TokenCounts::default(),
            latency_ms: 0,
            usage_estimated: false,
            client_user_id: None,
            requested_model_id: None,
        };
        let [day, week] = CounterKey::for_event(&event);
        assert_eq!(day.sk, "DAY#2026-11-22#bedrock#m");
        assert_eq!(week.sk, "WEEK#2026-W47#bedrock#m");
    }

    #[test]
    fn an_errors_detail_is_its_cause_without_the_variants_prefix() {
        // The `error` of a counter_update line: the cause as the store gave it.
        for error in [
            MeteringError::UpdateFailed("throttled".into()),
            MeteringError::Refused("throttled".into()),
            MeteringError::OutcomeUnknown("throttled".into()),
        ] {
            assert_eq!(error.detail(), "throttled");
            assert!(error.to_string().ends_with(": throttled") && error.to_string() != "throttled", "{error}");
        }
    }

    #[test]
    fn a_marker_lives_the_two_days_the_readme_gives_it() {
        // README "Usage counters in DynamoDB": the marker's `ttl` = 2 days, far longer than any retry.
        assert_eq!(MARKER_TIME_TO_LIVE, Duration::from_secs(2 * 24 * 60 * 60));
        assert_eq!(MARKER_TIME_TO_LIVE.as_secs(), 172_800);
    }

    #[test]
    fn daily_items_expire_the_configured_time_after_their_day_ends() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let expiry = expiry_epoch_seconds(day, PeriodKind::Day, Duration::from_secs(90 * 86_400));
        let day_start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap().timestamp();
        assert_eq!(expiry, day_start + 91 * 86_400);
    }
}
