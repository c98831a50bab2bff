//! The `_SUCCESS` manifest of a day: written last, after every object of the day, so its presence says the
//! day's export is whole. It records what the export holds (rows, objects, sources, time range, price table)
//! and is what the shrink guard, the scheduled catch-up and the 03:00 UTC check read.
//!
//! Athena skips objects whose name starts with `_`, and the local DuckDB view reads `*.parquet` only: the
//! manifest sits in the partition without becoming a row.

use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::{BoxError, ExportError};
use crate::export::partition_prefix;
use crate::ports::ObjectStore;

pub const MANIFEST_NAME: &str = "_SUCCESS";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub day: String,
    pub rows: u64,
    pub objects: Vec<String>,
    pub bytes: u64,
    /// The log groups read.
    pub sources: Vec<String>,
    /// The window read, RFC 3339.
    pub read_from: String,
    pub read_to: String,
    /// `false` for a day exported before it ended ("today so far"): not a complete day yet.
    pub complete: bool,
    /// The price table that priced the rows (`cost_usd`).
    pub price_version: String,
    pub skipped_malformed: u64,
    pub exported_at: String,
}

pub fn manifest_key(prefix: &str, day: NaiveDate) -> String {
    format!("{}{MANIFEST_NAME}", partition_prefix(prefix, day))
}

/// The manifest of `day`, if there is one. An unreadable manifest counts as none (and is logged): the day is
/// then exported again, which is always safe.
pub async fn read_manifest(store: &dyn ObjectStore, prefix: &str, day: NaiveDate) -> Result<Option<Manifest>, ExportError> {
    let key = manifest_key(prefix, day);
    let body = store.get_object(&key).await.map_err(|source| read_error(store, &key, source))?;
    Ok(body.and_then(|body| match serde_json::from_slice::<Manifest>(&body) {
        Ok(manifest) => Some(manifest),
        Err(error) => {
            tracing::warn!(%key, %error, "unreadable manifest: the day counts as not exported");
            None
        }
    }))
}

fn read_error(store: &dyn ObjectStore, key: &str, source: BoxError) -> ExportError {
    ExportError::CleanUp { bucket: store.bucket().to_owned(), prefix: key.to_owned(), source }
}

/// The days the scheduled run exports: `last_day` (yesterday) and every day before it back to the last day
/// with a complete manifest, at most `max_days` in all (the log's retention: older lines are gone). Oldest
/// first.
pub async fn days_to_catch_up(
    store: &dyn ObjectStore,
    prefix: &str,
    last_day: NaiveDate,
    max_days: u32,
) -> Result<Vec<NaiveDate>, ExportError> {
    let mut days = vec![last_day];
    for back in 1..u64::from(max_days.max(1)) {
        let Some(day) = last_day.checked_sub_days(Days::new(back)) else {
            break;
        };
        if read_manifest(store, prefix, day).await?.is_some_and(|manifest| manifest.complete) {
            break;
        }
        days.push(day);
    }
    days.reverse();
    Ok(days)
}

/// The 03:00 UTC check: is there a complete export of `day`?
pub async fn check_complete(store: &dyn ObjectStore, prefix: &str, day: NaiveDate) -> Result<Manifest, ExportError> {
    let incomplete = |reason: String| ExportError::IncompleteExport { day: day.to_string(), reason };
    match read_manifest(store, prefix, day).await? {
        Some(manifest) if manifest.complete => Ok(manifest),
        Some(_) => Err(incomplete("only a partial export (made before the day ended)".to_owned())),
        None => Err(incomplete(format!("no {}", manifest_key(prefix, day)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::fakes::MemoryStore;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn manifest(of: &str, complete: bool) -> Vec<u8> {
        serde_json::to_vec(&Manifest {
            day: of.to_owned(),
            rows: 1,
            objects: Vec::new(),
            bytes: 1,
            sources: Vec::new(),
            read_from: String::new(),
            read_to: String::new(),
            complete,
            price_version: String::new(),
            skipped_malformed: 0,
            exported_at: String::new(),
        })
        .unwrap()
    }

    fn put(store: &MemoryStore, of: &str, body: Vec<u8>) {
        store.objects.lock().unwrap().insert(manifest_key("logs/", day(of)), body);
    }

    #[tokio::test]
    async fn the_schedule_catches_up_every_day_since_the_last_complete_manifest() {
        // GIVEN complete exports up to the 18th, a partial one of the 20th and an unreadable one of the 21st
        let store = MemoryStore::default();
        put(&store, "2026-11-18", manifest("2026-11-18", true));
        put(&store, "2026-11-20", manifest("2026-11-20", false));
        put(&store, "2026-11-21", b"{".to_vec());
        // WHEN the schedule of the 23rd asks what to export
        let days = days_to_catch_up(&store, "logs/", day("2026-11-22"), 30).await.unwrap();
        // THEN every day after the 18th, oldest first
        assert_eq!(days, ["2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"].map(day));
        // AND no further back than the retention
        let days = days_to_catch_up(&store, "logs/", day("2026-11-22"), 2).await.unwrap();
        assert_eq!(days, ["2026-11-21", "2026-11-22"].map(day));
        // AND with yesterday's manifest in place only yesterday itself (a re-run)
        put(&store, "2026-11-21", manifest("2026-11-21", true));
        let days = days_to_catch_up(&store, "logs/", day("2026-11-22"), 30).await.unwrap();
        assert_eq!(days, [day("2026-11-22")]);
    }

    #[tokio::test]
    async fn the_check_wants_a_complete_manifest() {
        let store = MemoryStore::default();
        let error = check_complete(&store, "logs/", day("2026-11-22")).await.unwrap_err();
        assert!(error.to_string().contains("logs/year=2026/month=11/day=22/_SUCCESS"), "{error}");
        put(&store, "2026-11-22", manifest("2026-11-22", false));
        assert_eq!(check_complete(&store, "logs/", day("2026-11-22")).await.unwrap_err().kind(), "IncompleteExport");
        put(&store, "2026-11-22", manifest("2026-11-22", true));
        assert_eq!(check_complete(&store, "logs/", day("2026-11-22")).await.unwrap().rows, 1);
    }
}
