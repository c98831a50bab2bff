//! An internal Lambda extension that finishes each invocation's metering after its response has been sent
//! (streamed answers included) and before Lambda may freeze the environment — the pattern of
//! aws-lambda-rust-runtime's `extension-internal-flush` example: Lambda does not freeze until every extension
//! asks for its next event.
//!
//! Each INVOKE event is paired with its own invocation by request id ([`Invocations`]), and every wait is
//! bounded by the invocation's deadline: an event the handler never saw (unparseable) releases the
//! environment as soon as the runtime has posted its error, and nothing here can outlive the invocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_extension::{service_fn, Error, Extension, LambdaEvent, NextEvent, RegisteredExtension, Service};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::budget::DEADLINE_RESERVE;
use crate::counter_cutoff::CounterCutoff;
use crate::invocations::Invocations;

type BoxedFlush = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The function's flush, run one at a time in its own task. A flush is never cancelled: `Metering::flush`
/// holds the jobs it is waiting for, and dropping it would abort them (and their usage lines). Callers wait
/// on the task with a bound instead; a flush started while another runs waits for it, so when it completes
/// every job started before it has finished.
#[derive(Clone)]
pub struct SerialFlush {
    flush: BoxedFlush,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl SerialFlush {
    pub fn new<F, Fut>(flush: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self { flush: Arc::new(move || Box::pin(flush())), one_at_a_time: Arc::default() }
    }

    /// Starts a flush in its own task.
    pub fn start(&self) -> JoinHandle<()> {
        let flush = Arc::clone(&self.flush);
        let one_at_a_time = Arc::clone(&self.one_at_a_time);
        tokio::spawn(async move {
            let _turn = one_at_a_time.lock().await;
            flush().await;
        })
    }

    /// Flushes, waiting at most until `until`; returns whether the flush completed.
    pub async fn run_until(&self, until: Instant) -> bool {
        let mut task = self.start();
        tokio::time::timeout_at(until, &mut task).await.is_ok()
    }
}

/// Registers the extension. On each INVOKE it waits for that invocation to finish, then runs `flush`; when
/// the deadline (less [`DEADLINE_RESERVE`]) comes first, it cuts the counter updates off so `flush` ends
/// with every usage line written.
pub async fn register(
    flush: SerialFlush,
    invocations: Invocations,
    cutoff: CounterCutoff,
) -> Result<RegisteredExtension<impl Service<LambdaEvent, Response = (), Error = Error>>, Error> {
    Extension::new()
        // Internal extensions may only subscribe to INVOKE events.
        .with_events(&["INVOKE"])
        .with_extension_name("metering-flush")
        .with_events_processor(service_fn(move |event: LambdaEvent| {
            let flush = flush.clone();
            let invocations = invocations.clone();
            let cutoff = cutoff.clone();
            async move {
                if let NextEvent::Invoke(invoke) = event.next {
                    let release_by = release_by(invoke.deadline_ms);
                    let request_id = invoke.request_id;
                    if !invocations.wait_finished(&request_id, release_by).await {
                        // The handler is still waiting on its upstream at the deadline: no answer, nothing
                        // to meter yet. Lambda ends the invocation; SIGTERM handles what is left.
                        tracing::warn!(%request_id, "invocation not finished near its deadline; releasing");
                        return Ok(());
                    }
                    if !flush.run_until(release_by).await {
                        tracing::warn!(%request_id, "metering still pending near the deadline: abandoning counter updates");
                        cutoff.cut("invocation deadline");
                        let _ = flush.start().await;
                    }
                }
                Ok::<(), Error>(())
            }
        }))
        .register()
        .await
}

/// The moment the extension stops waiting: the invocation's deadline less the reserve (now, if past).
fn release_by(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|now| now.as_millis()).unwrap_or_default();
    let left = Duration::from_millis(u64::try_from(u128::from(deadline_ms).saturating_sub(now_ms)).unwrap_or(0));
    Instant::now() + left.saturating_sub(DEADLINE_RESERVE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_bounded_wait_never_cancels_the_flush_and_a_later_flush_waits_for_it() {
        // GIVEN a flush that takes 5 s (a slow table)
        let done = Arc::new(AtomicUsize::new(0));
        let flush = {
            let done = Arc::clone(&done);
            SerialFlush::new(move || {
                let done = Arc::clone(&done);
                async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // WHEN the caller stops waiting after 1 s
        assert!(!flush.run_until(Instant::now() + Duration::from_secs(1)).await);
        // THEN the flush still runs to its end, and a second flush completes only after the first
        assert!(flush.run_until(Instant::now() + Duration::from_secs(60)).await);
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_release_keeps_the_reserve_before_the_deadline_and_never_lies_in_the_past_by_more_than_now() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let before = Instant::now();
        let release = release_by(now_ms + 10_000);
        assert!(release <= before + Duration::from_secs(9) + Duration::from_millis(50));
        assert!(release >= before + Duration::from_secs(8));
        let overdue = release_by(now_ms.saturating_sub(5_000));
        assert!(overdue <= Instant::now());
    }
}
