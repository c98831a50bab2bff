//! Binding, port files and graceful shutdown shared by the local servers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

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

/// How long a client may take to send a request's head (request line and headers). hyper closes the
/// connection when it runs out; `axum::serve` sets no timer, so without this a silent client holds a
/// connection for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over HTTP/1.1 like `axum::serve`, plus a header read timeout (hyper's own, which needs a
/// timer that `axum::serve` does not give it) and `TCP_NODELAY` (streamed answers must not wait for Nagle).
/// On `shutdown`, stops accepting, lets every open connection finish its request, then returns.
pub async fn serve_http1(
    listener: TcpListener,
    router: axum::Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.as_mut().await;
                }
            }
            drop(closing);
        });
    }
    drop(closing_rx);
    // Tell every connection to finish, then wait until each has dropped its receiver.
    let _ = closing_tx.send(());
    closing_tx.closed().await;
    Ok(())
}
