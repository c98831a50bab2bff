//! The laptop stack's own servers: the local API (the Lambda handlers behind a Cognito authorizer) and a
//! wire-compatible fake Amazon Bedrock Runtime. AWS services themselves come from moto.

pub mod api_server;
pub mod authorizer;
pub mod bench_floor;
pub mod cloudwatch_usage_log;
pub mod fake_anthropic;
pub mod fake_bedrock;
pub mod fake_bedrock_audit;
pub mod fake_bedrock_invoke;
pub mod fake_bedrock_profiles;
pub mod fake_bedrock_strict;
pub mod proxy_routes;
pub mod serve;
pub mod verified_tokens;
