//! The Anthropic API upstream: one port (`AnthropicApi`), one HTTP implementation. Requests go out with the
//! client's body bytes untouched; the answer comes back as a status, headers and a body read chunk by
//! chunk, so a stream can be forwarded as it arrives.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{self, BoxStream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use metering_core::ApiError;
use thiserror::Error;

use crate::config::CredentialMode;

/// Client request headers that go on to Anthropic (credentials are handled by the credential mode).
const FORWARDED_REQUEST_HEADERS: [&str; 6] =
    ["anthropic-version", "anthropic-beta", "content-type", "accept", "user-agent", "x-app"];
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("the Anthropic API did not answer in time: {0}")]
    Timeout(String),
    #[error("the Anthropic API could not be reached: {0}")]
    Unreachable(String),
    #[error("the Anthropic API's answer broke off: {0}")]
    Body(String),
}

/// What an Anthropic failure means for the client: the HTTP client's text (which names the upstream URL
/// and its address) is logged, never put in the body.
impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        tracing::warn!(%error, "the Anthropic API call failed");
        match error {
            UpstreamError::Timeout(_) => ApiError::UpstreamTimeout("the Anthropic API did not answer in time".into()),
            UpstreamError::Unreachable(_) => ApiError::Upstream("the Anthropic API could not be reached".into()),
            UpstreamError::Body(_) => ApiError::Upstream("the Anthropic API's answer broke off".into()),
        }
    }
}

/// A body read chunk by chunk as it arrives.
pub type ChunkStream = BoxStream<'static, Result<Bytes, UpstreamError>>;

pub struct UpstreamRequest {
    /// `/v1/messages` or `/v1/messages/count_tokens`, with the query string to forward.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ChunkStream,
}

impl UpstreamResponse {
    /// Reads the whole body (bounded by `limit` bytes).
    /// An answer that comes in one chunk (the usual case) is handed on as it is, without a copy.
    pub async fn read_all(mut self, limit: usize) -> Result<(StatusCode, HeaderMap, Bytes), UpstreamError> {
        let too_large = || UpstreamError::Body(format!("answer larger than {limit} bytes"));
        let mut first = Bytes::new();
        let mut collected: Option<Vec<u8>> = None;
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk?;
            let size = match &mut collected {
                None if first.is_empty() => {
                    first = chunk;
                    first.len()
                }
                None => {
                    let mut joined = Vec::with_capacity(first.len() + chunk.len());
                    joined.extend_from_slice(&first);
                    joined.extend_from_slice(&chunk);
                    let size = joined.len();
                    collected = Some(joined);
                    size
                }
                Some(joined) => {
                    joined.extend_from_slice(&chunk);
                    joined.len()
                }
            };
            if size > limit {
                return Err(too_large());
            }
        }
        let body = collected.map_or(first, Bytes::from);
        Ok((self.status, self.headers, body))
    }

    /// Seconds of the `retry-after` header, if it holds a number.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        retry_after_seconds(&self.headers)
    }
}

pub fn retry_after_seconds(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    value
        .parse::<u64>()
        .ok()
        .or_else(|| value.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(|s| s.ceil() as u64))
}

#[async_trait]
pub trait AnthropicApi: Send + Sync {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError>;
}

/// The headers of the upstream request: the forwarded client headers plus the credentials of the mode.
pub fn upstream_headers(client: &HeaderMap, mode: CredentialMode, provider_key: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in FORWARDED_REQUEST_HEADERS {
        for value in client.get_all(name) {
            headers.append(HeaderName::from_static(name), value.clone());
        }
    }
    if !headers.contains_key("anthropic-version") {
        headers.insert("anthropic-version", HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION));
    }
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match mode {
        CredentialMode::Managed => {
            if let Some(value) = provider_key.and_then(|key| HeaderValue::from_str(key).ok()) {
                let mut value = value;
                value.set_sensitive(true);
                headers.insert("x-api-key", value);
            }
        }
        CredentialMode::Passthrough => {
            // The user's own credentials, exactly as sent; never logged, never stored.
            for name in ["x-api-key", "authorization"] {
                if let Some(value) = client.get(name) {
                    let mut value = value.clone();
                    value.set_sensitive(true);
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
        }
    }
    headers
}

/// Response headers that go back to the client.
pub fn client_response_headers(upstream: &HeaderMap, mode: CredentialMode) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in upstream {
        let name_text = name.as_str();
        let keep = matches!(name_text, "content-type" | "request-id" | "retry-after" | "x-should-retry")
            // The user's own quota headers are theirs to see; the provider's are not.
            || (mode == CredentialMode::Passthrough && name_text.starts_with("anthropic-ratelimit-"));
        if keep {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// The Anthropic API over HTTPS.
///
/// It trusts the process's root certificates ([`crate::https::client_builder`], read once for it and the AWS SDK).
/// Its HTTP client is built on a blocking thread from [`HttpAnthropic::new`] on: building it waits for those roots
/// to be read (on their own thread, from the process's start) and parses them into a trust store, neither of
/// which may hold up a cold start's init or a runtime thread. The first request waits for it if it is not built
/// yet; by then it usually is, the gateway key's lookup having come first.
#[derive(Clone)]
pub struct HttpAnthropic {
    client: Shared<BoxFuture<'static, Result<reqwest::Client, String>>>,
    base_url: String,
}

impl std::fmt::Debug for HttpAnthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAnthropic").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl HttpAnthropic {
    /// Starts building the client; must be called inside the Tokio runtime.
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let building = tokio::task::spawn_blocking(move || {
            crate::https::client_builder()?
                .connect_timeout(Duration::from_secs(10))
                .timeout(timeout)
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
        });
        let client = async move {
            match building.await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(error)) => Err(format!("the HTTP client for the Anthropic API could not be built: {error}")),
                Err(error) => Err(format!("the HTTP client for the Anthropic API was not built: {error}")),
            }
        };
        Self { client: client.boxed().shared(), base_url: base_url.trim_end_matches('/').to_owned() }
    }
}

/// The answer's body as a stream of chunks; it ends after the first error.
fn chunks_of(response: reqwest::Response) -> ChunkStream {
    stream::unfold(Some(response), |response| async move {
        let mut response = response?;
        match response.chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(response))),
            Ok(None) => None,
            Err(error) if error.is_timeout() => Some((Err(UpstreamError::Timeout(error.to_string())), None)),
            Err(error) => Some((Err(UpstreamError::Body(error.to_string())), None)),
        }
    })
    .boxed()
}

#[async_trait]
impl AnthropicApi for HttpAnthropic {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let client = self.client.clone().await.map_err(|error| {
            tracing::error!(%error, "no HTTP client for the Anthropic API");
            UpstreamError::Unreachable(error)
        })?;
        let url = format!("{}{}", self.base_url, request.path_and_query);
        let response = client.post(url).headers(request.headers).body(request.body).send().await.map_err(|error| {
            // Without the URL: it is ours, but the message must stay short and free of anything sensitive.
            let error = error.without_url();
            if error.is_timeout() {
                UpstreamError::Timeout(error.to_string())
            } else {
                UpstreamError::Unreachable(error.to_string())
            }
        })?;
        Ok(UpstreamResponse { status: response.status(), headers: response.headers().clone(), body: chunks_of(response) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("sk-ant-user-own"));
        headers.insert("authorization", HeaderValue::from_static("Bearer user-oauth"));
        headers.insert("x-gateway-key", HeaderValue::from_static("bmk_secret"));
        headers.insert("anthropic-beta", HeaderValue::from_static("prompt-caching-2024-07-31"));
        headers.insert("cookie", HeaderValue::from_static("session=1"));
        headers
    }

    fn answer_of(chunks: &[&Bytes]) -> UpstreamResponse {
        let chunks: Vec<_> = chunks.iter().map(|chunk| Ok(Bytes::clone(chunk))).collect();
        UpstreamResponse { status: StatusCode::OK, headers: HeaderMap::new(), body: stream::iter(chunks).boxed() }
    }

    #[tokio::test]
    async fn a_whole_answer_is_its_chunks_joined_and_one_chunk_is_not_copied() {
        let (a, b, c, empty) = (Bytes::from_static(b"{\"a\":"), Bytes::from_static(b"1"), Bytes::from_static(b"}"), Bytes::new());
        let (_, _, one) = answer_of(&[&a]).read_all(100).await.unwrap();
        assert_eq!(one.as_ptr(), a.as_ptr(), "handed on without a copy");
        for chunks in [vec![&a, &b, &c], vec![&empty, &a, &b, &c], vec![&a, &empty, &b, &c, &empty]] {
            let (_, _, joined) = answer_of(&chunks).read_all(100).await.unwrap();
            assert_eq!(&joined[..], b"{\"a\":1}");
        }
        assert!(answer_of(&[&a, &b, &c]).read_all(6).await.is_err(), "7 bytes over a limit of 6");
        assert!(answer_of(&[&a]).read_all(4).await.is_err(), "one chunk over the limit");
        assert_eq!(answer_of(&[]).read_all(4).await.unwrap().2.len(), 0);
    }

    #[tokio::test]
    async fn a_request_sent_at_once_waits_for_the_client_being_built_then_goes_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let upstream = std::thread::spawn(move || {
            let (mut connection, _) = listener.accept().unwrap();
            let mut request = [0_u8; 4096];
            let read = std::io::Read::read(&mut connection, &mut request).unwrap();
            std::io::Write::write_all(&mut connection, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        let anthropic = HttpAnthropic::new(&format!("http://{address}/"), Duration::from_secs(10));
        let request =
            UpstreamRequest { path_and_query: "/v1/messages".into(), headers: HeaderMap::new(), body: Bytes::from_static(b"{}") };
        let answer = anthropic.send(request).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.read_all(100).await.unwrap().2[..], b"{}");
        assert!(upstream.join().unwrap().starts_with("POST /v1/messages HTTP/1.1"));
    }

    #[test]
    fn managed_mode_replaces_the_client_credentials_with_the_providers() {
        let headers = upstream_headers(&client_headers(), CredentialMode::Managed, Some("sk-ant-provider"));
        assert_eq!(headers["x-api-key"], "sk-ant-provider");
        assert!(headers.get("authorization").is_none());
        assert!(headers.get("x-gateway-key").is_none());
        assert!(headers.get("cookie").is_none());
        assert_eq!(headers["anthropic-beta"], "prompt-caching-2024-07-31");
        assert_eq!(headers["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);
    }

    #[test]
    fn passthrough_mode_forwards_the_users_own_credentials_untouched() {
        let headers = upstream_headers(&client_headers(), CredentialMode::Passthrough, None);
        assert_eq!(headers["x-api-key"], "sk-ant-user-own");
        assert_eq!(headers["authorization"], "Bearer user-oauth");
        assert!(headers.get("x-gateway-key").is_none(), "the gateway key never leaves the gateway");
        assert!(headers["x-api-key"].is_sensitive());
    }

    #[test]
    fn quota_headers_reach_the_client_only_in_passthrough_mode() {
        let mut upstream = HeaderMap::new();
        upstream.insert("anthropic-ratelimit-requests-remaining", HeaderValue::from_static("5"));
        upstream.insert("request-id", HeaderValue::from_static("req_1"));
        upstream.insert("set-cookie", HeaderValue::from_static("x=1"));
        let managed = client_response_headers(&upstream, CredentialMode::Managed);
        assert!(managed.get("anthropic-ratelimit-requests-remaining").is_none());
        assert_eq!(managed["request-id"], "req_1");
        assert!(managed.get("set-cookie").is_none());
        let passthrough = client_response_headers(&upstream, CredentialMode::Passthrough);
        assert_eq!(passthrough["anthropic-ratelimit-requests-remaining"], "5");
    }

    #[test]
    fn retry_after_is_read_as_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after_seconds(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("17"));
        assert_eq!(retry_after_seconds(&headers), Some(17));
        headers.insert("retry-after", HeaderValue::from_static("1.2"));
        assert_eq!(retry_after_seconds(&headers), Some(2));
    }
}
