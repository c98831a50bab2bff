//! The rate-limit memory: each Anthropic 429 is written to DynamoDB (who, when, `retry-after`, until when,
//! TTL); while one is in force, requests of the same scope go straight to Bedrock instead of paying for a
//! round trip that will be refused. Table (on-demand): `pk = LIMIT#<scope>`; attributes `tenant_id`,
//! `user_id`, `recorded_at`, `retry_after_seconds`, `limited_until` (epoch seconds), `ttl` (an hour later:
//! DynamoDB's TTL deletes lazily, so `limited_until` decides, not the item's presence).
//!
//! The memory fails open: if the table cannot be read, Anthropic is tried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use metering_core::error::Detail;
use thiserror::Error;

/// Whose requests one 429 diverts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    /// The user who hit it (the default; in passthrough mode each user's own Anthropic quota).
    User,
    /// Everyone of the tenant.
    Tenant,
    /// Everyone (managed mode: the provider's key is one quota for all tenants).
    Deployment,
}

impl RateLimitScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Tenant => "tenant",
            Self::Deployment => "deployment",
        }
    }

    pub fn key(self, tenant_id: &str, user_id: &str) -> String {
        match self {
            Self::User => format!("USER#{tenant_id}#{user_id}"),
            Self::Tenant => format!("TENANT#{tenant_id}"),
            Self::Deployment => "DEPLOYMENT".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitEntry {
    pub tenant_id: String,
    pub user_id: String,
    pub recorded_at: DateTime<Utc>,
    pub retry_after_seconds: u64,
}

impl RateLimitEntry {
    pub fn limited_until(&self) -> DateTime<Utc> {
        self.recorded_at + chrono::Duration::seconds(self.retry_after_seconds as i64)
    }
}

#[derive(Debug, Error)]
#[error("rate-limit memory unavailable: {0}")]
pub struct RateLimitError(#[source] pub Detail);

/// The port in front of the rate-limit table.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    async fn limited_until(&self, scope_key: &str) -> Result<Option<DateTime<Utc>>, RateLimitError>;
    async fn record(&self, scope_key: &str, entry: &RateLimitEntry) -> Result<(), RateLimitError>;
}

/// The memory as the proxy uses it: the table, plus what this instance itself recorded (no read needed).
#[derive(Clone)]
pub struct RateLimitMemory {
    store: Arc<dyn RateLimitStore>,
    scope: RateLimitScope,
    known: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
}

impl RateLimitMemory {
    pub fn new(store: Arc<dyn RateLimitStore>, scope: RateLimitScope) -> Self {
        Self { store, scope, known: Arc::default() }
    }

    /// Until when Anthropic is known to refuse this caller, if it is now.
    pub async fn in_force(&self, tenant_id: &str, user_id: &str) -> Option<DateTime<Utc>> {
        let key = self.scope.key(tenant_id, user_id);
        let now = Utc::now();
        {
            let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            known.retain(|_, until| *until > now);
            if let Some(until) = known.get(&key) {
                return Some(*until);
            }
        }
        match self.store.limited_until(&key).await {
            Ok(until) => until.filter(|until| *until > now),
            Err(error) => {
                tracing::warn!(%error, "rate-limit memory not readable; trying Anthropic");
                None
            }
        }
    }

    pub async fn record(&self, entry: RateLimitEntry) {
        let key = self.scope.key(&entry.tenant_id, &entry.user_id);
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.clone(), entry.limited_until());
        if let Err(error) = self.store.record(&key, &entry).await {
            tracing::warn!(%error, "could not record the Anthropic 429 in the rate-limit memory");
        }
    }
}

#[derive(Debug, Clone)]
pub struct DynamoRateLimitStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoRateLimitStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: String) -> Self {
        Self { client, table_name }
    }
}

/// How long an item outlives its limit before DynamoDB may delete it.
const ITEM_GRACE_SECONDS: i64 = 3600;

#[async_trait]
impl RateLimitStore for DynamoRateLimitStore {
    async fn limited_until(&self, scope_key: &str) -> Result<Option<DateTime<Utc>>, RateLimitError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(format!("LIMIT#{scope_key}")))
            .projection_expression("limited_until")
            .send()
            .await
            .map_err(|error| RateLimitError(Detail::caused_by(DisplayErrorContext(&error).to_string(), error)))?;
        let until = output
            .item()
            .and_then(|item| item.get("limited_until"))
            .and_then(|value| value.as_n().ok())
            .and_then(|seconds| seconds.parse::<i64>().ok())
            .and_then(|seconds| Utc.timestamp_opt(seconds, 0).single());
        Ok(until)
    }

    async fn record(&self, scope_key: &str, entry: &RateLimitEntry) -> Result<(), RateLimitError> {
        let until = entry.limited_until().timestamp();
        self.client
            .put_item()
            .table_name(&self.table_name)
            .item("pk", AttributeValue::S(format!("LIMIT#{scope_key}")))
            .item("tenant_id", AttributeValue::S(entry.tenant_id.clone()))
            .item("user_id", AttributeValue::S(entry.user_id.clone()))
            .item("recorded_at", AttributeValue::S(entry.recorded_at.to_rfc3339_opts(SecondsFormat::Millis, true)))
            .item("retry_after_seconds", AttributeValue::N(entry.retry_after_seconds.to_string()))
            .item("limited_until", AttributeValue::N(until.to_string()))
            .item("ttl", AttributeValue::N((until + ITEM_GRACE_SECONDS).to_string()))
            .send()
            .await
            .map_err(|error| RateLimitError(Detail::caused_by(DisplayErrorContext(&error).to_string(), error)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::MemoryRateLimitStore;

    fn entry(user: &str, retry_after_seconds: u64) -> RateLimitEntry {
        RateLimitEntry { tenant_id: "acme".into(), user_id: user.into(), recorded_at: Utc::now(), retry_after_seconds }
    }

    #[tokio::test]
    async fn a_recorded_429_is_in_force_for_its_scope_only() {
        let store = Arc::new(MemoryRateLimitStore::default());
        let memory = RateLimitMemory::new(store.clone(), RateLimitScope::User);
        assert_eq!(memory.in_force("acme", "alice").await, None);
        memory.record(entry("alice", 30)).await;
        assert!(memory.in_force("acme", "alice").await.is_some());
        assert_eq!(memory.in_force("acme", "bob").await, None);

        // Another instance (same table, empty local knowledge) sees it too.
        let other = RateLimitMemory::new(store, RateLimitScope::User);
        assert!(other.in_force("acme", "alice").await.is_some());
    }

    #[tokio::test]
    async fn an_expired_limit_is_not_in_force() {
        let store = Arc::new(MemoryRateLimitStore::default());
        let memory = RateLimitMemory::new(store.clone(), RateLimitScope::Tenant);
        let mut old = entry("alice", 5);
        old.recorded_at = Utc::now() - chrono::Duration::seconds(10);
        memory.record(old).await;
        assert_eq!(memory.in_force("acme", "bob").await, None);
    }

    #[test]
    fn scopes_key_as_documented() {
        assert_eq!(RateLimitScope::User.key("t", "u"), "USER#t#u");
        assert_eq!(RateLimitScope::Tenant.key("t", "u"), "TENANT#t");
        assert_eq!(RateLimitScope::Deployment.key("t", "u"), "DEPLOYMENT");
    }
}
