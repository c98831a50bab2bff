//! Abandoning counter updates that can no longer finish in time (SIGTERM, or an invocation at its deadline),
//! so their usage lines — the bill — are written at once, carrying `metering_error`, instead of dying with
//! the process. The counters can be rebuilt from the lines; a lost line cannot be rebuilt from anything.

use std::sync::Arc;

use async_trait::async_trait;
use metering_core::counters::CounterBatch;
use metering_core::counters::{MeteringError, UsageCounters};
use metering_core::error::Detail;
use tokio::sync::watch;

/// Once cut (for good: Lambda ends the environment after a SIGTERM or a timed-out invocation), every counter
/// update in flight or yet to start fails at once with the reason.
#[derive(Clone)]
pub struct CounterCutoff {
    reason: Arc<watch::Sender<Option<&'static str>>>,
}

impl Default for CounterCutoff {
    fn default() -> Self {
        Self { reason: Arc::new(watch::Sender::new(None)) }
    }
}

impl CounterCutoff {
    /// Abandons every pending and later counter update.
    pub fn cut(&self, reason: &'static str) {
        self.reason.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }

    pub fn is_cut(&self) -> bool {
        self.reason.borrow().is_some()
    }

    /// `counters` behind this cutoff.
    pub fn guard(&self, counters: Arc<dyn UsageCounters>) -> Arc<dyn UsageCounters> {
        Arc::new(CutoffCounters { inner: counters, cutoff: self.clone() })
    }
}

struct CutoffCounters {
    inner: Arc<dyn UsageCounters>,
    cutoff: CounterCutoff,
}

#[async_trait]
impl UsageCounters for CutoffCounters {
    async fn add(&self, batch: &CounterBatch) -> Result<(), MeteringError> {
        let mut reason = self.cutoff.reason.subscribe();
        // Not sent: definitely not applied, and no retry (metering reports it as `failed` at once).
        if let Some(now) = *reason.borrow_and_update() {
            return Err(MeteringError::Refused(Detail::new(format!("abandoned: {now}"))));
        }
        tokio::select! {
            result = self.inner.add(batch) => result,
            changed = reason.wait_for(Option::is_some) => {
                // Sent and then abandoned: it may have reached the table (reported as `unknown`).
                let why = changed.ok().and_then(|reason| *reason).unwrap_or("shutdown");
                Err(MeteringError::OutcomeUnknown(Detail::new(format!("abandoned: {why}"))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use metering_core::usage::{RequestType, TokenCounts, UsageEvent};
    use std::time::Duration;

    struct HungCounters;

    #[async_trait]
    impl UsageCounters for HungCounters {
        async fn add(&self, _batch: &CounterBatch) -> Result<(), MeteringError> {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    }

    fn event() -> UsageEvent {
        UsageEvent {
            received_at: Utc::now(),
            request_id: "r".into(),
            tenant_id: "t".into(),
            user_id: "u".into(),
            model_id: "m".into(),
            request_type: RequestType::Bedrock,
            tokens: TokenCounts { input_tokens: 1, output_tokens: 2, ..TokenCounts::default() },
            latency_ms: 1,
            client_user_id: None,
            requested_model_id: None,
            usage_estimated: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_ends_an_update_in_flight_and_refuses_later_ones() {
        // GIVEN a counter update hung on the table
        let cutoff = CounterCutoff::default();
        let counters = cutoff.guard(Arc::new(HungCounters));
        let in_flight = {
            let counters = Arc::clone(&counters);
            tokio::spawn(async move { counters.add(&CounterBatch::of_event(&event())).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // WHEN the process is told to stop
        cutoff.cut("SIGTERM");
        // THEN the update fails at once with the reason, and so does any later one
        let error = in_flight.await.unwrap().unwrap_err().to_string();
        assert!(error.contains("abandoned: SIGTERM"), "{error}");
        assert!(counters.add(&CounterBatch::of_event(&event())).await.unwrap_err().to_string().contains("SIGTERM"));
    }

    #[tokio::test]
    async fn without_a_cut_the_inner_result_passes_through() {
        struct Fine;
        #[async_trait]
        impl UsageCounters for Fine {
            async fn add(&self, _batch: &CounterBatch) -> Result<(), MeteringError> {
                Ok(())
            }
        }
        let cutoff = CounterCutoff::default();
        assert!(cutoff.guard(Arc::new(Fine)).add(&CounterBatch::of_event(&event())).await.is_ok());
        assert!(!cutoff.is_cut());
    }
}
