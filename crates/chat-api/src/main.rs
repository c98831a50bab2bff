//! Wiring of the chat Lambda: tracing, config, AWS clients, the handler, and the metered runtime loop
//! (metering-flush extension, timeout budget, SIGTERM).

use std::sync::Arc;

use api_gateway_lambda::budget::TimeoutBudget;
use api_gateway_lambda::entry::MeteredLambda;
use chat_api::ChatHandler;
use lambda_http::Error;
use metering_core::chat::{chat_service_on_aws_with_counters, limits_service_on_aws, load_sdk_config};
use metering_core::config::ChatConfig;
use metering_core::pricing::PricingTable;
use metering_core::tenant_registry::tenant_registry_on_aws;
use metering_core::usage::StdoutUsageLog;

#[tokio::main]
async fn main() -> Result<(), Error> {
    metering_core::telemetry::init_json_tracing();
    api_gateway_lambda::layers::serve_paths_without_stage();
    let config = ChatConfig::from_env()?;
    TimeoutBudget { upstream: config.bedrock_timeout, metering: config.metering.counter_timeout }.check_env()?;
    let sdk_config = load_sdk_config().await;
    let lambda = MeteredLambda::new();
    let cutoff = lambda.counter_cutoff().clone();
    let (pricing, _) = PricingTable::from_lookup(|name| std::env::var(name).ok())?;
    let limits = limits_service_on_aws(
        &config.limits,
        &sdk_config,
        config.usage_table_name.clone(),
        Arc::new(pricing),
        Arc::new(StdoutUsageLog),
    );
    let service =
        chat_service_on_aws_with_counters(&config, &sdk_config, Arc::new(StdoutUsageLog), |counters| cutoff.guard(counters))
            .with_limits(limits.clone());
    let tenants = tenant_registry_on_aws(&sdk_config, config.usage_table_name.clone());
    let handler = ChatHandler::new(service, tenants);
    let metering = handler.metering().clone();
    let drain_timeout = config.metering.drain_timeout;
    let flush = move || {
        let (metering, limits) = (metering.clone(), limits.clone());
        // Settlements too: Lambda freezes the process once the invocation is done.
        async move {
            tokio::join!(metering.flush(), limits.flush_within(drain_timeout));
        }
    };
    lambda.run(api_gateway_lambda::entry::buffered_runtime(handler.router()), flush).await
}
