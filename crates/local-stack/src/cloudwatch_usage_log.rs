//! Locally, usage lines go to standard output *and* to a CloudWatch Logs group in moto, as Lambda's log
//! capture would put them there, so the log export can be run against the local stack.
//!
//! Standard output is the bill; the copy must never hold it up. `write` only puts the line into a bounded
//! queue (no await, no lock held across I/O). One background task takes what is queued, in batches, and sends
//! each batch with one `PutLogEvents`; an attempt that fails or gets no answer within [`ATTEMPT_TIMEOUT`] is
//! tried again until [`GIVE_UP_AFTER`]. A line that finds the queue full, or whose batch is given up, is
//! dropped from the copy (never from stdout): drops are counted and logged. At shutdown, [`close`] lets the
//! task send what is queued until a deadline.
//!
//! [`close`]: CloudWatchUsageLog::close

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::error::DisplayErrorContext;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use metering_core::usage::{StdoutUsageLog, UsageLine, UsageLog};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Lines waiting to be copied at most (a few hundred bytes each: a few MiB at most).
pub const QUEUE_CAPACITY: usize = 10_000;
/// Lines per `PutLogEvents` at most (the API allows 10,000 events and 1 MiB; usage lines are under 1 KiB).
pub const MAX_BATCH_EVENTS: usize = 500;
/// How long one `PutLogEvents` may go unanswered before it is tried again. Longer than a short stall of the
/// service, so a request that reached it is rarely sent twice.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a batch is retried before it is dropped from the copy.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(200);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Drops are logged at the first and then at every this many.
const LOG_DROPS_EVERY: u64 = 1_000;

/// One line to copy: when it was written and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub timestamp_ms: i64,
    pub message: String,
}

/// Where batches go: the log stream (a CloudWatch Logs client), or a stand-in in unit tests.
#[async_trait]
pub trait LogEventSink: Send + Sync + 'static {
    /// Puts `events` (oldest first) in one call.
    async fn put(&self, events: &[LogEvent]) -> Result<(), String>;
}

/// The log stream of this process in a CloudWatch Logs group.
pub struct CloudWatchLogStream {
    client: aws_sdk_cloudwatchlogs::Client,
    log_group: String,
    log_stream: String,
}

impl CloudWatchLogStream {
    /// Creates the log group (if missing) and a stream of this process's own.
    pub async fn create(
        client: aws_sdk_cloudwatchlogs::Client,
        log_group: String,
    ) -> Result<Self, aws_sdk_cloudwatchlogs::Error> {
        let log_stream = format!("{}/[$LATEST]{}", chrono::Utc::now().format("%Y/%m/%d"), uuid::Uuid::new_v4().simple());
        if let Err(error) = client.create_log_group().log_group_name(&log_group).send().await {
            let error = aws_sdk_cloudwatchlogs::Error::from(error);
            if !matches!(error, aws_sdk_cloudwatchlogs::Error::ResourceAlreadyExistsException(_)) {
                return Err(error);
            }
        }
        client.create_log_stream().log_group_name(&log_group).log_stream_name(&log_stream).send().await?;
        Ok(Self { client, log_group, log_stream })
    }
}

#[async_trait]
impl LogEventSink for CloudWatchLogStream {
    async fn put(&self, events: &[LogEvent]) -> Result<(), String> {
        let events = events
            .iter()
            .map(|event| InputLogEvent::builder().timestamp(event.timestamp_ms).message(&event.message).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| error.to_string())?;
        self.client
            .put_log_events()
            .log_group_name(&self.log_group)
            .log_stream_name(&self.log_stream)
            .set_log_events(Some(events))
            .send()
            .await
            .map(|_| ())
            .map_err(|error| DisplayErrorContext(&error).to_string())
    }
}

/// What the copy lost, shared by the writers and the background task.
#[derive(Default)]
struct CopyStats {
    /// Lines queued or being sent.
    pending: AtomicUsize,
    dropped: AtomicU64,
}

impl CopyStats {
    fn drop_lines(&self, count: usize, why: &str) {
        if count == 0 {
            return;
        }
        let before = self.dropped.fetch_add(count as u64, Ordering::Relaxed);
        let after = before + count as u64;
        if before == 0 || before / LOG_DROPS_EVERY != after / LOG_DROPS_EVERY {
            tracing::warn!(
                dropped = count,
                dropped_total = after,
                reason = why,
                "usage lines not copied to CloudWatch Logs (they are on stdout)"
            );
        }
    }
}

/// The CloudWatch Logs copy of the usage lines: a bounded queue and one background task that sends batches.
pub struct CloudWatchUsageLog {
    queue: Mutex<Option<mpsc::Sender<LogEvent>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<CopyStats>,
}

impl CloudWatchUsageLog {
    /// Starts the background task that copies lines to `sink`. Must run inside a Tokio runtime.
    pub fn start(sink: Arc<dyn LogEventSink>) -> Self {
        Self::with_capacity(sink, QUEUE_CAPACITY, ATTEMPT_TIMEOUT, GIVE_UP_AFTER)
    }

    fn with_capacity(sink: Arc<dyn LogEventSink>, capacity: usize, attempt_timeout: Duration, give_up_after: Duration) -> Self {
        let (sender, receiver) = mpsc::channel(capacity);
        let stats = Arc::new(CopyStats::default());
        let worker = tokio::spawn(copy_batches(receiver, sink, Arc::clone(&stats), attempt_timeout, give_up_after));
        Self { queue: Mutex::new(Some(sender)), worker: Mutex::new(Some(worker)), stats }
    }

    /// Lines not copied (queue full, given up, or still pending at `close`).
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Lines queued or being sent.
    pub fn pending(&self) -> usize {
        self.stats.pending.load(Ordering::Relaxed)
    }

    /// Queues one line; never waits.
    fn enqueue(&self, event: LogEvent) {
        let queue = lock(&self.queue);
        let Some(sender) = queue.as_ref() else {
            self.stats.drop_lines(1, "written after the copy was closed");
            return;
        };
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        if sender.try_send(event).is_err() {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.drop_lines(1, "copy queue full");
        }
    }

    /// Stops taking lines and lets the background task send what is queued until `deadline`; what is still
    /// pending then is dropped (and counted).
    pub async fn close(&self, deadline: Instant) {
        drop(lock(&self.queue).take());
        let Some(mut worker) = lock(&self.worker).take() else { return };
        if tokio::time::timeout_at(deadline, &mut worker).await.is_err() {
            worker.abort();
            let _ = worker.await;
            let left = self.stats.pending.swap(0, Ordering::Relaxed);
            self.stats.drop_lines(left, "still pending when the process stopped");
        }
        let dropped = self.dropped();
        if dropped > 0 {
            tracing::warn!(dropped, "usage lines missing from the CloudWatch Logs copy (every one is on stdout)");
        } else {
            tracing::info!("every usage line was copied to CloudWatch Logs");
        }
    }
}

impl UsageLog for CloudWatchUsageLog {
    fn write(&self, line: &UsageLine) {
        self.enqueue(LogEvent { timestamp_ms: chrono::Utc::now().timestamp_millis(), message: line.to_line() });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The background task: batches of what is queued, each sent with retries, until the queue is closed and empty.
async fn copy_batches(
    mut receiver: mpsc::Receiver<LogEvent>,
    sink: Arc<dyn LogEventSink>,
    stats: Arc<CopyStats>,
    attempt_timeout: Duration,
    give_up_after: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH_EVENTS);
    while receiver.recv_many(&mut batch, MAX_BATCH_EVENTS).await > 0 {
        // Lines written by several threads may be queued a millisecond out of order; the API wants them sorted.
        batch.sort_by_key(|event| event.timestamp_ms);
        let count = batch.len();
        if let Err(error) = put_with_retries(sink.as_ref(), &batch, attempt_timeout, give_up_after).await {
            tracing::warn!(%error, lines = count, "giving up copying usage lines to CloudWatch Logs");
            stats.drop_lines(count, "CloudWatch Logs did not take them");
        }
        stats.pending.fetch_sub(count, Ordering::Relaxed);
        batch.clear();
    }
}

async fn put_with_retries(
    sink: &dyn LogEventSink,
    batch: &[LogEvent],
    attempt_timeout: Duration,
    give_up_after: Duration,
) -> Result<(), String> {
    let give_up_at = Instant::now() + give_up_after;
    let mut pause = FIRST_RETRY_PAUSE;
    loop {
        let error = match tokio::time::timeout(attempt_timeout, sink.put(batch)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => format!("no answer within {} ms", attempt_timeout.as_millis()),
        };
        if Instant::now() + pause >= give_up_at {
            return Err(error);
        }
        tracing::debug!(%error, lines = batch.len(), "retrying a copy of usage lines to CloudWatch Logs");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

/// Standard output first (the source of truth), then the CloudWatch Logs copy.
pub struct TeeUsageLog {
    pub cloudwatch: Option<CloudWatchUsageLog>,
}

impl TeeUsageLog {
    /// Sends what the copy still holds, until `deadline` (see [`CloudWatchUsageLog::close`]).
    pub async fn close(&self, deadline: Instant) {
        if let Some(cloudwatch) = &self.cloudwatch {
            cloudwatch.close(deadline).await;
        }
    }
}

impl UsageLog for TeeUsageLog {
    fn write(&self, line: &UsageLine) {
        StdoutUsageLog.write(line);
        if let Some(cloudwatch) = &self.cloudwatch {
            cloudwatch.write(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::sync::Notify;

    /// A log stream that answers with the scripted outcomes in order (then accepts), optionally only once
    /// `open` is notified, and keeps every batch it accepted.
    #[derive(Default)]
    struct ScriptedSink {
        failures: Mutex<VecDeque<String>>,
        stalled: std::sync::atomic::AtomicBool,
        open: Notify,
        accepted: Mutex<Vec<Vec<LogEvent>>>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl LogEventSink for ScriptedSink {
        async fn put(&self, events: &[LogEvent]) -> Result<(), String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.stalled.load(Ordering::SeqCst) {
                self.open.notified().await;
            }
            if let Some(error) = self.failures.lock().unwrap().pop_front() {
                return Err(error);
            }
            self.accepted.lock().unwrap().push(events.to_vec());
            Ok(())
        }
    }

    impl ScriptedSink {
        fn messages(&self) -> Vec<String> {
            self.accepted.lock().unwrap().iter().flatten().map(|event| event.message.clone()).collect()
        }
    }

    fn line(i: usize) -> LogEvent {
        LogEvent { timestamp_ms: i as i64, message: format!("line {i}") }
    }

    #[tokio::test(start_paused = true)]
    async fn queued_lines_go_in_batches_and_in_order() {
        // GIVEN a stalled stream and 1,200 lines queued behind it
        let sink = Arc::new(ScriptedSink::default());
        sink.stalled.store(true, Ordering::SeqCst);
        let copy = CloudWatchUsageLog::start(sink.clone());
        (0..1_200).for_each(|i| copy.enqueue(line(i)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // WHEN it answers again
        sink.stalled.store(false, Ordering::SeqCst);
        sink.open.notify_waiters();
        copy.close(Instant::now() + Duration::from_secs(5)).await;
        // THEN every line went, in order, in a few calls of at most MAX_BATCH_EVENTS
        let expected: Vec<String> = (0..1_200).map(|i| format!("line {i}")).collect();
        assert_eq!(sink.messages(), expected);
        let sizes: Vec<usize> = sink.accepted.lock().unwrap().iter().map(Vec::len).collect();
        assert!(sizes.len() <= 4 && sizes.iter().all(|&n| n <= MAX_BATCH_EVENTS), "{sizes:?}");
        assert_eq!(copy.dropped(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_put_is_retried_and_a_hopeless_one_is_counted_as_dropped() {
        let sink = Arc::new(ScriptedSink::default());
        sink.failures.lock().unwrap().extend(["throttled".to_owned(), "connection reset".to_owned()]);
        let copy = CloudWatchUsageLog::start(sink.clone());
        copy.enqueue(line(1));
        copy.close(Instant::now() + Duration::from_secs(30)).await;
        assert_eq!(sink.messages(), vec!["line 1".to_owned()]);
        assert_eq!(sink.calls.load(Ordering::SeqCst), 3);
        assert_eq!(copy.dropped(), 0);

        let hopeless = Arc::new(ScriptedSink::default());
        hopeless.failures.lock().unwrap().extend((0..1_000).map(|_| "refused".to_owned()));
        let copy = CloudWatchUsageLog::with_capacity(hopeless.clone(), 10, ATTEMPT_TIMEOUT, Duration::from_secs(5));
        copy.enqueue(line(1));
        copy.enqueue(line(2));
        copy.close(Instant::now() + Duration::from_secs(30)).await;
        assert_eq!(copy.dropped(), 2);
        assert!(hopeless.calls.load(Ordering::SeqCst) > 1, "retried before giving up");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_put_times_out_and_is_retried() {
        // GIVEN a stream that never answers the first call
        let sink = Arc::new(ScriptedSink::default());
        sink.stalled.store(true, Ordering::SeqCst);
        let copy = CloudWatchUsageLog::start(sink.clone());
        copy.enqueue(line(7));
        tokio::time::sleep(ATTEMPT_TIMEOUT + Duration::from_millis(1)).await;
        sink.stalled.store(false, Ordering::SeqCst);
        // WHEN the attempt timeout passes THEN it is sent again, and lands
        copy.close(Instant::now() + Duration::from_secs(30)).await;
        assert_eq!(sink.messages(), vec!["line 7".to_owned()]);
        assert!(sink.calls.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts_without_waiting_and_close_is_bounded() {
        // GIVEN a stream that never answers and a queue of 10
        let sink = Arc::new(ScriptedSink::default());
        sink.stalled.store(true, Ordering::SeqCst);
        let copy = CloudWatchUsageLog::with_capacity(sink.clone(), 10, Duration::from_secs(3_600), GIVE_UP_AFTER);
        // WHEN 100 lines are written (the task holds the first batch, 10 more fit in the queue)
        for i in 0..100 {
            copy.enqueue(line(i));
            tokio::task::yield_now().await;
        }
        // THEN the rest were dropped at once and counted
        let dropped_at_once = copy.dropped();
        assert!(dropped_at_once >= 80, "dropped {dropped_at_once}");
        assert_eq!(copy.pending() as u64 + dropped_at_once, 100);
        // AND close gives up at its deadline, counting what was still pending
        let deadline = Instant::now() + Duration::from_secs(2);
        copy.close(deadline).await;
        assert!(Instant::now() <= deadline + Duration::from_millis(1));
        assert_eq!(copy.dropped(), 100);
        assert!(sink.messages().is_empty());
        // AND a line written after close is counted, not queued
        copy.write(&UsageLine::Usage(sample_record()));
        assert_eq!(copy.dropped(), 101);
    }

    fn sample_record() -> metering_core::usage::UsageRecord {
        serde_json::from_value(serde_json::json!({
            "event": "token_usage", "timestamp": "2026-11-23T10:00:00.000Z", "request_id": "r", "tenant_id": "t",
            "user_id": "u", "model_id": "m", "request_type": "bedrock", "input_tokens": 1, "output_tokens": 1,
            "total_tokens": 2, "latency_ms": 1
        }))
        .unwrap()
    }
}
