//! The local API server: mounts the Lambda handlers behind a Cognito authorizer, as API Gateway does.
//! An axum request becomes the `lambda_http::Request` API Gateway would deliver (claims in
//! `requestContext.authorizer.claims`, a request id), and the handler's response goes back unchanged.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::{Request as AxumRequest, State};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::{any, get};
use axum::Router;
use chat_api::ChatHandler;
use lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use metering_core::ApiError;
use serde_json::Value;
use usage_api::UsageHandler;

use crate::authorizer::CognitoAuthorizer;

/// API Gateway's own payload limit is 10 MB; a chat body is far smaller (100,000 characters of prompt).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a client may take to send its whole body once the headers are in: a body shorter than its
/// `Content-Length` is answered 408 then, instead of holding the connection (and a task) for ever.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ApiState {
    pub authorizer: Arc<CognitoAuthorizer>,
    pub chat: ChatHandler,
    /// `/v1/usage...` behind the authorizer, `/ui...` (the dashboard) without it, as in API Gateway.
    pub usage: UsageHandler,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/bedrock/chat", any(chat))
        .route("/v1/usage", any(usage))
        .route("/v1/usage/{*rest}", any(usage))
        .route("/v1/limits/{*rest}", any(usage))
        .route("/ui", any(dashboard))
        .route("/ui/", any(dashboard))
        .route("/ui/{*rest}", any(dashboard))
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async { error_response(&ApiError::NotFound("no such route".into()), None) })
        .method_not_allowed_fallback(|| async {
            error_response(&ApiError::MethodNotAllowed("this method is not allowed on this route".into()), None)
        })
        .with_state(state)
}

fn error_response(error: &ApiError, request_id: Option<&str>) -> AxumResponse {
    error.to_response(request_id).map(AxumBody::from).into_response()
}

/// Authorizes like API Gateway, then turns the request into the Lambda event's shape.
async fn to_lambda_request(
    authorizer: &CognitoAuthorizer,
    request: AxumRequest,
    request_id: &str,
) -> Result<lambda_http::Request, ApiError> {
    let claims = authorizer.authorize_request(request.headers(), request_id).await?;
    into_lambda_request(request, request_id, Some(claims), MAX_BODY_BYTES).await
}

/// The request in the Lambda event's shape, with the verified claims (none on routes without the authorizer),
/// as API Gateway delivers it; bodies over `max_body_bytes` are refused with 413.
pub async fn into_lambda_request(
    request: AxumRequest,
    request_id: &str,
    claims: Option<serde_json::Map<String, Value>>,
    max_body_bytes: usize,
) -> Result<lambda_http::Request, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, max_body_bytes, BODY_READ_TIMEOUT, request_id).await?;
    let mut context = ApiGatewayProxyRequestContext::default();
    context.request_id = Some(request_id.to_owned());
    context.stage = Some("local".to_owned());
    context.http_method = parts.method.clone();
    context.path = Some(parts.uri.path().to_owned());
    if let Some(claims) = claims {
        context.authorizer.fields.insert("claims".to_owned(), Value::Object(claims));
    }
    let body = if bytes.is_empty() { lambda_http::Body::Empty } else { lambda_http::Body::Binary(Vec::from(bytes)) };
    Ok(http::Request::from_parts(parts, body).with_request_context(RequestContext::ApiGatewayV1(context)))
}

/// The whole body, or the error that says what was wrong with it: too large (413), not received in time
/// (408), or not valid HTTP framing such as a malformed chunk (400).
pub async fn read_body(
    body: AxumBody,
    max_body_bytes: usize,
    timeout: Duration,
    request_id: &str,
) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, max_body_bytes);
    match tokio::time::timeout(timeout, http_body_util::BodyExt::collect(limited)).await {
        Err(_) => Err(ApiError::RequestTimeout(format!("the request body was not received within {}s", timeout.as_secs()))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge(format!("the request body is larger than {max_body_bytes} bytes")))
        }
        Ok(Err(error)) => {
            tracing::info!(request_id, %error, "the request body could not be read");
            Err(ApiError::InvalidRequest("the request body is not valid HTTP (framing or encoding)".into()))
        }
    }
}

/// The handler's body handed on as it is (moved, not copied).
fn into_axum_body(body: lambda_http::Body) -> AxumBody {
    match body {
        lambda_http::Body::Empty => AxumBody::empty(),
        lambda_http::Body::Text(text) => AxumBody::from(text),
        lambda_http::Body::Binary(bytes) => AxumBody::from(bytes),
        other => AxumBody::from(other.to_vec()),
    }
}

async fn chat(State(state): State<ApiState>, request: AxumRequest) -> AxumResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let lambda_request = match to_lambda_request(&state.authorizer, request, &request_id).await {
        Ok(lambda_request) => lambda_request,
        Err(error) => return error_response(&error, Some(&request_id)),
    };
    let (parts, body) = state.chat.handle(lambda_request).await.into_parts();
    AxumResponse::from_parts(parts, into_axum_body(body))
}

async fn usage(State(state): State<ApiState>, request: AxumRequest) -> AxumResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let lambda_request = match to_lambda_request(&state.authorizer, request, &request_id).await {
        Ok(lambda_request) => lambda_request,
        Err(error) => return error_response(&error, Some(&request_id)),
    };
    let (parts, body) = state.usage.handle(lambda_request).await.into_parts();
    AxumResponse::from_parts(parts, into_axum_body(body))
}

async fn dashboard(State(state): State<ApiState>, request: AxumRequest) -> AxumResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let lambda_request = match into_lambda_request(request, &request_id, None, MAX_BODY_BYTES).await {
        Ok(lambda_request) => lambda_request,
        Err(error) => return error_response(&error, Some(&request_id)),
    };
    let (parts, body) = state.usage.handle(lambda_request).await.into_parts();
    AxumResponse::from_parts(parts, into_axum_body(body))
}
