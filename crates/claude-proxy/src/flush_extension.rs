//! An internal Lambda extension that finishes each invocation's metering after its response — streamed
//! answers included — and before Lambda may freeze the environment (the pattern of aws-lambda-rust-runtime's
//! `extension-internal-flush` example). Lambda does not freeze until every extension asks for its next event.

use std::sync::Arc;

use lambda_extension::{service_fn, Error, Extension, LambdaEvent, NextEvent, RegisteredExtension, Service};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Mutex;

use crate::proxy::ProxyService;

/// Registers the extension. `invocation_done` receives one message per handled invocation, sent when its
/// handler has returned (its stream may still be running).
pub async fn register(
    service: ProxyService,
    invocation_done: UnboundedReceiver<()>,
) -> Result<RegisteredExtension<impl Service<LambdaEvent, Response = (), Error = Error>>, Error> {
    let invocation_done = Arc::new(Mutex::new(invocation_done));
    Extension::new()
        // Internal extensions may only subscribe to INVOKE events.
        .with_events(&["INVOKE"])
        .with_extension_name("metering-flush")
        .with_events_processor(service_fn(move |event: LambdaEvent| {
            let service = service.clone();
            let invocation_done = Arc::clone(&invocation_done);
            async move {
                if let NextEvent::Invoke(_) = event.next {
                    invocation_done.lock().await.recv().await;
                    // A streamed answer meters when its stream ends, after the handler returned.
                    service.in_flight().idle().await;
                    service.metering().flush().await;
                }
                Ok::<(), Error>(())
            }
        }))
        .register()
        .await
}
