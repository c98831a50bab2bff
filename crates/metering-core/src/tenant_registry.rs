//! The tenant registry: one exact tenant id per case-insensitive name, first seen wins.
//!
//! Tenant ids are exact (`identity.rs`): `ACME` is not `acme`. Exactness alone would let `ACME` be a second
//! tenant beside `acme`, which a person reads as the same customer (a bill, a dashboard, a support ticket).
//! So the gateway records every tenant id under its ASCII-lowercased form, and a claim whose lowercased form is
//! registered to a *different* exact id is refused (403) on every route. The first verified request of a tenant
//! (or the operator script that created its first user) registers it.
//!
//! Item in the usage table: `pk = TENANT_ID#<lowercase>`, `sk = TENANT_ID`, `tenant_id = <exact id>`. It has
//! no `gsi1pk`, and the usage reports only read `TENANT#<id>` partitions (`TENANT_ID#` is not one: a tenant id
//! cannot contain `#`) and the `gsi1` index, so it never shows in a report or a counter.
//!
//! A registered id never changes, so a positive answer is cached for the process's life (bounded): one
//! `GetItem` per tenant per process. When DynamoDB cannot answer for a tenant not yet cached, the request is
//! refused with 503 and `Retry-After`: identity comes before availability, since letting the request through
//! could attribute `ACME`'s usage while `acme` owns the name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use thiserror::Error;

use crate::error::{ApiError, Detail};
use crate::identity::{TenantIdentity, TENANT_REFUSED};

/// The `pk` prefix of the registry items.
pub const REGISTRY_PARTITION_PREFIX: &str = "TENANT_ID#";
/// The `sk` of every registry item.
pub const REGISTRY_SORT_KEY: &str = "TENANT_ID";
/// Tenants remembered per process; past it, lookups still work but go to DynamoDB each time.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// `Retry-After` of the 503 given when the registry cannot answer.
pub const REGISTRY_RETRY_AFTER_SECONDS: u64 = 2;

/// The name a tenant id is registered under: its ASCII-lowercased form (tenant ids are ASCII by rule).
pub fn registry_name(tenant_id: &str) -> String {
    tenant_id.to_ascii_lowercase()
}

/// The `pk` of the registry item of `tenant_id`'s name.
pub fn registry_partition(tenant_id: &str) -> String {
    format!("{REGISTRY_PARTITION_PREFIX}{}", registry_name(tenant_id))
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TenantRegistryError {
    /// The registry could not be read or written (throttled, unreachable, timed out, ...).
    #[error("the tenant registry is unavailable: {0}")]
    Unavailable(#[source] Detail),
    /// The registry item exists but is not well formed.
    #[error("the tenant registry item of {name:?} is invalid: {detail}")]
    Invalid { name: String, detail: String },
}

/// The port: who owns a tenant name.
#[async_trait]
pub trait TenantRegistry: Send + Sync {
    /// The exact tenant id registered under `tenant_id`'s lowercased name, registering `tenant_id` itself when
    /// the name is free. Equal to `tenant_id` exactly when `tenant_id` may act as a tenant.
    async fn owner_or_register(&self, tenant_id: &str) -> Result<String, TenantRegistryError>;
}

/// Admits `identity` when its tenant id owns its name: 403 (the same generic message as any refused tenant
/// claim) when another exact id does, 503 with `Retry-After` when the registry cannot say.
pub async fn admit(registry: &dyn TenantRegistry, identity: &TenantIdentity) -> Result<(), ApiError> {
    match registry.owner_or_register(&identity.tenant_id).await {
        Ok(owner) if owner == identity.tenant_id => Ok(()),
        Ok(owner) => {
            tracing::warn!(
                user_id = %identity.user_id,
                tenant_id = %identity.tenant_id,
                registered = %owner,
                "refused: the tenant id differs only by case from a registered tenant"
            );
            Err(ApiError::Forbidden(TENANT_REFUSED.into()))
        }
        Err(error) => {
            tracing::warn!(user_id = %identity.user_id, tenant_id = %identity.tenant_id, %error, "refused: tenant registry lookup failed");
            Err(ApiError::Unavailable {
                message: "The gateway could not confirm this tenant; retry after the delay in Retry-After.".into(),
                retry_after_seconds: REGISTRY_RETRY_AFTER_SECONDS,
            })
        }
    }
}

/// Remembers owners (which never change) in front of another registry, up to `capacity` names.
pub struct CachedTenantRegistry {
    inner: Arc<dyn TenantRegistry>,
    owners: Mutex<HashMap<String, String>>,
    capacity: usize,
}

impl CachedTenantRegistry {
    pub fn new(inner: Arc<dyn TenantRegistry>, capacity: usize) -> Self {
        Self { inner, owners: Mutex::new(HashMap::new()), capacity }
    }

    fn cached(&self, name: &str) -> Option<String> {
        self.owners.lock().ok()?.get(name).cloned()
    }

    fn remember(&self, name: String, owner: &str) {
        if let Ok(mut owners) = self.owners.lock() {
            // Entries never change, so none is evicted: past the bound, new names are simply not cached.
            if owners.len() < self.capacity {
                owners.insert(name, owner.to_owned());
            }
        }
    }
}

#[async_trait]
impl TenantRegistry for CachedTenantRegistry {
    async fn owner_or_register(&self, tenant_id: &str) -> Result<String, TenantRegistryError> {
        let name = registry_name(tenant_id);
        if let Some(owner) = self.cached(&name) {
            return Ok(owner);
        }
        let owner = self.inner.owner_or_register(tenant_id).await?;
        self.remember(name, &owner);
        Ok(owner)
    }
}

/// A registry in memory, for handler tests and the in-process parts of the local tools.
#[derive(Default)]
pub struct InMemoryTenantRegistry {
    owners: Mutex<HashMap<String, String>>,
    lookups: AtomicUsize,
    unavailable: AtomicBool,
}

impl InMemoryTenantRegistry {
    /// Registers `tenant_id` as an operator script would (first seen wins).
    pub fn register(&self, tenant_id: &str) {
        if let Ok(mut owners) = self.owners.lock() {
            owners.entry(registry_name(tenant_id)).or_insert_with(|| tenant_id.to_owned());
        }
    }

    /// Makes every lookup fail (DynamoDB unreachable).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// How many lookups reached this registry.
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TenantRegistry for InMemoryTenantRegistry {
    async fn owner_or_register(&self, tenant_id: &str) -> Result<String, TenantRegistryError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(TenantRegistryError::Unavailable("set unavailable".into()));
        }
        let mut owners = self.owners.lock().map_err(|_| TenantRegistryError::Unavailable("poisoned".into()))?;
        Ok(owners.entry(registry_name(tenant_id)).or_insert_with(|| tenant_id.to_owned()).clone())
    }
}

/// The registry in the usage table.
pub struct DynamoTenantRegistry {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoTenantRegistry {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: String) -> Self {
        Self { client, table_name }
    }

    async fn registered_owner(&self, tenant_id: &str) -> Result<Option<String>, TenantRegistryError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key("pk", AttributeValue::S(registry_partition(tenant_id)))
            .key("sk", AttributeValue::S(REGISTRY_SORT_KEY.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| {
                TenantRegistryError::Unavailable(Detail::caused_by(DisplayErrorContext(&error).to_string(), error))
            })?;
        let Some(item) = output.item else { return Ok(None) };
        match item.get("tenant_id") {
            Some(AttributeValue::S(owner)) if registry_name(owner) == registry_name(tenant_id) => Ok(Some(owner.clone())),
            other => {
                Err(TenantRegistryError::Invalid { name: registry_name(tenant_id), detail: format!("tenant_id is {other:?}") })
            }
        }
    }
}

#[async_trait]
impl TenantRegistry for DynamoTenantRegistry {
    #[tracing::instrument(skip(self), fields(tenant_id = %tenant_id))]
    async fn owner_or_register(&self, tenant_id: &str) -> Result<String, TenantRegistryError> {
        if let Some(owner) = self.registered_owner(tenant_id).await? {
            return Ok(owner);
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .item("pk", AttributeValue::S(registry_partition(tenant_id)))
            .item("sk", AttributeValue::S(REGISTRY_SORT_KEY.to_owned()))
            .item("tenant_id", AttributeValue::S(tenant_id.to_owned()))
            .item("registered_at", AttributeValue::S(chrono::Utc::now().to_rfc3339()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => {
                tracing::info!("tenant registered");
                Ok(tenant_id.to_owned())
            }
            // Another request registered the name between the read and the write: its id is the owner.
            Err(SdkError::ServiceError(error)) if error.err().is_conditional_check_failed_exception() => {
                self.registered_owner(tenant_id).await?.ok_or_else(|| TenantRegistryError::Invalid {
                    name: registry_name(tenant_id),
                    detail: "the item vanished after its conditional put failed".into(),
                })
            }
            Err(error) => {
                Err(TenantRegistryError::Unavailable(Detail::caused_by(DisplayErrorContext(&error).to_string(), error)))
            }
        }
    }
}

/// The registry in `table_name` (the usage table) behind the process-wide cache, as every function wires it.
pub fn tenant_registry_on_aws(sdk_config: &aws_config::SdkConfig, table_name: String) -> Arc<dyn TenantRegistry> {
    let dynamo = DynamoTenantRegistry::new(crate::counters::dynamodb_client(sdk_config), table_name);
    Arc::new(CachedTenantRegistry::new(Arc::new(dynamo), DEFAULT_CACHE_CAPACITY))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(tenant_id: &str) -> TenantIdentity {
        TenantIdentity { tenant_id: tenant_id.into(), user_id: "u-1".into(), username: None, groups: Vec::new() }
    }

    #[test]
    fn names_are_the_ascii_lowercase_form_and_never_collide_with_usage_keys() {
        assert_eq!(registry_partition("AcMe.1_-"), "TENANT_ID#acme.1_-");
        assert_eq!(registry_name("ACME"), registry_name("acme"));
        // Usage partitions are `TENANT#<id>`; an id cannot contain `#`, so no id makes `TENANT_ID#...`.
        assert!(!registry_partition("acme").starts_with(&crate::counters::tenant_partition("")));
        assert!(!crate::identity::is_valid_tenant_id("_ID#acme"));
    }

    #[tokio::test]
    async fn the_first_seen_case_owns_the_name_and_the_other_is_refused() {
        let registry = InMemoryTenantRegistry::default();
        assert_eq!(admit(&registry, &identity("acme")).await, Ok(()));
        let refused = admit(&registry, &identity("ACME")).await.unwrap_err();
        assert!(matches!(refused, ApiError::Forbidden(_)), "{refused:?}");
        assert!(!refused.to_string().contains("acme"), "the message is generic: {refused}");
        assert_eq!(admit(&registry, &identity("acme")).await, Ok(()), "the owner stays admitted");
    }

    #[tokio::test]
    async fn symmetry_upper_case_first_refuses_lower_case() {
        let registry = InMemoryTenantRegistry::default();
        registry.register("ACME");
        assert_eq!(admit(&registry, &identity("ACME")).await, Ok(()));
        assert!(matches!(admit(&registry, &identity("acme")).await, Err(ApiError::Forbidden(_))));
        assert!(matches!(admit(&registry, &identity("Acme")).await, Err(ApiError::Forbidden(_))));
    }

    #[tokio::test]
    async fn different_tenants_do_not_affect_each_other() {
        let registry = InMemoryTenantRegistry::default();
        for tenant in ["acme", "acme2", "globex", "acme-eu"] {
            assert_eq!(admit(&registry, &identity(tenant)).await, Ok(()), "{tenant}");
        }
    }

    #[tokio::test]
    async fn an_unavailable_registry_fails_closed_with_503_and_retry_after() {
        let registry = InMemoryTenantRegistry::default();
        registry.set_unavailable(true);
        let error = admit(&registry, &identity("acme")).await.unwrap_err();
        assert!(matches!(error, ApiError::Unavailable { .. }), "{error:?}");
        assert_eq!(error.retry_after_seconds(), Some(REGISTRY_RETRY_AFTER_SECONDS));
    }

    #[tokio::test]
    async fn the_cache_asks_once_per_name_and_answers_when_the_registry_is_down() {
        let inner = Arc::new(InMemoryTenantRegistry::default());
        let cached = CachedTenantRegistry::new(inner.clone(), 10);
        assert_eq!(admit(&cached, &identity("acme")).await, Ok(()));
        inner.set_unavailable(true);
        for _ in 0..3 {
            assert_eq!(admit(&cached, &identity("acme")).await, Ok(()));
            assert!(matches!(admit(&cached, &identity("ACME")).await, Err(ApiError::Forbidden(_))));
        }
        assert_eq!(inner.lookups(), 1, "one lookup for the name, then the cache");
        let error = admit(&cached, &identity("globex")).await.unwrap_err();
        assert!(matches!(error, ApiError::Unavailable { .. }), "an uncached tenant fails closed: {error:?}");
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let inner = Arc::new(InMemoryTenantRegistry::default());
        let cached = CachedTenantRegistry::new(inner.clone(), 2);
        for tenant in ["a", "b", "c", "c", "a"] {
            assert_eq!(admit(&cached, &identity(tenant)).await, Ok(()));
        }
        assert_eq!(cached.owners.lock().unwrap().len(), 2);
        assert_eq!(inner.lookups(), 4, "a and b cached; c (past the bound) is asked twice");
    }
}
