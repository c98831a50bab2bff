//! An internal Lambda extension that finishes each invocation's metering after its response has been sent
//! (streamed answers included) and before Lambda may freeze the environment — the pattern of
//! aws-lambda-rust-runtime's `extension-internal-flush` example: Lambda does not freeze until every extension
//! asks for its next event.

use std::future::Future;
use std::sync::Arc;

use lambda_extension::{service_fn, Error, Extension, LambdaEvent, NextEvent, RegisteredExtension, Service};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Mutex;

/// Registers the extension. `invocation_done` receives one message per handled invocation (send it with
/// [`InvocationDone`]); `flush` then finishes that invocation's metering.
pub async fn register<F, Fut>(
    flush: F,
    invocation_done: UnboundedReceiver<()>,
) -> Result<RegisteredExtension<impl Service<LambdaEvent, Response = (), Error = Error>>, Error>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let invocation_done = Arc::new(Mutex::new(invocation_done));
    Extension::new()
        // Internal extensions may only subscribe to INVOKE events.
        .with_events(&["INVOKE"])
        .with_extension_name("metering-flush")
        .with_events_processor(service_fn(move |event: LambdaEvent| {
            let flush = flush.clone();
            let invocation_done = Arc::clone(&invocation_done);
            async move {
                if let NextEvent::Invoke(_) = event.next {
                    // The INVOKE event arrives as the invocation starts: wait until the handler has answered,
                    // so the jobs it started exist, then finish them.
                    invocation_done.lock().await.recv().await;
                    flush().await;
                }
                Ok::<(), Error>(())
            }
        }))
        .register()
        .await
}

/// Sends "this invocation's handler is done" to the extension when dropped, however the handler ends.
pub struct InvocationDone(pub UnboundedSender<()>);

impl Drop for InvocationDone {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}
