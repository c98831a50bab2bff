//! The layers every HTTP function's `Router` runs behind, set once here: the request id, the body rules and a
//! tracing span per request. Used by each Lambda's `main.rs` and by the local API server alike.

use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use http::HeaderName;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::error_envelope::REQUEST_ID_HEADER;

/// API Gateway's own payload limit is 10 MB; no route needs more than this (a chat prompt is 100,000
/// characters at most, a Claude request a few hundred kB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a client may take to send its whole body once the headers are in: a body shorter than its
/// `Content-Length` is answered 408 then, instead of holding the connection (and a task) for ever. In Lambda
/// the body is already whole when the handler runs.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How request bodies are read ([`crate::extract::RequestBody`]): at most `max_bytes` (413 past it), whole
/// within `read_timeout` (408). The default serves every route but the Claude proxy's, whose handlers read
/// under their own (`MAX_BODY_BYTES`, passed to [`crate::extract::read_body`]); [`with_body_rules`] gives a
/// `Router`'s extractors other rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRules {
    pub max_bytes: usize,
    pub read_timeout: Duration,
}

impl Default for BodyRules {
    fn default() -> Self {
        Self { max_bytes: MAX_BODY_BYTES, read_timeout: BODY_READ_TIMEOUT }
    }
}

/// The request id of a request: API Gateway's (what the caller sees), else the Lambda invocation's, else a
/// fresh one (the local server). Never the client's own `x-request-id`: the id keys the usage line and the
/// idempotent counter updates, so a client must not choose it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeGatewayRequestId;

impl MakeRequestId for MakeGatewayRequestId {
    fn make_request_id<B>(&mut self, request: &http::Request<B>) -> Option<RequestId> {
        http::HeaderValue::from_str(&request_id_of(request.extensions())).ok().map(RequestId::new)
    }
}

/// API Gateway's request id, else the Lambda invocation id, else a fresh uuid v4.
pub fn request_id_of(extensions: &http::Extensions) -> String {
    let from_gateway = match extensions.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.request_id.clone(),
        _ => None,
    };
    from_gateway
        .or_else(|| extensions.lambda_context_ref().map(|context| context.request_id.clone()))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// `router` behind the shared layers, outermost first: the client's
/// `x-request-id` dropped, the gateway's request id set (extension and header), a tracing span per request
/// (`request_id`, and `tenant_id` once the identity is read: [`record_tenant`]), and `x-request-id` on every
/// answer (404s and 405s included) unless the handler set it.
///
/// The layers wrap the whole `router` once, as one statically typed service in front of routing, not each
/// route (`Router::layer` wraps every route's boxed service: four more boxed services cloned, called and
/// dropped per request, the proxy's hot path measurably slower). What they do does not depend on the route.
pub fn with_gateway_layers(router: Router) -> Router {
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    let layered = ServiceBuilder::new()
        .map_request(forget_client_request_id)
        .layer(SetRequestIdLayer::new(header.clone(), MakeGatewayRequestId))
        // Server errors are logged where they are rendered, with what went wrong.
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_failure(()))
        .layer(PropagateRequestIdLayer::new(header))
        .service(router);
    Router::new().fallback_service(layered)
}

fn forget_client_request_id(mut request: Request) -> Request {
    request.headers_mut().remove(REQUEST_ID_HEADER);
    request
}

fn request_span(request: &Request) -> Span {
    let request_id = request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", request_id, method = %request.method(), tenant_id = tracing::field::Empty)
}

/// `routes` read their bodies under `rules` instead of the default.
pub fn with_body_rules(routes: Router, rules: BodyRules) -> Router {
    routes.layer(axum::Extension(rules))
}

/// Records the caller's verified tenant in the request's span.
pub fn record_tenant(tenant_id: &str) {
    Span::current().record("tenant_id", tenant_id);
}

/// The path the `Router` sees is the resource path, without API Gateway's stage (`/v1/usage/me`, not
/// `/prod/v1/usage/me`): lambda_http prefixes REST events' paths with the stage unless
/// `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set, as its README documents ("either in your Lambda function
/// configuration, or inside the main Rust function"). Each function's `main` calls this before its runtime
/// starts; it keeps a value the environment already has.
pub fn serve_paths_without_stage() {
    const IGNORE_STAGE: &str = "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH";
    if std::env::var_os(IGNORE_STAGE).is_none() {
        // Before any request is read; std serialises environment access with its own lock.
        std::env::set_var(IGNORE_STAGE, "true");
    }
}
