//! The export of one UTC day, in bounded memory however large the day:
//! pages of log messages (the next page fetched while this one is transformed) -> rows -> row groups of
//! [`ExportSettings::rows_per_row_group`] -> Parquet bytes -> multipart upload parts of
//! [`ExportSettings::part_bytes`]. Memory holds one row group, one part and two pages, never the day.
//!
//! Objects are `<prefix>year=YYYY/month=MM/day=DD/part-NNNNN.parquet`, numbered from 0 in the order they are
//! written, so a re-run of a day overwrites its own objects, then deletes the higher-numbered parts an
//! earlier, larger run left: a day is never exported twice over. A day without a single usage line writes
//! nothing and deletes nothing (its logs may simply have expired).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::ExportConfig;
use crate::error::{BoxError, ExportError};
use crate::line::{classify, LineOutcome};
use crate::parquet_file::{writer_properties, ParquetFileWriter, RowBatch, DEFAULT_ROWS_PER_ROW_GROUP};
use crate::ports::{LogPage, LogQuery, LogSource, ObjectStore, ObjectUpload, USAGE_FILTER_PATTERN};
use crate::request::ExportRequest;
use crate::summary::{DaySummary, ExportSummary};

/// Pages fetched ahead of the transform, per query (each at most 1 MB / 10,000 events).
const PAGES_AHEAD: usize = 2;
/// Malformed lines quoted in the log, per day (the count is in the summary).
const MALFORMED_SAMPLES: u64 = 5;

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
        }
    }
}

/// `<prefix>year=YYYY/month=MM/day=DD/`
pub fn partition_prefix(prefix: &str, day: NaiveDate) -> String {
    format!("{prefix}{}", day.format("year=%Y/month=%m/day=%d/"))
}

pub fn object_key(partition: &str, index: usize) -> String {
    format!("{partition}part-{index:05}.parquet")
}

/// Is `key` (under `partition`) one of the export's numbered objects? Nothing else is ever deleted.
fn is_export_object(partition: &str, key: &str) -> bool {
    key.strip_prefix(partition)
        .and_then(|name| name.strip_prefix("part-"))
        .and_then(|name| name.strip_suffix(".parquet"))
        .is_some_and(|number| number.len() == 5 && number.bytes().all(|b| b.is_ascii_digit()))
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

    /// The Lambda handler: payload in, summary out.
    pub async fn handle(&self, payload: Value) -> Result<ExportSummary, ExportError> {
        let request = ExportRequest::from_payload(&payload).inspect_err(|error| {
            tracing::error!(%error, %payload, "refused the export request");
        })?;
        self.export(&request, Utc::now()).await
    }

    /// Exports every day of `request`, oldest first; stops at the first day that fails.
    pub async fn export(&self, request: &ExportRequest, now: DateTime<Utc>) -> Result<ExportSummary, ExportError> {
        let started = Instant::now();
        let days = request.days(now)?;
        let mut summaries = Vec::with_capacity(days.len());
        for day in days {
            let summary = self.export_day(day, now).await.inspect_err(|error| {
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

    pub async fn export_day(&self, day: NaiveDate, now: DateTime<Utc>) -> Result<DaySummary, ExportError> {
        let (start_ms, end_ms) = read_window(day, now, &self.settings);
        let mut run = DayRun::new(self, day);
        run.summary.read_from = rfc3339(start_ms);
        run.summary.read_to = rfc3339(end_ms);
        let queries = slice_queries(&self.settings.log_groups, start_ms, end_ms, self.settings.read_slices);
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

/// One query per log group and time slice: the slices split `[start_ms, end_ms]` (both included) into
/// `slices` contiguous windows that do not overlap, so every event is read exactly once.
pub fn slice_queries(log_groups: &[String], start_ms: i64, end_ms: i64, slices: u32) -> Vec<LogQuery> {
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
                    filter_pattern: USAGE_FILTER_PATTERN.to_owned(),
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
}

impl<'a> DayRun<'a> {
    fn new(exporter: &'a Exporter, day: NaiveDate) -> Self {
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
        }
    }

    async fn add_page(&mut self, page: LogPage) -> Result<(), ExportError> {
        for message in page.messages {
            self.summary.events_read += 1;
            match classify(&message) {
                LineOutcome::Usage { day, record } if day == self.day => {
                    self.batch.push(record);
                    if self.batch.len() >= self.group_rows {
                        self.write_row_group().await?;
                    }
                }
                LineOutcome::Usage { .. } => self.summary.outside_day += 1,
                LineOutcome::NotUsage => self.summary.skipped_not_usage += 1,
                LineOutcome::Malformed(reason) => {
                    self.summary.skipped_malformed += 1;
                    if self.summary.skipped_malformed <= MALFORMED_SAMPLES {
                        let sample: String = message.chars().take(300).collect();
                        tracing::warn!(day = %self.day, %reason, %sample, "skipped a malformed usage line");
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_row_group(&mut self) -> Result<(), ExportError> {
        let settings = &self.exporter.settings;
        if self.open.is_none() {
            let key = object_key(&self.partition, self.written_keys.len());
            let writer = ParquetFileWriter::new(writer_properties(self.group_rows))?;
            self.open = Some(OpenObject { writer, upload: ObjectUpload::new(self.exporter.store.as_ref(), key) });
        }
        let Some(open) = self.open.as_mut() else { return Ok(()) };
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
        let Some(OpenObject { writer, upload }) = self.open.take() else { return Ok(()) };
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
        if self.written_keys.is_empty() {
            self.summary.note = Some(format!(
                "no usage lines for {}: nothing written, objects of an earlier export (if any) kept",
                self.day
            ));
            return Ok(self.summary);
        }
        self.delete_stale_objects().await?;
        Ok(self.summary)
    }

    /// Deletes the numbered objects of the partition this run did not write (an earlier run had more).
    async fn delete_stale_objects(&mut self) -> Result<(), ExportError> {
        let store = self.exporter.store.as_ref();
        let clean_up_error = |source| ExportError::CleanUp {
            bucket: store.bucket().to_owned(),
            prefix: self.partition.clone(),
            source,
        };
        let keys = store.list_keys(&self.partition).await.map_err(clean_up_error)?;
        let stale: Vec<String> = keys
            .into_iter()
            .filter(|key| is_export_object(&self.partition, key) && !self.written_keys.contains(key))
            .collect();
        if !stale.is_empty() {
            store.delete_keys(&stale).await.map_err(clean_up_error)?;
            tracing::info!(day = %self.day, deleted = ?stale, "deleted objects of an earlier, larger export");
        }
        self.summary.stale_objects_deleted = stale.len() as u64;
        Ok(())
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
        let config = ExportConfig { log_groups: vec![GROUP.into()], bucket: "memory".into(), prefix: "logs/".into() };
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
        let key = "logs/year=2026/month=11/day=23/part-00000.parquet";
        assert_eq!(store.keys(), vec![key]);
        let day_summary = &summary.days[0];
        assert_eq!(
            (day_summary.events_read, day_summary.rows_written, day_summary.skipped_not_usage),
            (38, 35, 1)
        );
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
    }

    #[tokio::test]
    async fn the_window_reaches_past_midnight_for_late_lines_but_not_past_now() {
        let logs = Arc::new(PagedLogs::new(Vec::new(), 10));
        let mut two_groups = ExportSettings { read_slices: 1, ..settings() };
        two_groups.log_groups.push("/aws/lambda/other".into());
        let exporter = Exporter::new(logs.clone(), Arc::new(MemoryStore::default()), two_groups);
        exporter.export(&ExportRequest::Day(day("2026-11-22")), at(NOW)).await.unwrap();
        exporter.export(&ExportRequest::Today, at(NOW)).await.unwrap();
        let mut queries = logs.queries.lock().unwrap().clone();
        queries.sort_by_key(|query| (query.start_ms, query.log_group.clone()));
        assert_eq!(queries.len(), 4, "each group, each day");
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
            let queries = slice_queries(&groups, start, end, slices);
            assert_eq!(queries.first().unwrap().start_ms, start);
            assert_eq!(queries.last().unwrap().end_ms, end);
            for pair in queries.windows(2) {
                assert_eq!(pair[1].start_ms, pair[0].end_ms + 1, "{start}..{end} in {slices}");
            }
        }
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
        let rows = rows_of(store.object("logs/year=2026/month=11/day=23/part-00000.parquet"));
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
        let second = exporter(PagedLogs::new(events_of(&records), 8), store.clone(), settings())
            .export(&request, at(NOW))
            .await
            .unwrap();
        // THEN part-00000 holds all 30 rows, parts 1 and 2 are gone, the foreign file stays
        assert_eq!(second.days[0].stale_objects_deleted, 2);
        assert_eq!(
            store.keys(),
            vec![foreign, "logs/year=2026/month=11/day=23/part-00000.parquet".to_owned()]
        );
        assert_eq!(rows_of(store.object("logs/year=2026/month=11/day=23/part-00000.parquet")).len(), 30);
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
        assert!(store.puts.lock().unwrap().is_empty(), "multipart, not PutObject");
        assert_eq!(store.open_uploads(), 0);
        let object = store.object("logs/year=2026/month=11/day=23/part-00000.parquet");
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
        assert!(error.to_string().contains("part-00000.parquet"), "{error}");
        assert_eq!(store.aborted.lock().unwrap().len(), 1);
        assert_eq!((store.open_uploads(), store.keys().len()), (0, 0));

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
    fn only_numbered_parts_count_as_export_objects() {
        let partition = "logs/year=2026/month=11/day=23/";
        assert!(is_export_object(partition, &object_key(partition, 12)));
        for other in ["logs/year=2026/month=11/day=23/part-1.parquet", "logs/year=2026/month=11/day=23/x.parquet"] {
            assert!(!is_export_object(partition, other), "{other}");
        }
    }
}
