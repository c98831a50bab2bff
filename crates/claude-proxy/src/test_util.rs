//! In-memory stand-ins of the proxy's ports, shared by its unit, handler and routing tests (feature
//! `test-util`, enabled only by the crate's own dev-dependency): the key table and the rate-limit table.
//! They prove pure logic only; the proxy is proved against the local stack (moto's DynamoDB).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::api_keys::{ApiKeyRecord, KeyStore, KeyStoreError, StoredKey};
use crate::rate_limits::{RateLimitEntry, RateLimitError, RateLimitStore};

/// The key table: keys by id, listed and revoked only by their owner, as the DynamoDB store does.
#[derive(Debug, Default)]
pub struct MemoryKeyStore(Mutex<HashMap<String, StoredKey>>);

impl MemoryKeyStore {
    fn keys(&self) -> MutexGuard<'_, HashMap<String, StoredKey>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn insert(&self, key: &StoredKey) -> Result<(), KeyStoreError> {
        let mut keys = self.keys();
        if keys.contains_key(&key.record.id) {
            return Err(KeyStoreError::Duplicate);
        }
        keys.insert(key.record.id.clone(), key.clone());
        Ok(())
    }

    async fn get(&self, key_id: &str) -> Result<Option<StoredKey>, KeyStoreError> {
        Ok(self.keys().get(key_id).cloned())
    }

    async fn list_active(&self, tenant_id: &str, user_id: &str) -> Result<Vec<ApiKeyRecord>, KeyStoreError> {
        let mut records: Vec<ApiKeyRecord> = self
            .keys()
            .values()
            .map(|key| &key.record)
            .filter(|record| record.tenant_id == tenant_id && record.user_id == user_id && record.revoked_at.is_none())
            .cloned()
            .collect();
        records.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(records)
    }

    async fn revoke(
        &self,
        tenant_id: &str,
        user_id: &str,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<ApiKeyRecord>, KeyStoreError> {
        let mut keys = self.keys();
        match keys.get_mut(key_id) {
            Some(key)
                if key.record.tenant_id == tenant_id && key.record.user_id == user_id && key.record.revoked_at.is_none() =>
            {
                key.record.revoked_at = Some(at.to_rfc3339());
                Ok(Some(key.record.clone()))
            }
            _ => Ok(None),
        }
    }
}

/// The rate-limit table: when each scope key is limited until, and every entry recorded.
#[derive(Debug, Default)]
pub struct MemoryRateLimitStore {
    until: Mutex<HashMap<String, DateTime<Utc>>>,
    recorded: Mutex<Vec<(String, RateLimitEntry)>>,
}

impl MemoryRateLimitStore {
    /// Remembers a 429 for `scope_key` until `until`, as if one had been recorded.
    pub fn limit(&self, scope_key: impl Into<String>, until: DateTime<Utc>) {
        self.until.lock().unwrap_or_else(PoisonError::into_inner).insert(scope_key.into(), until);
    }

    /// Every entry recorded, in order, with its scope key.
    pub fn recorded(&self) -> Vec<(String, RateLimitEntry)> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl RateLimitStore for MemoryRateLimitStore {
    async fn limited_until(&self, scope_key: &str) -> Result<Option<DateTime<Utc>>, RateLimitError> {
        Ok(self.until.lock().unwrap_or_else(PoisonError::into_inner).get(scope_key).copied())
    }

    async fn record(&self, scope_key: &str, entry: &RateLimitEntry) -> Result<(), RateLimitError> {
        self.limit(scope_key, entry.limited_until());
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner).push((scope_key.to_owned(), entry.clone()));
        Ok(())
    }
}
