//! What a gateway-key holder reads about itself with the key it already has (Claude Code's status line, a
//! script): `GET /v1/gateway-key/usage/me` answers exactly what the usage function's `GET /v1/usage/me`
//! answers to a Cognito user (same JSON, same query parameters, the same code in
//! `metering_core::usage_report`), for the key's tenant. The key is checked as on `/v1/messages`; an
//! invalid or revoked key gets the proxy's usual 401, and nothing in the path or the query names a tenant:
//! the tenant is the one the key was issued for.
//!
//! Why a path of its own: in API Gateway, `GET /v1/usage/me` is behind the Cognito authorizer, which refuses
//! a request without an IdToken before any function runs (one method, one authorizer). The key-authenticated
//! twins therefore live under `/v1/gateway-key/` and go to the proxy function.
//!
//! `GET /v1/gateway-key/limits/me` answers the body of `GET /v1/limits/me` for the key's tenant, with the
//! key's own narrowing (`key`) when one is set, from the proxy's limits service.
//!
//! Adding one: a variant of [`KeyHolderRoute`], its path in
//! [`KeyHolderRoute::parse`] and [`KeyHolderRoute::PATHS`], its answer in [`KeyHolderReports::answer`]; the
//! CDK app and the OpenAPI document take their paths from the same list (infra/lib/claude-proxy/routes.ts).

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use http::{header, HeaderValue, Response, StatusCode};
use metering_core::counters::dynamodb_client;
use metering_core::limits::report::limits_report;
use metering_core::limits::service::LimitsService;
use metering_core::usage_report::params::ReportQuery;
use metering_core::usage_report::{CounterRetention, DynamoUsageReader, UsageReports, ITEMS_READ_HEADER, QUERIES_HEADER};
use metering_core::ApiError;

use crate::api_keys::{ApiKeys, KeyOwner};
use crate::body::{full, ProxyBody};
use crate::config::{CredentialMode, ProxyConfig};
use crate::request::ProxyRequest;

/// Where the key-authenticated routes live.
pub const KEY_HOLDER_PREFIX: &str = "/v1/gateway-key/";

/// A route under [`KEY_HOLDER_PREFIX`]; each answers `GET` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHolderRoute {
    /// `GET /v1/gateway-key/usage/me`: the body of the usage function's `GET /v1/usage/me`.
    OwnUsage,
    /// `GET /v1/gateway-key/limits/me`: the body of the usage function's `GET /v1/limits/me`, plus the key's own
    /// limits (`key`) when the key is narrowed.
    OwnLimits,
}

impl KeyHolderRoute {
    /// Every path, after the prefix (the CDK test checks infra/lib/claude-proxy/routes.ts against it).
    pub const PATHS: &'static [&'static str] = &["usage/me", "limits/me"];

    /// Every route, in the order of [`Self::PATHS`].
    pub const ALL: [Self; 2] = [Self::OwnUsage, Self::OwnLimits];

    /// The path after [`KEY_HOLDER_PREFIX`] (the handler routes it exactly and case-sensitively).
    pub fn path(self) -> &'static str {
        match self {
            Self::OwnUsage => "usage/me",
            Self::OwnLimits => "limits/me",
        }
    }
}

type Clock = Arc<dyn Fn() -> NaiveDate + Send + Sync>;

/// The answers of the key-authenticated routes.
#[derive(Clone)]
pub struct KeyHolderReports {
    usage: UsageReports,
    credential_mode: CredentialMode,
    today: Clock,
}

impl KeyHolderReports {
    pub fn new(usage: UsageReports, credential_mode: CredentialMode) -> Self {
        Self { usage, credential_mode, today: Arc::new(|| Utc::now().date_naive()) }
    }

    /// Replaces the UTC clock (tests fix "today").
    pub fn with_today(mut self, today: impl Fn() -> NaiveDate + Send + Sync + 'static) -> Self {
        self.today = Arc::new(today);
        self
    }

    /// Verifies the gateway key (`x-api-key` or a bearer token in managed mode, `x-gateway-key` in either),
    /// then answers `route` for the key's tenant.
    #[tracing::instrument(skip_all, fields(request_id = %request.request_id, tenant_id, user_id))]
    pub async fn answer(
        &self,
        route: KeyHolderRoute,
        keys: &ApiKeys,
        limits: Option<&LimitsService>,
        request: &ProxyRequest,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let owner = keys.verify(request.gateway_key(self.credential_mode)).await?;
        let span = tracing::Span::current();
        span.record("tenant_id", owner.tenant_id.as_str());
        span.record("user_id", owner.user_id.as_str());
        match route {
            KeyHolderRoute::OwnUsage => self.own_usage(&owner, request.query.as_deref()).await,
            KeyHolderRoute::OwnLimits => own_limits(&owner, limits, request.query.as_deref()).await,
        }
    }

    async fn own_usage(&self, owner: &KeyOwner, query: Option<&str>) -> Result<Response<ProxyBody>, ApiError> {
        let today = (self.today)();
        let query = ReportQuery::parse(query, today)?;
        let answer = self.usage.tenant_report(&owner.tenant_id, query.period, query.filter, today).await?;
        let body = serde_json::to_string(&answer.report)
            .map_err(|error| ApiError::Internal(format!("could not encode the report: {error}")))?;
        tracing::info!(
            key_id = %owner.key_id,
            items_read = answer.stats.items_read,
            queries = answer.stats.queries,
            "usage report served to a gateway key"
        );
        let mut response = Response::new(full(body));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Usage is private to the caller: no shared cache may keep it (as on the usage function).
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        headers.insert(ITEMS_READ_HEADER, HeaderValue::from(answer.stats.items_read));
        headers.insert(QUERIES_HEADER, HeaderValue::from(answer.stats.queries));
        Ok(response)
    }
}

/// `GET /v1/gateway-key/limits/me`: the key's tenant's limits and, when the key is narrowed, its own.
async fn own_limits(
    owner: &KeyOwner,
    limits: Option<&LimitsService>,
    query: Option<&str>,
) -> Result<Response<ProxyBody>, ApiError> {
    if query.is_some_and(|query| !query.is_empty()) {
        return Err(ApiError::InvalidRequest("/v1/gateway-key/limits/me takes no query parameters".into()));
    }
    let Some(limits) = limits else {
        return Err(ApiError::NotFound("this gateway enforces no limits".into()));
    };
    let report =
        limits_report(limits.store().as_ref(), &owner.tenant_id, Some(&owner.key_id), limits.now()).await.map_err(|error| {
            tracing::warn!(%error, "limits store failed");
            ApiError::Unavailable { message: "the limits store is unavailable; retry later".into(), retry_after_seconds: 5 }
        })?;
    tracing::info!(key_id = %owner.key_id, "limits served to a gateway key");
    let mut response = Response::new(full(report.to_string()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

/// The reports read from the usage table (`Query` on the tenant's partition only) with the proxy's config.
pub fn key_holder_reports_on_aws(config: &ProxyConfig, sdk_config: &aws_config::SdkConfig) -> KeyHolderReports {
    let reader = DynamoUsageReader::new(dynamodb_client(sdk_config), config.usage_table_name.clone());
    let retention = CounterRetention {
        daily_days: (config.daily_ttl.as_secs() / 86_400) as u32,
        weekly_days: (config.weekly_ttl.as_secs() / 86_400) as u32,
    };
    let usage = UsageReports::new(Arc::new(reader), Arc::new(config.pricing.clone()), retention);
    KeyHolderReports::new(usage, config.credential_mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listed_paths_are_the_routes_paths() {
        assert_eq!(KeyHolderRoute::ALL.map(KeyHolderRoute::path).as_slice(), KeyHolderRoute::PATHS);
    }
}
