//! Metering off the answer's path: the tenant's answer never waits for the counters, and no usage record
//! is lost. Each answered request spawns one job (counters, then the usage line, which carries
//! `metering_error` when the counters failed); `flush` waits for every job. Lambda calls it from an internal
//! extension after the response and before the environment may freeze; the local server after each
//! response and on shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::counters::UsageCounters;
use crate::usage::{UsageEvent, UsageLog};

/// Upper bound of one counter update, so a hung table can never hold back the usage line.
pub const COUNTER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Counter updates in flight at once. When the table is slow, further jobs wait as small futures instead of
/// each opening a connection (which made memory grow under load).
pub const MAX_CONCURRENT_COUNTER_WRITES: usize = 64;

#[derive(Clone)]
pub struct Metering {
    counters: Arc<dyn UsageCounters>,
    usage_log: Arc<dyn UsageLog>,
    pending: Arc<Mutex<JoinSet<()>>>,
    counter_timeout: Duration,
    counter_writes: Arc<tokio::sync::Semaphore>,
}

impl Metering {
    pub fn new(counters: Arc<dyn UsageCounters>, usage_log: Arc<dyn UsageLog>) -> Self {
        Self {
            counters,
            usage_log,
            pending: Arc::default(),
            counter_timeout: COUNTER_WRITE_TIMEOUT,
            counter_writes: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_COUNTER_WRITES)),
        }
    }

    pub fn with_counter_timeout(mut self, timeout: Duration) -> Self {
        self.counter_timeout = timeout;
        self
    }

    /// Starts metering one answered request in the background. Must run inside a Tokio runtime.
    pub fn record(&self, event: UsageEvent) {
        let counters = Arc::clone(&self.counters);
        let usage_log = Arc::clone(&self.usage_log);
        let timeout = self.counter_timeout;
        let counter_writes = Arc::clone(&self.counter_writes);
        let job = async move {
            // The semaphore is never closed, so acquiring only waits; the timeout starts once a slot is free.
            let _slot = counter_writes.acquire_owned().await.ok();
            let metering_error = match tokio::time::timeout(timeout, counters.add(&event)).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!("usage counter update timed out after {} ms", timeout.as_millis())),
            };
            if let Some(error) = &metering_error {
                tracing::warn!(
                    tenant_id = %event.tenant_id,
                    request_id = %event.request_id,
                    metering_error = %error,
                    "usage counters not updated; the usage line still bills the request"
                );
            }
            usage_log.write(&event.to_record(metering_error)).await;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while pending.try_join_next().is_some() {}
        pending.spawn(job);
    }

    /// Number of metering jobs not yet finished.
    pub fn pending_jobs(&self) -> usize {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Waits until every job started so far (and any started meanwhile) has finished.
    pub async fn flush(&self) {
        loop {
            let mut jobs = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
            if jobs.is_empty() {
                return;
            }
            while let Some(result) = jobs.join_next().await {
                if let Err(error) = result {
                    tracing::error!(%error, "a metering job failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::MeteringError;
    use crate::usage::{RequestType, TokenCounts, UsageRecord};
    use async_trait::async_trait;
    use chrono::Utc;

    struct SlowCounters {
        delay: Duration,
        fail: bool,
    }

    #[async_trait]
    impl UsageCounters for SlowCounters {
        async fn add(&self, _event: &UsageEvent) -> Result<(), MeteringError> {
            tokio::time::sleep(self.delay).await;
            if self.fail {
                Err(MeteringError::UpdateFailed("table unreachable".into()))
            } else {
                Ok(())
            }
        }
    }

    #[derive(Default)]
    struct CollectedLines(Mutex<Vec<UsageRecord>>);

    #[async_trait]
    impl UsageLog for CollectedLines {
        async fn write(&self, record: &UsageRecord) {
            self.0.lock().unwrap().push(record.clone());
        }
    }

    fn event(id: &str) -> UsageEvent {
        UsageEvent {
            received_at: Utc::now(),
            request_id: id.into(),
            tenant_id: "t".into(),
            user_id: "u".into(),
            model_id: "m".into(),
            request_type: RequestType::Bedrock,
            tokens: TokenCounts { input_tokens: 1, output_tokens: 2, ..TokenCounts::default() },
            latency_ms: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn record_returns_at_once_and_flush_waits_for_every_line() {
        let lines = Arc::new(CollectedLines::default());
        let metering = Metering::new(Arc::new(SlowCounters { delay: Duration::from_secs(2), fail: false }), lines.clone());
        for id in ["a", "b", "c"] {
            metering.record(event(id));
        }
        assert!(lines.0.lock().unwrap().is_empty(), "recording must not wait for the counters");
        metering.flush().await;
        assert_eq!(lines.0.lock().unwrap().len(), 3);
        assert_eq!(metering.pending_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn counter_writes_in_flight_are_bounded_and_every_line_is_still_written() {
        struct CountingCounters {
            in_flight: std::sync::atomic::AtomicUsize,
            peak: std::sync::atomic::AtomicUsize,
        }
        #[async_trait]
        impl UsageCounters for CountingCounters {
            async fn add(&self, _event: &UsageEvent) -> Result<(), MeteringError> {
                use std::sync::atomic::Ordering::SeqCst;
                let now = self.in_flight.fetch_add(1, SeqCst) + 1;
                self.peak.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.in_flight.fetch_sub(1, SeqCst);
                Ok(())
            }
        }
        let counters = Arc::new(CountingCounters { in_flight: 0.into(), peak: 0.into() });
        let lines = Arc::new(CollectedLines::default());
        let metering = Metering::new(counters.clone(), lines.clone());
        for i in 0..(MAX_CONCURRENT_COUNTER_WRITES * 3) {
            metering.record(event(&i.to_string()));
        }
        metering.flush().await;
        assert_eq!(counters.peak.load(std::sync::atomic::Ordering::SeqCst), MAX_CONCURRENT_COUNTER_WRITES);
        assert_eq!(lines.0.lock().unwrap().len(), MAX_CONCURRENT_COUNTER_WRITES * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_counter_write_still_writes_the_line_with_the_error() {
        let lines = Arc::new(CollectedLines::default());
        let metering = Metering::new(Arc::new(SlowCounters { delay: Duration::ZERO, fail: true }), lines.clone());
        metering.record(event("a"));
        metering.flush().await;
        let written = lines.0.lock().unwrap();
        assert_eq!(written.len(), 1);
        assert!(written[0].metering_error.as_deref().unwrap_or_default().contains("table unreachable"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_counter_write_times_out_and_the_line_is_written() {
        let lines = Arc::new(CollectedLines::default());
        let metering = Metering::new(Arc::new(SlowCounters { delay: Duration::from_secs(3600), fail: false }), lines.clone())
            .with_counter_timeout(Duration::from_secs(1));
        metering.record(event("a"));
        metering.flush().await;
        assert!(lines.0.lock().unwrap()[0].metering_error.as_deref().unwrap_or_default().contains("timed out"));
    }
}
