//! Usage counters in DynamoDB: one item per tenant, period (UTC day or ISO week), request type and model,
//! incremented with `UpdateItem ... ADD` so concurrent requests never lose an update.
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
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Datelike, NaiveDate};
use thiserror::Error;

use crate::usage::UsageEvent;

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
        let date = event.received_at.date_naive();
        let (tenant, request_type, model) = (&event.tenant_id, event.request_type.as_str(), &event.model_id);
        [
            Self::new(PeriodKind::Day, &day_label(date), tenant, request_type, model),
            Self::new(PeriodKind::Week, &week_label(date), tenant, request_type, model),
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

#[derive(Debug, Error)]
pub enum MeteringError {
    #[error("usage counter update failed: {0}")]
    UpdateFailed(String),
}

/// The port the chat path needs: add one request's tokens to its counters.
#[async_trait]
pub trait UsageCounters: Send + Sync {
    async fn add(&self, event: &UsageEvent) -> Result<(), MeteringError>;
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

    async fn add_to(&self, key: &CounterKey, event: &UsageEvent) -> Result<(), MeteringError> {
        let ttl = match key.kind {
            PeriodKind::Day => expiry_epoch_seconds(event.received_at.date_naive(), key.kind, self.daily_ttl),
            PeriodKind::Week => {
                let date = event.received_at.date_naive();
                let monday = date - chrono::Duration::days(i64::from(date.weekday().num_days_from_monday()));
                expiry_epoch_seconds(monday, key.kind, self.weekly_ttl)
            }
        };
        let tokens = &event.tokens;
        let number = |value: u64| AttributeValue::N(value.to_string());
        let values: HashMap<String, AttributeValue> = [
            (":input", number(tokens.input_tokens)),
            (":output", number(tokens.output_tokens)),
            (":total", number(tokens.total())),
            (":cache_creation", number(tokens.cache_creation_input_tokens)),
            (":cache_read", number(tokens.cache_read_input_tokens)),
            (":one", number(1)),
            (":tenant", AttributeValue::S(event.tenant_id.clone())),
            (":period", AttributeValue::S(key.period.clone())),
            (":request_type", AttributeValue::S(event.request_type.as_str().to_owned())),
            (":model", AttributeValue::S(event.model_id.clone())),
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
        self.client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(key.pk.clone()))
            .key("sk", AttributeValue::S(key.sk.clone()))
            .update_expression(
                "ADD #input :input, #output :output, #total :total, #cache_creation :cache_creation, \
                 #cache_read :cache_read, #requests :one \
                 SET #tenant = :tenant, #period = :period, #request_type = :request_type, #model = :model, \
                 #gsi1pk = :gsi1pk, #gsi1sk = :gsi1sk, #ttl = :ttl",
            )
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|error| MeteringError::UpdateFailed(DisplayErrorContext(&error).to_string()))?;
        Ok(())
    }
}

/// A DynamoDB client whose calls are bounded in time, so metering never hangs.
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
    #[tracing::instrument(skip(self, event), fields(tenant_id = %event.tenant_id, request_id = %event.request_id))]
    async fn add(&self, event: &UsageEvent) -> Result<(), MeteringError> {
        let [day, week] = CounterKey::for_event(event);
        let (day_result, week_result) = tokio::join!(self.add_to(&day, event), self.add_to(&week, event));
        match (day_result, week_result) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
            (Err(day_error), Err(_)) => Err(day_error),
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
        };
        let [day, week] = CounterKey::for_event(&event);
        assert_eq!(day.sk, "DAY#2026-11-22#bedrock#m");
        assert_eq!(week.sk, "WEEK#2026-W47#bedrock#m");
    }

    #[test]
    fn daily_items_expire_the_configured_time_after_their_day_ends() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let expiry = expiry_epoch_seconds(day, PeriodKind::Day, Duration::from_secs(90 * 86_400));
        let day_start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap().timestamp();
        assert_eq!(expiry, day_start + 91 * 86_400);
    }
}
