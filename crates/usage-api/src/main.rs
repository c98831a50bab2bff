//! Wiring of the usage Lambda: tracing, config, the DynamoDB reader, the handler.

use lambda_http::Error;
use metering_core::chat::load_sdk_config;
use metering_core::usage_config::UsageApiConfig;
use usage_api::usage_handler_on_aws;

#[tokio::main]
async fn main() -> Result<(), Error> {
    metering_core::telemetry::init_json_tracing();
    api_gateway_lambda::layers::serve_paths_without_stage();
    let config = UsageApiConfig::from_env()?;
    tracing::info!(pricing = ?config.pricing_source, models = config.pricing.models.len(), "pricing table loaded");
    if config.dashboard.cognito_client_id.is_none() {
        tracing::warn!("COGNITO_CLIENT_ID is not set: the /ui dashboard cannot sign anyone in");
    }
    let handler = usage_handler_on_aws(config, &load_sdk_config().await);
    lambda_http::run(api_gateway_lambda::entry::buffered_service(handler.router())).await
}
