//! SIGTERM: Lambda's shutdown signal. With an internal extension registered, the runtime has 500 ms before
//! SIGKILL. Pending metering gets most of it to finish; what is still waiting on the table is then abandoned,
//! which writes its usage lines at once (with `metering_error`), and the process exits.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use tokio::time::Instant;

use crate::counter_cutoff::CounterCutoff;
use crate::flush_extension::SerialFlush;

/// How long pending counter updates may still finish after SIGTERM.
pub const SHUTDOWN_FINISH: Duration = Duration::from_millis(250);
/// How long the lines of abandoned updates may take to be written; the two stay inside Lambda's 500 ms.
pub const SHUTDOWN_WRITE_LINES: Duration = Duration::from_millis(150);

/// Installs the SIGTERM handler (at start-up, before the first invocation).
pub fn on_sigterm(flush: SerialFlush, cutoff: CounterCutoff) -> std::io::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        sigterm.recv().await;
        let finished = flush.run_until(Instant::now() + SHUTDOWN_FINISH).await;
        if !finished {
            tracing::warn!("SIGTERM with counter updates pending: abandoning them and writing their usage lines");
            cutoff.cut("shutdown (SIGTERM)");
            if !flush.run_until(Instant::now() + SHUTDOWN_WRITE_LINES).await {
                tracing::error!("usage lines still pending at shutdown");
            }
        }
        tracing::info!(finished, "shutting down on SIGTERM");
        std::process::exit(0);
    });
    Ok(())
}
