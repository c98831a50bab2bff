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

use crate::error::Detail;
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
    UpdateFailed(#[source] Detail),
    /// Definitely not applied, and a retry would not help: the request is invalid, the table is missing, ...
    #[error("usage counter update refused: {0}")]
    Refused(#[source] Detail),
    /// Not known whether it applied: a timeout or a broken connection after the write may have reached the table.
    #[error("usage counter update outcome unknown: {0}")]
    OutcomeUnknown(#[source] Detail),
}

impl MeteringError {
    /// True when the write may have reached the table.
    pub fn may_have_applied(&self) -> bool {
        matches!(self, Self::OutcomeUnknown(_))
    }

    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }

    /// The cause's text, without the variant's prefix.
    pub fn detail(&self) -> &str {
        match self {
            Self::UpdateFailed(detail) | Self::Refused(detail) | Self::OutcomeUnknown(detail) => detail.message(),
        }
    }

    /// The cause, with its source.
    pub fn into_detail(self) -> Detail {
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
            .map_err(|error| MeteringError::Refused(Detail::caused_by(error.to_string(), error)))?;
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
            .map_err(|error| MeteringError::Refused(Detail::caused_by(error.to_string(), error)))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// What a failed `TransactWriteItems` means for the counters. The SDK error stays the detail's source.
fn classify_transaction_error(error: SdkError<TransactWriteItemsError>) -> Result<(), MeteringError> {
    let outcome: fn(Detail) -> MeteringError = match &error {
        SdkError::ServiceError(service) if service.raw().status().is_server_error() => MeteringError::OutcomeUnknown,
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                let marker_code = cancelled.cancellation_reasons().first().and_then(|reason| reason.code());
                if marker_code == Some("ConditionalCheckFailed") {
                    // The marker exists: an earlier attempt of this very batch applied it.
                    return Ok(());
                }
                MeteringError::UpdateFailed
            }
            TransactWriteItemsError::InternalServerError(_) => MeteringError::OutcomeUnknown,
            TransactWriteItemsError::ProvisionedThroughputExceededException(_)
            | TransactWriteItemsError::RequestLimitExceeded(_)
            | TransactWriteItemsError::ThrottlingException(_)
            | TransactWriteItemsError::TransactionInProgressException(_) => MeteringError::UpdateFailed,
            _ => MeteringError::Refused,
        },
        SdkError::ConstructionFailure(_) => MeteringError::Refused,
        // Timeouts, broken connections and unreadable answers: the request may have reached the table.
        _ => MeteringError::OutcomeUnknown,
    };
    Err(outcome(Detail::caused_by(DisplayErrorContext(&error).to_string(), error)))
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

    fn event(day: u32, tenant_id: &str, request_type: RequestType, model_id: &str, tokens: TokenCounts) -> UsageEvent {
        UsageEvent {
            received_at: Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap(),
            request_id: format!("r-{day}-{tenant_id}-{model_id}-{}", tokens.input_tokens),
            tenant_id: tenant_id.into(),
            user_id: "u".into(),
            model_id: model_id.into(),
            request_type,
            tokens,
            latency_ms: 0,
            usage_estimated: false,
            client_user_id: None,
            requested_model_id: None,
        }
    }

    fn tokens(input: u64, output: u64, cache_creation: u64, cache_read: u64) -> TokenCounts {
        TokenCounts {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: cache_creation,
            cache_read_input_tokens: cache_read,
        }
    }

    #[test]
    fn a_batch_takes_only_requests_of_its_own_day_tenant_request_type_and_model() {
        let batch = CounterBatch::of_event(&event(23, "acme", RequestType::Bedrock, "m", tokens(1, 1, 0, 0)));
        assert!(batch.same_counters(&event(23, "acme", RequestType::Bedrock, "m", tokens(9, 9, 9, 9))));
        for other in [
            event(24, "acme", RequestType::Bedrock, "m", tokens(1, 1, 0, 0)),
            event(23, "acme", RequestType::Anthropic, "m", tokens(1, 1, 0, 0)),
            event(23, "acme2", RequestType::Bedrock, "m", tokens(1, 1, 0, 0)),
            event(23, "acme", RequestType::Bedrock, "m2", tokens(1, 1, 0, 0)),
        ] {
            assert!(!batch.same_counters(&other), "{other:?}");
        }
    }

    #[test]
    fn a_batch_sums_every_token_count_and_keeps_every_request_id() {
        // GIVEN a batch of one request, then a second request of the same counters
        let first = event(23, "acme", RequestType::Bedrock, "m", tokens(2, 3, 4, 5));
        let second = event(23, "acme", RequestType::Bedrock, "m", tokens(3, 4, 5, 6));
        let mut batch = CounterBatch::of_event(&first);
        assert_eq!(batch.request_count(), 1);
        batch.absorb(&second);
        // THEN it adds both requests' counts, field by field, and answers for both
        assert_eq!(batch.tokens, tokens(5, 7, 9, 11));
        assert_eq!(batch.request_count(), 2);
        assert_eq!(batch.request_ids, vec![first.request_id.clone(), second.request_id.clone()]);
        assert_eq!(
            (batch.tenant_id.as_str(), batch.request_type, batch.model_id.as_str(), batch.day),
            ("acme", RequestType::Bedrock, "m", NaiveDate::from_ymd_opt(2026, 11, 23).unwrap())
        );
        assert_eq!(batch.keys(), CounterKey::for_event(&first));
        // AND a batch id is its own (the marker of one batch never hides another)
        assert_ne!(batch.batch_id, CounterBatch::of_event(&first).batch_id);
    }

    fn counters() -> DynamoUsageCounters {
        let config = aws_sdk_dynamodb::Config::builder().behavior_version_latest().build();
        DynamoUsageCounters::new(
            aws_sdk_dynamodb::Client::from_conf(config),
            "usage".into(),
            Duration::from_secs(90 * 86_400),
            Duration::from_secs(400 * 86_400),
        )
    }

    fn batch_of_two() -> CounterBatch {
        CounterBatch {
            batch_id: "batch-1".into(),
            tenant_id: "acme".into(),
            request_type: RequestType::Anthropic,
            model_id: "m".into(),
            day: NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
            tokens: tokens(10, 20, 30, 40),
            request_ids: vec!["r-1".into(), "r-2".into()],
        }
    }

    fn string(value: Option<&AttributeValue>) -> &str {
        match value {
            Some(AttributeValue::S(text) | AttributeValue::N(text)) => text,
            other => panic!("not a string or number: {other:?}"),
        }
    }

    #[test]
    fn a_batch_is_counted_once_through_a_marker_that_lives_two_days() {
        let before = Utc::now().timestamp();
        let item = counters().marker_put(&batch_of_two()).unwrap();
        let after = Utc::now().timestamp();
        let put = item.put().expect("the marker is a put");
        assert_eq!(put.table_name(), "usage");
        assert_eq!(put.condition_expression(), Some("attribute_not_exists(pk)"));
        let item = put.item();
        assert_eq!(string(item.get("pk")), "COUNTED#batch-1");
        assert_eq!(string(item.get("sk")), "COUNTED");
        assert_eq!(string(item.get("request_count")), "2");
        assert_eq!(string(item.get("day")), "2026-11-25");
        let ttl: i64 = string(item.get("ttl")).parse().unwrap();
        assert!((before + 172_800..=after + 172_800).contains(&ttl), "{ttl} not two days after {before}");
    }

    #[test]
    fn a_counter_update_adds_the_batch_to_its_day_and_its_week() {
        let (counters, batch) = (counters(), batch_of_two());
        let [day, week] = batch.keys();
        let wednesday = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap().timestamp();
        let next_monday = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap().timestamp();
        for (key, ttl) in [(&day, wednesday + 86_400 + 90 * 86_400), (&week, next_monday + 400 * 86_400)] {
            let item = counters.counter_update(key, &batch).unwrap();
            let update = item.update().expect("a counter is an update");
            assert_eq!(update.table_name(), "usage");
            assert_eq!(string(update.key().get("pk")), "TENANT#acme");
            assert_eq!(string(update.key().get("sk")), key.sk);
            assert!(update.update_expression().starts_with("ADD #input :input, #output :output, #total :total, "));
            let values = update.expression_attribute_values().expect("values");
            let names = update.expression_attribute_names().expect("names");
            for (placeholder, name, value) in [
                ("input", "input_tokens", "10"),
                ("output", "output_tokens", "20"),
                ("total", "total_tokens", "100"),
                ("cache_creation", "cache_creation_input_tokens", "30"),
                ("cache_read", "cache_read_input_tokens", "40"),
                ("requests", "request_count", "2"),
                ("tenant", "tenant_id", "acme"),
                ("period", "period", key.period.as_str()),
                ("request_type", "request_type", "anthropic"),
                ("model", "model_id", "m"),
                ("gsi1pk", "gsi1pk", key.gsi1pk.as_str()),
                ("gsi1sk", "gsi1sk", key.gsi1sk.as_str()),
                ("ttl", "ttl", ttl.to_string().as_str()),
            ] {
                assert_eq!(names.get(&format!("#{placeholder}")).map(String::as_str), Some(name));
                assert_eq!(string(values.get(&format!(":{placeholder}"))), value, "{placeholder} of {}", key.sk);
            }
        }
    }

    fn service_error(status: u16, error: TransactWriteItemsError) -> SdkError<TransactWriteItemsError> {
        use aws_sdk_dynamodb::config::http::HttpResponse;
        use aws_smithy_types::body::SdkBody;
        SdkError::service_error(error, HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()))
    }

    fn cancelled(first_reason: &str) -> TransactWriteItemsError {
        use aws_sdk_dynamodb::types::{error::TransactionCanceledException, CancellationReason};
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .cancellation_reasons(CancellationReason::builder().code(first_reason).build())
                .cancellation_reasons(CancellationReason::builder().code("None").build())
                .build(),
        )
    }

    fn throttled() -> TransactWriteItemsError {
        TransactWriteItemsError::ThrottlingException(
            aws_sdk_dynamodb::types::error::ThrottlingException::builder().message("slow down").build(),
        )
    }

    #[test]
    fn a_retry_cancelled_by_its_own_marker_has_applied_and_other_cancellations_have_not() {
        assert_eq!(classify_transaction_error(service_error(400, cancelled("ConditionalCheckFailed"))), Ok(()));
        let conflict = classify_transaction_error(service_error(400, cancelled("TransactionConflict")));
        assert!(matches!(conflict, Err(MeteringError::UpdateFailed(_))), "{conflict:?}");
    }

    #[test]
    fn a_failed_transaction_keeps_the_sdk_error_as_its_source() {
        use std::error::Error as _;
        let Err(error) = classify_transaction_error(service_error(400, throttled())) else { panic!("throttled applied") };
        let detail = error.source().expect("the detail is the source");
        let sdk_error = detail.source().expect("the SDK error is the detail's source");
        let sdk_error = sdk_error.downcast_ref::<SdkError<TransactWriteItemsError>>().expect("the typed SDK error");
        assert!(matches!(sdk_error.as_service_error(), Some(TransactWriteItemsError::ThrottlingException(_))), "{sdk_error:?}");
        // The text logged and written to counter_update lines is unchanged: the SDK's full context.
        assert!(error.detail().contains("slow down"), "{}", error.detail());
    }

    #[test]
    fn a_failed_transaction_says_whether_it_may_have_applied_and_whether_to_retry() {
        use aws_sdk_dynamodb::types::error::{InternalServerError, ResourceNotFoundException};
        let internal = || TransactWriteItemsError::InternalServerError(InternalServerError::builder().build());
        let missing_table = TransactWriteItemsError::ResourceNotFoundException(ResourceNotFoundException::builder().build());
        let outcome = |error| match classify_transaction_error(error) {
            Ok(()) => "applied",
            Err(MeteringError::UpdateFailed(_)) => "failed",
            Err(MeteringError::Refused(_)) => "refused",
            Err(MeteringError::OutcomeUnknown(_)) => "unknown",
        };
        // A throttled write did not apply and is worth retrying.
        assert_eq!(outcome(service_error(400, throttled())), "failed");
        // Any 5xx answer, whatever error it names, may have applied; so may an internal error whatever its status.
        assert_eq!(outcome(service_error(500, throttled())), "unknown");
        assert_eq!(outcome(service_error(500, internal())), "unknown");
        assert_eq!(outcome(service_error(400, internal())), "unknown");
        // A request DynamoDB refuses, or one that could not even be built, never applies and a retry would not help.
        assert_eq!(outcome(service_error(400, missing_table)), "refused");
        assert_eq!(outcome(SdkError::construction_failure("no region")), "refused");
        // A timeout may have reached the table.
        assert_eq!(outcome(SdkError::timeout_error("attempt timed out")), "unknown");
    }

    #[test]
    fn only_an_unknown_outcome_may_have_applied_and_only_a_refusal_is_not_retried() {
        let failed = MeteringError::UpdateFailed("x".into());
        let refused = MeteringError::Refused("x".into());
        let unknown = MeteringError::OutcomeUnknown("x".into());
        assert_eq!([failed.may_have_applied(), refused.may_have_applied(), unknown.may_have_applied()], [false, false, true]);
        assert_eq!([failed.is_retryable(), refused.is_retryable(), unknown.is_retryable()], [true, false, true]);
    }

    #[test]
    fn daily_items_expire_the_configured_time_after_their_day_ends() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let expiry = expiry_epoch_seconds(day, PeriodKind::Day, Duration::from_secs(90 * 86_400));
        let day_start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap().timestamp();
        assert_eq!(expiry, day_start + 91 * 86_400);
    }
}
