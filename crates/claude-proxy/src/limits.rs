//! Tenant limits on `/v1/messages` (README "Budgets and quotas"): the admission before any upstream is
//! asked, and the `anthropic-ratelimit-*` headers that tell the client where it stands.

use http::{HeaderMap, HeaderName, HeaderValue, Response};
use metering_core::limits::service::{Admission, AdmissionRequest, AdmitError, LimitStatus, LimitsService};
use metering_core::limits::store::UseCounter;
use metering_core::limits::{LimitKind, Scope};
use metering_core::ApiError;
use serde_json::Value;

use crate::anthropic_error::error_response;
use crate::api_keys::KeyOwner;
use crate::body::ProxyBody;
use crate::request::{MessagesBody, ProxyRequest};

/// The route name of `limit_refused` lines.
pub const MESSAGES_ROUTE: &str = "/v1/messages";
/// Added to the body's bytes for the upper bound of the input tokens: what the API adds around the
/// content (the tool-use system prompt is the largest, a few hundred tokens).
pub const BODY_FRAMING_TOKENS: u64 = 512;
/// The output bound of a body without `max_tokens` (the upstream refuses it anyway; the hold is released).
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// Admits the request or answers the refusal (429 with `retry-after` and the limit's headers, or 503 when
/// the limits cannot be checked and `LIMITS_FAIL_MODE=closed`).
pub async fn admit(
    limits: &LimitsService,
    request: &ProxyRequest,
    owner: &KeyOwner,
    body: &MessagesBody,
) -> Result<Admission, Response<ProxyBody>> {
    let admission_request = AdmissionRequest {
        tenant_id: &owner.tenant_id,
        user_id: &owner.user_id,
        request_id: &request.request_id,
        key_id: Some(&owner.key_id),
        route: MESSAGES_ROUTE,
        model_id: &body.model,
        input_tokens_bound: request.body.len() as u64 + BODY_FRAMING_TOKENS,
        max_output_tokens: body.fields.get("max_tokens").and_then(Value::as_u64).unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
    };
    match limits.admit(&admission_request, true).await {
        Ok(admission) => Ok(admission),
        Err(AdmitError::Refused(refusal)) => {
            let mut response = error_response(&refusal.to_api_error(), &request.request_id);
            let status = LimitStatus {
                kind: refusal.kind,
                scope: refusal.scope.clone(),
                limit: refusal.limit,
                remaining: 0,
                resets_at: refusal.period.resets_at,
            };
            insert_rate_limit_headers(response.headers_mut(), &[status]);
            Err(response)
        }
        Err(AdmitError::Unavailable(error)) => {
            Err(error_response(&ApiError::from(AdmitError::Unavailable(error)), &request.request_id))
        }
    }
}

/// Where the key's owner stands, without admitting anything: for the answers that reserve nothing
/// (`count_tokens`, a body refused before admission), which carry the headers too. The limits come from the
/// hot path's cache; the counters are read once (eventually consistent, like the admitted answers' headers),
/// within `LIMITS_STORE_TIMEOUT_MS`. Empty when no limit applies or the store cannot tell (the answer then
/// goes out without the headers: they inform, they never hold an answer back).
pub async fn current_statuses(limits: &LimitsService, owner: &KeyOwner) -> Vec<LimitStatus> {
    if !limits.config().enabled {
        return Vec::new();
    }
    let set = match limits.limits(&owner.tenant_id, Some(&owner.key_id)).await {
        Ok(set) if !set.is_empty() => set,
        Ok(_) => return Vec::new(),
        Err(error) => {
            tracing::warn!(tenant_id = %owner.tenant_id, %error, "limits not readable for the rate-limit headers");
            return Vec::new();
        }
    };
    let now = limits.now();
    let tenant = Scope::Tenant(owner.tenant_id.clone());
    let key = Scope::Key { tenant_id: owner.tenant_id.clone(), key_id: owner.key_id.clone() };
    let held: Vec<(UseCounter, u64)> = [(tenant, &set.tenant), (key, &set.key)]
        .into_iter()
        .flat_map(|(scope, scope_limits)| {
            scope_limits.set_kinds().map(move |(kind, limit)| (UseCounter::new(scope.clone(), kind, now), limit))
        })
        .collect();
    let counters: Vec<UseCounter> = held.iter().map(|(counter, _)| counter.clone()).collect();
    let bound = limits.config().store_timeout;
    let uses = match tokio::time::timeout(bound, limits.store().read_use(&counters, false)).await {
        Ok(Ok(uses)) => uses,
        Ok(Err(error)) => {
            tracing::warn!(tenant_id = %owner.tenant_id, %error, "limit counters not readable for the rate-limit headers");
            return Vec::new();
        }
        Err(_) => {
            tracing::warn!(tenant_id = %owner.tenant_id, "limit counters not read within LIMITS_STORE_TIMEOUT_MS for the rate-limit headers");
            return Vec::new();
        }
    };
    held.into_iter()
        .zip(uses)
        .map(|((counter, limit), used)| LimitStatus {
            kind: counter.kind,
            scope: counter.scope,
            limit,
            remaining: limit.saturating_sub(used.admitted),
            resets_at: counter.period.resets_at,
        })
        .collect()
}

/// Anthropic's `anthropic-ratelimit-requests-*` from the requests-per-minute limit and
/// `anthropic-ratelimit-tokens-*` from the token budget with the least left (tenant's or key's), replacing
/// the upstream's own. Kinds without a limit leave the upstream's headers as they are.
pub fn insert_rate_limit_headers(headers: &mut HeaderMap, statuses: &[LimitStatus]) {
    let tightest = |wanted: &dyn Fn(LimitKind) -> bool| {
        statuses.iter().filter(|status| wanted(status.kind)).min_by_key(|status| status.remaining)
    };
    let groups: [(&str, Option<&LimitStatus>); 2] = [
        ("requests", tightest(&|kind| kind == LimitKind::RequestsPerMinute)),
        ("tokens", tightest(&|kind| matches!(kind, LimitKind::TokensPerDay | LimitKind::TokensPerMonth))),
    ];
    for (name, status) in groups {
        let Some(status) = status else { continue };
        let reset = status.resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (suffix, value) in
            [("limit", status.limit.to_string()), ("remaining", status.remaining.to_string()), ("reset", reset)]
        {
            let header = format!("anthropic-ratelimit-{name}-{suffix}");
            if let (Ok(header), Ok(value)) = (HeaderName::from_bytes(header.as_bytes()), HeaderValue::from_str(&value)) {
                headers.insert(header, value);
            }
        }
    }
}
