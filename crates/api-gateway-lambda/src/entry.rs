//! The runtime loop of a metered function: the Lambda runtime (every invocation recorded by request id), the
//! metering-flush extension, the SIGTERM handler, and the counter cutoff they share. Each `main.rs` builds
//! its handler and its flush and hands both here.

use std::future::Future;

use lambda_http::lambda_runtime::layers::TracingLayer;
use lambda_http::lambda_runtime::{LambdaInvocation, Runtime};
use lambda_http::tower::Service;
use lambda_http::{service_fn, Error};

use crate::counter_cutoff::CounterCutoff;
use crate::flush_extension::{self, SerialFlush};
use crate::invocations::Invocations;
use crate::shutdown;

#[derive(Default)]
pub struct MeteredLambda {
    invocations: Invocations,
    cutoff: CounterCutoff,
}

impl MeteredLambda {
    pub fn new() -> Self {
        Self::default()
    }

    /// Put the function's usage counters behind this: SIGTERM or a deadline can then abandon their updates
    /// so the usage lines are written in time.
    pub fn counter_cutoff(&self) -> &CounterCutoff {
        &self.cutoff
    }

    /// Runs `runtime` (from `lambda_http::runtime` or `lambda_http::streaming_runtime`) with the extension
    /// that calls `flush` after every invocation. Registers the extension before the runtime's first `/next`.
    pub async fn run<S, F, Fut>(self, runtime: Runtime<S>, flush: F) -> Result<(), Error>
    where
        S: Service<LambdaInvocation, Response = (), Error = Error>,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let flush = SerialFlush::new(flush);
        shutdown::on_sigterm(flush.clone(), self.cutoff.clone())?;
        let extension = flush_extension::register(flush, self.invocations.clone(), self.cutoff).await?;
        let runtime = runtime.layer(TracingLayer::new()).layer(self.invocations.layer());
        tokio::try_join!(runtime.run(), extension.run())?;
        Ok(())
    }
}

/// The Lambda runtime of a buffered (not streamed) HTTP function serving `router` ([`buffered_service`]).
pub fn buffered_runtime(router: axum::Router) -> Runtime<impl Service<LambdaInvocation, Response = (), Error = Error>> {
    lambda_http::runtime(buffered_service(router))
}

/// `router` as a buffered Lambda HTTP service. `lambda_http::runtime` wants a `Sync` response, which axum's
/// boxed body is not: the answer is collected first (lambda_http would collect it anyway, to put it in the
/// JSON it returns to API Gateway) and handed on whole, where lambda_http chooses text or base64 from its
/// `Content-Type` as for any response.
pub fn buffered_service(
    router: axum::Router,
) -> impl Service<
    lambda_http::Request,
    Response = http::Response<http_body_util::Full<bytes::Bytes>>,
    Error = Error,
    Future: Send + 'static,
> + Send
       + 'static {
    service_fn(move |request: lambda_http::Request| {
        let router = router.clone();
        async move {
            let response = lambda_http::tower::ServiceExt::oneshot(router, request).await?;
            let (parts, body) = response.into_parts();
            let whole = http_body_util::BodyExt::collect(body).await?.to_bytes();
            Ok::<_, Error>(http::Response::from_parts(parts, http_body_util::Full::new(whole)))
        }
    })
}
