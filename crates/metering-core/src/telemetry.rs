//! Structured logs: JSON on standard error (standard output is kept for usage lines), level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

pub fn init_json_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(true)
        .with_ansi(false)
        .try_init();
}
