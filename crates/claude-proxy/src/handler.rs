//! The proxy function's HTTP surface as a Lambda handler (API Gateway REST events, streamed responses):
//! - `POST /v1/messages`, `POST /v1/messages/count_tokens`: authenticated by gateway key, Anthropic-shaped;
//! - `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}`: behind the Cognito authorizer (claims);
//! - `GET /v1/gateway-key/usage/me`, `GET /v1/gateway-key/limits/me`: the key holder's own usage and limits,
//!   authenticated by gateway key (key_holder.rs).
//!
//! The local API server mounts the same handler.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use lambda_http::{Request, RequestExt};
use metering_core::error::REQUEST_ID_HEADER;
use metering_core::tenant_registry::TenantRegistry;
use metering_core::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::anthropic_error::error_response;
use crate::anthropic_error::ANTHROPIC_REQUEST_ID_HEADER;
use crate::body::{full, ProxyBody};
use crate::key_holder::{KeyHolderReports, KeyHolderRoute, KEY_HOLDER_PREFIX};
use crate::proxy::{Endpoint, ProxyService, UPSTREAM_HEADER};
use crate::request::ProxyRequest;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Proxy(Endpoint),
    CreateKey,
    ListKeys,
    RevokeKey(String),
    KeyHolder(KeyHolderRoute),
}

/// The route of a path, with or without a stage prefix (`/prod/v1/messages`).
fn route_of(method: &Method, path: &str) -> Result<Route, ApiError> {
    let path = path.find("/v1/").map_or(path, |at| &path[at..]).trim_end_matches('/');
    let allowed = |methods: &str| ApiError::MethodNotAllowed(format!("use {methods} for {path}"));
    match path {
        "/v1/messages" if method == Method::POST => Ok(Route::Proxy(Endpoint::Messages)),
        "/v1/messages" => Err(allowed("POST")),
        "/v1/messages/count_tokens" if method == Method::POST => Ok(Route::Proxy(Endpoint::CountTokens)),
        "/v1/messages/count_tokens" => Err(allowed("POST")),
        "/v1/keys" if method == Method::POST => Ok(Route::CreateKey),
        "/v1/keys" if method == Method::GET => Ok(Route::ListKeys),
        "/v1/keys" => Err(allowed("GET or POST")),
        _ if path.starts_with(KEY_HOLDER_PREFIX) => match KeyHolderRoute::parse(&path[KEY_HOLDER_PREFIX.len()..]) {
            Some(route) if method == Method::GET => Ok(Route::KeyHolder(route)),
            Some(_) => Err(allowed("GET")),
            // The path is not echoed: it may name another tenant, and the answer must not differ with it.
            None => Err(ApiError::NotFound(format!("no such route; {KEY_HOLDER_PREFIX} serves usage/me"))),
        },
        _ => match path.strip_prefix("/v1/keys/") {
            Some(id) if !id.is_empty() && !id.contains('/') && method == Method::DELETE => Ok(Route::RevokeKey(id.to_owned())),
            Some(id) if !id.is_empty() && !id.contains('/') => Err(allowed("DELETE")),
            _ => Err(ApiError::NotFound(format!("no route for {path}"))),
        },
    }
}

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

    /// Answers one API Gateway request; never fails: every error becomes its Anthropic-shaped answer.
    /// Every answer carries the gateway's request id (`x-request-id`; `request-id` too unless Anthropic's
    /// own answer brought one, which the SDKs then report) and `x-gateway-upstream` (`anthropic`, `bedrock`,
    /// or `gateway` for answers the gateway gives itself).
    pub async fn handle(&self, request: Request) -> Response<ProxyBody> {
        let request_id = request_id_of(&request);
        let mut response = self.answer(request, &request_id).await;
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID_HEADER, value.clone());
            headers.entry(ANTHROPIC_REQUEST_ID_HEADER).or_insert(value);
        }
        headers.entry(UPSTREAM_HEADER).or_insert(HeaderValue::from_static("gateway"));
        response
    }

    async fn answer(&self, request: Request, request_id: &str) -> Response<ProxyBody> {
        let request_id = request_id.to_owned();
        let route = match route_of(request.method(), request.uri().path()) {
            Ok(route) => route,
            Err(error) => return error_response(&error, &request_id),
        };
        if request.body().len() > self.max_body_bytes {
            let error = ApiError::PayloadTooLarge(format!("the request body is larger than {} bytes", self.max_body_bytes));
            return error_response(&error, &request_id);
        }
        let result = match route {
            Route::Proxy(endpoint) => return self.service.handle(endpoint, proxy_request(request, request_id)).await,
            Route::CreateKey => self.create_key(&request).await,
            Route::ListKeys => self.list_keys(&request).await,
            Route::RevokeKey(id) => self.revoke_key(&request, &id).await,
            Route::KeyHolder(route) => match &self.key_holder {
                Some(reports) => {
                    reports
                        .answer(route, self.service.keys(), self.service.limits(), &proxy_request(request, request_id.clone()))
                        .await
                }
                None => Err(ApiError::NotFound("this gateway does not serve gateway-key reports".into())),
            },
        };
        let mut response = result.unwrap_or_else(|error| error_response(&error, &request_id));
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }

    async fn create_key(&self, request: &Request) -> Result<Response<ProxyBody>, ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct CreateKeyBody {
            #[serde(default)]
            name: Option<String>,
        }
        let identity = tenant_identity(request, self.tenants.as_ref()).await?;
        let body = request.body().as_ref();
        let name = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            serde_json::from_slice::<CreateKeyBody>(body)
                .map_err(|error| ApiError::InvalidRequest(format!("invalid request body: {error}")))?
                .name
        };
        let (record, key) = self.service.keys().create(&identity, name).await?;
        let mut answer = serde_json::to_value(&record).unwrap_or_default();
        answer["key"] = Value::String(key);
        let mut response = json_answer(StatusCode::CREATED, &answer);
        // The key exists in this answer only: no cache may keep it.
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    async fn list_keys(&self, request: &Request) -> Result<Response<ProxyBody>, ApiError> {
        let identity = tenant_identity(request, self.tenants.as_ref()).await?;
        let keys = self.service.keys().list(&identity).await?;
        Ok(json_answer(StatusCode::OK, &json!({ "data": keys })))
    }

    async fn revoke_key(&self, request: &Request, key_id: &str) -> Result<Response<ProxyBody>, ApiError> {
        let identity = tenant_identity(request, self.tenants.as_ref()).await?;
        let revoked = self.service.keys().revoke(&identity, key_id).await?;
        Ok(json_answer(StatusCode::OK, &serde_json::to_value(&revoked).unwrap_or_default()))
    }
}

fn json_answer(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn proxy_request(request: Request, request_id: String) -> ProxyRequest {
    let query = request.uri().query().map(str::to_owned).or_else(|| {
        // Lambda events carry the query parameters apart from the URI.
        // Their values are decoded: encode them again, or a value holding `&`, `=`, `+` or `%` would change
        // meaning upstream.
        encode_query(request.query_string_parameters_ref()?.iter())
    });
    let (parts, body) = request.into_parts();
    ProxyRequest { request_id, headers: parts.headers, query, body: Bytes::copy_from_slice(body.as_ref()) }
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

pub use api_gateway_lambda::{authorizer_claims, request_id_of, tenant_identity};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ignore_a_stage_prefix_and_check_the_method() {
        assert_eq!(route_of(&Method::POST, "/v1/messages"), Ok(Route::Proxy(Endpoint::Messages)));
        assert_eq!(route_of(&Method::POST, "/prod/v1/messages/count_tokens"), Ok(Route::Proxy(Endpoint::CountTokens)));
        assert_eq!(route_of(&Method::GET, "/v1/keys/"), Ok(Route::ListKeys));
        assert_eq!(route_of(&Method::DELETE, "/v1/keys/abc"), Ok(Route::RevokeKey("abc".into())));
        assert!(matches!(route_of(&Method::GET, "/v1/messages"), Err(ApiError::MethodNotAllowed(_))));
        assert!(matches!(route_of(&Method::POST, "/v1/keys/abc"), Err(ApiError::MethodNotAllowed(_))));
        assert!(matches!(route_of(&Method::POST, "/v1/other"), Err(ApiError::NotFound(_))));
        assert_eq!(route_of(&Method::GET, "/prod/v1/gateway-key/usage/me"), Ok(Route::KeyHolder(KeyHolderRoute::OwnUsage)));
        assert!(matches!(route_of(&Method::POST, "/v1/gateway-key/usage/me"), Err(ApiError::MethodNotAllowed(_))));
        for other in ["/v1/gateway-key/usage/acme", "/v1/gateway-key/usage", "/v1/gateway-key/", "/v1/gateway-key/usage/me/x"] {
            assert!(matches!(route_of(&Method::GET, other), Err(ApiError::NotFound(_))), "{other}");
        }
    }

    #[test]
    fn query_parameters_of_a_lambda_event_are_encoded_again() {
        use std::collections::HashMap;
        let parameters: HashMap<String, Vec<String>> =
            [("beta".to_owned(), vec!["true".to_owned()]), ("claude-code-user".to_owned(), vec!["a&b=c d+e%f".to_owned()])]
                .into();
        let request = Request::default().with_query_string_parameters(parameters);
        let proxied = proxy_request(request, "r".into());
        let query = proxied.query.clone().unwrap_or_default();
        let decoded: Vec<(String, String)> =
            form_urlencoded::parse(query.as_bytes()).map(|(name, value)| (name.into_owned(), value.into_owned())).collect();
        assert_eq!(decoded.len(), 2, "{query}");
        assert!(decoded.contains(&("beta".into(), "true".into())), "{query}");
        assert!(decoded.contains(&("claude-code-user".into(), "a&b=c d+e%f".into())), "{query}");
        assert_eq!(proxied.query_parameter("claude-code-user").as_deref(), Some("a&b=c d+e%f"));
        assert_eq!(proxied.upstream_query(), "?beta=true");
        assert_eq!(proxy_request(Request::default(), "r".into()).query, None);
    }
}
