//! Which invocations this process has finished, by Lambda request id, so the metering-flush extension waits
//! for *its* invocation and no other.
//!
//! The record is kept by a layer around the whole runtime service (outside lambda_runtime's own
//! deserialization): an invocation whose event cannot be parsed never reaches the handler, yet still counts
//! as finished the moment the runtime has posted its error, so the extension releases the environment at
//! once. Pairing by request id also rules out the off-by-one of an unpaired "done" channel in a reused
//! process.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lambda_http::lambda_runtime::LambdaInvocation;
use lambda_http::tower::{Layer, Service};
use tokio::sync::watch;
use tokio::time::Instant;

/// Request ids kept after they finished. The extension consumes its id within one invocation; the bound only
/// keeps a process whose extension missed ids (it cannot, but memory must not depend on that) from growing.
const FINISHED_IDS_KEPT: usize = 64;

/// The request ids of the invocations this process has finished, newest last.
#[derive(Clone)]
pub struct Invocations {
    finished: Arc<watch::Sender<VecDeque<String>>>,
}

impl Default for Invocations {
    fn default() -> Self {
        Self { finished: Arc::new(watch::Sender::new(VecDeque::new())) }
    }
}

impl Invocations {
    /// Records that the runtime is done with `request_id` (response or error posted, or the handler gone).
    pub fn finish(&self, request_id: &str) {
        self.finished.send_modify(|finished| {
            if finished.len() == FINISHED_IDS_KEPT {
                finished.pop_front();
            }
            finished.push_back(request_id.to_owned());
        });
    }

    /// Waits until `request_id` has finished, at most until `until`; forgets the id once seen.
    /// Returns whether it finished in time.
    pub async fn wait_finished(&self, request_id: &str, until: Instant) -> bool {
        let mut finished = self.finished.subscribe();
        let seen = tokio::time::timeout_at(until, finished.wait_for(|ids| ids.iter().any(|id| id == request_id)))
            .await
            .is_ok_and(|result| result.is_ok());
        if seen {
            self.finished.send_if_modified(|ids| {
                ids.retain(|id| id != request_id);
                false
            });
        }
        seen
    }

    /// The layer that records every invocation the runtime takes, parsed or not.
    pub fn layer(&self) -> TrackInvocationsLayer {
        TrackInvocationsLayer { invocations: self.clone() }
    }
}

/// Wraps the runtime's service so each invocation is marked finished however it ends.
#[derive(Clone)]
pub struct TrackInvocationsLayer {
    invocations: Invocations,
}

impl<S> Layer<S> for TrackInvocationsLayer {
    type Service = TrackInvocations<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackInvocations { inner, invocations: self.invocations.clone() }
    }
}

#[derive(Clone)]
pub struct TrackInvocations<S> {
    inner: S,
    invocations: Invocations,
}

impl<S> Service<LambdaInvocation> for TrackInvocations<S>
where
    S: Service<LambdaInvocation>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let finished = FinishOnDrop { invocations: self.invocations.clone(), request_id: invocation.context.request_id.clone() };
        Tracked { call: Box::pin(self.inner.call(invocation)), _finished: finished }
    }
}

/// The runtime's future for one invocation, which marks it finished when it completes or is dropped.
pub struct Tracked<F> {
    call: Pin<Box<F>>,
    _finished: FinishOnDrop,
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.call.as_mut().poll(cx)
    }
}

/// Marks the invocation finished when dropped: after the runtime posted the outcome, or if the future is
/// dropped or panics on the way.
struct FinishOnDrop {
    invocations: Invocations,
    request_id: String,
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.invocations.finish(&self.request_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn waits_for_its_own_request_id_not_for_any_signal() {
        // GIVEN invocation "b" finished but "a" has not
        let invocations = Invocations::default();
        invocations.finish("b");
        // WHEN the extension waits for "a"
        let until = Instant::now() + Duration::from_secs(5);
        // THEN it is not released by "b" (no off-by-one), and is released at the bound
        assert!(!invocations.wait_finished("a", until).await);
        assert!(invocations.wait_finished("b", until).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finish_that_comes_later_releases_the_waiter() {
        let invocations = Invocations::default();
        let waiter = {
            let invocations = invocations.clone();
            tokio::spawn(async move { invocations.wait_finished("a", Instant::now() + Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        invocations.finish("a");
        assert!(waiter.await.unwrap());
        // consumed: a later wait for the same id does not see it again
        assert!(!invocations.wait_finished("a", Instant::now() + Duration::from_millis(1)).await);
    }

    #[test]
    fn the_record_of_finished_ids_is_bounded() {
        let invocations = Invocations::default();
        for i in 0..(FINISHED_IDS_KEPT * 3) {
            invocations.finish(&i.to_string());
        }
        assert_eq!(invocations.finished.borrow().len(), FINISHED_IDS_KEPT);
    }
}
