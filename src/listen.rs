//! The one bounded HTTP/1 edge for everything that listens (the intake, metrics and
//! health): an accept loop that serves at most `max_connections` at once and answers
//! the next one 503 at once instead of queueing it, bounds the request head in size and
//! in time, retires every connection after `lifetime`, and stops on its token.

use std::error::Error as StdError;
use std::time::Duration;

use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What a listener tolerates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Connections served at once; the next is answered 503 and closed.
    pub max_connections: usize,
    /// The request head (and a TLS handshake) must arrive within this.
    pub head_timeout: Duration,
    /// A connection is asked to close after this long.
    pub lifetime: Duration,
    /// Largest request head (hyper's buffer is bounded by `max_buf`; this is checked
    /// as the head is read, whatever the reads bring).
    pub max_head: usize,
    /// hyper's read buffer.
    pub max_buf: usize,
}

/// The answer written (raw, before any HTTP is parsed) to a connection over the limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Busy {
    /// Its `content-type`.
    pub content_type: &'static str,
    /// Its body.
    pub body: &'static str,
    /// Called once per connection turned away (a metric, say).
    pub counted: fn(),
    /// Named in the debug line (`intake`, `metrics`).
    pub name: &'static str,
}

/// Serves `service` on `listener` within `bounds` until `cancel`, each connection on a
/// task of its own; over TLS when `tls` is given (a connection over the limit is then
/// closed without a plain-text answer, which would only be noise to a TLS client).
pub(crate) async fn accept_loop<S, B>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    bounds: Bounds,
    busy: Busy,
    cancel: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let permits = std::sync::Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors, say: pause instead of spinning.
                    tracing::warn!(error = %e, listener = busy.name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Answers are small and latency is the point: no Nagle delay behind an
        // unacknowledged segment.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = std::sync::Arc::clone(&permits).try_acquire_owned() else {
            // Full: say so at once rather than queueing, so a flood cannot pile up.
            let plain = tls.is_none();
            tokio::spawn(async move {
                if plain {
                    let answer = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\n\
                         retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                        busy.content_type,
                        busy.body.len(),
                        busy.body
                    );
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        stream.write_all(answer.as_bytes()),
                    )
                    .await;
                }
                drop(stream);
            });
            (busy.counted)();
            tracing::debug!(%peer, listener = busy.name, "connection limit reached");
            continue;
        };
        let service = service.clone();
        let tls = tls.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, service, bounds, cancel).await,
                Some(acceptor) => {
                    match tokio::time::timeout(bounds.head_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_connection(s, service, bounds, cancel).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, listener = busy.name,
                                "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, listener = busy.name, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// One connection: HTTP/1 with the head bounded in size and time, until it ends, its
/// lifetime passes or the listener stops (then a graceful close, bounded too).
async fn serve_connection<IO, S, B>(io: IO, service: S, bounds: Bounds, cancel: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.head_timeout)
        // Without a head limit of its own, hyper takes whatever one read brings (it
        // checks its buffer only between reads), so the bound would depend on timing.
        .max_header_size(bounds.max_head)
        .max_buf_size(bounds.max_buf);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep(bounds.lifetime) => {}
        _ = cancel.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(bounds.head_timeout, conn).await;
}
