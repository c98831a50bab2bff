//! The HTTP surface every function behind API Gateway shares, and the runtime loop of a metered function:
//! - [`layers`]: the layers each axum `Router` runs behind (request id, body rules, a tracing span);
//! - [`extract`]: the extractors (the Cognito authorizer's verified claims, the request id, the body);
//! - [`error_envelope`]: `ApiError` rendered at the edge, in the project's envelope or in Anthropic's;
//! - [`entry`]: the Lambda runtime with the internal extension that finishes metering after each response,
//!   paired with its invocation by request id, the timeout budget checked at cold start, and SIGTERM.
//!
//! Shared by every HTTP function (chat, usage, Claude proxy) and by the local API server, so they read and
//! answer requests the same way.

pub mod budget;
pub mod counter_cutoff;
pub mod entry;
pub mod error_envelope;
pub mod extract;
pub mod flush_extension;
pub mod invocations;
pub mod layers;
pub mod shutdown;

pub use error_envelope::{AnthropicError, JsonError, REQUEST_ID_HEADER};
pub use extract::{GatewayRequestId, RequestBody, VerifiedClaims};
pub use layers::{with_body_rules, with_gateway_layers, BodyRules};
