//! `POST /bedrock/chat` as a Lambda handler: read the authorizer's claims, call the chat service, map the
//! result to HTTP. The same handler is mounted by the local API server.

use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use metering_core::chat::ChatService;
use metering_core::error::REQUEST_ID_HEADER;
use metering_core::metering::Metering;
use metering_core::tenant_registry::TenantRegistry;
use metering_core::ApiError;
use serde_json::json;

pub use api_gateway_lambda::{authorizer_claims, request_id_of, tenant_identity};

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

    /// Answers one API Gateway request; never fails: every error becomes its JSON answer.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let request_id = request_id_of(&request);
        match self.answer(&request, &request_id).await {
            Ok(response) => response,
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::warn!(request_id = %request_id, status = error.status().as_u16(), %error, "chat request failed");
                }
                error.to_response(Some(&request_id)).map(Body::from)
            }
        }
    }

    async fn answer(&self, request: &Request, request_id: &str) -> Result<Response<Body>, ApiError> {
        if request.method() != http::Method::POST {
            return Err(ApiError::MethodNotAllowed("use POST for /bedrock/chat".into()));
        }
        let identity = tenant_identity(request, self.tenants.as_ref()).await?;
        let text = self.service.chat(&identity, request_id, request.body().as_ref()).await?;
        let (content_type, body) = if prefers_plain_text(request.headers()) {
            ("text/plain; charset=utf-8", text)
        } else {
            ("application/json", json!({ "response": text }).to_string())
        };
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(REQUEST_ID_HEADER, request_id)
            .body(Body::from(body))
            .map_err(|error| ApiError::Internal(format!("could not build the response: {error}")))
    }
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
