//! The metrics and health server: `GET /metrics`, `/healthz`, `/readyz` on the one
//! bounded HTTP edge ([`crate::listen`]); anything else 404, another method 405, a body
//! refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Probes, UPKEEP_EVERY, config_loaded, install, process};
use crate::config::MetricsConfig;

/// Bounds of the metrics server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// The request head must arrive within this.
    pub header_timeout: Duration,
    /// A connection is asked to close after this long.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 32,
            header_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(60),
        }
    }
}

/// Largest request head read (hyper's smallest allowed buffer).
const MAX_HEAD: usize = 8 * 1024;

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics cannot listen on {addr}: {error}")]
pub struct MetricsError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub error: std::io::Error,
}

/// A running metrics server; it stops when this is dropped.
#[derive(Debug)]
pub struct Server {
    /// The bound address (useful when the config asked for port 0).
    pub addr: SocketAddr,
    _stop: DropGuard,
}

/// Installs the recorder and serves `[metrics]` with the default [`Limits`]. The
/// configuration the daemon started with counts as the first successful load.
pub async fn start(cfg: &MetricsConfig, probes: Probes) -> Result<Server, MetricsError> {
    let server = serve(cfg.listen, probes, Limits::default()).await?;
    config_loaded(true);
    Ok(server)
}

/// Installs the recorder and serves on `listen` within `limits`.
pub async fn serve(
    listen: SocketAddr,
    probes: Probes,
    limits: Limits,
) -> Result<Server, MetricsError> {
    let handle = install();
    let bind_err = |error| MetricsError {
        addr: listen,
        error,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let cancel = CancellationToken::new();
    tracing::info!(%addr, "metrics listening (GET /metrics, /healthz, /readyz)");
    // The recorder's upkeep (histogram buckets) while the server runs.
    let upkeep = {
        let (handle, cancel) = (handle.clone(), cancel.clone());
        async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = every.tick() => handle.run_upkeep(),
                }
            }
        }
    };
    tokio::spawn(upkeep);
    let shared = Arc::new((handle, probes));
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let resp = answer(&req, &shared.0, &shared.1);
        async move { Ok::<_, Infallible>(resp) }
    });
    tokio::spawn(crate::listen::accept_loop(
        listener,
        None,
        service,
        crate::listen::Bounds {
            max_connections: limits.max_connections,
            head_timeout: limits.header_timeout,
            lifetime: limits.lifetime,
            max_head: MAX_HEAD,
            max_buf: MAX_HEAD,
        },
        crate::listen::Busy {
            content_type: "text/plain",
            body: "too many connections; retry later\n",
            counted: || {},
            name: "metrics",
        },
        cancel.clone(),
    ));
    Ok(Server {
        addr,
        _stop: cancel.drop_guard(),
    })
}

/// Whether the request carries (or announces) a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn answer<B>(req: &Request<B>, handle: &PrometheusHandle, probes: &Probes) -> Response<Body> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        let not_found = "not found: GET /metrics, /healthz or /readyz\n";
        return text(StatusCode::NOT_FOUND, not_found);
    }
    if req.method() != Method::GET {
        let not_allowed = "method not allowed: GET only\n";
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, not_allowed);
        let headers = r.headers_mut();
        headers.insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    if has_body(req.headers()) {
        // Never read: close the connection rather than drain it.
        let no_body = "no request body is accepted\n";
        let mut r = text(StatusCode::PAYLOAD_TOO_LARGE, no_body);
        let headers = r.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    match path {
        "/metrics" => {
            let mut body = handle.render();
            if !body.is_empty() && !body.ends_with('\n') {
                body.push('\n');
            }
            probes.render(&mut body);
            process::render(&mut body);
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/healthz" => {
            let (status, body) = probes.health();
            text(status, body)
        }
        _ => {
            let (status, body) = probes.readiness();
            text(status, body)
        }
    }
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::super::{JournalHealth, frame};
    use super::*;

    /// Sends `raw` on a fresh connection and reads until the server closes it (or 3 s).
    async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let _ = s.write_all(raw).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status_of(answer: &str) -> &str {
        answer.split(' ').nth(1).unwrap_or("")
    }

    /// Answered with a client error, or closed without an answer.
    fn refused(answer: &str) -> bool {
        answer.is_empty() || status_of(answer).starts_with('4')
    }

    #[tokio::test]
    async fn serves_get_only_and_survives_hostile_input() {
        let probes = Probes::new(JournalHealth::new());
        let limits = Limits {
            max_connections: 2,
            header_timeout: Duration::from_millis(300),
            lifetime: Duration::from_secs(5),
        };
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = serve(any, probes.clone(), limits).await.expect("binds");
        let addr = server.addr;
        frame("heartbeat");
        let get = |path: &str| {
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
        };

        let metrics = exchange(addr, &get("/metrics")).await;
        assert_eq!(status_of(&metrics), "200", "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        for family in [
            "genesys_closer_frames_total{kind=\"heartbeat\"} ",
            "# TYPE genesys_closer_journal_errors_total counter",
            "genesys_closer_reconnects_total{reason=\"silent\"} ",
        ] {
            assert!(metrics.contains(family), "{family}: {metrics}");
        }
        let status = async |path: &str| status_of(&exchange(addr, &get(path)).await).to_owned();
        assert_eq!(status("/healthz").await, "200");
        assert_eq!(status("/readyz").await, "503");
        probes.set_ready(true);
        assert_eq!(status("/readyz?verbose=1").await, "200");
        assert_eq!(status("/nope").await, "404");
        assert_eq!(status("/metrics/../etc").await, "404");
        let post = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&post), "405", "{post}");
        assert!(post.to_ascii_lowercase().contains("allow: get"), "{post}");
        let body = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nxxxx",
        )
        .await;
        assert_eq!(status_of(&body), "413", "{body}");
        let chunked = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await;
        assert_eq!(status_of(&chunked), "413", "{chunked}");

        // Garbage: a 400 or a closed connection, never a hang or a crash.
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"\x00\xff\xfe\r\n\r\n",
            b"GET /metrics HTTP/9.9\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Header Line\r\n\r\n",
        ] {
            let a = exchange(addr, raw).await;
            assert!(refused(&a), "{raw:?}: {a}");
        }
        assert_eq!(status_of(&exchange(addr, b"GARBAGE\r\n\r\n").await), "400");
        // A head larger than the buffer.
        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
        huge.extend(b"\r\n\r\n");
        let a = exchange(addr, &huge).await;
        assert!(refused(&a), "{a}");

        // A client that never finishes its head is cut off after the header timeout.
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let mut buf = Vec::new();
        let done = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
        assert!(done.is_ok(), "a slow head is cut off");

        // Connections over the limit are answered 503 at once.
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let over = exchange(addr, &get("/healthz")).await;
        assert_eq!(status_of(&over), "503", "{over}");
        drop((_a, _b));
        // Once they go, it serves again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(status_of(&exchange(addr, &get("/healthz")).await), "200");

        // Dropping the server stops it.
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(addr).await.is_err()
                || exchange(addr, &get("/healthz")).await.is_empty()
        );
    }
}
