//! Wiring of the proxy Lambda: tracing, config, AWS clients, the streaming handler, and the metered runtime
//! loop (metering-flush extension, timeout budget, SIGTERM).

use std::sync::Arc;

use api_gateway_lambda::budget::TimeoutBudget;
use api_gateway_lambda::entry::MeteredLambda;
use claude_proxy::aws::proxy_service_on_aws_with_counters;
use claude_proxy::config::ProxyConfig;
use claude_proxy::key_holder::key_holder_reports_on_aws;
use claude_proxy::ProxyHandler;
use lambda_http::Error;
use metering_core::chat::{limits_service_on_aws, load_sdk_config};
use metering_core::limits::config::LimitsConfig;
use metering_core::pricing::PricingTable;
use metering_core::tenant_registry::tenant_registry_on_aws;
use metering_core::usage::StdoutUsageLog;

#[tokio::main]
async fn main() -> Result<(), Error> {
    metering_core::telemetry::init_json_tracing();
    api_gateway_lambda::layers::serve_paths_without_stage();
    let config = ProxyConfig::from_env()?;
    config.log_start();
    // Worst case: Anthropic fails only at its timeout and the request falls back to Bedrock.
    let upstream = config.anthropic_timeout + config.bedrock_timeout;
    TimeoutBudget { upstream, metering: config.metering.counter_timeout }.check_env()?;
    let sdk_config = load_sdk_config().await;
    let lambda = MeteredLambda::new();
    let cutoff = lambda.counter_cutoff().clone();
    let limits_config = LimitsConfig::from_env()?;
    let (pricing, _) = PricingTable::from_lookup(|name| std::env::var(name).ok())?;
    let limits = limits_service_on_aws(
        &limits_config,
        &sdk_config,
        config.usage_table_name.clone(),
        Arc::new(pricing),
        Arc::new(StdoutUsageLog),
    );
    let service =
        proxy_service_on_aws_with_counters(&config, &sdk_config, Arc::new(StdoutUsageLog), |counters| cutoff.guard(counters))
            .with_limits(limits.clone());
    let tenants = tenant_registry_on_aws(&sdk_config, config.usage_table_name.clone());
    let handler = ProxyHandler::new(service.clone(), config.max_body_bytes, tenants)
        .with_key_holder_reports(key_holder_reports_on_aws(&config, &sdk_config));
    // A streamed answer meters when its stream ends, after the handler returned: wait for those, then flush.
    let flush = move || {
        let service = service.clone();
        async move {
            service.in_flight().idle().await;
            let drain = service.metering().config().drain_timeout;
            if let Some(limits) = service.limits() {
                tokio::join!(service.metering().flush(), limits.flush_within(drain));
            } else {
                service.metering().flush().await;
            }
        }
    };
    lambda.run(lambda_http::streaming_runtime(handler.router()), flush).await
}
