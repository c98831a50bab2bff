//! Wiring of the log processor: the Lambda (no subcommand), or `export` / `bench-transform` by hand.

use std::sync::Arc;

use clap::{CommandFactory, Parser};
use lambda_runtime::{service_fn, LambdaEvent};
use log_processor::aws::{exporter_on_aws, load_sdk_config};
use log_processor::cli::{self, BenchCommand, Cli, Command};
use log_processor::rebuild::{handle_rebuild, rebuild_on_aws, RebuildRequest};
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
    let sdk_config = load_sdk_config().await;
    let exporter = Arc::new(exporter_on_aws(&config, &sdk_config));
    let rebuilder = rebuild_on_aws(&config, &sdk_config)?.map(Arc::new);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (exporter, rebuilder) = (Arc::clone(&exporter), rebuilder.clone());
        async move {
            // `{"rebuild_counters": ...}` is the rebuild's; every other payload the export's.
            match RebuildRequest::from_payload(&event.payload) {
                Some(request) => handle_rebuild(rebuilder.as_deref(), request).await,
                None => serde_json::to_value(exporter.handle(event.payload).await?).map_err(|error| lambda_runtime::Diagnostic {
                    error_type: "EncodeFailed".into(),
                    error_message: error.to_string(),
                }),
            }
        }
    }))
    .await
}
