//! The proxy function's HTTP surface as an axum `Router` (run by lambda_http's streaming runtime):
//! - `POST /v1/messages`, `POST /v1/messages/count_tokens`: authenticated by gateway key, Anthropic-shaped;
//! - `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}`: behind the Cognito authorizer (claims);
//! - `GET /v1/gateway-key/usage/me`, `GET /v1/gateway-key/limits/me`: the key holder's own usage and limits,
//!   authenticated by gateway key (key_holder.rs).
//!
//! Every answer, errors included, is in Anthropic's envelope. The local API server mounts the same routes.

use std::sync::Arc;

use api_gateway_lambda::error_envelope::{ANTHROPIC_REQUEST_ID_HEADER, REQUEST_ID_HEADER};
use api_gateway_lambda::extract::{raw_last_segment, read_body};
use api_gateway_lambda::{with_gateway_layers, AnthropicError, BodyRules, GatewayRequestId, JsonError, VerifiedClaims};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, StatusCode, Uri};
use lambda_http::RequestExt;
use metering_core::identity::TenantIdentity;
use metering_core::tenant_registry::TenantRegistry;
use metering_core::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::request_id::RequestId;

use crate::key_holder::{KeyHolderReports, KeyHolderRoute, KEY_HOLDER_PREFIX};
use crate::proxy::{Endpoint, ProxyService, UPSTREAM_HEADER};
use crate::request::ProxyRequest;

#[derive(Clone)]
pub struct ProxyHandler {
    service: ProxyService,
    max_body_bytes: usize,
    /// Admits the Cognito caller of `/v1/keys*`. `/v1/messages` needs no lookup: a key is bound at creation
    /// to a tenant the registry admitted.
    tenants: Arc<dyn TenantRegistry>,
    /// `GET /v1/gateway-key/...`; without it those routes answer 404.
    key_holder: Option<KeyHolderReports>,
}

type Answer = Result<Response, AnthropicError>;

impl ProxyHandler {
    pub fn new(service: ProxyService, max_body_bytes: usize, tenants: Arc<dyn TenantRegistry>) -> Self {
        Self { service, max_body_bytes, tenants, key_holder: None }
    }

    /// Serves the key holder's own reports (`GET /v1/gateway-key/usage/me`).
    pub fn with_key_holder_reports(mut self, reports: KeyHolderReports) -> Self {
        self.key_holder = Some(reports);
        self
    }

    pub fn service(&self) -> &ProxyService {
        &self.service
    }

    /// The routes' state: the handler behind one `Arc`, so a request clones one pointer, not every client
    /// and table the handler holds.
    fn shared(&self) -> Arc<ProxyHandler> {
        Arc::new(self.clone())
    }

    /// How request bodies are read (`MAX_BODY_BYTES`).
    fn body_rules(&self) -> BodyRules {
        BodyRules { max_bytes: self.max_body_bytes, ..BodyRules::default() }
    }

    /// The routes a gateway key authenticates (no authorizer in front), without fallback or layers. Each
    /// handler reads its body under the proxy's `MAX_BODY_BYTES` and sets the answer headers itself
    /// ([`AnswerHeaders`]).
    pub fn key_routes(&self) -> Router {
        let key_holder = |route: KeyHolderRoute| {
            let path = format!("{KEY_HOLDER_PREFIX}{}", route.path());
            let answer = get(
                move |State(handler): State<Arc<ProxyHandler>>,
                      headers: AnswerHeaders,
                      id: GatewayRequestId,
                      request: Request| async move { headers.on(handler.key_holder_answer(route, id, request).await) },
            );
            only("GET", &path, answer)
        };
        Router::new()
            .route("/v1/messages", only("POST", "/v1/messages", post(messages)))
            .route("/v1/messages/count_tokens", only("POST", "/v1/messages/count_tokens", post(count_tokens)))
            // KeyHolderRoute::PATHS, under KEY_HOLDER_PREFIX.
            .route("/v1/gateway-key/usage/me", key_holder(KeyHolderRoute::OwnUsage))
            .route("/v1/gateway-key/limits/me", key_holder(KeyHolderRoute::OwnLimits))
            .with_state(self.shared())
    }

    /// The routes behind the Cognito authorizer (`/v1/keys...`), without fallback or layers.
    pub fn authorized_routes(&self) -> Router {
        Router::new()
            .route("/v1/keys", only("GET or POST", "/v1/keys", get(list_keys).post(create_key)))
            .route("/v1/keys/{key_id}", only("DELETE", "/v1/keys/{id}", delete(revoke_key)))
            .with_state(self.shared())
    }

    /// The function's `Router`: every route, Anthropic's 404, the shared layers.
    pub fn router(&self) -> Router {
        with_gateway_layers(self.key_routes().merge(self.authorized_routes()).fallback(not_found))
    }

    async fn key_holder_answer(
        &self,
        route: KeyHolderRoute,
        GatewayRequestId(request_id): GatewayRequestId,
        request: Request,
    ) -> Answer {
        let Some(reports) = &self.key_holder else {
            return Err(AnthropicError::new(
                ApiError::NotFound("this gateway does not serve gateway-key reports".into()),
                request_id,
            ));
        };
        let request = proxy_request(request, request_id.clone(), self.body_rules())
            .await
            .map_err(|error| AnthropicError::new(error, &request_id))?;
        reports
            .answer(route, self.service.keys(), self.service.limits(), &request)
            .await
            .map(|response| response.map(axum::body::Body::new))
            .map_err(|error| AnthropicError::new(error, request_id))
    }

    async fn identity(
        &self,
        claims: Result<VerifiedClaims, JsonError>,
        request_id: &str,
    ) -> Result<TenantIdentity, AnthropicError> {
        let admitted = match claims {
            Ok(claims) => claims.admitted(self.tenants.as_ref()).await,
            Err(JsonError(error)) => Err(error),
        };
        admitted.map_err(|error| AnthropicError::new(error, request_id))
    }
}

/// `method_router` for `path`; any other method is Anthropic's 405 naming the allowed ones.
fn only(allowed: &'static str, path: &str, method_router: MethodRouter<Arc<ProxyHandler>>) -> MethodRouter<Arc<ProxyHandler>> {
    let message = format!("use {allowed} for {path}");
    method_router.fallback(move |headers: AnswerHeaders, GatewayRequestId(request_id): GatewayRequestId| {
        let error = ApiError::MethodNotAllowed(message.clone());
        async move { headers.on(AnthropicError::new(error, request_id)) }
    })
}

/// Anthropic's 404, given by the gateway. Under `/v1/gateway-key/` the path is not echoed: it may name
/// another tenant, and the answer must not differ with it.
pub async fn not_found(GatewayRequestId(request_id): GatewayRequestId, uri: Uri) -> Response {
    let message = if uri.path().starts_with(KEY_HOLDER_PREFIX) {
        format!("no such route; {KEY_HOLDER_PREFIX} serves usage/me")
    } else {
        format!("no route for {}", uri.path())
    };
    let mut response = AnthropicError::new(ApiError::NotFound(message), request_id).into_response();
    response.headers_mut().insert(UPSTREAM_HEADER, HeaderValue::from_static("gateway"));
    response
}

/// The headers every answer of the proxy's routes carries: the gateway's request id as `x-request-id`, and as
/// Anthropic's `request-id` unless Anthropic's own answer brought one (which the SDKs then report), and
/// `x-gateway-upstream` (`anthropic`, `bedrock`, or `gateway` for answers the gateway gives itself).
///
/// Set by each handler (an extractor and [`AnswerHeaders::on`]), not by a layer on the routes: `Router::layer`
/// wraps every route in more boxed services, cloned and called per request (see `with_gateway_layers`).
struct AnswerHeaders {
    /// The request id the shared layers set, shared with the request (not copied).
    request_id: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for AnswerHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self { request_id: parts.extensions.get::<RequestId>().map(|id| id.header_value().clone()) })
    }
}

impl AnswerHeaders {
    fn on(self, answer: impl IntoResponse) -> Response {
        let mut response = answer.into_response();
        let headers = response.headers_mut();
        if let Some(value) = self.request_id {
            headers.insert(REQUEST_ID_HEADER, value.clone());
            headers.entry(ANTHROPIC_REQUEST_ID_HEADER).or_insert(value);
        }
        headers.entry(UPSTREAM_HEADER).or_insert(HeaderValue::from_static("gateway"));
        response
    }
}

async fn messages(
    State(handler): State<Arc<ProxyHandler>>,
    headers: AnswerHeaders,
    id: GatewayRequestId,
    request: Request,
) -> Response {
    headers.on(proxied(&handler, Endpoint::Messages, id, request).await)
}

async fn count_tokens(
    State(handler): State<Arc<ProxyHandler>>,
    headers: AnswerHeaders,
    id: GatewayRequestId,
    request: Request,
) -> Response {
    headers.on(proxied(&handler, Endpoint::CountTokens, id, request).await)
}

async fn proxied(
    handler: &ProxyHandler,
    endpoint: Endpoint,
    GatewayRequestId(request_id): GatewayRequestId,
    request: Request,
) -> Answer {
    let request = proxy_request(request, request_id.clone(), handler.body_rules())
        .await
        .map_err(|error| AnthropicError::new(error, request_id))?;
    Ok(handler.service.handle(endpoint, request).await.map(axum::body::Body::new))
}

async fn create_key(
    State(handler): State<Arc<ProxyHandler>>,
    headers: AnswerHeaders,
    id: GatewayRequestId,
    claims: Result<VerifiedClaims, JsonError>,
    request: Request,
) -> Response {
    headers.on(created_key(&handler, id, claims, request).await)
}

async fn created_key(
    handler: &ProxyHandler,
    GatewayRequestId(request_id): GatewayRequestId,
    claims: Result<VerifiedClaims, JsonError>,
    request: Request,
) -> Answer {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CreateKeyBody {
        #[serde(default)]
        name: Option<String>,
    }
    let identity = handler.identity(claims, &request_id).await?;
    let failed = |error: ApiError| AnthropicError::new(error, &request_id);
    let (_, body) = whole_request(request, handler.body_rules()).await.map_err(failed)?;
    let name = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<CreateKeyBody>(&body)
            .map_err(|error| failed(ApiError::InvalidRequest(format!("invalid request body: {error}"))))?
            .name
    };
    let (record, key) = handler.service.keys().create(&identity, name).await.map_err(failed)?;
    let mut answer = serde_json::to_value(&record).unwrap_or_default();
    answer["key"] = Value::String(key);
    let mut response = json_answer(StatusCode::CREATED, &answer);
    // The key exists in this answer only: no cache may keep it.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn list_keys(
    State(handler): State<Arc<ProxyHandler>>,
    headers: AnswerHeaders,
    id: GatewayRequestId,
    claims: Result<VerifiedClaims, JsonError>,
) -> Response {
    headers.on(listed_keys(&handler, id, claims).await)
}

async fn listed_keys(
    handler: &ProxyHandler,
    GatewayRequestId(request_id): GatewayRequestId,
    claims: Result<VerifiedClaims, JsonError>,
) -> Answer {
    let identity = handler.identity(claims, &request_id).await?;
    let keys = handler.service.keys().list(&identity).await.map_err(|error| AnthropicError::new(error, &request_id))?;
    Ok(json_answer(StatusCode::OK, &json!({ "data": keys })))
}

async fn revoke_key(
    State(handler): State<Arc<ProxyHandler>>,
    headers: AnswerHeaders,
    id: GatewayRequestId,
    claims: Result<VerifiedClaims, JsonError>,
    uri: Uri,
) -> Response {
    headers.on(revoked_key(&handler, id, claims, &uri).await)
}

async fn revoked_key(
    handler: &ProxyHandler,
    GatewayRequestId(request_id): GatewayRequestId,
    claims: Result<VerifiedClaims, JsonError>,
    uri: &Uri,
) -> Answer {
    let identity = handler.identity(claims, &request_id).await?;
    // The id as sent, as it always was: key ids are hex, and nothing here decodes them.
    let key_id = raw_last_segment(uri);
    let revoked =
        handler.service.keys().revoke(&identity, key_id).await.map_err(|error| AnthropicError::new(error, &request_id))?;
    Ok(json_answer(StatusCode::OK, &serde_json::to_value(&revoked).unwrap_or_default()))
}

fn json_answer(status: StatusCode, value: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// The request's head and its whole body, read under the proxy's body rules (`MAX_BODY_BYTES`).
async fn whole_request(request: Request, rules: BodyRules) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    Ok((parts, read_body(body, rules).await?))
}

/// The request as the proxy service takes it.
async fn proxy_request(request: Request, request_id: String, rules: BodyRules) -> Result<ProxyRequest, ApiError> {
    let (parts, body) = whole_request(request, rules).await?;
    let query = parts.uri.query().map(str::to_owned).or_else(|| {
        // Lambda events carry the query parameters apart from the URI.
        // Their values are decoded: encode them again, or a value holding `&`, `=`, `+` or `%` would change
        // meaning upstream.
        encode_query(parts.query_string_parameters_ref()?.iter())
    });
    Ok(ProxyRequest { request_id, headers: parts.headers, query, body })
}

/// A query string from decoded `(name, value)` pairs, `application/x-www-form-urlencoded`; `None` when empty.
fn encode_query<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in pairs {
        serializer.append_pair(name, value);
        any = true;
    }
    any.then(|| serializer.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn query_parameters_of_a_lambda_event_are_encoded_again() {
        use std::collections::HashMap;
        let parameters: HashMap<String, Vec<String>> =
            [("beta".to_owned(), vec!["true".to_owned()]), ("claude-code-user".to_owned(), vec!["a&b=c d+e%f".to_owned()])]
                .into();
        let request = http::Request::new(axum::body::Body::empty()).with_query_string_parameters(parameters);
        let proxied = proxy_request(request, "r".into(), BodyRules::default()).await.unwrap();
        let query = proxied.query.clone().unwrap_or_default();
        let decoded: Vec<(String, String)> =
            form_urlencoded::parse(query.as_bytes()).map(|(name, value)| (name.into_owned(), value.into_owned())).collect();
        assert_eq!(decoded.len(), 2, "{query}");
        assert!(decoded.contains(&("beta".into(), "true".into())), "{query}");
        assert!(decoded.contains(&("claude-code-user".into(), "a&b=c d+e%f".into())), "{query}");
        assert_eq!(proxied.query_parameter("claude-code-user").as_deref(), Some("a&b=c d+e%f"));
        assert_eq!(proxied.upstream_query(), "?beta=true");
        assert_eq!(
            proxy_request(http::Request::new(axum::body::Body::empty()), "r".into(), BodyRules::default()).await.unwrap().query,
            None
        );
    }
}
