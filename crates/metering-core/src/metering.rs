//! Metering: the usage line first, the counters after, exactly once, with bounded memory and a bounded drain.
//!
//! - `record` writes the request's usage line at once (standard output, no await on anything remote), then
//!   hands its increments to the counter backlog and returns. The line is the bill; counters may lag.
//! - The backlog coalesces pending requests per counter key (tenant, request type, model, UTC day): one
//!   idempotent write (see `counters`) carries many requests when the table is slower than the traffic. At most
//!   [`MAX_CONCURRENT_COUNTER_WRITES`] writes are in flight and at most [`MAX_HELD_REQUESTS`] requests wait;
//!   beyond that a request's counter update is refused at once (`counter_update` line, outcome `failed`).
//! - A key's writes start at least [`MeteringConfig::counter_interval`] apart: a busy key costs the table a
//!   few writes a second, not one per request or as many as it can take. A key's first write after a quiet
//!   interval goes at once, and a flush sends everything at once.
//! - A batch is retried, with the same batch id, until [`MeteringConfig::counter_timeout`]; an outcome other
//!   than "applied" becomes one `counter_update` line per request of the batch.
//! - `flush` waits for pending counter work up to [`MeteringConfig::drain_timeout`] (Lambda calls it after each
//!   response); `shutdown` flushes within a deadline and then reports every update still pending.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{NaiveDate, SecondsFormat, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::MeteringConfig;
use crate::counters::{day_label, CounterBatch, MeteringError, UsageCounters};
use crate::error::Detail;
use crate::usage::{CounterOutcome, CounterUpdateRecord, RequestType, UsageEvent, UsageLine, UsageLog, COUNTER_UPDATE_EVENT};

/// Counter writes in flight at once; further requests wait in the backlog, coalesced per counter key.
pub const MAX_CONCURRENT_COUNTER_WRITES: usize = 8;
/// Requests whose counter update may wait at once (about 70 bytes each: their request ids). The fixed memory
/// bound of the backlog, whatever the traffic and however slow the table.
pub const MAX_HELD_REQUESTS: usize = 50_000;
/// First pause between two attempts of a batch; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CounterGroup {
    day: NaiveDate,
    request_type: RequestType,
    tenant_id: String,
    model_id: String,
}

impl CounterGroup {
    fn of(event: &UsageEvent) -> Self {
        Self {
            day: event.received_at.date_naive(),
            request_type: event.request_type,
            tenant_id: event.tenant_id.clone(),
            model_id: event.model_id.clone(),
        }
    }
}

#[derive(Default)]
struct Backlog {
    /// Batches not yet sent, oldest first, at most one per counter group.
    queued: HashMap<CounterGroup, CounterBatch>,
    order: VecDeque<CounterGroup>,
    /// Batches being written, by batch id. Whoever removes a batch from here reports its outcome.
    in_flight: HashMap<String, Arc<CounterBatch>>,
    /// Requests in `queued` and `in_flight`.
    held_requests: usize,
    /// Set by `shutdown`: no more writes start.
    closed: bool,
    /// When each counter group's last write started, for the groups written within the last interval or so.
    last_write: HashMap<CounterGroup, Instant>,
    /// Flushes waiting: while there is one, queued batches start without waiting for their interval.
    flushes: usize,
    /// When the wake-up that starts the next batch whose interval ends is due, if one is scheduled.
    wake_at: Option<Instant>,
}

impl Backlog {
    /// Removes and returns the oldest queued group whose write may start now: any when a flush waits or there
    /// is no interval, else the oldest whose last write started at least `interval` ago (or never).
    fn take_due(&mut self, now: Instant, interval: Duration) -> Option<CounterGroup> {
        let position = if self.flushes > 0 || interval.is_zero() {
            0
        } else {
            let last_write = &self.last_write;
            self.order.iter().position(|group| last_write.get(group).is_none_or(|started| now >= *started + interval))?
        };
        self.order.remove(position)
    }

    /// When the first queued group's interval ends (none queued: `None`).
    fn next_due(&self, interval: Duration) -> Option<Instant> {
        self.order.iter().filter_map(|group| self.last_write.get(group)).min().map(|started| *started + interval)
    }

    /// Notes that `group`'s write starts at `now`, and forgets the groups whose interval has ended.
    fn note_write(&mut self, group: CounterGroup, now: Instant, interval: Duration) {
        if interval.is_zero() {
            return;
        }
        self.last_write.retain(|_, started| now < *started + interval);
        self.last_write.insert(group, now);
    }
}

/// Counts one waiting flush for as long as it lives (a flush whose future is dropped stops counting).
struct FlushWaiting<'a>(&'a Inner);

impl<'a> FlushWaiting<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.lock().flushes += 1;
        Self(inner)
    }
}

impl Drop for FlushWaiting<'_> {
    fn drop(&mut self) {
        let mut backlog = self.0.lock();
        backlog.flushes = backlog.flushes.saturating_sub(1);
    }
}

struct Inner {
    counters: Arc<dyn UsageCounters>,
    usage_log: Arc<dyn UsageLog>,
    config: MeteringConfig,
    backlog: Mutex<Backlog>,
    /// Requests whose counter update is not finished (mirrors `held_requests`), for `flush` to wait on.
    outstanding: watch::Sender<usize>,
}

#[derive(Clone)]
pub struct Metering {
    inner: Arc<Inner>,
}

impl Metering {
    pub fn new(counters: Arc<dyn UsageCounters>, usage_log: Arc<dyn UsageLog>) -> Self {
        Self::with_config(counters, usage_log, MeteringConfig::default())
    }

    pub fn with_config(counters: Arc<dyn UsageCounters>, usage_log: Arc<dyn UsageLog>, config: MeteringConfig) -> Self {
        let (outstanding, _) = watch::channel(0);
        Self { inner: Arc::new(Inner { counters, usage_log, config, backlog: Mutex::default(), outstanding }) }
    }

    pub fn config(&self) -> MeteringConfig {
        self.inner.config
    }

    /// Bills one answered request: writes its usage line now, then updates its counters in the background.
    /// Call it when the answer is complete (a stream: when it ends or the client is gone). Must run inside a
    /// Tokio runtime.
    pub fn record(&self, event: UsageEvent) {
        self.inner.usage_log.write(&UsageLine::Usage(event.to_record(None)));
        // Some(true): a new batch was queued, which may start now; Some(false): absorbed by a queued batch,
        // which starts when its turn comes (a free slot, its interval, a flush).
        let accepted = {
            let mut backlog = self.inner.lock();
            if backlog.held_requests >= MAX_HELD_REQUESTS || backlog.closed {
                None
            } else {
                let group = CounterGroup::of(&event);
                let queued_new = if let Some(batch) = backlog.queued.get_mut(&group) {
                    batch.absorb(&event);
                    false
                } else {
                    backlog.queued.insert(group.clone(), CounterBatch::of_event(&event));
                    backlog.order.push_back(group);
                    true
                };
                backlog.held_requests += 1;
                self.inner.outstanding.send_replace(backlog.held_requests);
                Some(queued_new)
            }
        };
        if let Some(queued_new) = accepted {
            if queued_new {
                self.inner.start_writes();
            }
        } else {
            tracing::warn!(tenant_id = %event.tenant_id, request_id = %event.request_id,
                "counter backlog full or closed; the usage line bills the request, rebuild the day's counters");
            let batch = CounterBatch::of_event(&event);
            let error = format!("counter backlog full ({MAX_HELD_REQUESTS} requests waiting) or shutting down; not sent");
            self.inner.report(&batch, CounterOutcome::Failed, &error);
        }
    }

    /// Requests whose counter update is not finished yet.
    pub fn pending_jobs(&self) -> usize {
        self.inner.lock().held_requests
    }

    /// Waits for every pending counter update, at most the configured drain timeout.
    pub async fn flush(&self) {
        if !self.flush_within(self.inner.config.drain_timeout).await {
            tracing::warn!(pending = self.pending_jobs(), "counter updates still pending after the drain timeout");
        }
    }

    /// Waits for every pending counter update, at most `bound`; true when none is left.
    /// Batches waiting for their interval start at once.
    pub async fn flush_within(&self, bound: Duration) -> bool {
        let _waiting = FlushWaiting::new(&self.inner);
        self.inner.start_writes();
        let mut outstanding = self.inner.outstanding.subscribe();
        let drained = tokio::time::timeout(bound, outstanding.wait_for(|pending| *pending == 0)).await.is_ok();
        drained
    }

    /// For the end of the process: waits for pending counter updates until `deadline`, then stops starting
    /// new ones and writes a `counter_update` line for every request still pending (`failed` if its write was
    /// never sent, `unknown` if it was in flight). Every usage line was written long before.
    pub async fn shutdown(&self, deadline: Instant) {
        let drained = self.flush_within(deadline.saturating_duration_since(Instant::now())).await;
        let mut backlog = self.inner.lock();
        backlog.closed = true;
        if drained && backlog.held_requests == 0 {
            return;
        }
        tracing::warn!(pending = backlog.held_requests, "stopping with counter updates pending; reporting them");
        let order = std::mem::take(&mut backlog.order);
        for group in order {
            if let Some(batch) = backlog.queued.remove(&group) {
                self.inner.report(&batch, CounterOutcome::Failed, "the process stopped before the update was sent");
            }
        }
        for (_, batch) in std::mem::take(&mut backlog.in_flight) {
            self.inner.report(&batch, CounterOutcome::Unknown, "the process stopped while the update was in flight");
        }
        backlog.held_requests = 0;
        self.inner.outstanding.send_replace(0);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts writes for the oldest queued batches that are due while fewer than the maximum are in flight;
    /// when batches wait only for their interval, schedules a wake-up for the first of them.
    fn start_writes(self: &Arc<Self>) {
        let interval = self.config.counter_interval;
        loop {
            let batch = {
                let mut backlog = self.lock();
                if backlog.closed || backlog.in_flight.len() >= MAX_CONCURRENT_COUNTER_WRITES {
                    return;
                }
                let now = Instant::now();
                let Some(group) = backlog.take_due(now, interval) else {
                    if let Some(due) = backlog.next_due(interval) {
                        if backlog.wake_at.is_none_or(|scheduled| due < scheduled) {
                            backlog.wake_at = Some(due);
                            self.wake_at(due);
                        }
                    }
                    return;
                };
                let Some(batch) = backlog.queued.remove(&group) else { continue };
                backlog.note_write(group, now, interval);
                let batch = Arc::new(batch);
                backlog.in_flight.insert(batch.batch_id.clone(), Arc::clone(&batch));
                batch
            };
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                let outcome = inner.write_with_retries(&batch).await;
                inner.finish(&batch, outcome);
                inner.start_writes();
            });
        }
    }

    /// Starts the writes that are due at `due` (a wake-up scheduled earlier for a later time is left to find
    /// nothing, or what is due by then).
    fn wake_at(self: &Arc<Self>, due: Instant) {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            {
                let mut backlog = inner.lock();
                if backlog.wake_at == Some(due) {
                    backlog.wake_at = None;
                }
            }
            inner.start_writes();
        });
    }

    /// Writes one batch, retrying with the same batch id (so at most once) until the counter timeout.
    async fn write_with_retries(&self, batch: &CounterBatch) -> Result<(), MeteringError> {
        let deadline = Instant::now() + self.config.counter_timeout;
        let mut pause = FIRST_RETRY_PAUSE;
        let mut may_have_applied = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(remaining, self.counters.add(batch)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error,
                Err(_) => MeteringError::OutcomeUnknown(Detail::new(format!(
                    "no answer within {} ms",
                    self.config.counter_timeout.as_millis()
                ))),
            };
            may_have_applied |= error.may_have_applied();
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !error.is_retryable() || remaining.is_zero() {
                return Err(if may_have_applied { MeteringError::OutcomeUnknown(error.into_detail()) } else { error });
            }
            tracing::debug!(batch_id = %batch.batch_id, %error, "retrying a counter update");
            tokio::time::sleep(pause.min(remaining)).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    fn finish(&self, batch: &CounterBatch, outcome: Result<(), MeteringError>) {
        let mut backlog = self.lock();
        // Already reported by `shutdown` if it is gone.
        if backlog.in_flight.remove(&batch.batch_id).is_none() {
            return;
        }
        if let Err(error) = outcome {
            let outcome = if error.may_have_applied() { CounterOutcome::Unknown } else { CounterOutcome::Failed };
            tracing::warn!(tenant_id = %batch.tenant_id, batch_id = %batch.batch_id, requests = batch.request_ids.len(),
                %error, "usage counters not updated; the usage lines still bill the requests");
            self.report(batch, outcome, error.detail());
        }
        backlog.held_requests = backlog.held_requests.saturating_sub(batch.request_ids.len());
        self.outstanding.send_replace(backlog.held_requests);
    }

    /// One `counter_update` line per request of `batch`.
    fn report(&self, batch: &CounterBatch, outcome: CounterOutcome, error: &str) {
        let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let day = day_label(batch.day);
        let error: String = error.chars().take(300).collect();
        for request_id in &batch.request_ids {
            self.usage_log.write(&UsageLine::CounterUpdate(CounterUpdateRecord {
                event: COUNTER_UPDATE_EVENT.to_owned(),
                timestamp: timestamp.clone(),
                request_id: request_id.clone(),
                tenant_id: batch.tenant_id.clone(),
                request_type: batch.request_type,
                model_id: batch.model_id.clone(),
                day: day.clone(),
                outcome,
                error: error.clone(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::RecordedLines;
    use crate::usage::TokenCounts;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// Counters that answer after `delay` with the outcomes given in order (then "applied"), and remember
    /// every batch they were asked to apply.
    #[derive(Default)]
    struct ScriptedCounters {
        delay: Duration,
        outcomes: Mutex<VecDeque<MeteringError>>,
        calls: Mutex<Vec<CounterBatch>>,
        in_flight: AtomicUsize,
        peak_in_flight: AtomicUsize,
        started_at: Mutex<Vec<Instant>>,
    }

    #[async_trait]
    impl UsageCounters for ScriptedCounters {
        async fn add(&self, batch: &CounterBatch) -> Result<(), MeteringError> {
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.peak_in_flight.fetch_max(now, SeqCst);
            self.calls.lock().unwrap().push(batch.clone());
            self.started_at.lock().unwrap().push(Instant::now());
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, SeqCst);
            match self.outcomes.lock().unwrap().pop_front() {
                Some(error) => Err(error),
                None => Ok(()),
            }
        }
    }

    fn event(id: &str, tenant: &str) -> UsageEvent {
        UsageEvent {
            received_at: Utc::now(),
            request_id: id.into(),
            tenant_id: tenant.into(),
            user_id: "u".into(),
            model_id: "m".into(),
            request_type: RequestType::Bedrock,
            tokens: TokenCounts { input_tokens: 1, output_tokens: 2, ..TokenCounts::default() },
            latency_ms: 1,
            usage_estimated: false,
            client_user_id: None,
            requested_model_id: None,
        }
    }

    fn metering(counters: Arc<ScriptedCounters>, lines: Arc<RecordedLines>, counter_timeout: Duration) -> Metering {
        let config = MeteringConfig { counter_timeout, drain_timeout: Duration::from_secs(20), ..MeteringConfig::default() };
        Metering::with_config(counters, lines, config)
    }

    fn metering_every(counters: Arc<ScriptedCounters>, lines: Arc<RecordedLines>, interval: Duration) -> Metering {
        let config = MeteringConfig { counter_interval: interval, ..MeteringConfig::default() };
        Metering::with_config(counters, lines, config)
    }

    fn counted_request_ids(counters: &ScriptedCounters) -> Vec<String> {
        let mut ids: Vec<String> =
            counters.calls.lock().unwrap().iter().flat_map(|batch| batch.request_ids.iter().cloned()).collect();
        ids.sort();
        ids
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_key_is_written_at_most_once_per_interval_and_every_request_counts_once() {
        // GIVEN a fast table and writes at least 100 ms apart per key
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_millis(1), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering_every(counters.clone(), lines.clone(), Duration::from_millis(100));
        // WHEN one key gets a request every millisecond for a second
        for i in 0..1000 {
            metering.record(event(&format!("r{i:04}"), "t"));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let writes_during_the_load = counters.calls.lock().unwrap().len();
        metering.flush().await;
        // THEN about one write per interval was made during the second (not one per request, not none), the
        // writes started at least the interval apart, and together they count each request once
        assert!((9..=11).contains(&writes_during_the_load), "{writes_during_the_load} writes in one second");
        let started = counters.started_at.lock().unwrap().clone();
        for pair in started[..writes_during_the_load].windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{:?} apart", pair[1] - pair[0]);
        }
        let expected: Vec<String> = (0..1000).map(|i| format!("r{i:04}")).collect();
        assert_eq!(counted_request_ids(&counters), expected);
        assert_eq!(lines.usage().len(), 1000);
        assert!(lines.counter_updates().is_empty());
        assert_eq!(metering.pending_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_keys_first_request_is_written_at_once_whatever_other_keys_do() {
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_millis(1), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering_every(counters.clone(), lines, Duration::from_secs(60));
        let begin = Instant::now();
        metering.record(event("a", "first"));
        metering.record(event("b", "second"));
        tokio::task::yield_now().await;
        assert_eq!(counters.calls.lock().unwrap().len(), 2, "each key's first write starts at once");
        assert!(counters.started_at.lock().unwrap().iter().all(|started| *started == begin));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_sends_a_batch_waiting_for_its_interval_at_once() {
        // GIVEN a key written a moment ago, and a request of that key waiting for the key's interval to end
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_millis(1), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering_every(counters.clone(), lines, Duration::from_secs(60));
        metering.record(event("a", "t"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        metering.record(event("b", "t"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(counters.calls.lock().unwrap().len(), 1, "b waits for the interval");
        // WHEN the process flushes (Lambda, after each response)
        let flushed = Instant::now();
        assert!(metering.flush_within(Duration::from_secs(1)).await);
        // THEN b was written at once, not a minute later
        assert!(flushed.elapsed() <= Duration::from_millis(5), "{:?}", flushed.elapsed());
        assert_eq!(counted_request_ids(&counters), ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_batch_starts_when_its_interval_ends_without_a_flush() {
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_millis(1), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering_every(counters.clone(), lines, Duration::from_millis(100));
        let begin = Instant::now();
        metering.record(event("a", "t"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        metering.record(event("b", "t"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(counted_request_ids(&counters), ["a", "b"]);
        assert_eq!(counters.started_at.lock().unwrap()[1] - begin, Duration::from_millis(100));
        assert_eq!(metering.pending_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_interval_a_write_starts_as_soon_as_a_slot_is_free() {
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_millis(1), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering_every(counters.clone(), lines, Duration::ZERO);
        for i in 0..50 {
            metering.record(event(&format!("r{i:02}"), "t"));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert_eq!(counters.calls.lock().unwrap().len(), 50, "one write per request when the table keeps up");
    }

    #[tokio::test(start_paused = true)]
    async fn the_line_is_written_before_record_returns_and_before_any_counter_write() {
        // GIVEN counters that take an hour
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_secs(3600), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering(counters.clone(), lines.clone(), Duration::from_secs(7200));
        // WHEN three requests are recorded
        for id in ["a", "b", "c"] {
            metering.record(event(id, "t"));
        }
        // THEN their lines are there at once, and no counter write has even started
        assert_eq!(lines.usage().len(), 3);
        assert!(counters.calls.lock().unwrap().is_empty());
        assert_eq!(metering.pending_jobs(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_an_unknown_outcome_reuses_the_batch_id_and_reports_nothing() {
        let counters = Arc::new(ScriptedCounters::default());
        counters.outcomes.lock().unwrap().push_back(MeteringError::OutcomeUnknown("timeout".into()));
        let lines = Arc::new(RecordedLines::default());
        let metering = metering(counters.clone(), lines.clone(), Duration::from_secs(10));
        metering.record(event("a", "t"));
        metering.flush().await;
        let calls = counters.calls.lock().unwrap();
        assert_eq!(calls.len(), 2, "one unknown attempt, one retry");
        assert_eq!(calls[0].batch_id, calls[1].batch_id, "the retry must be recognisable as the same write");
        assert!(lines.counter_updates().is_empty(), "the retry applied (or found its marker): nothing to report");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_update_is_reported_failed_once_per_request() {
        let counters = Arc::new(ScriptedCounters::default());
        counters.outcomes.lock().unwrap().push_back(MeteringError::Refused("ValidationException".into()));
        let lines = Arc::new(RecordedLines::default());
        let metering = metering(counters.clone(), lines.clone(), Duration::from_secs(10));
        metering.record(event("a", "t"));
        metering.flush().await;
        let updates = lines.counter_updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].request_id, "a");
        assert_eq!(updates[0].outcome, CounterOutcome::Failed);
        assert_eq!(updates[0].day, day_label(Utc::now().date_naive()));
        assert_eq!(counters.calls.lock().unwrap().len(), 1, "a refusal is not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_attempt_followed_by_refusals_is_still_unknown() {
        let counters = Arc::new(ScriptedCounters::default());
        {
            let mut outcomes = counters.outcomes.lock().unwrap();
            outcomes.push_back(MeteringError::OutcomeUnknown("timeout".into()));
            for _ in 0..200 {
                outcomes.push_back(MeteringError::UpdateFailed("throttled".into()));
            }
        }
        let lines = Arc::new(RecordedLines::default());
        let metering = metering(counters, lines.clone(), Duration::from_secs(5));
        metering.record(event("a", "t"));
        metering.flush().await;
        let updates = lines.counter_updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].outcome, CounterOutcome::Unknown, "the first attempt may have landed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_table_gives_an_unknown_outcome_after_the_counter_timeout() {
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_secs(3600), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering(counters, lines.clone(), Duration::from_secs(1));
        metering.record(event("a", "t"));
        metering.flush().await;
        let updates = lines.counter_updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].outcome, CounterOutcome::Unknown);
        assert_eq!(metering.pending_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_table_gets_few_coalesced_writes_that_add_up_to_every_request() {
        // GIVEN a table that takes a second per write
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_secs(1), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering(counters.clone(), lines.clone(), Duration::from_secs(30));
        // WHEN 3,000 requests of two tenants arrive at once
        for i in 0..3000 {
            metering.record(event(&format!("r{i}"), if i % 2 == 0 { "even" } else { "odd" }));
        }
        metering.flush().await;
        // THEN writes in flight stayed bounded, few writes carried them all, and each request counts once
        let calls = counters.calls.lock().unwrap();
        assert!(counters.peak_in_flight.load(SeqCst) <= MAX_CONCURRENT_COUNTER_WRITES);
        assert!(calls.len() <= MAX_CONCURRENT_COUNTER_WRITES + 2, "{} writes for 3,000 requests", calls.len());
        let mut ids: Vec<&String> = calls.iter().flat_map(|batch| &batch.request_ids).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3000);
        let input: u64 = calls.iter().map(|batch| batch.tokens.input_tokens).sum();
        assert_eq!(input, 3000);
        assert!(calls.iter().all(|batch| batch.tenant_id == "even" || batch.tenant_id == "odd"));
        assert!(lines.counter_updates().is_empty());
        assert_eq!(lines.usage().len(), 3000);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_memory_bound_a_request_is_reported_failed_at_once_and_its_line_is_written() {
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_secs(3600), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering(counters, lines.clone(), Duration::from_secs(7200));
        for i in 0..(MAX_HELD_REQUESTS + 5) {
            metering.record(event(&format!("r{i}"), "t"));
        }
        assert_eq!(metering.pending_jobs(), MAX_HELD_REQUESTS);
        assert_eq!(lines.usage().len(), MAX_HELD_REQUESTS + 5);
        let refused = lines.counter_updates();
        assert_eq!(refused.len(), 5);
        assert!(refused.iter().all(|update| update.outcome == CounterOutcome::Failed));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_returns_by_its_deadline_and_reports_every_pending_request() {
        let counters = Arc::new(ScriptedCounters { delay: Duration::from_secs(3600), ..Default::default() });
        let lines = Arc::new(RecordedLines::default());
        let metering = metering(counters, lines.clone(), Duration::from_secs(7200));
        for i in 0..5000 {
            metering.record(event(&format!("r{i}"), &format!("t{}", i % 20)));
        }
        let started = Instant::now();
        metering.shutdown(started + Duration::from_secs(2)).await;
        assert!(started.elapsed() <= Duration::from_secs(3));
        let updates = lines.counter_updates();
        assert_eq!(updates.len(), 5000);
        let unknown = updates.iter().filter(|update| update.outcome == CounterOutcome::Unknown).count();
        // The first requests went out alone, one write each, before the table's slowness showed.
        assert_eq!(unknown, MAX_CONCURRENT_COUNTER_WRITES, "the batches in flight may have landed");
        assert_eq!(metering.pending_jobs(), 0);
        // A request answered after shutdown still gets its line, and a failed counter line.
        metering.record(event("late", "t"));
        assert_eq!(lines.usage().len(), 5001);
        assert_eq!(lines.counter_updates().len(), 5001);
    }
}
