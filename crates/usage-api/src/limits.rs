//! `GET /v1/limits/me` and the admins' `GET|PUT|DELETE /v1/limits/{tenant_id}`: parse, check who may, call
//! the core (`metering_core::limits`), answer JSON. Errors map through `ApiError` like every route.

use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::Method;
use metering_core::identity::{is_valid_tenant_id, TenantIdentity};
use metering_core::limits::report::limits_report;
use metering_core::limits::service::LimitsService;
use metering_core::limits::store::LimitsStoreError;
use metering_core::limits::{Limits, Scope, StoredLimits};
use metering_core::ApiError;
use percent_encoding::percent_decode_str;
use serde_json::Value;

fn store_error(error: LimitsStoreError) -> ApiError {
    tracing::warn!(%error, "limits store failed");
    ApiError::Unavailable { message: "the limits store is unavailable; retry later".into(), retry_after_seconds: 5 }
}

/// `GET /v1/limits/me`: the caller's tenant.
pub async fn own_limits(limits: &LimitsService, identity: &TenantIdentity, method: &Method) -> Result<Value, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed("use GET for /v1/limits/me".into()));
    }
    limits_report(limits.store().as_ref(), &identity.tenant_id, None, limits.now()).await.map_err(store_error)
}

/// `GET|PUT|DELETE /v1/limits/{tenant_id}`: members of the admin group only, for any valid tenant id.
pub async fn tenant_limits(
    limits: &LimitsService,
    identity: &TenantIdentity,
    admin_group: &str,
    method: &Method,
    segment: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    if !matches!(*method, Method::GET | Method::PUT | Method::DELETE) {
        return Err(ApiError::MethodNotAllowed("use GET, PUT or DELETE for /v1/limits/{tenant_id}".into()));
    }
    if !identity.is_in_group(admin_group) {
        return Err(ApiError::Forbidden(format!(
            "reading or changing a tenant's limits needs membership of the {admin_group} group; use GET /v1/limits/me for your own"
        )));
    }
    // Decoded exactly once, compared exactly.
    let tenant_id = percent_decode_str(segment).decode_utf8_lossy().into_owned();
    if !is_valid_tenant_id(&tenant_id) {
        return Err(ApiError::InvalidRequest("tenant_id must be 1 to 128 characters of letters, digits, '-', '_' or '.'".into()));
    }
    let scope = Scope::Tenant(tenant_id.clone());
    if *method == Method::PUT {
        let new_limits = Limits::parse_request(body)?;
        let stored = StoredLimits {
            limits: new_limits,
            updated_at: Some(limits.now().to_rfc3339_opts(SecondsFormat::Secs, true)),
            updated_by: Some(identity.username.clone().unwrap_or_else(|| identity.user_id.clone())),
        };
        limits.store().put(&scope, &stored).await.map_err(store_error)?;
        tracing::info!(tenant_id = %tenant_id, updated_by = ?stored.updated_by, limits = %new_limits.to_json(), "tenant limits set");
    } else if *method == Method::DELETE {
        let existed = limits.store().delete(&scope).await.map_err(store_error)?;
        tracing::info!(tenant_id = %tenant_id, existed, "tenant limits cleared");
    }
    limits.invalidate(&tenant_id);
    limits_report(limits.store().as_ref(), &tenant_id, None, limits.now()).await.map_err(store_error)
}

pub fn json_response(value: &Value) -> Response {
    let headers = [(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "private, no-store")];
    (headers, value.to_string()).into_response()
}
