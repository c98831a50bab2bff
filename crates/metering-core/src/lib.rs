//! The domain of bedrock-metering: who is calling (identity from verified claims), what a call costs in
//! tokens (the usage record and its log line), where usage is counted (DynamoDB counters), how errors
//! become HTTP answers, and the ports in front of AWS (Bedrock, DynamoDB, CloudWatch Logs).

pub mod bedrock_metadata;
pub mod chat;
pub mod config;
pub mod counters;
pub mod error;
pub mod identity;
pub mod limits;
pub mod metering;
pub mod model;
pub mod pricing;
pub mod sdk_http;
pub mod telemetry;
pub mod tenant_registry;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod usage;
pub mod usage_config;
pub mod usage_report;

pub use error::ApiError;
