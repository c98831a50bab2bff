//! The read side of the usage counters: a narrow port (`UsageReader`) and its DynamoDB adapter.
//!
//! Only `Query` is used, never `Scan`, and every page is followed (`LastEvaluatedKey`):
//! - one tenant: `pk = TENANT#<t> AND sk BETWEEN DAY#<from> AND DAY#<to>#~` (and the same with `WEEK#`);
//! - every tenant of one day: index `gsi1`, `gsi1pk = DAY#<day>`.
//!
//! Items read (`ScannedCount`, what DynamoDB bills) are counted and returned, so a caller can check that a
//! report reads days × request types × models items, however many requests those items count.

use std::collections::HashMap;
use std::ops::AddAssign;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::query::QueryError;
use aws_sdk_dynamodb::types::AttributeValue;
use thiserror::Error;

use super::aggregate::CounterRow;
use crate::counters::{tenant_partition, PeriodKind, GSI1_NAME};
use crate::error::{ApiError, Detail};
use crate::usage::{RequestType, TokenCounts};

/// What a report cost to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Items DynamoDB evaluated (`ScannedCount`, summed over every page).
    pub items_read: u64,
    /// `Query` calls made (one per page).
    pub queries: u64,
}

impl AddAssign for ReadStats {
    fn add_assign(&mut self, other: Self) {
        self.items_read += other.items_read;
        self.queries += other.queries;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterRead {
    pub rows: Vec<CounterRow>,
    pub stats: ReadStats,
}

#[derive(Debug, Error)]
pub enum UsageReadError {
    #[error("the usage table is throttling reads: {0}")]
    Throttled(#[source] Detail),
    #[error("querying the usage table failed: {0}")]
    Query(#[source] Detail),
    #[error("a usage counter item is malformed: {0}")]
    Malformed(#[source] Detail),
}

impl From<UsageReadError> for ApiError {
    fn from(error: UsageReadError) -> Self {
        // The details (table, SDK error, the offending key) are for the operator: logged here, never answered.
        tracing::error!(%error, "usage could not be read");
        match error {
            UsageReadError::Throttled(_) => ApiError::Unavailable {
                message: "usage reads are being throttled; retry after the delay in Retry-After".into(),
                retry_after_seconds: 1,
            },
            // The details (table, SDK error) go to the log, not to the caller.
            UsageReadError::Query(_) | UsageReadError::Malformed(_) => {
                ApiError::Internal("usage could not be read; try again later".into())
            }
        }
    }
}

/// The port the usage API needs: read counter items by tenant and by day.
#[async_trait]
pub trait UsageReader: Send + Sync {
    /// One tenant's items of `kind` whose period label lies in `first..=last` (labels sort like dates).
    async fn tenant_counters(
        &self,
        tenant_id: &str,
        kind: PeriodKind,
        first: &str,
        last: &str,
        request_type: Option<RequestType>,
    ) -> Result<CounterRead, UsageReadError>;

    /// Every tenant's daily items of `day` (`YYYY-MM-DD`).
    async fn day_counters_of_all_tenants(
        &self,
        day: &str,
        request_type: Option<RequestType>,
    ) -> Result<CounterRead, UsageReadError>;
}

/// Counter items in the DynamoDB usage table (see `counters` for the key design).
#[derive(Debug, Clone)]
pub struct DynamoUsageReader {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

/// Only what a report needs; `ProjectionExpression` trims the response, not the read cost.
const NUMBER_ATTRIBUTES: [(&str, &str); 6] = [
    ("#input", "input_tokens"),
    ("#output", "output_tokens"),
    ("#total", "total_tokens"),
    ("#cache_creation", "cache_creation_input_tokens"),
    ("#cache_read", "cache_read_input_tokens"),
    ("#requests", "request_count"),
];

impl DynamoUsageReader {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: String) -> Self {
        Self { client, table_name }
    }

    /// Runs the query page by page, turning each item into a row with `to_row`.
    async fn query_all(
        &self,
        query: QueryFluentBuilder,
        to_row: impl Fn(&HashMap<String, AttributeValue>) -> Result<Option<CounterRow>, UsageReadError>,
    ) -> Result<CounterRead, UsageReadError> {
        let mut read = CounterRead::default();
        let mut start_key: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = query.clone().set_exclusive_start_key(start_key.take()).send().await.map_err(query_error)?;
            read.stats.queries += 1;
            read.stats.items_read += u64::try_from(page.scanned_count()).unwrap_or_default();
            for item in page.items() {
                if let Some(row) = to_row(item)? {
                    read.rows.push(row);
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start_key = Some(key.clone()),
                _ => return Ok(read),
            }
        }
    }

    fn base_query(&self, key_attribute: &str, request_type: Option<RequestType>) -> QueryFluentBuilder {
        let mut names: HashMap<String, String> =
            NUMBER_ATTRIBUTES.iter().map(|(placeholder, name)| (placeholder.to_string(), name.to_string())).collect();
        names.insert("#key".into(), key_attribute.into());
        let projection =
            format!("#key, {}", NUMBER_ATTRIBUTES.iter().map(|(placeholder, _)| *placeholder).collect::<Vec<_>>().join(", "));
        let mut query = self.client.query().table_name(&self.table_name).projection_expression(projection);
        if let Some(request_type) = request_type {
            // Key attributes cannot be filtered on; every item also carries `request_type` as an attribute.
            names.insert("#request_type".into(), "request_type".into());
            query = query
                .filter_expression("#request_type = :request_type")
                .expression_attribute_values(":request_type", AttributeValue::S(request_type.as_str().into()));
        }
        query.set_expression_attribute_names(Some(names))
    }
}

#[async_trait]
impl UsageReader for DynamoUsageReader {
    #[tracing::instrument(skip(self), fields(items_read, queries))]
    async fn tenant_counters(
        &self,
        tenant_id: &str,
        kind: PeriodKind,
        first: &str,
        last: &str,
        request_type: Option<RequestType>,
    ) -> Result<CounterRead, UsageReadError> {
        let prefix = kind.prefix();
        let query = self
            .base_query("sk", request_type)
            .key_condition_expression("pk = :pk AND sk BETWEEN :first AND :last")
            .expression_attribute_values(":pk", AttributeValue::S(tenant_partition(tenant_id)))
            .expression_attribute_values(":first", AttributeValue::S(format!("{prefix}#{first}")))
            // `~` sorts after every character of request types and model ids.
            .expression_attribute_values(":last", AttributeValue::S(format!("{prefix}#{last}#~")))
            // Strongly consistent: a report shows a request as soon as its counters are written.
            .consistent_read(true);
        let read = self
            .query_all(query, |item| {
                let sort_key = string_attribute(item, "sk")?;
                let Some((period, request_type, model_id)) = split_key(&sort_key, prefix) else {
                    return Err(UsageReadError::Malformed(Detail::new(format!("sort key {sort_key:?}"))));
                };
                Ok(Some(row_from(item, tenant_id, period, request_type, model_id)?))
            })
            .await?;
        record_stats(&read.stats);
        Ok(read)
    }

    #[tracing::instrument(skip(self), fields(items_read, queries))]
    async fn day_counters_of_all_tenants(
        &self,
        day: &str,
        request_type: Option<RequestType>,
    ) -> Result<CounterRead, UsageReadError> {
        // Index reads are eventually consistent (DynamoDB offers nothing else on a GSI); typically well
        // under a second behind the table.
        let query = self
            .base_query("gsi1sk", request_type)
            .index_name(GSI1_NAME)
            .key_condition_expression("gsi1pk = :day")
            .expression_attribute_values(":day", AttributeValue::S(format!("{}#{day}", PeriodKind::Day.prefix())));
        let read = self
            .query_all(query, |item| {
                let index_key = string_attribute(item, "gsi1sk")?;
                let Some((tenant_id, request_type, model_id)) = split_key(&index_key, "TENANT") else {
                    return Err(UsageReadError::Malformed(Detail::new(format!("index sort key {index_key:?}"))));
                };
                Ok(Some(row_from(item, tenant_id, day, request_type, model_id)?))
            })
            .await?;
        record_stats(&read.stats);
        Ok(read)
    }
}

fn record_stats(stats: &ReadStats) {
    let span = tracing::Span::current();
    span.record("items_read", stats.items_read);
    span.record("queries", stats.queries);
}

fn query_error(error: SdkError<QueryError>) -> UsageReadError {
    let throttled = error.as_service_error().is_some_and(|service_error| {
        service_error.is_provisioned_throughput_exceeded_exception()
            || service_error.is_request_limit_exceeded()
            // On-demand tables throttle with `ThrottlingException`, which Query does not model.
            || service_error.code() == Some("ThrottlingException")
    });
    let detail = Detail::caused_by(DisplayErrorContext(&error).to_string(), error);
    if throttled {
        UsageReadError::Throttled(detail)
    } else {
        UsageReadError::Query(detail)
    }
}

/// `<prefix>#<a>#<b>#<c>` -> `(a, b, c)`; `c` (a model id) may itself contain `#`.
fn split_key<'k>(key: &'k str, prefix: &str) -> Option<(&'k str, &'k str, &'k str)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('#')?;
    let mut parts = rest.splitn(3, '#');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) if !a.is_empty() && !b.is_empty() && !c.is_empty() => Some((a, b, c)),
        _ => None,
    }
}

fn string_attribute(item: &HashMap<String, AttributeValue>, name: &str) -> Result<String, UsageReadError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(UsageReadError::Malformed(Detail::new(format!("item without a string {name}")))),
    }
}

fn number_attribute(item: &HashMap<String, AttributeValue>, name: &str) -> Result<u64, UsageReadError> {
    match item.get(name) {
        None => Ok(0),
        Some(AttributeValue::N(number)) => {
            number.parse().map_err(|_| UsageReadError::Malformed(Detail::new(format!("{name} = {number:?} is not a count"))))
        }
        Some(_) => Err(UsageReadError::Malformed(Detail::new(format!("{name} is not a number")))),
    }
}

fn row_from(
    item: &HashMap<String, AttributeValue>,
    tenant_id: &str,
    period: &str,
    request_type: &str,
    model_id: &str,
) -> Result<CounterRow, UsageReadError> {
    Ok(CounterRow {
        tenant_id: tenant_id.to_owned(),
        period: period.to_owned(),
        request_type: request_type.to_owned(),
        model_id: model_id.to_owned(),
        tokens: TokenCounts {
            input_tokens: number_attribute(item, "input_tokens")?,
            output_tokens: number_attribute(item, "output_tokens")?,
            cache_creation_input_tokens: number_attribute(item, "cache_creation_input_tokens")?,
            cache_read_input_tokens: number_attribute(item, "cache_read_input_tokens")?,
        },
        total_tokens: number_attribute(item, "total_tokens")?,
        requests: number_attribute(item, "request_count")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_their_parts() {
        assert_eq!(split_key("DAY#2026-11-23#bedrock#m:1", "DAY"), Some(("2026-11-23", "bedrock", "m:1")));
        assert_eq!(split_key("TENANT#acme#bedrock#a#b", "TENANT"), Some(("acme", "bedrock", "a#b")));
        assert_eq!(split_key("WEEK#2026-W48#bedrock#m", "DAY"), None);
        assert_eq!(split_key("DAY#2026-11-23#bedrock", "DAY"), None);
        assert_eq!(split_key("DAYS#x#y#z", "DAY"), None);
    }

    #[test]
    fn items_become_rows_and_missing_numbers_are_zero() {
        let item: HashMap<String, AttributeValue> = [
            ("input_tokens", AttributeValue::N("3".into())),
            ("output_tokens", AttributeValue::N("5".into())),
            ("total_tokens", AttributeValue::N("8".into())),
            ("request_count", AttributeValue::N("1".into())),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let row = row_from(&item, "acme", "2026-11-23", "bedrock", "m").unwrap();
        assert_eq!((row.tokens.input_tokens, row.tokens.output_tokens, row.total_tokens, row.requests), (3, 5, 8, 1));
        assert_eq!(row.tokens.cache_read_input_tokens, 0);
        let bad: HashMap<String, AttributeValue> =
            [("input_tokens".to_owned(), AttributeValue::S("3".into()))].into_iter().collect();
        assert!(matches!(row_from(&bad, "a", "d", "t", "m"), Err(UsageReadError::Malformed(_))));
    }

    #[test]
    fn read_errors_do_not_leak_details_to_callers() {
        let error = ApiError::from(UsageReadError::Query("table bedrock-metering-usage: AccessDenied".into()));
        assert!(matches!(error, ApiError::Internal(_)), "{error:?}");
        assert!(!error.to_string().contains("bedrock-metering-usage"));
        assert!(matches!(ApiError::from(UsageReadError::Throttled("x".into())), ApiError::Unavailable { .. }));
    }

    #[test]
    fn a_throttled_query_keeps_the_sdk_error_as_its_source() {
        use aws_sdk_dynamodb::config::http::HttpResponse;
        use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException;
        use aws_smithy_types::body::SdkBody;
        use std::error::Error as _;
        let throttled = QueryError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().message("slow down").build(),
        );
        let sdk_error = SdkError::service_error(throttled, HttpResponse::new(400.try_into().unwrap(), SdkBody::empty()));
        let error = query_error(sdk_error);
        assert!(matches!(error, UsageReadError::Throttled(_)), "{error:?}");
        let source = error.source().and_then(std::error::Error::source).expect("the SDK error under the detail");
        assert!(source.downcast_ref::<SdkError<QueryError>>().is_some(), "{source:?}");
    }
}
