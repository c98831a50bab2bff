//! Streams still being read after their handler returned. In Lambda the metering flush must wait for them
//! (a streamed answer outlives the handler's future); locally, shutdown waits for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct InFlight {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
}

/// Held by a stream task; the stream counts as in flight until it is dropped.
pub struct InFlightGuard {
    inner: Arc<Inner>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard { inner: Arc::clone(&self.inner) }
    }

    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Resolves once no stream is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Like `idle`, but gives up after `limit`; true when idle.
    pub async fn idle_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.idle()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_every_guard() {
        let in_flight = InFlight::default();
        in_flight.idle().await;
        let first = in_flight.enter();
        let second = in_flight.enter();
        assert!(!in_flight.idle_within(Duration::from_millis(10)).await);
        let waiter = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.idle().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!waiter.is_finished());
        drop(second);
        waiter.await.unwrap();
        assert_eq!(in_flight.count(), 0);
    }
}
