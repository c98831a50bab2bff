//! The local API server: the functions' own `Router`s (chat, usage, and the Claude proxy when it is on),
//! merged and behind the same shared layers as in Lambda. Where API Gateway runs its Cognito authorizer, a
//! layer runs the local one and hands the verified claims to the handlers as a request extension
//! ([`VerifiedClaims`]), as the claims extractor reads them; no API Gateway event is made up.

use std::sync::Arc;

use api_gateway_lambda::error_envelope::no_such_route;
use api_gateway_lambda::{with_gateway_layers, AnthropicError, GatewayRequestId, JsonError, VerifiedClaims};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chat_api::ChatHandler;
use claude_proxy::ProxyHandler;
use http::Uri;
use metering_core::ApiError;
use usage_api::UsageHandler;

use crate::authorizer::CognitoAuthorizer;

#[derive(Clone)]
pub struct ApiState {
    pub authorizer: Arc<CognitoAuthorizer>,
    pub chat: ChatHandler,
    /// `/v1/usage...` behind the authorizer, `/ui...` (the dashboard) without it, as in API Gateway.
    pub usage: UsageHandler,
    /// `/v1/messages...` and `/v1/gateway-key/...` without the authorizer, `/v1/keys...` behind it.
    pub proxy: Option<ProxyHandler>,
}

/// The envelope an authorizer's refusal is answered in: the project's, or Anthropic's on the proxy's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    Project,
    Anthropic,
}

pub fn router(state: ApiState) -> Router {
    let authorizer = &state.authorizer;
    let mut routes = behind_authorizer(state.chat.routes().merge(state.usage.authorized_routes()), authorizer, Envelope::Project)
        .merge(state.usage.dashboard_routes())
        .route("/health", get(|| async { "ok" }).fallback(|| async { JsonError(ApiError::MethodNotAllowed("use GET".into())) }));
    if let Some(proxy) = &state.proxy {
        routes =
            routes.merge(proxy.key_routes()).merge(behind_authorizer(proxy.authorized_routes(), authorizer, Envelope::Anthropic));
    }
    let proxy_on = state.proxy.is_some();
    with_gateway_layers(routes.fallback(move |id: GatewayRequestId, uri: Uri| not_found(proxy_on, id, uri)))
}

/// `routes` behind the local Cognito authorizer: a request without a token it accepts is refused (401) before
/// any handler runs; otherwise the verified claims go on as a request extension.
pub fn behind_authorizer(routes: Router, authorizer: &Arc<CognitoAuthorizer>, envelope: Envelope) -> Router {
    routes.layer(axum::middleware::from_fn_with_state((Arc::clone(authorizer), envelope), authorize))
}

async fn authorize(
    State((authorizer, envelope)): State<(Arc<CognitoAuthorizer>, Envelope)>,
    GatewayRequestId(request_id): GatewayRequestId,
    mut request: Request,
    next: Next,
) -> Response {
    match authorizer.authorize_request(request.headers(), &request_id).await {
        Ok(claims) => {
            request.extensions_mut().insert(VerifiedClaims::from(claims));
            next.run(request).await
        }
        Err(error) => match envelope {
            Envelope::Project => JsonError(error).into_response(),
            Envelope::Anthropic => AnthropicError::new(error, request_id).into_response(),
        },
    }
}

/// A path no route serves. In API Gateway each function answers only its own resources; here they share one
/// server, so the 404 takes the envelope of the function whose paths it is under: the usage function's
/// `/v1/usage...` and `/v1/limits...` and everything outside `/v1/` the project's, the rest of `/v1/` the
/// proxy's (when it is on).
async fn not_found(proxy_on: bool, id: GatewayRequestId, uri: Uri) -> Response {
    let path = uri.path();
    let usage_function =
        ["/v1/usage", "/v1/limits"].iter().any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")));
    if proxy_on && path.starts_with("/v1/") && !usage_function {
        claude_proxy::handler::not_found(id, uri).await
    } else {
        no_such_route().await.into_response()
    }
}
