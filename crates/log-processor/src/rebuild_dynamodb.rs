//! The rebuild's [`CounterStore`] on the usage table: `Query` on the index `gsi1` to read a period's items,
//! `UpdateItem ... SET` to write one. IAM: `dynamodb:Query` on `<table>/index/gsi1`, `dynamodb:UpdateItem`
//! on the table; nothing else.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use metering_core::counters::{PeriodKind, GSI1_NAME};

use crate::aws::aws_error;
use crate::error::BoxError;
use crate::rebuild::{CounterItem, CounterStore, CounterSums};

pub struct DynamoCounterStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoCounterStore {
    pub fn new(sdk_config: &aws_config::SdkConfig, table_name: String) -> Self {
        Self { client: metering_core::counters::dynamodb_client(sdk_config), table_name }
    }
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|value| value.as_s().ok()).cloned()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name).and_then(|value| value.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The counter item behind a table item, or `None` when it is not one (another sk prefix, e.g. a marker).
fn counter_item(item: &HashMap<String, AttributeValue>, kind: PeriodKind, period: &str) -> Option<(CounterItem, CounterSums)> {
    let (tenant, request_type, model) = (text(item, "tenant_id")?, text(item, "request_type")?, text(item, "model_id")?);
    let counter = CounterItem::new(kind, period, &tenant, &request_type, &model);
    if text(item, "pk")? != counter.key.pk || text(item, "sk")? != counter.key.sk {
        return None;
    }
    let sums = CounterSums {
        request_count: number(item, "request_count"),
        input_tokens: number(item, "input_tokens"),
        output_tokens: number(item, "output_tokens"),
        total_tokens: number(item, "total_tokens"),
        cache_creation_input_tokens: number(item, "cache_creation_input_tokens"),
        cache_read_input_tokens: number(item, "cache_read_input_tokens"),
    };
    Some((counter, sums))
}

#[async_trait]
impl CounterStore for DynamoCounterStore {
    async fn read_period(
        &self,
        kind: PeriodKind,
        period: &str,
        tenant_id: Option<&str>,
    ) -> Result<Vec<(CounterItem, CounterSums)>, BoxError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table_name)
            .index_name(GSI1_NAME)
            .expression_attribute_values(":period", AttributeValue::S(format!("{}#{period}", kind.prefix())));
        query = match tenant_id {
            Some(tenant) => query
                .key_condition_expression("gsi1pk = :period AND begins_with(gsi1sk, :tenant)")
                .expression_attribute_values(":tenant", AttributeValue::S(format!("TENANT#{tenant}#"))),
            None => query.key_condition_expression("gsi1pk = :period"),
        };
        let mut items = Vec::new();
        let mut pages = query.into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|error| aws_error("Query", error))?;
            if let Some((counter, sums)) = counter_item(&item, kind, period) {
                if tenant_id.is_none_or(|tenant| tenant == counter.tenant_id) {
                    items.push((counter, sums));
                }
            }
        }
        Ok(items)
    }

    async fn set(&self, item: &CounterItem, sums: &CounterSums, ttl: i64) -> Result<(), BoxError> {
        let number = |value: u64| AttributeValue::N(value.to_string());
        let text = |value: &str| AttributeValue::S(value.to_owned());
        let values: HashMap<String, AttributeValue> = [
            (":request_count", number(sums.request_count)),
            (":input_tokens", number(sums.input_tokens)),
            (":output_tokens", number(sums.output_tokens)),
            (":total_tokens", number(sums.total_tokens)),
            (":cache_creation_input_tokens", number(sums.cache_creation_input_tokens)),
            (":cache_read_input_tokens", number(sums.cache_read_input_tokens)),
            (":tenant_id", text(&item.tenant_id)),
            (":period", text(&item.key.period)),
            (":request_type", text(&item.request_type)),
            (":model_id", text(&item.model_id)),
            (":gsi1pk", text(&item.key.gsi1pk)),
            (":gsi1sk", text(&item.key.gsi1sk)),
            (":ttl", AttributeValue::N(ttl.to_string())),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let names: HashMap<String, String> =
            values.keys().map(|name| (format!("#{}", &name[1..]), name[1..].to_owned())).collect();
        let assignments: Vec<String> =
            names.values().filter(|name| *name != "ttl").map(|name| format!("#{name} = :{name}")).collect();
        self.client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(item.key.pk.clone()))
            .key("sk", AttributeValue::S(item.key.sk.clone()))
            // SET, never ADD: the item becomes what the lines say, however often this runs. The ttl the API
            // gave the item stays.
            .update_expression(format!("SET {}, #ttl = if_not_exists(#ttl, :ttl)", assignments.join(", ")))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|error| aws_error("UpdateItem", error))?;
        Ok(())
    }
}
