//! The public port: one accept loop, plain or TLS, serving the axum router over HTTP/1.1 and HTTP/2.
//!
//! What it keeps true:
//! - **Protocols.** Plain: HTTP/1.1, or HTTP/2 with prior knowledge (h2c, what the gRPC clients
//!   speak to an `http://` endpoint), told apart by the connection's first bytes. TLS: ALPN decides
//!   (`h2` → HTTP/2 only, `http/1.1` → HTTP/1.1 only, none offered → told apart as in plain mode).
//! - **The accept loop never waits on a peer.** The TLS handshake runs in the connection's own task
//!   and is bounded by [`TLS_HANDSHAKE_TIMEOUT`]; a handshake that fails or stalls costs that task only.
//! - **At most `max_connections` connections** are open (handshaking or serving). At the limit the
//!   loop stops accepting, so further clients wait in the kernel's backlog instead of being refused.
//! - **Signals.** [`Signals::install`] is called first thing in `serve`, so that from then on SIGHUP
//!   never terminates the process (its default action). SIGHUP reloads the certificate in TLS mode
//!   (connections already open keep theirs and are not dropped: see `crate::tls`) and is logged as
//!   having nothing to reload in plain mode. SIGINT and SIGTERM are taken over only once start-up
//!   is done ([`Signals::listen_for_shutdown`]): until then they stop the process at once, as
//!   before, rather than waiting unseen for a start-up that may hang; from then on either one starts
//!   the graceful shutdown.
//! - **Graceful shutdown.** The listener closes; every connection is told to finish (HTTP/2 GOAWAY,
//!   HTTP/1.1 closes after its response in flight) and calls in flight run to their end, for at most
//!   [`SHUTDOWN_GRACE`]; connections still open then are dropped.
//! - HTTP/2 settings are hyper's defaults (as `axum::serve` has them) plus keep-alive pings, which
//!   find dead peers of long streaming calls, and the adaptive flow-control window (BDP estimation),
//!   which lets a large reply use the path's bandwidth instead of the fixed 64 KiB window. axum's
//!   extended CONNECT (for WebSockets over HTTP/2) is not enabled: nothing here upgrades.
//!
//! Decided here: a failed or timed-out TLS handshake is logged at debug level only (port scanners and
//! plain clients on a TLS port make them routine); `RUST_LOG=mpe_ledger::startup::public_port=debug`
//! shows them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::tls::{self, ALPN_H2, ALPN_HTTP1, ServerCert, ServerCertFiles, TlsError};

/// How long calls in flight may run on after SIGINT/SIGTERM before their connections are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Longest a TLS handshake may take, from the accepted TCP connection to the finished handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send an HTTP/1.1 request's headers.
pub const HTTP1_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// An HTTP/2 ping is sent after this long without a frame from the peer...
pub const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// ...and the connection is closed when its answer takes longer than this.
pub const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors), so
/// that the loop does not spin while the condition lasts.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The process's signal handlers: SIGHUP from the start, SIGINT and SIGTERM once start-up is done.
pub struct Signals {
    hangup: Signal,
    /// SIGINT and SIGTERM.
    shutdown: Option<(Signal, Signal)>,
}

/// What a signal asks of the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Shutdown,
    Reload,
}

impl Signals {
    /// Installs the SIGHUP handler. A SIGHUP that arrives before the port serves is acted on once
    /// it does.
    pub fn install() -> io::Result<Self> {
        Ok(Self { hangup: signal(SignalKind::hangup())?, shutdown: None })
    }

    /// Takes over SIGINT and SIGTERM: from now on they start the graceful shutdown.
    pub fn listen_for_shutdown(&mut self) -> io::Result<()> {
        self.shutdown = Some((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?));
        Ok(())
    }

    async fn next(&mut self) -> Asked {
        let shutdown = async {
            match &mut self.shutdown {
                Some((interrupt, terminate)) => tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown => Asked::Shutdown,
            _ = self.hangup.recv() => Asked::Reload,
        }
    }
}

/// The TLS side of the port: the acceptor and the certificate it resolves, for reloads.
#[derive(Clone)]
pub struct PortTls {
    acceptor: TlsAcceptor,
    cert: Arc<ServerCert>,
}

impl PortTls {
    /// Loads the certificate and key; an unusable file is an error naming the setting and the file.
    pub fn load(files: &ServerCertFiles) -> Result<Self, TlsError> {
        let cert = Arc::new(ServerCert::load(files.clone())?);
        let config = tls::server_config(cert.clone())?;
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(config)), cert })
    }
}

/// The bound public port.
pub struct PublicPort {
    listener: TcpListener,
    tls: Option<PortTls>,
    max_connections: usize,
}

/// The port's address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting listen: cannot bind {address}: {source}")]
pub struct BindError {
    address: SocketAddr,
    #[source]
    source: io::Error,
}

impl PublicPort {
    /// Binds `address`; with `tls` the port speaks only TLS.
    pub async fn bind(
        address: SocketAddr,
        tls: Option<PortTls>,
        max_connections: usize,
    ) -> Result<Self, BindError> {
        let listener = TcpListener::bind(address).await.map_err(|source| BindError { address, source })?;
        Ok(Self { listener, tls, max_connections })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the port speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `app` until SIGINT or SIGTERM, then shuts down gracefully (see the module doc).
    pub async fn serve(self, app: axum::Router, mut signals: Signals) {
        let Self { listener, tls, max_connections } = self;
        let permits = Arc::new(Semaphore::new(max_connections));
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                asked = signals.next() => match asked {
                    Asked::Shutdown => break,
                    Asked::Reload => reload(tls.as_ref()),
                },
                accepted = accept(&listener, &permits) => {
                    let (stream, peer, permit) = accepted;
                    let connection = Connection { peer, tls: tls.clone(), app: app.clone(), permit };
                    connections.spawn(connection.run(stream, graceful.watcher()));
                }
                // Reaps finished connections so that the set holds only open ones.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        tracing::info!(
            connections = connections.len(),
            "no longer accepting connections; letting calls in flight finish"
        );
        match tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await {
            Ok(()) => tracing::info!("every connection finished"),
            Err(_) => tracing::warn!(
                dropped = connections.len(),
                grace = ?SHUTDOWN_GRACE,
                "connections still open after the grace period are dropped"
            ),
        }
        connections.shutdown().await;
    }
}

/// SIGHUP: a new certificate for new handshakes, read off the runtime's threads.
fn reload(tls: Option<&PortTls>) {
    let Some(tls) = tls else {
        tracing::info!("SIGHUP: plain port, no certificate to reload");
        return;
    };
    tracing::info!("SIGHUP: reloading the TLS certificate");
    let cert = tls.cert.clone();
    // The outcome is logged by reload itself; a failure keeps the certificate in use.
    tokio::task::spawn_blocking(move || cert.reload());
}

/// The next connection, once a connection slot is free.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, permit),
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                tracing::error!(%error, "accept failed; pausing before the next attempt");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// An error about the one connection being accepted, not about the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Which HTTP versions one connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Versions {
    Http1,
    Http2,
    /// Told apart by the first bytes (the HTTP/2 preface or not).
    Either,
}

impl Versions {
    fn of_alpn(protocol: Option<&[u8]>) -> Self {
        match protocol {
            Some(ALPN_H2) => Self::Http2,
            Some(ALPN_HTTP1) => Self::Http1,
            _ => Self::Either,
        }
    }
}

/// One accepted connection; holds its slot until it ends.
struct Connection {
    peer: SocketAddr,
    tls: Option<PortTls>,
    app: axum::Router,
    permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, stream: TcpStream, watcher: Watcher) {
        let Self { peer, tls, app, permit: _permit } = self;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let Some(tls) = tls else {
            return serve_http(stream, Versions::Either, app, watcher, peer).await;
        };
        let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => {
                return tracing::debug!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            }
        };
        let versions = Versions::of_alpn(stream.get_ref().1.alpn_protocol());
        serve_http(stream, versions, app, watcher, peer).await;
    }
}

async fn serve_http<S>(stream: S, versions: Versions, app: axum::Router, watcher: Watcher, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = http_builder(versions);
    let service = TowerToHyperService::new(app);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// hyper's server settings for one connection (see the module doc).
fn http_builder(versions: Versions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HTTP1_HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .adaptive_window(true);
    match versions {
        Versions::Http1 => builder.http1_only(),
        Versions::Http2 => builder.http2_only(),
        Versions::Either => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_decides_the_http_version() {
        assert_eq!(Versions::of_alpn(Some(b"h2")), Versions::Http2);
        assert_eq!(Versions::of_alpn(Some(b"http/1.1")), Versions::Http1);
        assert_eq!(Versions::of_alpn(None), Versions::Either);
    }
}
