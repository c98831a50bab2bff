//! What API Gateway hands a Lambda function besides the HTTP request — the Cognito authorizer's verified
//! claims, the request id, the route path — and the runtime loop of a metered function ([`entry`]): the
//! internal extension that finishes metering after each response, paired with its invocation by request id,
//! the timeout budget checked at cold start, and SIGTERM. Shared by every HTTP function (chat, usage, Claude
//! proxy), so they read them the same way.

use std::collections::HashMap;

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use metering_core::identity::TenantIdentity;
use metering_core::tenant_registry::TenantRegistry;
use metering_core::ApiError;
use serde_json::Value;

pub mod budget;
pub mod counter_cutoff;
pub mod entry;
pub mod flush_extension;
pub mod invocations;
pub mod shutdown;

/// The claims API Gateway's Cognito authorizer verified (`requestContext.authorizer.claims`).
pub fn authorizer_claims(request: &Request) -> Result<HashMap<String, Value>, ApiError> {
    let unauthenticated = || ApiError::Unauthenticated("the request carries no verified identity".into());
    let authorizer = request.request_context_ref().and_then(RequestContext::authorizer).ok_or_else(unauthenticated)?;
    match authorizer.fields.get("claims") {
        Some(Value::Object(claims)) => Ok(claims.iter().map(|(name, value)| (name.clone(), value.clone())).collect()),
        // Some integrations pass the claims as a JSON string.
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|_| unauthenticated()),
        _ => Err(unauthenticated()),
    }
}

/// The caller's tenant identity: the verified claims taken exactly, then admitted by the tenant registry (a
/// tenant id that differs only by case from a registered one is a 403). Every claims-authenticated route
/// (chat, usage, keys) reads its caller here.
pub async fn tenant_identity(request: &Request, tenants: &dyn TenantRegistry) -> Result<TenantIdentity, ApiError> {
    TenantIdentity::from_claims_admitted(&authorizer_claims(request)?, tenants).await
}

/// API Gateway's request id (what the caller sees), else the Lambda invocation id, else a fresh one.
pub fn request_id_of(request: &Request) -> String {
    let from_gateway = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.request_id.clone(),
        _ => None,
    };
    from_gateway
        .or_else(|| request.lambda_context_ref().map(|context| context.request_id.clone()))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The path without the API Gateway stage (`/v1/usage/me`, not `/prod/v1/usage/me`), still percent-encoded
/// as the client sent it.
pub fn route_path(request: &Request) -> &str {
    match request.raw_http_path() {
        "" => request.uri().path(),
        raw => raw,
    }
}
