//! Wiring of the chat Lambda: tracing, config, AWS clients, the handler and the metering-flush extension.

use std::sync::Arc;

use api_gateway_lambda::flush_extension::{self, InvocationDone};
use chat_api::ChatHandler;
use lambda_http::{service_fn, Error, Request};
use metering_core::chat::{chat_service_on_aws, load_sdk_config};
use metering_core::config::ChatConfig;
use metering_core::usage::StdoutUsageLog;

#[tokio::main]
async fn main() -> Result<(), Error> {
    metering_core::telemetry::init_json_tracing();
    let config = ChatConfig::from_env()?;
    let sdk_config = load_sdk_config().await;
    let handler = Arc::new(ChatHandler::new(chat_service_on_aws(&config, &sdk_config, Arc::new(StdoutUsageLog))));
    let (invocation_done, invocation_done_receiver) = tokio::sync::mpsc::unbounded_channel();
    let metering = handler.metering().clone();
    let flush = move || {
        let metering = metering.clone();
        async move { metering.flush().await }
    };
    let extension = flush_extension::register(flush, invocation_done_receiver).await?;
    let chat = service_fn(move |request: Request| {
        let handler = Arc::clone(&handler);
        let invocation_done = invocation_done.clone();
        async move {
            // Tells the extension, when dropped, that this invocation's metering jobs exist; it flushes them
            // after the response. A guard, so the signal is sent however the handler ends.
            let _done = InvocationDone(invocation_done);
            Ok::<_, Error>(handler.handle(request).await)
        }
    });
    tokio::try_join!(lambda_http::run(chat), extension.run())?;
    Ok(())
}
