//! What the edge's test binaries share: an API Gateway request context, a request to the echo route, and a
//! writer that keeps what a log subscriber writes. Each binary uses a part of it.
#![allow(dead_code, clippy::unwrap_used)] // shared test code: not every binary uses every helper

use axum::body::Body;
use lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext;
use lambda_http::request::RequestContext;
use serde_json::Value;

/// The context API Gateway puts on a request: its request id and, when its authorizer passed, the claims.
pub fn gateway_context(request_id: Option<&str>, claims: Option<Value>) -> RequestContext {
    let mut context = ApiGatewayProxyRequestContext::default();
    context.request_id = request_id.map(str::to_owned);
    if let Some(claims) = claims {
        context.authorizer.fields.insert("claims".to_owned(), claims);
    }
    RequestContext::ApiGatewayV1(context)
}

/// `POST /echo` with `body`.
pub fn request(body: Body) -> http::Request<Body> {
    http::Request::post("/echo").body(body).unwrap()
}

/// A writer that keeps what the subscriber writes.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Every JSON line written so far.
    pub fn json_lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
