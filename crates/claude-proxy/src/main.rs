//! Wiring of the proxy Lambda: tracing, config, AWS clients, the streaming handler and the metering flush.

use std::sync::Arc;

use claude_proxy::aws::proxy_service_on_aws;
use claude_proxy::config::ProxyConfig;
use api_gateway_lambda::flush_extension::{self, InvocationDone};
use claude_proxy::ProxyHandler;
use lambda_http::{service_fn, Error, Request};
use metering_core::chat::load_sdk_config;
use metering_core::usage::StdoutUsageLog;

#[tokio::main]
async fn main() -> Result<(), Error> {
    metering_core::telemetry::init_json_tracing();
    let config = ProxyConfig::from_env()?;
    config.log_start();
    let sdk_config = load_sdk_config().await;
    let service = proxy_service_on_aws(&config, &sdk_config, Arc::new(StdoutUsageLog)).await?;
    let handler = Arc::new(ProxyHandler::new(service.clone(), config.max_body_bytes));
    let (invocation_done, invocation_done_receiver) = tokio::sync::mpsc::unbounded_channel();
    // A streamed answer meters when its stream ends, after the handler returned: wait for those, then flush.
    let flush = move || {
        let service = service.clone();
        async move {
            service.in_flight().idle().await;
            service.metering().flush().await;
        }
    };
    let extension = flush_extension::register(flush, invocation_done_receiver).await?;
    let proxy = service_fn(move |request: Request| {
        let handler = Arc::clone(&handler);
        let invocation_done = invocation_done.clone();
        async move {
            let _done = InvocationDone(invocation_done);
            Ok::<_, Error>(handler.handle(request).await)
        }
    });
    tokio::try_join!(lambda_http::run_with_streaming_response(proxy), extension.run())?;
    Ok(())
}
