//! Wiring of the log processor: the Lambda (no subcommand), or `export` / `bench-transform` by hand.

use std::sync::Arc;

use clap::{CommandFactory, Parser};
use lambda_runtime::{service_fn, LambdaEvent};
use log_processor::aws::{exporter_on_aws, load_sdk_config};
use log_processor::cli::{self, BenchCommand, Cli, Command};
use log_processor::ExportConfig;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    metering_core::telemetry::init_json_tracing();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Export(args)) => std::process::exit(cli::export(args).await),
        Some(Command::BenchTransform(args)) => std::process::exit(cli::bench(BenchCommand::Transform(args)).await),
        Some(Command::BenchDay(args)) => std::process::exit(cli::bench(BenchCommand::Day(args)).await),
        None if cli.lambda_runtime_api.is_none() => {
            Cli::command().print_help()?;
            std::process::exit(2);
        }
        None => {}
    }
    let config = ExportConfig::from_env()?;
    let exporter = Arc::new(exporter_on_aws(&config, &load_sdk_config().await));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let exporter = Arc::clone(&exporter);
        async move { exporter.handle(event.payload).await }
    }))
    .await
}
