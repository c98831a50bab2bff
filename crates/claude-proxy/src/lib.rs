//! A Claude-compatible proxy: `POST /v1/messages` (and `count_tokens`) exactly as the Anthropic Messages
//! API, forwarded to Anthropic and — when Anthropic answers 429 — served by Bedrock instead, every token
//! metered per tenant and user like `/bedrock/chat`. Tenants authenticate with gateway API keys that their
//! users manage under `/v1/keys`. See the crate README for the configuration and the deployment.

pub mod anthropic;
pub mod anthropic_error;
pub mod api_keys;
pub mod aws;
pub mod bedrock;
pub(crate) mod bedrock_body;
pub mod body;
pub mod config;
pub mod handler;
pub mod https;
pub(crate) mod in_flight;
mod json_visit;
pub mod key_holder;
pub(crate) mod limits;
pub mod model_resolution;
pub mod provider_key;
pub mod proxy;
pub mod rate_limits;
pub mod request;
pub mod sse;
pub mod streaming;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use handler::ProxyHandler;
pub use proxy::ProxyService;
