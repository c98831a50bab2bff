//! The command line of the same binary: the Lambda when started by the Lambda service (no subcommand),
//! the export run by hand against moto or AWS (`export`), and the transform benchmark (`bench-transform`).

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::aws::{exporter_with, load_sdk_config};
use crate::config::ExportConfig;
use crate::error::ExportError;
use crate::export::ExportSettings;
use crate::options::ExportOptions;
use crate::request::ExportRequest;

#[derive(Parser)]
#[command(
    name = "log-processor",
    version,
    about = "Exports the usage lines of CloudWatch Logs to S3 as Parquet (s3://$ANALYTICS_BUCKET/$LOGS_PREFIX\
year=YYYY/month=MM/day=DD/part-NNNNN.parquet). Without a subcommand it runs as the Lambda function."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Set by the Lambda service; without it and without a subcommand there is nothing to do.
    #[arg(long, env = "AWS_LAMBDA_RUNTIME_API", hide = true)]
    pub lambda_runtime_api: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Export now, from this machine: USAGE_LOG_GROUPS, ANALYTICS_BUCKET, LOGS_PREFIX and the standard AWS
    /// environment (AWS_REGION, credentials, AWS_ENDPOINT_URL for moto). Prints the JSON summary.
    Export(ExportArgs),
    /// Transform N synthetic usage lines into Parquet in memory on this thread; prints events per second.
    BenchTransform(BenchTransformArgs),
    /// Run the whole day loop over N synthetic lines into a byte-counting store; prints the peak memory.
    BenchDay(BenchDayArgs),
}

pub enum BenchCommand {
    Transform(BenchTransformArgs),
    Day(BenchDayArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// One UTC day, YYYY-MM-DD (default: today so far).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub date: Option<String>,
    /// First day of a range (at most 31 days), with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Last day of the range, included.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Split a day into objects of about this many rows (default 5,000,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows_per_object: Option<u64>,
    /// Rows per Parquet row group (default 100,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub rows_per_row_group: Option<u64>,
    /// Time slices of the day read at once (default 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub read_slices: Option<u32>,
    /// Replace a day's export even when the log now gives fewer rows than its _SUCCESS manifest records
    /// (without it such a re-export is refused and the earlier export kept).
    #[arg(long)]
    pub allow_shrink: bool,
}

#[derive(Args)]
pub struct BenchTransformArgs {
    /// Number of synthetic lines.
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
}

#[derive(Args)]
pub struct BenchDayArgs {
    /// Number of synthetic events in the day.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
}

impl ExportArgs {
    /// The same payload the Lambda would get, so both paths share one validation.
    fn payload(&self) -> Value {
        match (&self.date, &self.from, &self.to) {
            (Some(date), _, _) => json!({ "date": date }),
            (None, Some(from), Some(to)) => json!({ "from": from, "to": to }),
            _ => json!({}),
        }
    }
}

/// `log-processor export`: returns the process exit code (0 done, 1 failed, 2 bad request or config,
/// 3 refused to shrink a day).
pub async fn export(args: ExportArgs) -> i32 {
    let config = match ExportConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return 2;
        }
    };
    let mut settings = ExportSettings::from_config(&config);
    if let Some(rows) = args.max_rows_per_object {
        settings.max_rows_per_object = rows;
    }
    if let Some(rows) = args.rows_per_row_group {
        settings.rows_per_row_group = rows as usize;
    }
    if let Some(slices) = args.read_slices {
        settings.read_slices = slices;
    }
    let request = match ExportRequest::from_payload(&args.payload()) {
        Ok(request) => request,
        Err(error) => {
            eprintln!("error: {error}");
            return 2;
        }
    };
    let exporter = exporter_with(&config, &load_sdk_config().await, settings);
    let options = ExportOptions { allow_shrink: args.allow_shrink };
    match exporter.export_with(&request, options, chrono::Utc::now()).await {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            0
        }
        Err(error @ ExportError::BadRequest(_)) => {
            eprintln!("error: {error}");
            2
        }
        Err(error @ ExportError::WouldShrink { .. }) => {
            eprintln!("error: {error}");
            3
        }
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}

/// `log-processor bench-transform` / `bench-day`: prints the measurement as one JSON line.
pub async fn bench(command: BenchCommand) -> i32 {
    let result = match command {
        BenchCommand::Transform(args) => crate::bench::transform(args.lines),
        BenchCommand::Day(args) => crate::bench::day(args.events).await,
    };
    match result {
        Ok(report) => {
            println!("{report}");
            0
        }
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}
