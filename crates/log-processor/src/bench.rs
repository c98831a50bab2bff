//! Benchmarks of the binary itself (`log-processor bench-transform`, `log-processor bench-day`), run by
//! scripts/bench-export on a release build.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use crate::config::ExportConfig;
use crate::error::{BoxError, ExportError};
use crate::export::{ExportSettings, Exporter};
use crate::line::{classify, CounterOutcome, LineOutcome};
use crate::parquet_file::{writer_properties, ParquetFileWriter, RowBatch, DEFAULT_ROWS_PER_ROW_GROUP};
use crate::ports::{LogPage, LogQuery, LogSource, ObjectStore, USAGE_FILTER_PATTERN};
use crate::request::ExportRequest;
use crate::row_price::RowPricer;
use crate::synthetic::SyntheticDay;
use metering_core::pricing::PricingTable;

const BENCH_DAY: &str = "2026-11-23";

/// JSON line -> row -> Parquet row groups, on the calling thread. The lines are generated before the clock
/// starts; the Parquet bytes are drained and counted as the export drains them into upload parts.
pub fn transform(lines: u64) -> Result<Value, ExportError> {
    let day = SyntheticDay::new(BENCH_DAY, lines, 42);
    let floor = day.entropy_bits_per_row();
    let input: Vec<String> = day.lines().collect();
    let json_bytes: usize = input.iter().map(|line| line.len() + 1).sum();
    let mut pricer = RowPricer::new(PricingTable::builtin());
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    let mut writer = ParquetFileWriter::new(writer_properties(DEFAULT_ROWS_PER_ROW_GROUP))?;
    let mut batch = RowBatch::with_capacity(DEFAULT_ROWS_PER_ROW_GROUP);
    // The drained parts are kept (not copied) to read the file's column sizes once the clock has stopped.
    let mut parts = Vec::new();
    for line in &input {
        if let LineOutcome::Usage { line, .. } = classify(line) {
            batch.push(&line, &mut pricer, Some(CounterOutcome::Applied));
            if batch.len() >= DEFAULT_ROWS_PER_ROW_GROUP {
                writer.write_row_group(&mut batch)?;
                parts.push(writer.take_bytes()?);
            }
        }
    }
    writer.write_row_group(&mut batch)?;
    let rows = writer.rows();
    parts.push(writer.finish()?);
    let seconds = started.elapsed().as_secs_f64();
    // On a busy machine the wall clock counts other processes' turns; this thread's own CPU time does not.
    let cpu_seconds = thread_cpu_seconds().zip(cpu_started).map(|(end, start)| end - start);
    let file: Vec<u8> = parts.concat();
    let parquet_bytes = file.len();
    Ok(json!({
        "lines": lines,
        "rows": rows,
        "seconds": round3(seconds),
        "events_per_second": (rows as f64 / seconds.max(1e-9)).round(),
        "cpu_seconds": cpu_seconds.map(round3),
        "events_per_cpu_second": cpu_seconds.map(|cpu| (rows as f64 / cpu.max(1e-9)).round()),
        "json_bytes": json_bytes,
        "parquet_bytes": parquet_bytes,
        "parquet_bytes_per_row": (parquet_bytes as f64 / rows.max(1) as f64 * 10.0).round() / 10.0,
        "column_bytes_per_row": column_bytes_per_row(file, rows)?,
        // What no lossless encoding of these rows can beat on average (see SyntheticDay::entropy_bits_per_row).
        "entropy_floor_bytes_per_row": (floor.bytes_per_row() * 100.0).round() / 100.0,
        "request_id_entropy_bytes_per_row": (floor.request_id / 8.0 * 100.0).round() / 100.0,
    }))
}

/// Compressed bytes per row of each column (all row groups), from the file's own metadata.
fn column_bytes_per_row(file: Vec<u8>, rows: u64) -> Result<Value, ExportError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes::Bytes::from(file))?;
    let mut sizes = serde_json::Map::new();
    for group in reader.metadata().row_groups() {
        for column in group.columns() {
            let name = column.column_path().string();
            let size = sizes.get(&name).and_then(Value::as_i64).unwrap_or(0);
            sizes.insert(name, json!(size + column.compressed_size()));
        }
    }
    for size in sizes.values_mut() {
        let bytes = size.as_i64().unwrap_or(0) as f64;
        *size = json!((bytes / rows.max(1) as f64 * 100.0).round() / 100.0);
    }
    Ok(Value::Object(sizes))
}

/// The whole day loop of the export (pages -> rows -> row groups -> multipart parts) over `events`
/// synthetic lines generated page by page, into a store that only counts bytes: the working set of a day
/// of any size, without the network. Reports the process's peak resident memory.
pub async fn day(events: u64) -> Result<Value, ExportError> {
    let day = NaiveDate::parse_from_str(BENCH_DAY, "%Y-%m-%d").unwrap_or_default();
    let config = ExportConfig::new(vec!["bench".into()], "bench", "logs/");
    let store = Arc::new(CountingStore::default());
    let exporter = Exporter::new(
        Arc::new(SyntheticLogs { day: SyntheticDay::of(day, events, 42), events, page_size: 10_000 }),
        store.clone(),
        // One slice: the synthetic source ignores the query window.
        ExportSettings { read_slices: 1, ..ExportSettings::from_config(&config) },
    );
    let now = Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap_or_default()) + Duration::days(2);
    let started = Instant::now();
    let summary = exporter.export(&ExportRequest::Day(day), now).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "events": events,
        "rows": summary.rows_written,
        "seconds": round3(seconds),
        "events_per_second": (summary.rows_written as f64 / seconds.max(1e-9)).round(),
        "parquet_bytes": summary.bytes,
        "objects": summary.objects,
        "parts": store.parts.load(Ordering::Relaxed),
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

fn round3(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The CPU time of the calling thread so far (Linux: the first field of /proc/thread-self/schedstat, in ns).
fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(nanoseconds as f64 / 1e9)
}

/// VmHWM of /proc/self/status (Linux), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Pages of synthetic usage lines; the page token is the index of the next line. Filtered as CloudWatch Logs
/// filters server-side: the day holds usage lines only, so any other pattern (the `counter_update` read)
/// finds nothing.
struct SyntheticLogs {
    day: SyntheticDay,
    events: u64,
    page_size: u64,
}

#[async_trait]
impl LogSource for SyntheticLogs {
    async fn page(&self, query: &LogQuery, next_token: Option<String>) -> Result<LogPage, BoxError> {
        if query.filter_pattern != USAGE_FILTER_PATTERN {
            return Ok(LogPage::default());
        }
        let start: u64 = next_token.as_deref().unwrap_or("0").parse()?;
        let end = (start + self.page_size).min(self.events);
        Ok(LogPage {
            messages: (start..end).map(|index| self.day.record(index).to_line()).collect(),
            next_token: (end < self.events).then(|| end.to_string()),
        })
    }
}

/// Takes every byte, keeps none.
#[derive(Default)]
struct CountingStore {
    bytes: AtomicU64,
    parts: AtomicU64,
}

#[async_trait]
impl ObjectStore for CountingStore {
    fn bucket(&self) -> &'static str {
        "bench"
    }
    async fn put_object(&self, _key: &str, body: Vec<u8>) -> Result<(), BoxError> {
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    async fn get_object(&self, _key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        Ok(None)
    }
    async fn create_multipart_upload(&self, _key: &str) -> Result<String, BoxError> {
        Ok("bench".into())
    }
    async fn upload_part(&self, _key: &str, _id: &str, part: i32, body: Vec<u8>) -> Result<String, BoxError> {
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        self.parts.fetch_add(1, Ordering::Relaxed);
        Ok(format!("etag-{part}"))
    }
    async fn complete_multipart_upload(&self, _: &str, _: &str, _: Vec<(i32, String)>) -> Result<(), BoxError> {
        Ok(())
    }
    async fn abort_multipart_upload(&self, _: &str, _: &str) -> Result<(), BoxError> {
        Ok(())
    }
    async fn list_keys(&self, _prefix: &str) -> Result<Vec<String>, BoxError> {
        Ok(Vec::new())
    }
    async fn delete_keys(&self, _keys: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transform_reports_a_floor_its_own_file_does_not_beat() {
        let report = transform(20_000).unwrap();
        let floor = report["entropy_floor_bytes_per_row"].as_f64().unwrap();
        let actual = report["parquet_bytes"].as_f64().unwrap() / 20_000.0;
        assert_eq!(report["request_id_entropy_bytes_per_row"].as_f64(), Some(15.0));
        // A day of 20,000 lines has a step of 4.32 s: its timestamps hold more bits than the benchmark day's.
        assert!((21.0..24.0).contains(&floor), "{report}");
        assert!(actual > floor, "{actual} B/row below the entropy floor {floor}: {report}");
    }
}
