//! `POST /bedrock/chat` as an axum `Router` run by `lambda_http`: the authorizer's claims, the chat service,
//! the result as HTTP. The local API server mounts the same routes.

use std::sync::Arc;

use api_gateway_lambda::error_envelope::no_such_route;
use api_gateway_lambda::{with_gateway_layers, GatewayRequestId, JsonError, RequestBody, VerifiedClaims};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http::HeaderMap;
use metering_core::chat::ChatService;
use metering_core::metering::Metering;
use metering_core::tenant_registry::TenantRegistry;
use metering_core::ApiError;
use serde_json::json;

#[derive(Clone)]
pub struct ChatHandler {
    service: ChatService,
    tenants: Arc<dyn TenantRegistry>,
}

impl ChatHandler {
    pub fn new(service: ChatService, tenants: Arc<dyn TenantRegistry>) -> Self {
        Self { service, tenants }
    }

    pub fn metering(&self) -> &Metering {
        self.service.metering()
    }

    /// The routes behind the Cognito authorizer, without fallback or layers (the local server merges them).
    pub fn routes(&self) -> Router {
        Router::new()
            .route(
                "/bedrock/chat",
                post(chat).fallback(|| async { JsonError(ApiError::MethodNotAllowed("use POST for /bedrock/chat".into())) }),
            )
            .with_state(self.clone())
    }

    /// The function's `Router`: its routes, the project's 404, and the shared layers.
    pub fn router(&self) -> Router {
        with_gateway_layers(self.routes().fallback(no_such_route))
    }
}

async fn chat(
    State(handler): State<ChatHandler>,
    GatewayRequestId(request_id): GatewayRequestId,
    claims: VerifiedClaims,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Result<Response, JsonError> {
    let identity = claims.admitted(handler.tenants.as_ref()).await?;
    let text = handler.service.chat(&identity, &request_id, &body).await?;
    Ok(if prefers_plain_text(&headers) {
        ([(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    } else {
        ([(http::header::CONTENT_TYPE, "application/json")], json!({ "response": text }).to_string()).into_response()
    })
}

/// True when the client ranks `text/plain` above JSON in `Accept`.
pub fn prefers_plain_text(headers: &http::HeaderMap) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for value in headers.get_all(http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()) {
        for media_range in value.split(',') {
            let mut parts = media_range.split(';');
            let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|param| param.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let plain = match media_type.as_str() {
                "text/plain" => true,
                "application/json" | "application/*" | "*/*" => false,
                _ => continue,
            };
            if quality > 0.0 && best.is_none_or(|(best_quality, _)| quality > best_quality) {
                best = Some((quality, plain));
            }
        }
    }
    best.is_some_and(|(_, plain)| plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn plain_text_only_when_the_client_prefers_it() {
        assert!(prefers_plain_text(&accept("text/plain")));
        assert!(prefers_plain_text(&accept("application/json;q=0.5, text/plain")));
        assert!(!prefers_plain_text(&accept("application/json, text/plain")));
        assert!(!prefers_plain_text(&accept("*/*")));
        assert!(!prefers_plain_text(&http::HeaderMap::new()));
    }
}
