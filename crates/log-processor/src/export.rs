//! The export of one UTC day, in bounded memory however large the day:
//! pages of log messages (the next page fetched while this one is transformed) -> rows -> row groups of
//! [`ExportSettings::rows_per_row_group`] -> Parquet bytes -> multipart upload parts of
//! [`ExportSettings::part_bytes`]. Memory holds one row group, one part and two pages, never the day.
//!
//! Objects are `<prefix>year=YYYY/month=MM/day=DD/part-<run>-NNNNN.parquet`, named after the run (its start
//! time) and numbered from 0. A run writes its own objects beside the earlier export, then checks them against
//! the day's `_SUCCESS` manifest ([`crate::manifest`]): fewer rows than the manifest is refused (the run's
//! objects are deleted, the earlier export kept) unless `allow_shrink`; otherwise every other `.parquet` of
//! the partition is deleted (an earlier run's, or the stream's) and the manifest written last: a day is never
//! exported twice over. A day without a single usage line writes only an empty manifest, and keeps any
//! objects an export without a manifest left there (its logs may simply have expired).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde_json::Value;
use tokio::sync::mpsc;

use metering_core::pricing::PricingTable;

use crate::config::ExportConfig;
use crate::error::{BoxError, ExportError};
use crate::line::{classify, counter_update, CounterOutcome, LineOutcome};
use crate::manifest::{check_complete, days_to_catch_up, manifest_key, read_manifest, Manifest};
use crate::metrics::emf_line;
use crate::options::{check_request, split_options, ExportOptions};
use crate::parquet_file::{writer_properties, ParquetFileWriter, RowBatch, DEFAULT_ROWS_PER_ROW_GROUP};
use crate::ports::{
    LogPage, LogQuery, LogSource, ObjectStore, ObjectUpload, COUNTER_UPDATE_FILTER_PATTERN, USAGE_FILTER_PATTERN,
};
use crate::request::ExportRequest;
use crate::row_price::RowPricer;
use crate::summary::{DaySummary, ExportSummary};

/// Pages fetched ahead of the transform, per query (each at most 1 MB / 10,000 events).
const PAGES_AHEAD: usize = 2;
/// Malformed lines quoted in the log and the summary, per day (the count is in the summary).
const MALFORMED_SAMPLES: u64 = 5;
/// Characters of a malformed line quoted.
const SAMPLE_CHARS: usize = 300;

#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub log_groups: Vec<String>,
    /// Ends with `/` (or is empty).
    pub prefix: String,
    pub rows_per_row_group: usize,
    /// A day with more rows is split over several objects (checked between row groups).
    pub max_rows_per_object: u64,
    /// Bytes buffered before a multipart part is sent: at least S3's 5 MiB ([`crate::ports::MIN_PART_BYTES`]).
    pub part_bytes: usize,
    /// Read the log this long before midnight: clocks drift.
    pub read_before: Duration,
    /// Read the log this long after the day: a line is written when its request ends (up to the model
    /// timeout, at most 15 minutes) but is stamped with the time the request arrived. Keep it under an hour:
    /// the schedule runs at 01:00 UTC.
    pub read_after: Duration,
    /// The day's window is read as this many time slices at once: FilterLogEvents answers ~10,000 lines per
    /// call, one call at a time would leave a day of 10 million lines near the 15-minute Lambda limit.
    pub read_slices: u32,
    /// The usage API's price table: every row is priced with it.
    pub pricing: PricingTable,
    /// A day with more malformed usage lines is written but not marked complete, and the run fails.
    pub max_malformed_lines: u64,
    /// How far back the scheduled run catches up days without a complete export.
    pub catch_up_days: u32,
}

impl ExportSettings {
    pub fn from_config(config: &ExportConfig) -> Self {
        Self {
            log_groups: config.log_groups.clone(),
            prefix: config.prefix.clone(),
            rows_per_row_group: DEFAULT_ROWS_PER_ROW_GROUP,
            max_rows_per_object: 5_000_000,
            part_bytes: 8 * 1024 * 1024,
            read_before: Duration::from_secs(5 * 60),
            read_after: Duration::from_secs(20 * 60),
            read_slices: 4,
            pricing: config.pricing.clone(),
            max_malformed_lines: config.max_malformed_lines,
            catch_up_days: config.catch_up_days,
        }
    }
}

/// `<prefix>year=YYYY/month=MM/day=DD/`
pub fn partition_prefix(prefix: &str, day: NaiveDate) -> String {
    format!("{prefix}{}", day.format("year=%Y/month=%m/day=%d/"))
}

pub fn object_key(partition: &str, run: &str, index: usize) -> String {
    format!("{partition}part-{run}-{index:05}.parquet")
}

/// The name of a run in its objects' keys: its start, to the millisecond (`20261124T090000123Z`).
pub fn run_name(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%3fZ").to_string()
}

/// Is `key` a Parquet object right in `partition` (the export's, or the stream's)? A day's partition holds
/// one export: a run deletes every other such object once its own are written. Nothing else is deleted.
fn is_parquet_of_partition(partition: &str, key: &str) -> bool {
    key.strip_prefix(partition).is_some_and(|name| !name.contains('/') && name.ends_with(".parquet"))
}

/// The instants (epoch ms, both included) of the log to read for `day`.
pub fn read_window(day: NaiveDate, now: DateTime<Utc>, settings: &ExportSettings) -> (i64, i64) {
    let midnight = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default());
    let start = midnight.timestamp_millis() - settings.read_before.as_millis() as i64;
    let after_day = midnight.timestamp_millis() + 86_400_000 - 1 + settings.read_after.as_millis() as i64;
    (start, after_day.min(now.timestamp_millis()))
}

pub struct Exporter {
    logs: Arc<dyn LogSource>,
    store: Arc<dyn ObjectStore>,
    settings: ExportSettings,
}

impl Exporter {
    pub fn new(logs: Arc<dyn LogSource>, store: Arc<dyn ObjectStore>, settings: ExportSettings) -> Self {
        Self { logs, store, settings }
    }

    /// The Lambda handler: payload in, summary out; the run's figures go to CloudWatch as metrics.
    pub async fn handle(&self, payload: Value) -> Result<Value, ExportError> {
        let now = Utc::now();
        if let Some(day) = check_request(&payload) {
            let result = match day {
                Ok(day) => check_complete(self.store.as_ref(), &self.settings.prefix, day).await,
                Err(error) => Err(error),
            };
            let missing = u64::from(matches!(result, Err(ExportError::IncompleteExport { .. })));
            println!("{}", emf_line(&[("MissingDailyExport", missing)], now.timestamp_millis()));
            return match result {
                Ok(manifest) => Ok(serde_json::to_value(manifest).unwrap_or_default()),
                Err(error) => {
                    tracing::error!(%error, "the daily export is missing");
                    Err(error)
                }
            };
        }
        let parsed = split_options(&payload)
            .and_then(|(rest, options)| Ok((ExportRequest::from_payload(&rest)?, options)))
            .inspect_err(|error| tracing::error!(%error, %payload, "refused the export request"));
        let (request, options) = parsed?;
        let result = self.export_with(&request, options, now).await;
        let (days, rows, malformed) = match &result {
            Ok(summary) => {
                let complete = summary.days.iter().filter(|day| day.complete).count() as u64;
                let malformed = summary.days.iter().map(|day| day.skipped_malformed).sum();
                (complete, summary.rows_written, malformed)
            }
            Err(ExportError::TooManyMalformed { malformed, rows, .. }) => (0, *rows, *malformed),
            Err(_) => (0, 0, 0),
        };
        let metrics = [("DaysExported", days), ("RowsWritten", rows), ("SkippedMalformed", malformed)];
        println!("{}", emf_line(&metrics, now.timestamp_millis()));
        Ok(serde_json::to_value(result?).unwrap_or_default())
    }

    /// Exports every day of `request`, oldest first; stops at the first day that fails.
    pub async fn export(&self, request: &ExportRequest, now: DateTime<Utc>) -> Result<ExportSummary, ExportError> {
        self.export_with(request, ExportOptions::default(), now).await
    }

    /// [`Exporter::export`] with options. The schedule exports yesterday and catches up every earlier day
    /// without a complete manifest ([`days_to_catch_up`]).
    pub async fn export_with(
        &self,
        request: &ExportRequest,
        options: ExportOptions,
        now: DateTime<Utc>,
    ) -> Result<ExportSummary, ExportError> {
        let started = Instant::now();
        let days = match request {
            ExportRequest::Scheduled { .. } => {
                let yesterday = request.days(now)?;
                let last = yesterday.last().copied().ok_or_else(|| ExportError::BadRequest("no day".into()))?;
                let store = self.store.as_ref();
                days_to_catch_up(store, &self.settings.prefix, last, self.settings.catch_up_days).await?
            }
            _ => request.days(now)?,
        };
        let mut summaries = Vec::with_capacity(days.len());
        for day in days {
            let summary = self.export_day(day, options, now).await.inspect_err(|error| {
                tracing::error!(%day, %error, "export of the day failed; re-run it");
            })?;
            tracing::info!(
                day = %summary.day, events_read = summary.events_read, rows_written = summary.rows_written,
                skipped_not_usage = summary.skipped_not_usage, skipped_malformed = summary.skipped_malformed,
                objects = summary.objects.len(), bytes = summary.bytes, "exported the day"
            );
            summaries.push(summary);
        }
        let summary = ExportSummary::new(request.trigger(), summaries, started.elapsed());
        let line = serde_json::to_string(&summary).unwrap_or_default();
        tracing::info!(summary = %line, "export done");
        Ok(summary)
    }

    pub async fn export_day(
        &self,
        day: NaiveDate,
        options: ExportOptions,
        now: DateTime<Utc>,
    ) -> Result<DaySummary, ExportError> {
        let (start_ms, end_ms) = read_window(day, now, &self.settings);
        let (_, full_end_ms) = read_window(day, DateTime::<Utc>::MAX_UTC, &self.settings);
        let mut run = DayRun::new(self, day, run_name(now), options);
        run.summary.read_from = rfc3339(start_ms);
        run.summary.read_to = rfc3339(end_ms);
        run.summary.complete = end_ms >= full_end_ms;
        run.exported_at = rfc3339(now.timestamp_millis());
        // The counter outcomes first: a request's `counter_update` line may be read after its usage line
        // became a row (the slices are read at once), and a Parquet row cannot be changed once written.
        (run.counter_outcomes, run.summary.counter_updates) = self.read_counter_outcomes(day, start_ms, end_ms).await?;
        let queries = slice_queries(&self.settings.log_groups, start_ms, end_ms, self.settings.read_slices, USAGE_FILTER_PATTERN);
        let mut pages = read_ahead(Arc::clone(&self.logs), queries);
        while let Some(page) = pages.recv().await {
            let page = match page {
                Ok(page) => page,
                Err((log_group, source)) => {
                    run.abort().await;
                    return Err(ExportError::ReadLogs { log_group, source });
                }
            };
            if let Err(error) = run.add_page(page).await {
                run.abort().await;
                return Err(error);
            }
        }
        run.finish().await
    }
}

impl Exporter {
    /// Reads the window's `counter_update` lines (filtered server-side: a few per day) into the outcome of
    /// every request of `day` whose counter update did not apply, and how many such lines there were.
    /// Requests without one were applied.
    async fn read_counter_outcomes(
        &self,
        day: NaiveDate,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(HashMap<String, CounterOutcome>, u64), ExportError> {
        let queries =
            slice_queries(&self.settings.log_groups, start_ms, end_ms, self.settings.read_slices, COUNTER_UPDATE_FILTER_PATTERN);
        let day = day.to_string();
        let mut outcomes: HashMap<String, CounterOutcome> = HashMap::new();
        let mut lines = 0;
        let mut pages = read_ahead(Arc::clone(&self.logs), queries);
        while let Some(page) = pages.recv().await {
            let page = page.map_err(|(log_group, source)| ExportError::ReadLogs { log_group, source })?;
            for update in page.messages.iter().filter_map(|message| counter_update(message)) {
                if update.day != day {
                    continue;
                }
                lines += 1;
                let outcome = outcomes.entry(update.request_id.into_owned()).or_insert(update.outcome);
                *outcome = outcome.worst(update.outcome);
            }
        }
        Ok((outcomes, lines))
    }
}

/// One query per log group and time slice: the slices split `[start_ms, end_ms]` (both included) into
/// `slices` contiguous windows that do not overlap, so every event is read exactly once.
pub fn slice_queries(log_groups: &[String], start_ms: i64, end_ms: i64, slices: u32, filter_pattern: &str) -> Vec<LogQuery> {
    let slices = i64::from(slices.max(1));
    let length = end_ms - start_ms + 1;
    let mut queries = Vec::new();
    for log_group in log_groups {
        for slice in 0..slices {
            let from = start_ms + length * slice / slices;
            let to = start_ms + length * (slice + 1) / slices - 1;
            if to >= from {
                queries.push(LogQuery {
                    log_group: log_group.clone(),
                    start_ms: from,
                    end_ms: to,
                    filter_pattern: filter_pattern.to_owned(),
                });
            }
        }
    }
    queries
}

/// A page, or the log group whose query failed and why.
type PageResult = Result<LogPage, (String, BoxError)>;

/// Pages through every query, each in a task of its own, into one channel of [`PAGES_AHEAD`] pages per
/// query: the next pages are fetched while this one is transformed, and memory holds a few pages at most.
/// Dropping the receiver stops the tasks.
fn read_ahead(logs: Arc<dyn LogSource>, queries: Vec<LogQuery>) -> mpsc::Receiver<PageResult> {
    let (sender, receiver) = mpsc::channel(PAGES_AHEAD * queries.len().max(1));
    for query in queries {
        let (logs, sender) = (Arc::clone(&logs), sender.clone());
        tokio::spawn(async move {
            let mut next_token = None;
            loop {
                let page = logs.page(&query, next_token.take()).await;
                let following = page.as_ref().ok().and_then(|page| page.next_token.clone());
                let failed = page.is_err();
                if sender.send(page.map_err(|error| (query.log_group.clone(), error))).await.is_err() || failed {
                    return;
                }
                match following {
                    Some(token) => next_token = Some(token),
                    None => return,
                }
            }
        });
    }
    receiver
}

struct OpenObject<'a> {
    writer: ParquetFileWriter,
    upload: ObjectUpload<'a>,
}

/// The state of one day's export.
struct DayRun<'a> {
    exporter: &'a Exporter,
    day: NaiveDate,
    partition: String,
    /// Rows per row group: never more than an object holds.
    group_rows: usize,
    batch: RowBatch,
    open: Option<OpenObject<'a>>,
    written_keys: Vec<String>,
    summary: DaySummary,
    /// Names this run's objects (see [`run_name`]).
    run: String,
    options: ExportOptions,
    pricer: RowPricer,
    exported_at: String,
    /// Requests of the day whose counter update did not apply (from their `counter_update` lines).
    counter_outcomes: HashMap<String, CounterOutcome>,
}

impl<'a> DayRun<'a> {
    fn new(exporter: &'a Exporter, day: NaiveDate, run: String, options: ExportOptions) -> Self {
        let settings = &exporter.settings;
        let group_rows =
            settings.rows_per_row_group.min(usize::try_from(settings.max_rows_per_object).unwrap_or(usize::MAX)).max(1);
        Self {
            exporter,
            day,
            partition: partition_prefix(&settings.prefix, day),
            group_rows,
            batch: RowBatch::with_capacity(group_rows),
            open: None,
            written_keys: Vec::new(),
            summary: DaySummary { day: day.to_string(), ..DaySummary::default() },
            run,
            options,
            pricer: RowPricer::new(settings.pricing.clone()),
            exported_at: String::new(),
            counter_outcomes: HashMap::new(),
        }
    }

    async fn add_page(&mut self, page: LogPage) -> Result<(), ExportError> {
        for message in page.messages {
            self.summary.events_read += 1;
            match classify(&message) {
                LineOutcome::Usage { day, line } if day == self.day => {
                    let mut outcome = if self.counter_outcomes.is_empty() {
                        CounterOutcome::Applied
                    } else {
                        let known = self.counter_outcomes.get(line.request_id.as_ref());
                        known.copied().unwrap_or(CounterOutcome::Applied)
                    };
                    if line.metering_error {
                        outcome = outcome.worst(CounterOutcome::Unknown);
                    }
                    self.batch.push(&line, &mut self.pricer, Some(outcome));
                    if self.batch.len() >= self.group_rows {
                        self.write_row_group().await?;
                    }
                }
                LineOutcome::Usage { .. } => self.summary.outside_day += 1,
                // Counted by the first read (`read_counter_outcomes`).
                LineOutcome::CounterUpdate => {}
                LineOutcome::NotUsage => self.summary.skipped_not_usage += 1,
                LineOutcome::Malformed(reason) => {
                    self.summary.skipped_malformed += 1;
                    if self.summary.skipped_malformed <= MALFORMED_SAMPLES {
                        let sample: String = message.chars().take(SAMPLE_CHARS).collect();
                        tracing::warn!(day = %self.day, %reason, %sample, "skipped a malformed usage line");
                        self.summary.malformed_samples.push(format!("{reason}: {sample}"));
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_row_group(&mut self) -> Result<(), ExportError> {
        let settings = &self.exporter.settings;
        if self.open.is_none() {
            let key = object_key(&self.partition, &self.run, self.written_keys.len());
            let writer = ParquetFileWriter::new(writer_properties(self.group_rows))?;
            self.open = Some(OpenObject { writer, upload: ObjectUpload::new(self.exporter.store.as_ref(), key) });
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        open.writer.write_row_group(&mut self.batch)?;
        if open.writer.buffered_bytes()? >= settings.part_bytes {
            let part = open.writer.take_bytes()?;
            if let Err(source) = open.upload.write_part(part).await {
                let key = open.upload.key().to_owned();
                return Err(self.write_error(key, source));
            }
        }
        if open.writer.rows() >= settings.max_rows_per_object {
            self.close_object().await?;
        }
        Ok(())
    }

    async fn close_object(&mut self) -> Result<(), ExportError> {
        let Some(OpenObject { writer, upload }) = self.open.take() else {
            return Ok(());
        };
        let rows = writer.rows();
        let key = upload.key().to_owned();
        let last = match writer.finish() {
            Ok(last) => last,
            Err(error) => {
                upload.abort().await;
                return Err(error);
            }
        };
        let bytes = upload.finish(last).await.map_err(|source| self.write_error(key.clone(), source))?;
        self.summary.rows_written += rows;
        self.summary.bytes += bytes;
        self.summary.objects.push(format!("s3://{}/{key}", self.exporter.store.bucket()));
        self.written_keys.push(key);
        Ok(())
    }

    async fn finish(mut self) -> Result<DaySummary, ExportError> {
        if !self.batch.is_empty() {
            if let Err(error) = self.write_row_group().await {
                self.abort().await;
                return Err(error);
            }
        }
        if let Err(error) = self.close_object().await {
            self.abort().await;
            return Err(error);
        }
        let store = self.exporter.store.as_ref();
        let prefix = &self.exporter.settings.prefix;
        self.summary.price_version = self.pricer.version();
        let previous = read_manifest(store, prefix, self.day).await?;
        // The shrink guard: part of the day's log is gone (expired, deleted); the earlier export is the bill.
        if let Some(previous) = previous.as_ref().filter(|previous| previous.rows > self.summary.rows_written) {
            if !self.options.allow_shrink {
                let written = std::mem::take(&mut self.written_keys);
                if !written.is_empty() {
                    store.delete_keys(&written).await.map_err(|source| self.clean_up_error(source))?;
                }
                return Err(ExportError::WouldShrink {
                    day: self.day.to_string(),
                    exported_rows: previous.rows,
                    found_rows: self.summary.rows_written,
                });
            }
            tracing::warn!(day = %self.day, before = previous.rows, after = self.summary.rows_written,
                "allow_shrink: replacing the day's export with fewer rows");
        }
        if self.written_keys.is_empty() {
            self.summary.note = Some(format!("no usage lines for {}", self.day));
            let keys = store.list_keys(&self.partition).await.map_err(|source| self.clean_up_error(source))?;
            let unmanifested = keys.iter().any(|key| is_parquet_of_partition(&self.partition, key));
            if previous.is_none() && unmanifested {
                // An export from before manifests (or the stream's files): nothing to compare with, keep it.
                self.summary.note =
                    Some(format!("no usage lines for {}: nothing written, objects of an earlier export kept", self.day));
                return Ok(self.summary);
            }
        }
        self.delete_stale_objects().await?;
        if self.summary.skipped_malformed > self.exporter.settings.max_malformed_lines {
            // The rows are written (they bill), but the day is not complete: no manifest, so the next scheduled
            // run exports it again, and the error reaches the alarms.
            let key = manifest_key(prefix, self.day);
            store.delete_keys(&[key]).await.map_err(|source| self.clean_up_error(source))?;
            return Err(ExportError::TooManyMalformed {
                day: self.day.to_string(),
                malformed: self.summary.skipped_malformed,
                allowed: self.exporter.settings.max_malformed_lines,
                rows: self.summary.rows_written,
                samples: self.summary.malformed_samples.clone(),
            });
        }
        self.write_manifest().await?;
        Ok(self.summary)
    }

    async fn write_manifest(&mut self) -> Result<(), ExportError> {
        let store = self.exporter.store.as_ref();
        let settings = &self.exporter.settings;
        let manifest = Manifest {
            day: self.day.to_string(),
            rows: self.summary.rows_written,
            objects: self.summary.objects.clone(),
            bytes: self.summary.bytes,
            sources: settings.log_groups.clone(),
            read_from: self.summary.read_from.clone(),
            read_to: self.summary.read_to.clone(),
            complete: self.summary.complete,
            price_version: self.summary.price_version.clone(),
            skipped_malformed: self.summary.skipped_malformed,
            exported_at: self.exported_at.clone(),
        };
        let key = manifest_key(&settings.prefix, self.day);
        let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        store.put_object(&key, body).await.map_err(|source| self.write_error(key.clone(), source))?;
        self.summary.manifest = Some(format!("s3://{}/{key}", store.bucket()));
        Ok(())
    }

    /// Deletes the Parquet objects of the partition this run did not write (an earlier run's).
    async fn delete_stale_objects(&mut self) -> Result<(), ExportError> {
        let store = self.exporter.store.as_ref();
        let keys = store.list_keys(&self.partition).await.map_err(|source| self.clean_up_error(source))?;
        let stale: Vec<String> = keys
            .into_iter()
            .filter(|key| is_parquet_of_partition(&self.partition, key) && !self.written_keys.contains(key))
            .collect();
        if !stale.is_empty() {
            store.delete_keys(&stale).await.map_err(|source| self.clean_up_error(source))?;
            tracing::info!(day = %self.day, deleted = ?stale, "deleted the objects of an earlier export");
        }
        self.summary.stale_objects_deleted = stale.len() as u64;
        Ok(())
    }

    fn clean_up_error(&self, source: BoxError) -> ExportError {
        ExportError::CleanUp { bucket: self.exporter.store.bucket().to_owned(), prefix: self.partition.clone(), source }
    }

    async fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            open.upload.abort().await;
        }
    }

    fn write_error(&self, key: String, source: BoxError) -> ExportError {
        ExportError::WriteObject { bucket: self.exporter.store.bucket().to_owned(), key, source }
    }
}

fn rfc3339(epoch_ms: i64) -> String {
    Utc.timestamp_millis_opt(epoch_ms).single().map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::fakes::{MemoryStore, PagedLogs};
    use crate::synthetic::SyntheticDay;
    use bytes::Bytes;
    use metering_core::usage::UsageRecord;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    const GROUP: &str = "/aws/lambda/bedrock-metering-chat";

    fn settings() -> ExportSettings {
        let config = ExportConfig::new(vec![GROUP.into()], "memory", "logs/");
        ExportSettings { rows_per_row_group: 10, ..ExportSettings::from_config(&config) }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    /// Log events as CloudWatch holds them: stamped with the record's own time.
    fn events_of(records: &[UsageRecord]) -> Vec<(i64, String)> {
        records.iter().map(|record| (at(&record.timestamp).timestamp_millis(), record.to_line())).collect()
    }

    fn rows_of(object: Vec<u8>) -> Vec<Vec<Field>> {
        let reader = SerializedFileReader::new(Bytes::from(object)).unwrap();
        reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().into_columns().into_iter().map(|(_, field)| field).collect())
            .collect()
    }

    fn exporter(logs: PagedLogs, store: Arc<MemoryStore>, settings: ExportSettings) -> Exporter {
        Exporter::new(Arc::new(logs), store, settings)
    }

    const NOW: &str = "2026-11-24T09:00:00Z";

    #[tokio::test]
    async fn a_day_becomes_one_object_with_every_usage_line_of_that_day() {
        // GIVEN 35 usage lines of the 23rd, among other lines, across pages of 7 messages
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 35, 1).records().collect();
        let mut events = events_of(&records);
        events.push((at("2026-11-23T10:00:00Z").timestamp_millis(), "START RequestId: 1 Version: $LATEST".into()));
        events.push((at("2026-11-23T10:00:01Z").timestamp_millis(), r#"{"event":"token_usage","tenant_id":"x"}"#.into()));
        let late = SyntheticDay::new("2026-11-22", 1, 9).records().next().unwrap();
        events.push((at("2026-11-23T00:02:00Z").timestamp_millis(), late.to_line()));
        let store = Arc::new(MemoryStore::default());
        // WHEN the 23rd is exported
        let summary = exporter(PagedLogs::new(events, 7), store.clone(), settings())
            .export(&ExportRequest::Day(day("2026-11-23")), at(NOW))
            .await
            .unwrap();
        // THEN one object holds the 35 rows, field by field, and the other lines are counted, not written
        let key = "logs/year=2026/month=11/day=23/part-20261124T090000000Z-00000.parquet";
        assert_eq!(store.keys(), vec!["logs/year=2026/month=11/day=23/_SUCCESS", key]);
        let day_summary = &summary.days[0];
        assert_eq!((day_summary.events_read, day_summary.rows_written, day_summary.skipped_not_usage), (38, 35, 1));
        assert_eq!((day_summary.skipped_malformed, day_summary.outside_day), (1, 1));
        assert_eq!(day_summary.objects, vec![format!("s3://memory/{key}")]);
        assert_eq!(day_summary.bytes, store.object(key).len() as u64);
        assert_eq!((summary.rows_written, summary.skipped, summary.objects), (35, 2, 1));
        let rows = rows_of(store.object(key));
        assert_eq!(rows.len(), 35);
        for (row, record) in rows.iter().zip(&records) {
            assert_eq!(row[0], Field::Str(record.timestamp.clone()));
            assert_eq!(row[5], Field::Str(record.request_id.clone()));
            assert_eq!(row[9], Field::Long(record.latency_ms as i64));
        }
        // AND the rows go in row groups of `rows_per_row_group` (10), the last one with the rest
        let reader = SerializedFileReader::new(Bytes::from(store.object(key))).unwrap();
        let group_sizes: Vec<i64> =
            reader.metadata().row_groups().iter().map(parquet::file::metadata::RowGroupMetaData::num_rows).collect();
        assert_eq!(group_sizes, vec![10, 10, 10, 5]);
    }

    #[tokio::test]
    async fn each_row_carries_the_counter_outcome_of_its_request_wherever_its_line_was_read() {
        // GIVEN 12 usage lines of the 23rd across pages of 3: a `counter_update` line for the first request
        // (failed) sits in the last page, one for the second (unknown) right after it, one for the third says
        // failed for the 22nd (another day's request of the same id: not this one's), and the fourth is an
        // older line with `metering_error`
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 12, 3).records().collect();
        let mut events = events_of(&records);
        let update = |record: &UsageRecord, day: &str, outcome: &str, at_ms: i64| {
            let line = serde_json::json!({"event": "counter_update", "timestamp": record.timestamp,
                "request_id": record.request_id, "tenant_id": record.tenant_id, "request_type": "bedrock",
                "model_id": record.model_id, "day": day, "outcome": outcome, "error": "throttled"});
            (at_ms, line.to_string())
        };
        let last_ms = events.last().unwrap().0 + 1;
        events.push(update(&records[0], "2026-11-23", "failed", last_ms));
        events.insert(2, update(&records[1], "2026-11-23", "unknown", events[1].0));
        events.push(update(&records[2], "2026-11-22", "failed", last_ms));
        let mut older = records[3].clone();
        older.metering_error = Some("timeout".into());
        events[4].1 = older.to_line();
        let store = Arc::new(MemoryStore::default());
        // WHEN the day is exported
        let summary = exporter(PagedLogs::new(events, 3), store.clone(), settings())
            .export(&ExportRequest::Day(day("2026-11-23")), at(NOW))
            .await
            .unwrap();
        // THEN each row says its request's outcome; every other request's counters applied
        let key = &summary.days[0].objects[0]["s3://memory/".len()..];
        let outcomes: HashMap<String, Field> = rows_of(store.object(key))
            .into_iter()
            .map(|row| match &row[5] {
                Field::Str(request_id) => (request_id.clone(), row[18].clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        let outcome_of = |index: usize| outcomes[&records[index].request_id].clone();
        assert_eq!(outcome_of(0), Field::Str("failed".into()));
        assert_eq!(outcome_of(1), Field::Str("unknown".into()));
        assert_eq!(outcome_of(2), Field::Str("applied".into()));
        assert_eq!(outcome_of(3), Field::Str("unknown".into()));
        assert!((4..12).all(|index| outcome_of(index) == Field::Str("applied".into())));
        assert_eq!((summary.days[0].rows_written, summary.days[0].counter_updates), (12, 2));
    }

    #[tokio::test]
    async fn the_window_reaches_past_midnight_for_late_lines_but_not_past_now() {
        let logs = Arc::new(PagedLogs::new(Vec::new(), 10));
        let mut two_groups = ExportSettings { read_slices: 1, ..settings() };
        two_groups.log_groups.push("/aws/lambda/other".into());
        let exporter = Exporter::new(logs.clone(), Arc::new(MemoryStore::default()), two_groups);
        exporter.export(&ExportRequest::Day(day("2026-11-22")), at(NOW)).await.unwrap();
        exporter.export(&ExportRequest::Today, at(NOW)).await.unwrap();
        let all = logs.queries.lock().unwrap().clone();
        let (mut queries, counter_queries): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|query| query.filter_pattern == USAGE_FILTER_PATTERN);
        queries.sort_by_key(|query| (query.start_ms, query.log_group.clone()));
        assert_eq!(queries.len(), 4, "each group, each day");
        let mut counter_windows: Vec<_> = counter_queries
            .iter()
            .map(|query| {
                assert_eq!(query.filter_pattern, COUNTER_UPDATE_FILTER_PATTERN);
                (query.start_ms, query.log_group.clone(), query.end_ms)
            })
            .collect();
        counter_windows.sort();
        let windows: Vec<_> = queries.iter().map(|query| (query.start_ms, query.log_group.clone(), query.end_ms)).collect();
        assert_eq!(counter_windows, windows, "the counter updates of the same windows, first");
        assert_eq!(queries[0].start_ms, at("2026-11-21T23:55:00Z").timestamp_millis());
        assert_eq!(queries[0].end_ms, at("2026-11-23T00:19:59.999Z").timestamp_millis());
        assert_eq!(queries[0].log_group, "/aws/lambda/bedrock-metering-chat");
        assert_eq!(queries[1].log_group, "/aws/lambda/other");
        assert_eq!(queries[2].end_ms, at(NOW).timestamp_millis());
        assert!(queries.iter().all(|query| query.filter_pattern == USAGE_FILTER_PATTERN));
    }

    #[test]
    fn slices_cover_the_window_once() {
        let groups = vec!["a".to_owned()];
        for (start, end, slices) in [(0, 99, 4), (0, 100, 3), (5, 6, 4), (1_000, 87_001_000, 4)] {
            let queries = slice_queries(&groups, start, end, slices, USAGE_FILTER_PATTERN);
            assert_eq!(queries.first().unwrap().start_ms, start);
            assert_eq!(queries.last().unwrap().end_ms, end);
            for pair in queries.windows(2) {
                assert_eq!(pair[1].start_ms, pair[0].end_ms + 1, "{start}..{end} in {slices}");
            }
        }
    }

    #[test]
    fn each_group_gets_every_slice_and_no_slice_is_empty() {
        let groups = vec!["a".to_owned(), "b".to_owned()];
        let windows = |start, end, slices| -> Vec<(String, i64, i64)> {
            slice_queries(&groups, start, end, slices, USAGE_FILTER_PATTERN)
                .into_iter()
                .map(|query| (query.log_group, query.start_ms, query.end_ms))
                .collect()
        };
        let both = |bounds: &[(i64, i64)]| -> Vec<(String, i64, i64)> {
            ["a", "b"].iter().flat_map(|group| bounds.iter().map(move |&(from, to)| (group.to_string(), from, to))).collect()
        };
        assert_eq!(windows(0, 99, 4), both(&[(0, 24), (25, 49), (50, 74), (75, 99)]));
        // More slices than instants: only the slices that hold an instant are read
        assert_eq!(windows(5, 6, 4), both(&[(5, 5), (6, 6)]));
        // No slices asked for: the window in one piece
        assert_eq!(windows(10, 20, 0), both(&[(10, 20)]));
    }

    #[tokio::test]
    async fn a_day_read_in_slices_has_every_line_once() {
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 1_000, 8).records().collect();
        let store = Arc::new(MemoryStore::default());
        let sliced = ExportSettings { read_slices: 7, rows_per_row_group: 100, ..settings() };
        let summary = exporter(PagedLogs::new(events_of(&records), 33), store.clone(), sliced)
            .export(&ExportRequest::Day(day("2026-11-23")), at(NOW))
            .await
            .unwrap();
        assert_eq!((summary.events_read, summary.rows_written), (1_000, 1_000));
        let rows = rows_of(store.object("logs/year=2026/month=11/day=23/part-20261124T090000000Z-00000.parquet"));
        let ids: std::collections::HashSet<String> =
            rows.iter().map(|row| if let Field::Str(id) = &row[5] { id.clone() } else { panic!() }).collect();
        assert_eq!(ids.len(), 1_000);
    }

    #[tokio::test]
    async fn a_rerun_replaces_the_day_and_deletes_only_stale_numbered_parts() {
        // GIVEN the 23rd exported as 3 objects of 10 rows (+ a file somebody else put there)
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 30, 2).records().collect();
        let store = Arc::new(MemoryStore::default());
        let small_objects = ExportSettings { max_rows_per_object: 10, rows_per_row_group: 1_000, ..settings() };
        let request = ExportRequest::Day(day("2026-11-23"));
        let first = exporter(PagedLogs::new(events_of(&records), 8), store.clone(), small_objects)
            .export(&request, at(NOW))
            .await
            .unwrap();
        assert_eq!(first.objects, 3);
        let foreign = "logs/year=2026/month=11/day=23/README.txt".to_owned();
        store.objects.lock().unwrap().insert(foreign.clone(), b"keep me".to_vec());
        // WHEN it is exported again into one object
        let second =
            exporter(PagedLogs::new(events_of(&records), 8), store.clone(), settings()).export(&request, at(NOW)).await.unwrap();
        // THEN part-00000 holds all 30 rows, parts 1 and 2 are gone, the foreign file stays
        assert_eq!(second.days[0].stale_objects_deleted, 2);
        assert_eq!(
            store.keys(),
            vec![
                foreign,
                "logs/year=2026/month=11/day=23/_SUCCESS".to_owned(),
                "logs/year=2026/month=11/day=23/part-20261124T090000000Z-00000.parquet".to_owned()
            ]
        );
        assert_eq!(rows_of(store.object("logs/year=2026/month=11/day=23/part-20261124T090000000Z-00000.parquet")).len(), 30);
    }

    #[tokio::test]
    async fn an_empty_day_writes_nothing_deletes_nothing_and_says_so() {
        let store = Arc::new(MemoryStore::default());
        let earlier = "logs/year=2026/month=11/day=01/part-00000.parquet".to_owned();
        store.objects.lock().unwrap().insert(earlier.clone(), b"an earlier export".to_vec());
        let summary = exporter(PagedLogs::new(Vec::new(), 10), store.clone(), settings())
            .export(&ExportRequest::Day(day("2026-11-01")), at(NOW))
            .await
            .unwrap();
        assert_eq!((summary.rows_written, summary.objects), (0, 0));
        assert!(summary.days[0].note.as_deref().unwrap().contains("no usage lines"));
        assert_eq!(store.keys(), vec![earlier]);
    }

    #[tokio::test]
    async fn a_large_day_goes_up_in_multipart_parts_and_reads_back_whole() {
        // GIVEN parts of 64 KiB (S3 would want 5 MiB; the fake checks only the order) and 2,000 rows
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 2_000, 3).records().collect();
        let store = Arc::new(MemoryStore { min_part_bytes: 64 * 1024, ..MemoryStore::default() });
        let small_parts = ExportSettings { rows_per_row_group: 250, part_bytes: 64 * 1024, ..settings() };
        // WHEN the day is exported
        let summary = exporter(PagedLogs::new(events_of(&records), 500), store.clone(), small_parts)
            .export(&ExportRequest::Day(day("2026-11-23")), at(NOW))
            .await
            .unwrap();
        // THEN it was a multipart upload (not a single PutObject) and the object reads back whole
        let puts = store.puts.lock().unwrap().clone();
        assert_eq!(puts, vec!["logs/year=2026/month=11/day=23/_SUCCESS"], "the data multipart, not PutObject");
        assert_eq!(store.open_uploads(), 0);
        let object = store.object("logs/year=2026/month=11/day=23/part-20261124T090000000Z-00000.parquet");
        assert_eq!(summary.bytes, object.len() as u64);
        let rows = rows_of(object);
        assert_eq!(rows.len(), 2_000);
        assert_eq!(rows[1_999][5], Field::Str(records[1_999].request_id.clone()));
    }

    #[tokio::test]
    async fn a_failure_midway_aborts_the_upload_and_names_the_cause() {
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 2_000, 4).records().collect();
        let store = Arc::new(MemoryStore { min_part_bytes: 0, fail_part_from: Some(2), ..MemoryStore::default() });
        let small_parts = ExportSettings { rows_per_row_group: 250, part_bytes: 16 * 1024, ..settings() };
        let error = exporter(PagedLogs::new(events_of(&records), 500), store.clone(), small_parts)
            .export(&ExportRequest::Day(day("2026-11-23")), at(NOW))
            .await
            .unwrap_err();
        assert!(matches!(error, ExportError::WriteObject { .. }), "{error:?}");
        assert!(error.to_string().contains("part-20261124T090000000Z-00000.parquet"), "{error}");
        assert_eq!(store.aborted.lock().unwrap().len(), 1);
        assert_eq!((store.open_uploads(), store.keys().len()), (0, 0), "no objects, no manifest");

        let mut logs = PagedLogs::new(events_of(&records), 500);
        logs.failing_group = Some(GROUP.to_owned());
        let error = exporter(logs, Arc::new(MemoryStore::default()), settings())
            .export(&ExportRequest::Day(day("2026-11-23")), at(NOW))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("AccessDeniedException"), "{error}");
        assert_eq!(error.kind(), "ReadLogsFailed");
    }

    #[tokio::test]
    async fn a_bad_payload_is_refused_before_anything_is_read() {
        let logs = Arc::new(PagedLogs::new(Vec::new(), 10));
        let exporter = Exporter::new(logs.clone(), Arc::new(MemoryStore::default()), settings());
        let error = exporter.handle(serde_json::json!({"date": "tomorrow"})).await.unwrap_err();
        assert_eq!(error.kind(), "BadRequest");
        assert!(logs.queries.lock().unwrap().is_empty());
    }

    #[test]
    fn only_parquet_objects_right_in_the_partition_are_the_days() {
        let partition = "logs/year=2026/month=11/day=23/";
        assert!(is_parquet_of_partition(partition, &object_key(partition, "20261124T090000000Z", 12)));
        assert!(is_parquet_of_partition(partition, &format!("{partition}usage-stream-1-2026-11-23-10-00.parquet")));
        for other in [
            "logs/year=2026/month=11/day=23/_SUCCESS",
            "logs/year=2026/month=11/day=23/x.txt",
            "logs/year=2026/month=11/day=23/sub/part-1.parquet",
            "logs/year=2026/month=11/day=24/part-1.parquet",
        ] {
            assert!(!is_parquet_of_partition(partition, other), "{other}");
        }
    }

    #[tokio::test]
    async fn a_reexport_with_fewer_rows_is_refused_unless_allowed() {
        // GIVEN the 23rd exported whole: 30 rows, and its manifest
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 30, 2).records().collect();
        let store = Arc::new(MemoryStore::default());
        let request = ExportRequest::Day(day("2026-11-23"));
        exporter(PagedLogs::new(events_of(&records), 8), store.clone(), settings()).export(&request, at(NOW)).await.unwrap();
        let manifest: Manifest = serde_json::from_slice(&store.object("logs/year=2026/month=11/day=23/_SUCCESS")).unwrap();
        assert_eq!((manifest.rows, manifest.complete, manifest.objects.len()), (30, true, 1));
        let before = store.keys();
        // WHEN part of the log is gone (18 lines left) and the day is exported again, later
        let later = at("2026-11-25T09:00:00Z");
        let error = exporter(PagedLogs::new(events_of(&records[..18]), 8), store.clone(), settings())
            .export(&request, later)
            .await
            .unwrap_err();
        // THEN it is refused, names both counts, and the earlier export is untouched
        assert_eq!(error.kind(), "WouldShrink");
        assert!(error.to_string().contains("has 30 rows, the log now gives 18"), "{error}");
        assert_eq!(store.keys(), before);
        assert_eq!(rows_of(store.object(&before[1])).len(), 30);
        // WHEN it is asked again with allow_shrink THEN the day is replaced by the 18 rows
        let summary = exporter(PagedLogs::new(events_of(&records[..18]), 8), store.clone(), settings())
            .export_with(&request, ExportOptions { allow_shrink: true }, later)
            .await
            .unwrap();
        assert_eq!((summary.rows_written, summary.days[0].stale_objects_deleted), (18, 1));
        let manifest: Manifest = serde_json::from_slice(&store.object("logs/year=2026/month=11/day=23/_SUCCESS")).unwrap();
        assert_eq!(manifest.rows, 18);
        // AND an empty log is refused the same way
        let error = exporter(PagedLogs::new(Vec::new(), 8), store.clone(), settings()).export(&request, later).await.unwrap_err();
        assert_eq!(error.kind(), "WouldShrink");
    }

    #[tokio::test]
    async fn too_many_malformed_lines_fail_the_day_after_writing_its_rows() {
        // GIVEN 20 good lines and 3 malformed ones (a new request_type), 2 allowed
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 20, 5).records().collect();
        let mut events = events_of(&records);
        for record in &records[..3] {
            let line = record
                .to_line()
                .replace(r#""request_type":"bedrock""#, r#""request_type":"batch""#)
                .replace(r#""request_type":"anthropic""#, r#""request_type":"batch""#);
            events.push((at(&record.timestamp).timestamp_millis(), line));
        }
        let store = Arc::new(MemoryStore::default());
        let strict = ExportSettings { max_malformed_lines: 2, ..settings() };
        let error = exporter(PagedLogs::new(events.clone(), 8), store.clone(), strict)
            .export(&ExportRequest::Day(day("2026-11-23")), at(NOW))
            .await
            .unwrap_err();
        // THEN the run fails with the count and samples, the rows are there, the day has no manifest
        let ExportError::TooManyMalformed { malformed, rows, samples, .. } = &error else { panic!("{error:?}") };
        assert_eq!((*malformed, *rows, samples.len()), (3, 20, 3));
        assert!(samples[0].contains("batch"), "{samples:?}");
        let keys = store.keys();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(!keys[0].ends_with("_SUCCESS"));
        // AND at the default threshold the same day is complete, the malformed lines counted and sampled
        let summary = exporter(PagedLogs::new(events, 8), store.clone(), settings())
            .export(&ExportRequest::Day(day("2026-11-23")), at(NOW))
            .await
            .unwrap();
        assert_eq!((summary.days[0].skipped_malformed, summary.days[0].malformed_samples.len()), (3, 3));
        assert!(summary.days[0].manifest.is_some());
    }

    #[tokio::test]
    async fn the_schedule_exports_yesterday_and_every_missed_day() {
        // GIVEN lines on the 20th..23rd and a complete export of the 20th only
        let store = Arc::new(MemoryStore::default());
        let mut events = Vec::new();
        for of in ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"] {
            events.extend(events_of(&SyntheticDay::new(of, 5, 1).records().collect::<Vec<_>>()));
        }
        exporter(PagedLogs::new(events.clone(), 50), store.clone(), settings())
            .export(&ExportRequest::Day(day("2026-11-20")), at("2026-11-21T09:00:00Z"))
            .await
            .unwrap();
        // WHEN the schedule fires on the 24th
        let fired = at("2026-11-24T01:00:00Z");
        let summary = exporter(PagedLogs::new(events, 50), store.clone(), settings())
            .export(&ExportRequest::Scheduled { fired_at: fired }, fired)
            .await
            .unwrap();
        // THEN the 21st, 22nd and 23rd are exported, each complete with its manifest
        let days: Vec<&str> = summary.days.iter().map(|d| d.day.as_str()).collect();
        assert_eq!(days, ["2026-11-21", "2026-11-22", "2026-11-23"]);
        assert!(summary.days.iter().all(|d| d.complete && d.rows_written == 5 && d.manifest.is_some()));
    }

    #[tokio::test]
    async fn today_so_far_is_not_a_complete_day() {
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-24", 5, 1).records().collect();
        let summary = exporter(PagedLogs::new(events_of(&records), 8), Arc::new(MemoryStore::default()), settings())
            .export(&ExportRequest::Today, at("2026-11-24T23:59:59Z"))
            .await
            .unwrap();
        assert!(!summary.days[0].complete);
    }
}
