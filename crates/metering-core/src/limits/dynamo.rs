//! The limits store in the usage table (see `store` for the keys).

use std::collections::HashMap;

use crate::error::Detail;
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, KeysAndAttributes, Put, TransactWriteItem, Update};
use chrono::{DateTime, SecondsFormat, Utc};

use super::store::{
    limits_key, operation_marker_key, AlertMarker, CounterUse, Hold, LimitsStore, LimitsStoreError, ReserveOutcome, Settlement,
    UseCounter, OPERATION_MARKER_TIME_TO_LIVE,
};
use super::{usd_decimal, usd_micros_of, LimitKind, Limits, Scope, StoredLimits};

#[derive(Debug, Clone)]
pub struct DynamoLimitsStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoLimitsStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: String) -> Self {
        Self { client, table_name }
    }
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> LimitsStoreError {
    LimitsStoreError::Unavailable(Detail::caused_by(DisplayErrorContext(&error).to_string(), error))
}

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key_of(pk: String, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), string(pk)), ("sk".to_owned(), string(sk))])
}

/// The limits of one stored item; a value that is not a valid limit is an error, never a silent "unlimited".
fn limits_of(item: &HashMap<String, AttributeValue>) -> Result<StoredLimits, LimitsStoreError> {
    let mut limits = Limits::default();
    for kind in LimitKind::ALL {
        let Some(value) = item.get(kind.as_str()) else { continue };
        let text =
            value.as_n().map_err(|_| LimitsStoreError::Invalid(Detail::new(format!("{} is not a number", kind.as_str()))))?;
        let parsed = if kind == LimitKind::UsdPerMonth { usd_micros_of(text) } else { text.parse::<u64>().ok() };
        let parsed = parsed
            .ok_or_else(|| LimitsStoreError::Invalid(Detail::new(format!("{} = {text} is not a valid limit", kind.as_str()))))?;
        limits.set(kind, Some(parsed));
    }
    let text = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned();
    Ok(StoredLimits { limits, updated_at: text("updated_at"), updated_by: text("updated_by") })
}

const CONDITIONAL_CHECK_FAILED: &str = "ConditionalCheckFailed";

/// The `Put` of the marker that makes the transaction of `token` apply once (see `store`), always the last
/// item of its transaction.
fn operation_marker(table_name: &str, token: &str, operation: &str) -> Result<TransactWriteItem, LimitsStoreError> {
    let (pk, sk) = operation_marker_key(token);
    let expires_at = (Utc::now() + OPERATION_MARKER_TIME_TO_LIVE).timestamp();
    let put = Put::builder()
        .table_name(table_name)
        .set_item(Some(key_of(pk, sk)))
        .item("operation", string(operation))
        .item("ttl", number(expires_at))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(|error| LimitsStoreError::Invalid(Detail::caused_by(error.to_string(), error)))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// True when a cancelled transaction was cancelled by its operation marker (the last item): it was applied
/// before, by an attempt whose answer was lost.
fn applied_before(reasons: &[CancellationReason]) -> bool {
    reasons.last().and_then(CancellationReason::code) == Some(CONDITIONAL_CHECK_FAILED)
}

fn counter_use(item: &HashMap<String, AttributeValue>) -> CounterUse {
    let value = |name: &str| {
        item.get(name).and_then(|value| value.as_n().ok()).and_then(|text| text.parse::<i64>().ok()).unwrap_or(0).max(0) as u64
    };
    CounterUse { admitted: value("admitted"), settled: value("settled") }
}

#[async_trait]
impl LimitsStore for DynamoLimitsStore {
    #[allow(clippy::assigning_clones)] // the last request was moved into the call: nothing to clone into
    async fn load(
        &self,
        tenant_id: &str,
        key_id: Option<&str>,
    ) -> Result<(Option<StoredLimits>, Option<StoredLimits>), LimitsStoreError> {
        let tenant_scope = Scope::Tenant(tenant_id.to_owned());
        let (pk, sk) = limits_key(&tenant_scope);
        let Some(key_id) = key_id else {
            let output = self
                .client
                .get_item()
                .table_name(&self.table_name)
                .set_key(Some(key_of(pk, sk)))
                .send()
                .await
                .map_err(unavailable)?;
            return Ok((output.item().map(limits_of).transpose()?, None));
        };
        let key_scope = Scope::Key { tenant_id: tenant_id.to_owned(), key_id: key_id.to_owned() };
        let (key_pk, key_sk) = limits_key(&key_scope);
        let wanted = KeysAndAttributes::builder()
            .keys(key_of(pk.clone(), sk.clone()))
            .keys(key_of(key_pk, key_sk.clone()))
            .build()
            .map_err(|error| LimitsStoreError::Invalid(Detail::caused_by(error.to_string(), error)))?;
        let mut request = HashMap::from([(self.table_name.clone(), wanted)]);
        let (mut tenant, mut key) = (None, None);
        // BatchGetItem may leave keys unprocessed under throttling: ask again for those (two keys at most).
        for _ in 0..3 {
            let output = self.client.batch_get_item().set_request_items(Some(request)).send().await.map_err(unavailable)?;
            for item in output.responses().and_then(|tables| tables.get(&self.table_name)).into_iter().flatten() {
                let sort_key = item.get("sk").and_then(|value| value.as_s().ok()).map(String::as_str);
                if sort_key == Some(sk.as_str()) {
                    tenant = Some(limits_of(item)?);
                } else if sort_key == Some(key_sk.as_str()) {
                    key = Some(limits_of(item)?);
                }
            }
            match output.unprocessed_keys().filter(|keys| !keys.is_empty()) {
                Some(unprocessed) => request = unprocessed.clone(),
                None => return Ok((tenant, key)),
            }
        }
        Err(LimitsStoreError::Unavailable(Detail::new("BatchGetItem left keys unprocessed three times")))
    }

    async fn put(&self, scope: &Scope, stored: &StoredLimits) -> Result<(), LimitsStoreError> {
        let (pk, sk) = limits_key(scope);
        let mut item = key_of(pk, sk);
        item.insert("tenant_id".to_owned(), string(scope.tenant_id()));
        if let Some(key_id) = scope.key_id() {
            item.insert("key_id".to_owned(), string(key_id));
        }
        for (kind, limit) in stored.limits.set_kinds() {
            let value = if kind == LimitKind::UsdPerMonth { usd_decimal(limit) } else { limit.to_string() };
            item.insert(kind.as_str().to_owned(), AttributeValue::N(value));
        }
        if let Some(updated_at) = &stored.updated_at {
            item.insert("updated_at".to_owned(), string(updated_at));
        }
        if let Some(updated_by) = &stored.updated_by {
            item.insert("updated_by".to_owned(), string(updated_by));
        }
        self.client.put_item().table_name(&self.table_name).set_item(Some(item)).send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn delete(&self, scope: &Scope) -> Result<bool, LimitsStoreError> {
        let (pk, sk) = limits_key(scope);
        let output = self
            .client
            .delete_item()
            .table_name(&self.table_name)
            .set_key(Some(key_of(pk, sk)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.attributes().is_some_and(|attributes| !attributes.is_empty()))
    }

    async fn reserve(&self, holds: &[Hold], token: &str) -> Result<ReserveOutcome, LimitsStoreError> {
        let mut items = Vec::with_capacity(holds.len());
        for hold in holds {
            // `admitted + amount <= limit`, written without a subtraction DynamoDB cannot do in a condition.
            let room = hold.limit.saturating_sub(hold.amount);
            let update = Update::builder()
                .table_name(&self.table_name)
                .set_key(Some(key_of(hold.counter.pk(), hold.counter.sk())))
                .update_expression("ADD admitted :amount SET #ttl = :ttl")
                .condition_expression("attribute_not_exists(admitted) OR admitted <= :room")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":amount", number(hold.amount))
                .expression_attribute_values(":room", number(room))
                .expression_attribute_values(":ttl", number(hold.counter.expires_at()))
                .build()
                .map_err(|error| LimitsStoreError::Invalid(Detail::caused_by(error.to_string(), error)))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        items.push(operation_marker(&self.table_name, token, "reserve")?);
        let result = self.client.transact_write_items().set_transact_items(Some(items)).client_request_token(token).send().await;
        match result {
            Ok(_) => Ok(ReserveOutcome::Reserved),
            Err(SdkError::ServiceError(service)) => match service.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    let reasons = cancelled.cancellation_reasons();
                    if applied_before(reasons) {
                        return Ok(ReserveOutcome::Reserved);
                    }
                    let refused = reasons[..reasons.len().saturating_sub(1)]
                        .iter()
                        .position(|reason| reason.code() == Some(CONDITIONAL_CHECK_FAILED));
                    match refused {
                        Some(index) => Ok(ReserveOutcome::Refused { index }),
                        None => {
                            Err(LimitsStoreError::Unavailable(Detail::new(format!("the reservation was cancelled: {cancelled}"))))
                        }
                    }
                }
                _ => Err(unavailable(SdkError::ServiceError(service))),
            },
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn settle(&self, settlements: &[Settlement], token: &str) -> Result<(), LimitsStoreError> {
        let mut items = Vec::with_capacity(settlements.len());
        for settlement in settlements {
            let delta = i128::from(settlement.actual) - i128::from(settlement.held);
            let update = Update::builder()
                .table_name(&self.table_name)
                .set_key(Some(key_of(settlement.counter.pk(), settlement.counter.sk())))
                .update_expression("ADD admitted :delta, settled :actual SET #ttl = :ttl")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":delta", number(delta))
                .expression_attribute_values(":actual", number(settlement.actual))
                .expression_attribute_values(":ttl", number(settlement.counter.expires_at()))
                .build()
                .map_err(|error| LimitsStoreError::Invalid(Detail::caused_by(error.to_string(), error)))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        items.push(operation_marker(&self.table_name, token, "settle")?);
        let result = self.client.transact_write_items().set_transact_items(Some(items)).client_request_token(token).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), TransactWriteItemsError::TransactionCanceledException(cancelled)
                    if applied_before(cancelled.cancellation_reasons())) =>
            {
                Ok(())
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    #[allow(clippy::assigning_clones)] // the last request was moved into the call: nothing to clone into
    async fn read_use(&self, counters: &[UseCounter], consistent: bool) -> Result<Vec<CounterUse>, LimitsStoreError> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let mut wanted = KeysAndAttributes::builder().consistent_read(consistent);
        let mut distinct: Vec<(String, String)> = Vec::new();
        for counter in counters {
            let key = (counter.pk(), counter.sk());
            if !distinct.contains(&key) {
                wanted = wanted.keys(key_of(key.0.clone(), key.1.clone()));
                distinct.push(key);
            }
        }
        let wanted = wanted.build().map_err(|error| LimitsStoreError::Invalid(Detail::caused_by(error.to_string(), error)))?;
        let mut request = HashMap::from([(self.table_name.clone(), wanted)]);
        let mut found: HashMap<(String, String), CounterUse> = HashMap::new();
        for attempt in 0..3 {
            let output = self.client.batch_get_item().set_request_items(Some(request)).send().await.map_err(unavailable)?;
            for item in output.responses().and_then(|tables| tables.get(&self.table_name)).into_iter().flatten() {
                let text = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned().unwrap_or_default();
                found.insert((text("pk"), text("sk")), counter_use(item));
            }
            match output.unprocessed_keys().filter(|keys| !keys.is_empty()) {
                Some(unprocessed) if attempt < 2 => request = unprocessed.clone(),
                Some(_) => {
                    return Err(LimitsStoreError::Unavailable(Detail::new("BatchGetItem left keys unprocessed three times")))
                }
                None => break,
            }
        }
        Ok(counters.iter().map(|counter| found.get(&(counter.pk(), counter.sk())).copied().unwrap_or_default()).collect())
    }

    async fn mark_alert(&self, marker: &AlertMarker, at: DateTime<Utc>) -> Result<bool, LimitsStoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(key_of(marker.pk(), marker.sk())))
            .item("marked_at", string(at.to_rfc3339_opts(SecondsFormat::Millis, true)))
            .item("ttl", number(marker.counter.expires_at()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(service)) if service.err().is_conditional_check_failed_exception() => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn unmark_alert(&self, marker: &AlertMarker) -> Result<(), LimitsStoreError> {
        self.client
            .delete_item()
            .table_name(&self.table_name)
            .set_key(Some(key_of(marker.pk(), marker.sk())))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
