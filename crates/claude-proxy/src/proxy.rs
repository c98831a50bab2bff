//! The proxy use case: authenticate the gateway key, choose the upstream (Anthropic, or Bedrock when
//! Anthropic answers 429 — or is known to, or is forced to), forward the answer as it comes, and meter it.
//! Knows nothing of Lambda or axum: requests arrive as `ProxyRequest`, answers leave as `http::Response`.

use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_gateway_lambda::error_envelope::status_of;
use api_gateway_lambda::REQUEST_ID_HEADER;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use metering_core::bedrock_metadata::BedrockRequestMetadata;
use metering_core::limits::service::{LimitsService, Reservation};
use metering_core::metering::Metering;
use metering_core::usage::{RequestType, TokenCounts, UsageEvent};
use metering_core::ApiError;
use serde_json::{json, Value};

use crate::anthropic::{client_response_headers, upstream_headers, AnthropicApi, UpstreamRequest, UpstreamResponse};
use crate::anthropic_error::{error_response, status_and_type, ANTHROPIC_REQUEST_ID_HEADER, OVERLOADED};
use crate::api_keys::{ApiKeys, KeyOwner};
use crate::bedrock::{self, BedrockApi};
use crate::bedrock_body::to_bedrock_body;
use crate::body::{full, ProxyBody};
use crate::config::{CredentialMode, FallbackPolicy, ProxyConfig};
use crate::in_flight::InFlight;
use crate::model_resolution::{BedrockModel, ModelResolver};
use crate::provider_key::ProviderKey;
use crate::rate_limits::{RateLimitEntry, RateLimitMemory};
use crate::request::{client_user, MessagesBody, ProxyRequest};
use crate::sse::usage_of_message_json;
use crate::streaming::{peek_first_event, spawn_stream, ClientDisconnect, Peeked, StreamSource, PEEK_MAX_BYTES};

/// Response header naming the upstream that answered (`anthropic` or `bedrock`).
pub const UPSTREAM_HEADER: &str = "x-gateway-upstream";
/// Response header saying why Bedrock answered (`rate_limited`, `remembered`, `forced`, ...).
pub const FALLBACK_HEADER: &str = "x-gateway-fallback";
/// Largest whole (non-streamed) answer read from an upstream.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// The proxy's settings, resolved at start-up (the provider key included).
#[derive(Clone)]
pub struct ProxySettings {
    pub credential_mode: CredentialMode,
    /// Redacted in `Debug`, zeroed when dropped; from a secret, read after start (`provider_key`).
    pub provider_key: ProviderKey,
    pub fallback: FallbackPolicy,
    /// Which Bedrock model serves a fallback (map, discovery, family fallback).
    pub models: ModelResolver,
    pub bedrock_allowed_betas: Vec<String>,
    pub forced_rate_limit_retry_after: Option<u64>,
    pub default_retry_after_seconds: u64,
    pub on_client_disconnect: ClientDisconnect,
    /// How long a `200` stream may take to show its first event (`ANTHROPIC_TIMEOUT_MS`, the bound of the
    /// whole Anthropic call) before it is committed to the client as it is.
    pub anthropic_timeout: Duration,
}

impl ProxySettings {
    pub fn from_config(config: &ProxyConfig, provider_key: ProviderKey, models: ModelResolver) -> Self {
        Self {
            credential_mode: config.credential_mode,
            provider_key,
            fallback: config.fallback,
            models,
            bedrock_allowed_betas: config.bedrock_allowed_betas.clone(),
            forced_rate_limit_retry_after: config.forced_rate_limit_retry_after,
            default_retry_after_seconds: config.default_retry_after_seconds,
            on_client_disconnect: config.on_client_disconnect,
            anthropic_timeout: config.anthropic_timeout,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
}

impl Endpoint {
    fn upstream_path(self) -> &'static str {
        match self {
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
        }
    }
}

/// Why Bedrock answered instead of Anthropic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    RateLimited,
    Remembered,
    Forced,
    Overloaded,
    ServerError,
    Unreachable,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Remembered => "remembered",
            Self::Forced => "forced",
            Self::Overloaded => "overloaded",
            Self::ServerError => "server_error",
            Self::Unreachable => "unreachable",
        }
    }
}

enum Route {
    /// Anthropic answered with success.
    Anthropic(UpstreamResponse),
    /// Anthropic's answer goes back as it is (a client error, or a 429 that cannot fall back).
    AsIs(UpstreamResponse),
    Bedrock {
        model: BedrockModel,
        reason: FallbackReason,
    },
    /// Bedrock, after Anthropic refused with an answer of its own (kept: it is what the client gets if
    /// Bedrock fails too).
    BedrockAfterRefusal {
        model: BedrockModel,
        reason: FallbackReason,
        refusal: AnthropicRefusal,
    },
}

/// How Anthropic refused: with a status of its own (the answer not read yet), or with an `error` event
/// opening a `200` stream (the stream whole, and the refusal it stands for).
enum Refused {
    Answer(UpstreamResponse),
    Stream { upstream: UpstreamResponse, refusal: AnthropicRefusal },
}

/// The status Anthropic answers with for an error `type`, for the error types the fallback policy speaks of
/// (an `error` event carries no status of its own).
fn status_of_error_type(error_type: &str) -> Option<StatusCode> {
    match error_type {
        "rate_limit_error" => Some(StatusCode::TOO_MANY_REQUESTS),
        "overloaded_error" => StatusCode::from_u16(OVERLOADED).ok(),
        "api_error" => Some(StatusCode::INTERNAL_SERVER_ERROR),
        _ => None,
    }
}

/// Anthropic's own refusal (its 429, 529 or 5xx, or an `error` event opening its stream) that sent a
/// request to Bedrock.
struct AnthropicRefusal {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Largest refusal body kept (Anthropic's error bodies are a few hundred bytes).
const MAX_REFUSAL_BYTES: usize = 64 * 1024;

impl AnthropicRefusal {
    async fn read(upstream: UpstreamResponse, request_id: &str) -> Self {
        let status = upstream.status;
        match upstream.read_all(MAX_REFUSAL_BYTES).await {
            Ok((status, headers, body)) => Self { status, headers, body },
            Err(error) => {
                tracing::warn!(%error, "Anthropic's refusal could not be read; keeping its status only");
                let (_, error_type) =
                    (status, if status == StatusCode::TOO_MANY_REQUESTS { "rate_limit_error" } else { "api_error" });
                let body = json!({"type": "error", "error": {"type": error_type, "message": format!("Anthropic answered {status}")}, "request_id": request_id});
                Self { status, headers: HeaderMap::new(), body: Bytes::from(body.to_string()) }
            }
        }
    }
}

/// Response header with the `error.type` of a Bedrock failure during a fallback.
pub const FALLBACK_ERROR_HEADER: &str = "x-gateway-fallback-error";

/// Everything needed to write one request's usage line, carried into the stream task.
#[derive(Clone)]
pub struct Meter {
    metering: Metering,
    received_at: DateTime<Utc>,
    started: Instant,
    request_id: String,
    tenant_id: String,
    /// The gateway key that was verified (for the logs; the line carries its owner).
    key_id: String,
    /// The key's owner: whom the gateway verified.
    user_id: String,
    /// Who the client says it is (kept apart, never billed to).
    client_user_id: Option<String>,
    requested_model_id: String,
    /// The tenant's budgets held for this request, settled when it is metered (released if it never is).
    reservation: Option<Arc<Reservation>>,
}

impl Meter {
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn record(&self, request_type: RequestType, model_id: &str, tokens: TokenCounts) {
        self.write(request_type, model_id, tokens, false);
    }

    /// A line whose output count is an estimate (a stream that ended early).
    pub fn record_estimated(&self, request_type: RequestType, model_id: &str, tokens: TokenCounts) {
        self.write(request_type, model_id, tokens, true);
    }

    fn write(&self, request_type: RequestType, model_id: &str, tokens: TokenCounts, usage_estimated: bool) {
        self.metering.record(UsageEvent {
            received_at: self.received_at,
            request_id: self.request_id.clone(),
            tenant_id: self.tenant_id.clone(),
            user_id: self.user_id.clone(),
            model_id: model_id.to_owned(),
            request_type,
            tokens,
            latency_ms: self.started.elapsed().as_millis() as u64,
            usage_estimated,
            client_user_id: self.client_user_id.clone(),
            requested_model_id: Some(self.requested_model_id.clone()),
        });
        if let Some(reservation) = &self.reservation {
            reservation.settle(model_id, &tokens);
        }
    }
}

struct Call<'a> {
    request: &'a ProxyRequest,
    owner: KeyOwner,
    body: MessagesBody,
    meter: Meter,
}

#[derive(Clone)]
pub struct ProxyService {
    settings: Arc<ProxySettings>,
    keys: ApiKeys,
    rate_limits: Option<RateLimitMemory>,
    anthropic: Arc<dyn AnthropicApi>,
    bedrock: Arc<dyn BedrockApi>,
    metering: Metering,
    in_flight: InFlight,
    limits: Option<LimitsService>,
}

impl ProxyService {
    pub fn new(
        settings: ProxySettings,
        keys: ApiKeys,
        rate_limits: Option<RateLimitMemory>,
        anthropic: Arc<dyn AnthropicApi>,
        bedrock: Arc<dyn BedrockApi>,
        metering: Metering,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            keys,
            rate_limits,
            anthropic,
            bedrock,
            metering,
            in_flight: InFlight::default(),
            limits: None,
        }
    }

    /// Enforces the tenants' limits on `/v1/messages` (README "Budgets and quotas").
    pub fn with_limits(mut self, limits: LimitsService) -> Self {
        self.limits = Some(limits);
        self
    }

    pub fn limits(&self) -> Option<&LimitsService> {
        self.limits.as_ref()
    }

    pub fn keys(&self) -> &ApiKeys {
        &self.keys
    }

    pub fn metering(&self) -> &Metering {
        &self.metering
    }

    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Answers one proxy request; never fails (errors become Anthropic-shaped answers). The work runs in a
    /// task of its own, so a client that hangs up cannot cancel it halfway: what was generated is metered.
    pub async fn handle(&self, endpoint: Endpoint, request: ProxyRequest) -> Response<ProxyBody> {
        let request_id = request.request_id.clone();
        let this = self.clone();
        let task = tokio::spawn(async move {
            let received_at = Utc::now();
            let started = Instant::now();
            match endpoint {
                Endpoint::Messages => this.messages(&request, received_at, started).await,
                Endpoint::CountTokens => this.count_tokens(&request, received_at, started).await,
            }
        });
        let mut response = match task.await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                if status_of(&error).is_server_error() {
                    tracing::warn!(request_id = %request_id, status = status_of(&error).as_u16(), %error, "proxy request failed");
                }
                error_response(&error, &request_id)
            }
            Err(join_error) => {
                tracing::error!(request_id = %request_id, error = %join_error, "proxy task failed");
                error_response(&ApiError::Internal("the request could not be completed".into()), &request_id)
            }
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }

    /// The gateway key's owner; an unknown key ends the request here (401, no tenant to speak of).
    async fn authenticate(&self, request: &ProxyRequest) -> Result<KeyOwner, ApiError> {
        self.keys.verify(request.gateway_key(self.settings.credential_mode)).await
    }

    /// The call of a verified owner: its body parsed, its meter ready.
    fn call<'a>(
        &self,
        request: &'a ProxyRequest,
        owner: &KeyOwner,
        received_at: DateTime<Utc>,
        started: Instant,
    ) -> Result<Call<'a>, ApiError> {
        let owner = owner.clone();
        let body = MessagesBody::parse(&request.body)?;
        let meter = Meter {
            metering: self.metering.clone(),
            received_at,
            started,
            request_id: request.request_id.clone(),
            tenant_id: owner.tenant_id.clone(),
            key_id: owner.key_id.clone(),
            user_id: owner.user_id.clone(),
            client_user_id: client_user(&body, request),
            requested_model_id: body.model.clone(),
            reservation: None,
        };
        Ok(Call { request, owner, body, meter })
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.request_id))]
    async fn messages(
        &self,
        request: &ProxyRequest,
        received_at: DateTime<Utc>,
        started: Instant,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let owner = self.authenticate(request).await?;
        let mut call = match self.call(request, &owner, received_at, started) {
            Ok(call) => call,
            Err(refused) => return Ok(self.with_current_limits(Err(refused), &owner, request).await),
        };
        let admission = match &self.limits {
            Some(limits) => match crate::limits::admit(limits, request, &call.owner, &call.body).await {
                Ok(admission) => admission,
                Err(refused) => return Ok(refused),
            },
            None => metering_core::limits::service::Admission::default(),
        };
        call.meter.reservation = admission.reservation;
        let answer = match self.route(&call, Endpoint::Messages).await {
            Ok(Route::Anthropic(upstream)) => self.answer_from_anthropic(&call, upstream).await,
            Ok(Route::AsIs(upstream)) => self.as_is(upstream, &request.request_id).await,
            Ok(Route::Bedrock { model, reason }) => self.bedrock_or_refusal(&call, &model.invoke_id, reason, None).await,
            Ok(Route::BedrockAfterRefusal { model, reason, refusal }) => {
                self.bedrock_or_refusal(&call, &model.invoke_id, reason, Some(refusal)).await
            }
            Err(error) => Err(error),
        };
        if admission.statuses.is_empty() {
            return answer;
        }
        // Every answer under a limit says where the client stands, errors included.
        let mut response = answer.unwrap_or_else(|error| {
            if status_of(&error).is_server_error() {
                tracing::warn!(status = status_of(&error).as_u16(), %error, "proxy request failed");
            }
            error_response(&error, &request.request_id)
        });
        crate::limits::insert_rate_limit_headers(response.headers_mut(), &admission.statuses);
        Ok(response)
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.request_id))]
    async fn count_tokens(
        &self,
        request: &ProxyRequest,
        received_at: DateTime<Utc>,
        started: Instant,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let owner = self.authenticate(request).await?;
        let answer = match self.call(request, &owner, received_at, started) {
            Ok(call) => self.count_tokens_of(&call).await,
            Err(refused) => Err(refused),
        };
        // count_tokens reserves nothing and counts toward no limit, but says where the caller stands.
        Ok(self.with_current_limits(answer, &owner, request).await)
    }

    /// The answer (or the error answer) with the caller's `anthropic-ratelimit-*` headers when a limit
    /// applies: for the answers that admitted nothing, so had no reservation to report.
    async fn with_current_limits(
        &self,
        answer: Result<Response<ProxyBody>, ApiError>,
        owner: &KeyOwner,
        request: &ProxyRequest,
    ) -> Response<ProxyBody> {
        let mut response = answer.unwrap_or_else(|error| {
            if status_of(&error).is_server_error() {
                tracing::warn!(status = status_of(&error).as_u16(), %error, "proxy request failed");
            }
            error_response(&error, &request.request_id)
        });
        if let Some(limits) = &self.limits {
            let statuses = crate::limits::current_statuses(limits, owner).await;
            crate::limits::insert_rate_limit_headers(response.headers_mut(), &statuses);
        }
        response
    }

    async fn count_tokens_of(&self, call: &Call<'_>) -> Result<Response<ProxyBody>, ApiError> {
        let request = call.request;
        match self.route(call, Endpoint::CountTokens).await? {
            Route::Anthropic(upstream) | Route::AsIs(upstream) => self.as_is(upstream, &request.request_id).await,
            Route::Bedrock { model, reason } | Route::BedrockAfterRefusal { model, reason, .. } => {
                // CountTokens takes a foundation model id, not an inference profile.
                let model_id = model.foundation_model_id;
                let mut converted =
                    to_bedrock_body(call.body.fields.whole()?, &request.betas(), &self.settings.bedrock_allowed_betas);
                converted.log_dropped(&request.request_id);
                // Bedrock validates the body as an InvokeModel body, where max_tokens is required.
                if let Value::Object(fields) = &mut converted.body {
                    fields.entry("max_tokens").or_insert(json!(1));
                }
                let input_tokens = self
                    .bedrock
                    .count_tokens(&model_id, converted.to_bytes())
                    .await
                    .map_err(|error| bedrock::api_error(error, &model_id))?;
                Ok(json_response(StatusCode::OK, json!({"input_tokens": input_tokens}).to_string(), Some(reason)))
            }
        }
    }

    /// Chooses the upstream: forced 429 and a remembered 429 skip Anthropic; otherwise Anthropic is asked
    /// and its answer decides. The Bedrock model is resolved only when Bedrock is needed. Only a 429 of
    /// `/v1/messages` is remembered: a `count_tokens` 429 falls back for that call alone.
    async fn route(&self, call: &Call<'_>, endpoint: Endpoint) -> Result<Route, ApiError> {
        let settings = &self.settings;
        if let Some(retry_after) = settings.forced_rate_limit_retry_after {
            if endpoint == Endpoint::Messages {
                self.remember_429(call, retry_after).await;
            }
            let model = if settings.fallback.enabled { self.bedrock_model(call).await } else { None };
            return match model {
                Some(model) => Ok(Route::Bedrock { model, reason: FallbackReason::Forced }),
                None => Err(ApiError::RateLimited {
                    message: format!(
                        "rate limited (FORCE_RATE_LIMIT_TEST) and model {:?} has no Bedrock fallback",
                        call.body.model
                    ),
                    retry_after_seconds: retry_after,
                }),
            };
        }
        if let (Some(memory), true) = (&self.rate_limits, settings.fallback.enabled) {
            if let Some(until) = memory.in_force(&call.owner.tenant_id, &call.owner.user_id).await {
                if let Some(model) = self.bedrock_model(call).await {
                    tracing::info!(limited_until = %until, "Anthropic 429 in force for this key's owner; asking Bedrock directly");
                    return Ok(Route::Bedrock { model, reason: FallbackReason::Remembered });
                }
            }
        }
        let provider_key = settings.provider_key.get().await?;
        let upstream = self
            .anthropic
            .send(UpstreamRequest {
                path_and_query: format!("{}{}", endpoint.upstream_path(), call.request.upstream_query()),
                headers: upstream_headers(
                    &call.request.headers,
                    settings.credential_mode,
                    provider_key.map(ExposeSecret::expose_secret),
                ),
                body: call.request.body.clone(),
            })
            .await;
        let upstream = match upstream {
            Ok(upstream) => upstream,
            Err(error) => {
                let model = if settings.fallback.enabled && settings.fallback.on_server_error {
                    self.bedrock_model(call).await
                } else {
                    None
                };
                return match model {
                    Some(model) => {
                        tracing::warn!(%error, "Anthropic unreachable; asking Bedrock");
                        Ok(Route::Bedrock { model, reason: FallbackReason::Unreachable })
                    }
                    None => Err(ApiError::from(error)),
                };
            }
        };
        let status = upstream.status;
        if status.is_success() {
            if endpoint == Endpoint::Messages && is_event_stream(&upstream.headers) {
                return self.route_stream(call, upstream).await;
            }
            return Ok(Route::Anthropic(upstream));
        }
        if !settings.fallback.applies_to(status) {
            return Ok(Route::AsIs(upstream));
        }
        let retry_after = upstream.retry_after_seconds();
        self.fall_back_after_refusal(call, endpoint, status, retry_after, Refused::Answer(upstream)).await
    }

    /// Anthropic's `200` stream, peeked at before it is committed: an `error` event before `message_start`
    /// (say `overloaded_error`) is a refusal like the status it stands for, and falls back as that status
    /// would under the policy. Anything else is Anthropic's answer.
    async fn route_stream(&self, call: &Call<'_>, upstream: UpstreamResponse) -> Result<Route, ApiError> {
        let UpstreamResponse { status, headers, body } = upstream;
        let (error_type, data, body) = match peek_first_event(body, PEEK_MAX_BYTES, self.settings.anthropic_timeout).await {
            Peeked::Committed(body) => return Ok(Route::Anthropic(UpstreamResponse { status, headers, body })),
            Peeked::EarlyError { error_type, data, stream } => (error_type, data, stream),
        };
        let upstream = UpstreamResponse { status, headers, body };
        let refused_as = status_of_error_type(&error_type).filter(|refused_as| self.settings.fallback.applies_to(*refused_as));
        tracing::info!(error_type, falls_back = refused_as.is_some(), "Anthropic's stream opened with an error event");
        let Some(refused_as) = refused_as else {
            return Ok(Route::Anthropic(upstream));
        };
        // Kept as the answer Anthropic would give with that status: the event's data is its error body.
        let mut refusal_headers = HeaderMap::new();
        refusal_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(request_id) = upstream.headers.get(ANTHROPIC_REQUEST_ID_HEADER) {
            refusal_headers.insert(ANTHROPIC_REQUEST_ID_HEADER, request_id.clone());
        }
        let refusal = AnthropicRefusal { status: refused_as, headers: refusal_headers, body: Bytes::from(data) };
        self.fall_back_after_refusal(call, Endpoint::Messages, refused_as, None, Refused::Stream { upstream, refusal }).await
    }

    /// Bedrock after Anthropic refused with `status` (a status the policy covers); Anthropic's own answer
    /// is kept for the client in case Bedrock fails too, or passed on when no Bedrock model serves the call.
    async fn fall_back_after_refusal(
        &self,
        call: &Call<'_>,
        endpoint: Endpoint,
        status: StatusCode,
        retry_after: Option<u64>,
        refused: Refused,
    ) -> Result<Route, ApiError> {
        let settings = &self.settings;
        if status == StatusCode::TOO_MANY_REQUESTS && endpoint == Endpoint::Messages {
            self.remember_429(call, retry_after.unwrap_or(settings.default_retry_after_seconds)).await;
        }
        let reason = match status.as_u16() {
            429 => FallbackReason::RateLimited,
            OVERLOADED => FallbackReason::Overloaded,
            _ => FallbackReason::ServerError,
        };
        let Some(model) = self.bedrock_model(call).await else {
            return Ok(match refused {
                Refused::Answer(upstream) => Route::AsIs(upstream),
                // No fallback for this model: the stream goes on to the client as Anthropic sent it.
                Refused::Stream { upstream, .. } => Route::Anthropic(upstream),
            });
        };
        tracing::info!(status = status.as_u16(), reason = reason.as_str(), "Anthropic refused; asking Bedrock");
        let refusal = match refused {
            Refused::Answer(upstream) => AnthropicRefusal::read(upstream, &call.request.request_id).await,
            Refused::Stream { refusal, .. } => refusal,
        };
        Ok(Route::BedrockAfterRefusal { model, reason, refusal })
    }

    /// The Bedrock model for the requested one, or `None` (logged with the unmapped id).
    async fn bedrock_model(&self, call: &Call<'_>) -> Option<BedrockModel> {
        let requested = &call.body.model;
        let model = self.settings.models.resolve(requested).await;
        if let Some(model) = &model {
            tracing::info!(
                requested_model = %requested,
                bedrock_model = %model.invoke_id,
                source = model.source.as_str(),
                "Bedrock model resolved"
            );
        } else {
            tracing::warn!(
                requested_model = %requested,
                "no Bedrock model for {requested:?} (not in BEDROCK_MODEL_MAP, not discovered, no family fallback)"
            );
        }
        model
    }

    async fn remember_429(&self, call: &Call<'_>, retry_after_seconds: u64) {
        if let Some(memory) = &self.rate_limits {
            memory
                .record(RateLimitEntry {
                    tenant_id: call.owner.tenant_id.clone(),
                    // The key's owner, never the client's own claim: one user cannot divert another.
                    user_id: call.owner.user_id.clone(),
                    recorded_at: Utc::now(),
                    retry_after_seconds,
                })
                .await;
        }
    }

    async fn answer_from_anthropic(&self, call: &Call<'_>, upstream: UpstreamResponse) -> Result<Response<ProxyBody>, ApiError> {
        let mode = self.settings.credential_mode;
        let is_event_stream = is_event_stream(&upstream.headers);
        let mut headers = client_response_headers(&upstream.headers, mode);
        headers.insert(UPSTREAM_HEADER, HeaderValue::from_static("anthropic"));
        if is_event_stream {
            let body = spawn_stream(
                StreamSource::AnthropicSse(upstream.body),
                call.meter.clone(),
                RequestType::Anthropic,
                call.body.model.clone(),
                self.in_flight.enter(),
                self.settings.on_client_disconnect,
            );
            return Ok(with_headers(Response::new(body), upstream.status, headers));
        }
        let (status, _, bytes) = upstream.read_all(MAX_ANSWER_BYTES).await.map_err(ApiError::from)?;
        let tokens = usage_of_message_json(&bytes);
        if tokens.is_none() {
            tracing::warn!("Anthropic's answer carried no usage; metered as zero tokens");
        }
        call.meter.record(RequestType::Anthropic, &call.body.model, tokens.unwrap_or_default());
        Ok(with_headers(Response::new(full(bytes)), status, headers))
    }

    async fn as_is(&self, upstream: UpstreamResponse, request_id: &str) -> Result<Response<ProxyBody>, ApiError> {
        let mode = self.settings.credential_mode;
        let headers = client_response_headers(&upstream.headers, mode);
        let (status, _, bytes) = upstream.read_all(MAX_ANSWER_BYTES).await.map_err(ApiError::from)?;
        tracing::debug!(request_id, status = status.as_u16(), "Anthropic's answer passed on as it is");
        let mut headers = headers;
        headers.insert(UPSTREAM_HEADER, HeaderValue::from_static("anthropic"));
        Ok(with_headers(Response::new(full(bytes)), status, headers))
    }

    /// Bedrock's answer; if Bedrock fails, the client gets what it would have got without the fallback:
    /// Anthropic's own refusal (status, `retry-after`, body), or for a remembered or forced 429 a 429 of the
    /// gateway's. The headers say what happened: `x-gateway-upstream: bedrock`, `x-gateway-fallback` (why),
    /// `x-gateway-fallback-error` (Bedrock's error type).
    async fn bedrock_or_refusal(
        &self,
        call: &Call<'_>,
        model_id: &str,
        reason: FallbackReason,
        refusal: Option<AnthropicRefusal>,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let error = match self.answer_from_bedrock(call, model_id, reason).await {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        let request_id = &call.request.request_id;
        tracing::warn!(bedrock_model = model_id, reason = reason.as_str(), %error, "the Bedrock fallback failed; answering with Anthropic's refusal");
        let mut response = match refusal {
            Some(refusal) => {
                let headers = client_response_headers(&refusal.headers, self.settings.credential_mode);
                with_headers(Response::new(full(refusal.body)), refusal.status, headers)
            }
            None => match reason {
                FallbackReason::Forced | FallbackReason::Remembered => {
                    let retry_after_seconds = self.seconds_limited(call, reason).await;
                    let message = format!("rate limited ({}); the Bedrock fallback failed: {error}", reason.as_str());
                    error_response(&ApiError::RateLimited { message, retry_after_seconds }, request_id)
                }
                _ => error_response(&error, request_id),
            },
        };
        let headers = response.headers_mut();
        headers.insert(UPSTREAM_HEADER, HeaderValue::from_static("bedrock"));
        headers.insert(FALLBACK_HEADER, HeaderValue::from_static(reason.as_str()));
        headers.insert(FALLBACK_ERROR_HEADER, HeaderValue::from_static(status_and_type(&error).1));
        Ok(response)
    }

    /// The `retry-after` of a 429 the gateway answers itself: the forced one, or what is left of the
    /// remembered one.
    async fn seconds_limited(&self, call: &Call<'_>, reason: FallbackReason) -> u64 {
        let settings = &self.settings;
        if reason == FallbackReason::Forced {
            return settings.forced_rate_limit_retry_after.unwrap_or(settings.default_retry_after_seconds);
        }
        let until = match &self.rate_limits {
            Some(memory) => memory.in_force(&call.owner.tenant_id, &call.owner.user_id).await,
            None => None,
        };
        until.map_or(settings.default_retry_after_seconds, |until| (until - Utc::now()).num_seconds().max(1) as u64)
    }

    async fn answer_from_bedrock(
        &self,
        call: &Call<'_>,
        model_id: &str,
        reason: FallbackReason,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let converted = to_bedrock_body(call.body.fields.whole()?, &call.request.betas(), &self.settings.bedrock_allowed_betas);
        converted.log_dropped(&call.request.request_id);
        tracing::info!(bedrock_model = model_id, reason = reason.as_str(), stream = call.body.stream, "served by Bedrock");
        let metadata = BedrockRequestMetadata {
            tenant_id: call.owner.tenant_id.clone(),
            user_id: call.owner.user_id.clone(),
            request_id: call.request.request_id.clone(),
            request_type: RequestType::Bedrock,
        };
        if call.body.stream {
            let events = self
                .bedrock
                .invoke_stream(model_id, converted.to_bytes(), &metadata)
                .await
                .map_err(|error| bedrock::api_error(error, model_id))?;
            let body = spawn_stream(
                StreamSource::BedrockEvents(events),
                call.meter.clone(),
                RequestType::Bedrock,
                model_id.to_owned(),
                self.in_flight.enter(),
                self.settings.on_client_disconnect,
            );
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(UPSTREAM_HEADER, HeaderValue::from_static("bedrock"));
            headers.insert(FALLBACK_HEADER, HeaderValue::from_static(reason.as_str()));
            return Ok(with_headers(Response::new(body), StatusCode::OK, headers));
        }
        let answer = self
            .bedrock
            .invoke(model_id, converted.to_bytes(), &metadata)
            .await
            .map_err(|error| bedrock::api_error(error, model_id))?;
        let tokens = usage_of_message_json(&answer);
        if tokens.is_none() {
            tracing::warn!("Bedrock's answer carried no usage; metered as zero tokens");
        }
        call.meter.record(RequestType::Bedrock, model_id, tokens.unwrap_or_default());
        Ok(json_response(StatusCode::OK, answer, Some(reason)))
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"))
}

fn with_headers(mut response: Response<ProxyBody>, status: StatusCode, headers: HeaderMap) -> Response<ProxyBody> {
    *response.status_mut() = status;
    response.headers_mut().extend(headers);
    response
}

fn json_response(status: StatusCode, body: impl Into<Bytes>, fallback: Option<FallbackReason>) -> Response<ProxyBody> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(reason) = fallback {
        headers.insert(UPSTREAM_HEADER, HeaderValue::from_static("bedrock"));
        headers.insert(FALLBACK_HEADER, HeaderValue::from_static(reason.as_str()));
    }
    with_headers(Response::new(full(body)), status, headers)
}
