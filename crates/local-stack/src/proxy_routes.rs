//! The Claude proxy's routes in the local API server, as API Gateway serves them: `/v1/messages` and
//! `/v1/messages/count_tokens` and `/v1/gateway-key/...` without an authorizer (the gateway key is checked by
//! the handler), and `/v1/keys...` behind the Cognito authorizer. Answers stream through as the handler produces them.

use std::sync::Arc;

use axum::body::Body as AxumBody;
use axum::extract::{Request as AxumRequest, State};
use axum::response::Response as AxumResponse;
use axum::routing::any;
use axum::Router;
use claude_proxy::anthropic_error::error_response;
use claude_proxy::config::ProxyConfig;
use claude_proxy::ProxyHandler;
use metering_core::usage::UsageLog;
use tokio::time::Instant;

use crate::api_server::into_lambda_request;
use crate::authorizer::CognitoAuthorizer;

/// The proxy in the local API server: on when `API_KEY_TABLE_NAME` is set, configured from the proxy
/// function's own variables (see crates/claude-proxy/README.md).
pub struct LocalProxy {
    handler: ProxyHandler,
    max_body_bytes: usize,
}

impl LocalProxy {
    pub async fn from_env(
        sdk_config: &aws_config::SdkConfig,
        usage_log: Arc<dyn UsageLog>,
        limits: metering_core::limits::service::LimitsService,
    ) -> Result<Option<Self>, Box<dyn std::error::Error>> {
        if std::env::var("API_KEY_TABLE_NAME").map_or(true, |table| table.trim().is_empty()) {
            return Ok(None);
        }
        let config = ProxyConfig::from_env()?;
        config.log_start();
        let service = claude_proxy::aws::proxy_service_on_aws(&config, sdk_config, usage_log).await?.with_limits(limits);
        let tenants = metering_core::tenant_registry::tenant_registry_on_aws(sdk_config, config.usage_table_name.clone());
        let handler = ProxyHandler::new(service, config.max_body_bytes, tenants)
            .with_key_holder_reports(claude_proxy::key_holder::key_holder_reports_on_aws(&config, sdk_config));
        Ok(Some(Self { handler, max_body_bytes: config.max_body_bytes }))
    }

    pub fn router(&self, authorizer: Arc<CognitoAuthorizer>) -> Router {
        router(ProxyRoutesState { authorizer, proxy: self.handler.clone(), max_body_bytes: self.max_body_bytes })
    }

    /// After the server stopped: finish the streams still being read (their usage lines are written when they
    /// end), then the proxy's counter updates, all by `deadline` (the chat's drain bound); counter updates still
    /// pending then get `counter_update` lines.
    pub async fn drain(&self, deadline: Instant) {
        let service = self.handler.service();
        tracing::info!(streams = service.in_flight().count(), pending = service.metering().pending_jobs(), "draining the proxy");
        if !service.in_flight().idle_within(deadline.saturating_duration_since(Instant::now())).await {
            tracing::warn!(
                streams = service.in_flight().count(),
                "streams still open at the drain deadline; their usage lines are not written"
            );
        }
        service.metering().shutdown(deadline).await;
    }
}

#[derive(Clone)]
pub struct ProxyRoutesState {
    pub authorizer: Arc<CognitoAuthorizer>,
    pub proxy: ProxyHandler,
    /// Request bodies up to this size are read (API Gateway's own limit is 10 MB).
    pub max_body_bytes: usize,
}

pub fn router(state: ProxyRoutesState) -> Router {
    Router::new()
        .route("/v1/messages", any(by_gateway_key))
        .route("/v1/messages/count_tokens", any(by_gateway_key))
        // Any other path under /v1/messages, or under /v1 but the usage API's: the handler answers 404 in
        // Anthropic's shape.
        .route("/v1/messages/{*rest}", any(by_gateway_key))
        .route("/v1/{*rest}", any(by_gateway_key))
        .route("/v1/keys", any(by_id_token))
        .route("/v1/keys/{id}", any(by_id_token))
        .with_state(state)
}

fn into_axum(response: http::Response<claude_proxy::body::ProxyBody>) -> AxumResponse {
    let (parts, body) = response.into_parts();
    AxumResponse::from_parts(parts, AxumBody::new(body))
}

async fn by_gateway_key(State(state): State<ProxyRoutesState>, request: AxumRequest) -> AxumResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    match into_lambda_request(request, &request_id, None, state.max_body_bytes).await {
        Ok(lambda_request) => into_axum(state.proxy.handle(lambda_request).await),
        Err(error) => into_axum(error_response(&error, &request_id)),
    }
}

async fn by_id_token(State(state): State<ProxyRoutesState>, request: AxumRequest) -> AxumResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let claims = match state.authorizer.authorize_request(request.headers(), &request_id).await {
        Ok(claims) => claims,
        Err(error) => return into_axum(error_response(&error, &request_id)),
    };
    match into_lambda_request(request, &request_id, Some(claims), state.max_body_bytes).await {
        Ok(lambda_request) => into_axum(state.proxy.handle(lambda_request).await),
        Err(error) => into_axum(error_response(&error, &request_id)),
    }
}
