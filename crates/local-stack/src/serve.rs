//! Binding, port files and graceful shutdown shared by the local servers.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

/// Binds `addr` (port 0 picks a free port) and writes the bound port to `port_file`, so a script that
/// started the server knows where it listens.
pub async fn bind(addr: SocketAddr, port_file: Option<&Path>) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if let Some(port_file) = port_file {
        // Write then rename, so a reader never sees a half-written file.
        let partial = port_file.with_extension("partial");
        std::fs::write(&partial, format!("{}\n", bound.port()))?;
        std::fs::rename(&partial, port_file)?;
    }
    tracing::info!(address = %bound, "listening");
    Ok(listener)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
