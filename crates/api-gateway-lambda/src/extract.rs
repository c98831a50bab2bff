//! Extractors every handler shares: the gateway's request id, the verified claims, and the request body read
//! under the shared [`BodyRules`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::request::Parts;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use metering_core::identity::TenantIdentity;
use metering_core::tenant_registry::TenantRegistry;
use metering_core::ApiError;
use serde_json::Value;
use tower_http::request_id::RequestId;

use crate::error_envelope::JsonError;
use crate::layers::{record_tenant, request_id_of, BodyRules};

/// The request id the shared layers set (API Gateway's, the invocation's, or a fresh one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for GatewayRequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let set = parts.extensions.get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).map(str::to_owned);
        Ok(Self(set.unwrap_or_else(|| request_id_of(&parts.extensions))))
    }
}

/// The claims a Cognito authorizer verified, taken exactly: those a local authorizer layer inserted as a
/// request extension, else API Gateway's (`requestContext.authorizer.claims`, an object or a JSON string).
/// Neither can come from the client: extensions are set in-process, the event by API Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims(pub Arc<HashMap<String, Value>>);

impl From<serde_json::Map<String, Value>> for VerifiedClaims {
    fn from(claims: serde_json::Map<String, Value>) -> Self {
        Self(Arc::new(claims.into_iter().collect()))
    }
}

impl VerifiedClaims {
    /// The caller's tenant identity: the claims taken exactly, then admitted by the tenant registry (a tenant
    /// id that differs only by case from a registered one is a 403). Records the tenant in the request's span.
    pub async fn admitted(&self, tenants: &dyn TenantRegistry) -> Result<TenantIdentity, ApiError> {
        let identity = TenantIdentity::from_claims_admitted(&self.0, tenants).await?;
        record_tenant(&identity.tenant_id);
        Ok(identity)
    }

    fn of_gateway_event(extensions: &http::Extensions) -> Result<Self, ApiError> {
        let unauthenticated = || ApiError::Unauthenticated("the request carries no verified identity".into());
        let authorizer = extensions.request_context_ref().and_then(RequestContext::authorizer).ok_or_else(unauthenticated)?;
        match authorizer.fields.get("claims") {
            Some(Value::Object(claims)) => Ok(Self::from(claims.clone())),
            // Some integrations pass the claims as a JSON string.
            Some(Value::String(text)) => serde_json::from_str::<HashMap<String, Value>>(text)
                .map(|claims| Self(Arc::new(claims)))
                .map_err(|_| unauthenticated()),
            _ => Err(unauthenticated()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedClaims {
    type Rejection = JsonError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<VerifiedClaims>() {
            Some(claims) => Ok(claims.clone()),
            None => Ok(Self::of_gateway_event(&parts.extensions)?),
        }
    }
}

/// The last segment of the request's path as sent, still percent-encoded: a route's trailing `{param}`.
/// Not axum's `Path` or `RawPathParams`: both hand the segment already decoded, and `Path` refuses invalid
/// UTF-8 outside the route's error envelope; each route decodes (or not) as it always has.
pub fn raw_last_segment(uri: &http::Uri) -> &str {
    uri.path().rsplit_once('/').map_or("", |(_, last)| last)
}

/// The whole request body, read under the shared [`BodyRules`]: too large is a 413, not received in time a
/// 408, not valid HTTP framing (a malformed chunk) a 400.
#[derive(Debug, Clone)]
pub struct RequestBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RequestBody {
    type Rejection = JsonError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let rules = request.extensions().get::<BodyRules>().copied().unwrap_or_default();
        Ok(Self(read_body(request.into_body(), rules).await?))
    }
}

/// The whole body, or the error that says what was wrong with it.
pub async fn read_body(body: axum::body::Body, rules: BodyRules) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, rules.max_bytes);
    match tokio::time::timeout(rules.read_timeout, http_body_util::BodyExt::collect(limited)).await {
        Err(_) => {
            Err(ApiError::RequestTimeout(format!("the request body was not received within {}s", rules.read_timeout.as_secs())))
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge(format!("the request body is larger than {} bytes", rules.max_bytes)))
        }
        Ok(Err(error)) => {
            tracing::info!(%error, "the request body could not be read");
            Err(ApiError::InvalidRequest("the request body is not valid HTTP (framing or encoding)".into()))
        }
    }
}
