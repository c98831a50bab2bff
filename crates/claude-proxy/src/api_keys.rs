//! Tenant API keys: a signed-in user creates one, it is shown once, and only its SHA-256 hash is stored,
//! with the tenant, the user and the creation time.
//!
//! A key reads `bmk_<id>_<secret>`: the id (16 hex digits) finds the item with one `GetItem`, the secret
//! (256 random bits, 64 hex digits) is checked against the stored hash. Table design (on-demand):
//! - `pk = KEY#<id>`: `key_id, key_hash, tenant_id, user_id, name, created_at[, revoked_at, ttl]`;
//! - index `gsi1`: `gsi1pk = TENANT#<tenant>`, `gsi1sk = USER#<user>#KEY#<created_at>#<id>`: one user's keys
//!   (or a whole tenant's) in one `Query`.
//!
//! A revoked key keeps its item (for audit) until its `ttl`, 90 days after revocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use metering_core::error::Detail;
use metering_core::identity::{is_valid_tenant_id, TenantIdentity};
use metering_core::ApiError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub const KEY_PREFIX: &str = "bmk_";
const KEY_ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
/// How long a revoked key's item is kept before DynamoDB's TTL removes it.
const REVOKED_RETENTION: Duration = Duration::from_secs(90 * 86_400);
pub const MAX_KEY_NAME_CHARS: usize = 100;
pub const MAX_KEYS_PER_USER: usize = 50;

/// A key as the owner sees it: never the secret, never the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// What the key starts with, so its owner can tell keys apart (`bmk_<id>_...`).
    pub hint: String,
}

/// A stored key: the record and the hash of the full key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub record: ApiKeyRecord,
    pub key_hash: String,
}

#[derive(Debug, Error)]
pub enum KeyStoreError {
    #[error("a key with this id already exists")]
    Duplicate,
    #[error("key table unavailable: {0}")]
    Unavailable(#[source] Detail),
    #[error("key table item is malformed: {0}")]
    Malformed(#[source] Detail),
}

impl From<KeyStoreError> for ApiError {
    fn from(error: KeyStoreError) -> Self {
        tracing::error!(%error, "key store call failed");
        match error {
            KeyStoreError::Unavailable(_) => ApiError::Unavailable {
                message: "API keys cannot be checked right now; retry shortly".into(),
                retry_after_seconds: 2,
            },
            _ => ApiError::Internal("API keys cannot be checked right now".into()),
        }
    }
}

/// The port in front of the key table.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert(&self, key: &StoredKey) -> Result<(), KeyStoreError>;
    async fn get(&self, key_id: &str) -> Result<Option<StoredKey>, KeyStoreError>;
    /// The user's keys that are not revoked, newest first.
    async fn list_active(&self, tenant_id: &str, user_id: &str) -> Result<Vec<ApiKeyRecord>, KeyStoreError>;
    /// Revokes the user's key; `None` when the user has no active key with this id.
    async fn revoke(
        &self,
        tenant_id: &str,
        user_id: &str,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<ApiKeyRecord>, KeyStoreError>;
}

pub fn hash_key(full_key: &str) -> String {
    hex::encode(Sha256::digest(full_key.as_bytes()))
}

/// The id part of a presented key, if it has the key's shape at all.
pub fn key_id_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex = |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex(id, KEY_ID_HEX) && is_hex(secret, SECRET_HEX)).then_some(id)
}

fn hint(key_id: &str) -> String {
    format!("{KEY_PREFIX}{key_id}_...")
}

fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| ApiError::Internal(format!("no randomness for a new key: {error}")))?;
    Ok(hex::encode(buffer))
}

/// Compares two hashes in time independent of where they differ.
fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a verified gateway key says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: String,
    pub tenant_id: String,
    pub user_id: String,
}

/// The key use cases: create, list, revoke (for the signed-in owner) and verify (for every proxy call).
#[derive(Clone)]
pub struct ApiKeys {
    store: Arc<dyn KeyStore>,
    cache_for: Duration,
    cache: Arc<Mutex<HashMap<String, (KeyOwner, Instant)>>>,
}

impl ApiKeys {
    pub fn new(store: Arc<dyn KeyStore>, cache_for: Duration) -> Self {
        Self { store, cache_for, cache: Arc::default() }
    }

    /// Issues a key; the returned string is the only time the secret exists outside the caller.
    pub async fn create(&self, owner: &TenantIdentity, name: Option<String>) -> Result<(ApiKeyRecord, String), ApiError> {
        if let Some(name) = &name {
            if name.chars().count() > MAX_KEY_NAME_CHARS || name.chars().any(char::is_control) {
                return Err(ApiError::InvalidRequest(format!("name must be at most {MAX_KEY_NAME_CHARS} printable characters")));
            }
        }
        if self.store.list_active(&owner.tenant_id, &owner.user_id).await?.len() >= MAX_KEYS_PER_USER {
            return Err(ApiError::InvalidRequest(format!("you already have {MAX_KEYS_PER_USER} active keys; revoke one first")));
        }
        let key_id = random_hex(KEY_ID_HEX / 2)?;
        let full_key = format!("{KEY_PREFIX}{key_id}_{}", random_hex(SECRET_HEX / 2)?);
        let record = ApiKeyRecord {
            id: key_id.clone(),
            tenant_id: owner.tenant_id.clone(),
            user_id: owner.user_id.clone(),
            name: name.filter(|name| !name.trim().is_empty()),
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            revoked_at: None,
            hint: hint(&key_id),
        };
        self.store.insert(&StoredKey { record: record.clone(), key_hash: hash_key(&full_key) }).await?;
        tracing::info!(tenant_id = %record.tenant_id, user_id = %record.user_id, key_id = %record.id, "API key created");
        Ok((record, full_key))
    }

    pub async fn list(&self, owner: &TenantIdentity) -> Result<Vec<ApiKeyRecord>, ApiError> {
        Ok(self.store.list_active(&owner.tenant_id, &owner.user_id).await?)
    }

    pub async fn revoke(&self, owner: &TenantIdentity, key_id: &str) -> Result<ApiKeyRecord, ApiError> {
        let not_found = || ApiError::NotFound(format!("you have no active API key with id {key_id:?}"));
        if key_id.len() != KEY_ID_HEX || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let revoked = self.store.revoke(&owner.tenant_id, &owner.user_id, key_id, Utc::now()).await?.ok_or_else(not_found)?;
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key_id);
        tracing::info!(tenant_id = %owner.tenant_id, user_id = %owner.user_id, key_id, "API key revoked");
        Ok(revoked)
    }

    /// Verifies a presented gateway key. Unknown, malformed and revoked keys all get the same answer.
    pub async fn verify(&self, presented: Option<&str>) -> Result<KeyOwner, ApiError> {
        let presented = presented.map(str::trim).filter(|key| !key.is_empty()).ok_or_else(|| {
            ApiError::Unauthenticated("no gateway API key: send it as x-api-key (or x-gateway-key in passthrough mode)".into())
        })?;
        let invalid = || ApiError::Unauthenticated("invalid gateway API key".into());
        let key_id = key_id_of(presented).ok_or_else(invalid)?;
        let presented_hash = hash_key(presented);
        if !self.cache_for.is_zero() {
            let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((owner, at)) = cache.get(&presented_hash) {
                if at.elapsed() < self.cache_for {
                    return Ok(owner.clone());
                }
            }
        }
        let stored = self.store.get(key_id).await?.ok_or_else(invalid)?;
        if !same_hash(&stored.key_hash, &presented_hash) || stored.record.revoked_at.is_some() {
            return Err(invalid());
        }
        let owner = KeyOwner { key_id: stored.record.id, tenant_id: stored.record.tenant_id, user_id: stored.record.user_id };
        if !is_valid_tenant_id(&owner.tenant_id) {
            return Err(ApiError::Forbidden("this key's tenant id is not valid".into()));
        }
        if !self.cache_for.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.retain(|_, (_, at)| at.elapsed() < self.cache_for);
            cache.insert(presented_hash, (owner.clone(), Instant::now()));
        }
        Ok(owner)
    }
}

/// The key table in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoKeyStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoKeyStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: String) -> Self {
        Self { client, table_name }
    }
}

fn key_pk(key_id: &str) -> String {
    format!("KEY#{key_id}")
}

fn owner_partition(tenant_id: &str) -> String {
    format!("TENANT#{tenant_id}")
}

fn owner_sort_prefix(user_id: &str) -> String {
    format!("USER#{user_id}#KEY#")
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> KeyStoreError {
    KeyStoreError::Unavailable(Detail::caused_by(DisplayErrorContext(&error).to_string(), error))
}

fn record_from(item: &HashMap<String, AttributeValue>) -> Result<StoredKey, KeyStoreError> {
    let text = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned();
    let required = |name: &str| text(name).ok_or_else(|| KeyStoreError::Malformed(Detail::new(format!("missing {name}"))));
    let id = required("key_id")?;
    Ok(StoredKey {
        record: ApiKeyRecord {
            hint: hint(&id),
            id,
            tenant_id: required("tenant_id")?,
            user_id: required("user_id")?,
            name: text("name"),
            created_at: required("created_at")?,
            revoked_at: text("revoked_at"),
        },
        key_hash: required("key_hash")?,
    })
}

#[async_trait]
impl KeyStore for DynamoKeyStore {
    async fn insert(&self, key: &StoredKey) -> Result<(), KeyStoreError> {
        let record = &key.record;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .item("pk", AttributeValue::S(key_pk(&record.id)))
            .item("key_id", AttributeValue::S(record.id.clone()))
            .item("key_hash", AttributeValue::S(key.key_hash.clone()))
            .item("tenant_id", AttributeValue::S(record.tenant_id.clone()))
            .item("user_id", AttributeValue::S(record.user_id.clone()))
            .item("created_at", AttributeValue::S(record.created_at.clone()))
            .item("gsi1pk", AttributeValue::S(owner_partition(&record.tenant_id)))
            .item(
                "gsi1sk",
                AttributeValue::S(format!("{}{}#{}", owner_sort_prefix(&record.user_id), record.created_at, record.id)),
            )
            .condition_expression("attribute_not_exists(pk)");
        if let Some(name) = &record.name {
            request = request.item("name", AttributeValue::S(name.clone()));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Err(KeyStoreError::Duplicate),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn get(&self, key_id: &str) -> Result<Option<StoredKey>, KeyStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(key_pk(key_id)))
            // A revoked key must stop working at once.
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item().map(record_from).transpose()
    }

    async fn list_active(&self, tenant_id: &str, user_id: &str) -> Result<Vec<ApiKeyRecord>, KeyStoreError> {
        let mut keys = Vec::new();
        let mut start_key = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table_name)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :tenant AND begins_with(gsi1sk, :user)")
                .filter_expression("attribute_not_exists(revoked_at)")
                .expression_attribute_values(":tenant", AttributeValue::S(owner_partition(tenant_id)))
                .expression_attribute_values(":user", AttributeValue::S(owner_sort_prefix(user_id)))
                .scan_index_forward(false)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                keys.push(record_from(item)?.record);
            }
            start_key = output.last_evaluated_key().cloned();
            if start_key.is_none() {
                return Ok(keys);
            }
        }
    }

    async fn revoke(
        &self,
        tenant_id: &str,
        user_id: &str,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<ApiKeyRecord>, KeyStoreError> {
        let expires = at.timestamp() + REVOKED_RETENTION.as_secs() as i64;
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(key_pk(key_id)))
            .update_expression("SET revoked_at = :at, #ttl = :ttl")
            .condition_expression("tenant_id = :tenant AND user_id = :user AND attribute_not_exists(revoked_at)")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":at", AttributeValue::S(at.to_rfc3339_opts(SecondsFormat::Millis, true)))
            .expression_attribute_values(":ttl", AttributeValue::N(expires.to_string()))
            .expression_attribute_values(":tenant", AttributeValue::S(tenant_id.to_owned()))
            .expression_attribute_values(":user", AttributeValue::S(user_id.to_owned()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => output.attributes().map(|item| record_from(item).map(|key| key.record)).transpose(),
            // Absent, someone else's, or already revoked: all look the same to the caller.
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::MemoryKeyStore;

    fn owner(tenant: &str, user: &str) -> TenantIdentity {
        TenantIdentity { tenant_id: tenant.into(), user_id: user.into(), username: None, groups: vec![] }
    }

    #[test]
    fn keys_have_a_recognisable_shape() {
        let id = "0123456789abcdef";
        let key = format!("bmk_{id}_{}", "a".repeat(64));
        assert_eq!(key_id_of(&key), Some(id));
        assert_eq!(key_id_of("sk-ant-api03-xyz"), None);
        assert_eq!(key_id_of(&format!("bmk_{id}_short")), None);
        assert_eq!(key_id_of(&format!("bmk_{id}x_{}", "a".repeat(64))), None);
        assert_eq!(hash_key("abc").len(), 64);
    }

    #[tokio::test]
    async fn a_created_key_verifies_as_its_owner_until_revoked() {
        let keys = ApiKeys::new(Arc::new(MemoryKeyStore::default()), Duration::ZERO);
        let alice = owner("acme", "alice");
        let (record, secret) = keys.create(&alice, Some("laptop".into())).await.unwrap();
        assert!(secret.starts_with(&record.hint[..record.hint.len() - 3]));
        let verified = keys.verify(Some(&secret)).await.unwrap();
        assert_eq!((verified.tenant_id.as_str(), verified.user_id.as_str()), ("acme", "alice"));
        assert_eq!(keys.list(&alice).await.unwrap(), vec![record.clone()]);

        let mallory = owner("acme", "mallory");
        assert!(matches!(keys.revoke(&mallory, &record.id).await, Err(ApiError::NotFound(_))));
        keys.revoke(&alice, &record.id).await.unwrap();
        assert!(matches!(keys.verify(Some(&secret)).await, Err(ApiError::Unauthenticated(_))));
        assert!(keys.list(&alice).await.unwrap().is_empty());
        assert!(matches!(keys.revoke(&alice, &record.id).await, Err(ApiError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_wrong_secret_for_a_real_id_is_refused() {
        let keys = ApiKeys::new(Arc::new(MemoryKeyStore::default()), Duration::ZERO);
        let (record, _) = keys.create(&owner("acme", "alice"), None).await.unwrap();
        let forged = format!("bmk_{}_{}", record.id, "0".repeat(64));
        assert!(matches!(keys.verify(Some(&forged)).await, Err(ApiError::Unauthenticated(_))));
        assert!(matches!(keys.verify(None).await, Err(ApiError::Unauthenticated(_))));
        assert!(matches!(keys.verify(Some("garbage")).await, Err(ApiError::Unauthenticated(_))));
    }

    #[tokio::test]
    async fn names_are_bounded() {
        let keys = ApiKeys::new(Arc::new(MemoryKeyStore::default()), Duration::ZERO);
        let long = "n".repeat(MAX_KEY_NAME_CHARS + 1);
        assert!(matches!(keys.create(&owner("t", "u"), Some(long)).await, Err(ApiError::InvalidRequest(_))));
    }
}
