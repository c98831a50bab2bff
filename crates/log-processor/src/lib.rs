//! The log export: usage lines in CloudWatch Logs become Parquet rows in S3, one Hive-style partition per UTC
//! day (`logs/year=YYYY/month=MM/day=DD/part-NNNNN.parquet`), the table `bedrock_metering_db.token_usage_logs`
//! of Athena.
//!
//! - [`request`]: which days an invocation exports (schedule, `{}`, `{"date"}`, `{"from","to"}`).
//! - [`line`]: one log message -> one row, or a reason to skip it (pure).
//! - [`parquet_file`]: rows -> row groups -> Parquet bytes, drained in parts as they are produced (pure).
//! - [`ports`]: the two AWS services the export needs, behind narrow traits; [`aws`] implements them.
//! - [`export`]: the day loop that streams pages -> row groups -> multipart upload, in bounded memory.
//! - [`rebuild`]: `{"rebuild_counters": "YYYY-MM-DD"}` SETs a day's and its week's counters from the lines;
//!   [`rebuild_dynamodb`] is its DynamoDB adapter.
//! - [`row_price`]: each row priced from the usage API's own table; [`manifest`]: the day's `_SUCCESS`
//!   (shrink guard, catch-up, the 03:00 check); [`options`]: `allow_shrink` and the check request;
//!   [`metrics`]: the figures the alarms watch.

pub mod aws;
pub mod bench;
pub mod cli;
pub mod config;
pub mod error;
pub mod export;
pub mod line;
pub mod manifest;
pub mod metrics;
pub mod options;
pub mod parquet_file;
pub mod ports;
pub mod rebuild;
pub mod rebuild_dynamodb;
pub mod request;
pub mod row_price;
pub mod summary;
pub mod synthetic;

pub use config::ExportConfig;
pub use error::ExportError;
pub use export::{ExportSettings, Exporter};
pub use request::ExportRequest;
pub use summary::ExportSummary;
