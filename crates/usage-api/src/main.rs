//! Wiring of the usage Lambda: tracing, config, the DynamoDB reader, the handler.

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};
use metering_core::chat::load_sdk_config;
use metering_core::usage_config::UsageApiConfig;
use usage_api::usage_handler_on_aws;

#[tokio::main]
async fn main() -> Result<(), Error> {
    metering_core::telemetry::init_json_tracing();
    let config = UsageApiConfig::from_env()?;
    tracing::info!(pricing = ?config.pricing_source, models = config.pricing.models.len(), "pricing table loaded");
    if config.dashboard.cognito_client_id.is_none() {
        tracing::warn!("COGNITO_CLIENT_ID is not set: the /ui dashboard cannot sign anyone in");
    }
    let handler = Arc::new(usage_handler_on_aws(config, &load_sdk_config().await));
    lambda_http::run(service_fn(move |request: Request| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Error>(handler.handle(request).await) }
    }))
    .await
}
