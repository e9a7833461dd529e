//! Prometheus metrics and the health endpoints (`[metrics]`).
//!
//! The daemon records through the `metrics` facade: the helpers here name every family
//! and keep its labels bounded (no conversation ids; rule names come from the config).
//! They take labels (`&str`, numbers), never the closer's, the budget's or the parser's
//! types: every module records here, so this one imports nothing above config.
//! When `[metrics]` is on, a recorder is installed once per process and a small HTTP/1
//! server on loopback answers `GET` only:
//! - `/metrics`: the Prometheus text format: what the recorder holds, then the families
//!   read at scrape time (from the [`Probes`] in `health`, and `process_*` from
//!   `/proc/self` in `process`);
//! - `/healthz`: 200 while the event loop turned within [`STALL_AFTER`], else 503;
//! - `/readyz`: 200 while every configured stream is live and journal writes are not
//!   failing ([`JournalHealth`]), else 503 naming what is not.
//!
//! Anything else is 404 (405 for another method on a known path). The server reads no
//! body, bounds the header read in size and time, serves a bounded number of connections
//! at once (more get 503 at once), and asks each connection to close after a while.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::MetricsConfig;

mod health;
mod process;

pub use health::{JOURNAL_QUIET, JournalHealth, Probes};

/// Frames read from the notification sockets, by `kind`.
pub const FRAMES: &str = "genesys_closer_frames_total";
/// Close sequences started, by `rule` and `source`.
pub const DECISIONS: &str = "genesys_closer_decisions_total";
/// Close sequences finished, by `rule`, `source` and `outcome`.
pub const OUTCOMES: &str = "genesys_closer_outcomes_total";
/// Decision to confirmed close, seconds, by `rule`.
pub const CLOSE_LATENCY: &str = "genesys_closer_close_latency_seconds";
/// Sockets lost (each followed by a reconnect), by `reason` class.
pub const RECONNECTS: &str = "genesys_closer_reconnects_total";
/// Moves to a fresh channel and topic sets restored in place, by `reason`.
pub const ROTATIONS: &str = "genesys_closer_rotations_total";
/// HTTP requests to Genesys (each attempt), by `operation` and `status`.
pub const API_REQUESTS: &str = "genesys_closer_api_requests_total";
/// Time a REST request waited for the rate budget, seconds, by `priority`.
pub const BUDGET_WAIT: &str = "genesys_closer_budget_wait_seconds";
/// REST requests waiting for the rate budget now, by `priority`.
pub const BUDGET_QUEUED: &str = "genesys_closer_budget_queued";
/// Conversations in the state map.
pub const TRACKED: &str = "genesys_closer_tracked_conversations";
/// Per-conversation topics in use.
pub const WATCHED_TOPICS: &str = "genesys_closer_watched_topics";
/// Journal writes that failed.
pub const JOURNAL_ERRORS: &str = "genesys_closer_journal_errors_total";
/// Intake answers, by HTTP `status`.
pub const INTAKE_REQUESTS: &str = "genesys_closer_intake_requests_total";
/// Streams with a live socket now.
pub const STREAMS_LIVE: &str = "genesys_closer_streams_live";
/// Blind windows recovered (start-up, gaps no mirror covered).
pub const RECOVERY_WINDOWS: &str = "genesys_closer_recovery_windows_total";
/// Conversations read, decided and left unread by recoveries, by `what`.
pub const RECOVERED: &str = "genesys_closer_recovered_conversations_total";
/// Outcome feed delivery attempts, by `sink` and `result` (recorded by `feed`).
pub const FEED_DELIVERIES: &str = "genesys_closer_feed_deliveries_total";
/// Outcomes waiting for delivery by the outcome feed (recorded by `feed`).
pub const FEED_PENDING: &str = "genesys_closer_feed_pending";
/// Always 1, labelled with the `version` and `commit` of this build.
pub const BUILD_INFO: &str = "genesys_closer_build_info";
/// Whether the last configuration load (the start, or the last reload) succeeded.
pub const CONFIG_RELOAD_OK: &str = "genesys_closer_config_last_reload_successful";
/// When the configuration was last loaded successfully, Unix seconds.
pub const CONFIG_RELOAD_TIME: &str = "genesys_closer_config_last_reload_success_timestamp_seconds";
/// systemd's `WatchdogSec`, seconds; 0 without a watchdog.
pub const WATCHDOG_TIMEOUT: &str = "genesys_closer_watchdog_timeout_seconds";
/// Seconds since the event loop last turned, at scrape time (written by hand).
pub const LOOP_TURN_AGE: &str = "genesys_closer_event_loop_last_turn_age_seconds";
/// 1 while `/readyz` answers 200, at scrape time (written by hand).
pub const READY: &str = "genesys_closer_ready";
/// 1 while every configured stream and mirror is live, at scrape time (written by hand).
pub const STREAMS_ALL_LIVE: &str = "genesys_closer_streams_all_live";
/// 1 while journal writes are failing (see [`JournalHealth`]), at scrape time.
pub const JOURNAL_FAILING: &str = "genesys_closer_journal_failing";

/// Buckets of [`CLOSE_LATENCY`], seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];
/// Buckets of [`BUDGET_WAIT`], seconds (most requests wait not at all).
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often the event loop turns at the least (it ticks [`Probes`] each turn).
pub const TICK_EVERY: Duration = Duration::from_secs(1);
/// `/healthz` fails once the event loop has not turned for this long.
pub const STALL_AFTER: Duration = Duration::from_secs(10);
/// How often the recorder's histograms are drained when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls return the same
/// handle). Metrics recorded before it are not kept, so the daemon calls it first.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CLOSE_LATENCY.into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BUDGET_WAIT.into()), WAIT_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                Err(e) => {
                    // Another recorder holds the process (an embedding program's):
                    // serve an empty exposition rather than fail the daemon.
                    tracing::warn!(error = %e, "metrics: cannot install the recorder; /metrics stays empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            handle
        })
        .clone()
}

/// Gives every family the recorder renders its HELP line, and puts at zero those an
/// alert watches, so the series exists before the first event (a rate needs two
/// samples). The families read at scrape time are written by hand (`health` and
/// `process`).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(FRAMES, "Frames read from the notification sockets, by kind");
    describe_counter!(DECISIONS, "Close sequences started, by rule and source");
    describe_counter!(
        OUTCOMES,
        "Close sequences finished, by rule, source and outcome"
    );
    describe_histogram!(
        CLOSE_LATENCY,
        Unit::Seconds,
        "Decision to confirmed close (confirmed and escalated_confirmed), by rule"
    );
    describe_counter!(RECONNECTS, "Notification sockets lost, by reason class");
    describe_counter!(
        ROTATIONS,
        "Moves to a fresh channel and topic sets restored in place, by reason"
    );
    describe_counter!(
        API_REQUESTS,
        "HTTP requests to Genesys (each attempt), by operation and status"
    );
    describe_histogram!(
        BUDGET_WAIT,
        Unit::Seconds,
        "Time a REST request waited for the rate budget, by priority"
    );
    describe_gauge!(
        BUDGET_QUEUED,
        "REST requests waiting for the rate budget, by priority"
    );
    describe_gauge!(TRACKED, "Conversations in the state map");
    describe_gauge!(WATCHED_TOPICS, "Per-conversation topics in use");
    describe_counter!(JOURNAL_ERRORS, "Journal writes that failed");
    describe_counter!(INTAKE_REQUESTS, "Intake answers, by HTTP status");
    describe_gauge!(STREAMS_LIVE, "Notification streams with a live socket");
    describe_counter!(
        RECOVERY_WINDOWS,
        "Blind windows recovered by listing the watched queues and flows"
    );
    describe_counter!(
        RECOVERED,
        "Conversations listed after a blind window, by what became of them (read, decided, left)"
    );
    describe_counter!(
        FEED_DELIVERIES,
        "Outcome feed delivery attempts, by sink (http, file) and result (ok, failed)"
    );
    describe_gauge!(
        FEED_PENDING,
        "Outcomes in the journal's outbox waiting for delivery by the outcome feed"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version and git commit of the running build"
    );
    describe_gauge!(
        CONFIG_RELOAD_OK,
        "1 if the last configuration load (start or reload) succeeded, 0 if the previous one stays in force"
    );
    describe_gauge!(
        CONFIG_RELOAD_TIME,
        Unit::Seconds,
        "When the configuration was last loaded successfully (start or reload), Unix time"
    );
    describe_gauge!(
        WATCHDOG_TIMEOUT,
        Unit::Seconds,
        "systemd's WatchdogSec: the event loop must turn within it or systemd restarts the daemon (0: no watchdog)"
    );
    metrics::gauge!(BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("GIT_COMMIT"))
    .set(1.0);
    // Present at zero from the start, so an alert or a panel has a series to watch.
    metrics::counter!(RECOVERY_WINDOWS).increment(0);
    metrics::counter!(JOURNAL_ERRORS).increment(0);
    for class in RECONNECT_CLASSES {
        metrics::counter!(RECONNECTS, "reason" => class).increment(0);
    }
    for reason in ROTATION_REASONS {
        metrics::counter!(ROTATIONS, "reason" => reason).increment(0);
    }
    for what in ["read", "decided", "left"] {
        metrics::counter!(RECOVERED, "what" => what).increment(0);
    }
    for priority in BUDGET_PRIORITIES {
        budget_queued(priority, 0);
    }
    metrics::gauge!(TRACKED).set(0.0);
    metrics::gauge!(WATCHED_TOPICS).set(0.0);
    metrics::gauge!(STREAMS_LIVE).set(0.0);
    metrics::gauge!(WATCHDOG_TIMEOUT).set(0.0);
}

/// Every `reason` of [`RECONNECTS`].
pub const RECONNECT_CLASSES: [&str; 6] = [
    "socket_closed",
    "socket_error",
    "silent",
    "connect_failed",
    "channel_gone",
    "unsubscribed",
];

/// Every `priority` of [`BUDGET_WAIT`] and [`BUDGET_QUEUED`], highest first.
pub const BUDGET_PRIORITIES: [&str; 3] = ["subscribe", "close", "read"];

/// Every `reason` of [`ROTATIONS`].
pub const ROTATION_REASONS: [&str; 5] = [
    "socket_closing",
    "expiry",
    "no_longer_subscribed",
    "topics_dropped",
    "other",
];

// ---- recording helpers: one per family, labels bounded ----

/// A frame of `kind` was read (a parsed frame's `Frame::kind`; also `malformed`,
/// `binary`, `oversized`).
pub fn frame(kind: &'static str) {
    metrics::counter!(FRAMES, "kind" => kind).increment(1);
}

/// A close sequence starts.
pub fn decision(rule: &Arc<str>, source: &'static str) {
    metrics::counter!(DECISIONS, "rule" => Arc::clone(rule), "source" => source).increment(1);
}

/// A close sequence ended with `outcome`; `confirmed_after`, for a confirmed close
/// (`confirmed` or `escalated_confirmed`), is its decision-to-close latency.
pub fn outcome(
    rule: &Arc<str>,
    source: &'static str,
    outcome: &'static str,
    confirmed_after: Option<Duration>,
) {
    metrics::counter!(OUTCOMES,
        "rule" => Arc::clone(rule),
        "source" => source,
        "outcome" => outcome)
    .increment(1);
    if let Some(latency) = confirmed_after {
        metrics::histogram!(CLOSE_LATENCY, "rule" => Arc::clone(rule))
            .record(latency.as_secs_f64());
    }
}

/// A socket was lost; `class` is one of `socket_closed`, `socket_error`, `silent`,
/// `connect_failed`, `channel_gone`, `unsubscribed`.
pub fn reconnect(class: &'static str) {
    metrics::counter!(RECONNECTS, "reason" => class).increment(1);
}

/// The class of a socket failure's free-text reason (`LiveEnd::Failed`).
pub fn reconnect_class(reason: &str) -> &'static str {
    let r = reason.trim_start().to_ascii_lowercase();
    if r.starts_with("socket closed") {
        "socket_closed"
    } else if r.starts_with("no heartbeat") {
        "silent"
    } else if r.starts_with("cannot connect") || r.starts_with("socket connect") {
        "connect_failed"
    } else {
        "socket_error"
    }
}

/// A channel was replaced without a gap, or its topics restored in place; `reason` is
/// `socket_closing`, `expiry`, `no_longer_subscribed`, `topics_dropped` or `other`.
pub fn rotation(reason: &'static str) {
    metrics::counter!(ROTATIONS, "reason" => reason).increment(1);
}

/// The `reason` label of a rotation's reason as the stream names it.
pub fn rotation_class(reason: &str) -> &'static str {
    match reason {
        "socket_closing" => "socket_closing",
        "channel expires soon" => "expiry",
        _ => "other",
    }
}

/// One HTTP request to Genesys was answered with `status`.
pub fn api_request(operation: &'static str, status: u16) {
    metrics::counter!(API_REQUESTS, "operation" => operation, "status" => status.to_string())
        .increment(1);
}

/// One request to Genesys got no answer: `why` is `transport` (no HTTP answer) or
/// `auth` (no token to send it with).
pub fn api_failure(operation: &'static str, why: &'static str) {
    metrics::counter!(API_REQUESTS, "operation" => operation, "status" => why).increment(1);
}

/// A bounded name for a Platform API call (or the token grant), from its method and
/// path (a query is ignored); `other` for anything not listed.
pub fn api_operation(method: &str, path: &str) -> &'static str {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(rest) = segs.strip_prefix(&["api", "v2"]) else {
        return match (method, segs.as_slice()) {
            ("POST", ["oauth", "token"]) => "token",
            _ => "other",
        };
    };
    match (method, rest) {
        ("POST", ["notifications", "channels"]) => "create_channel",
        ("HEAD", ["notifications", "channels", _]) => "head_channel",
        ("GET", ["notifications", "channels", _, "subscriptions"]) => "get_subscriptions",
        ("PUT", ["notifications", "channels", _, "subscriptions"]) => "put_subscriptions",
        ("POST", ["notifications", "channels", _, "subscriptions"]) => "post_subscriptions",
        ("GET", ["notifications", "availabletopics"]) => "available_topics",
        ("PATCH", ["conversations", "messages", _]) => "patch_conversation",
        ("PATCH", ["conversations", "messages", _, "participants", _]) => "patch_participant",
        ("GET", ["conversations", "messages", _]) => "get_conversation",
        ("GET", ["conversations", id]) if *id != "messages" => "get_communications",
        ("POST", ["conversations", id, "disconnect"]) if *id != "messages" => "teardown",
        ("POST", ["conversations", "messages", _, tail @ ..]) => match tail {
            ["communications", _, "messages"] => "send_message",
            ["participants", _, "communications", _, "wrapup"] => "wrapup",
            _ => "other",
        },
        ("POST", ["analytics", "flows", "activity", "query"]) => "flows_activity",
        ("POST", ["analytics", "queues", "observations", "query"]) => "queue_observations",
        _ => "other",
    }
}

/// A request at `priority` (one of [`BUDGET_PRIORITIES`]) got its permit after `waited`.
pub fn budget_wait(priority: &'static str, waited: Duration) {
    metrics::histogram!(BUDGET_WAIT, "priority" => priority).record(waited.as_secs_f64());
}

/// Requests waiting now at `priority` (one of [`BUDGET_PRIORITIES`]).
pub fn budget_queued(priority: &'static str, depth: usize) {
    metrics::gauge!(BUDGET_QUEUED, "priority" => priority).set(depth as f64);
}

/// Conversations in the state map now.
pub fn set_tracked(n: usize) {
    metrics::gauge!(TRACKED).set(n as f64);
}

/// Per-conversation topics in use now.
pub fn set_watched_topics(n: usize) {
    metrics::gauge!(WATCHED_TOPICS).set(n as f64);
}

/// A journal write failed.
pub fn journal_error() {
    metrics::counter!(JOURNAL_ERRORS).increment(1);
}

/// The intake answered with `status`.
pub fn intake_request(status: u16) {
    metrics::counter!(INTAKE_REQUESTS, "status" => status.to_string()).increment(1);
}

/// A blind window was recovered: `read` conversations read, `decided` of them matched a
/// rule, `left` listed but over the per-window bound.
pub fn recovery_window(read: u64, decided: u64, left: u64) {
    metrics::counter!(RECOVERY_WINDOWS).increment(1);
    metrics::counter!(RECOVERED, "what" => "read").increment(read);
    metrics::counter!(RECOVERED, "what" => "decided").increment(decided);
    metrics::counter!(RECOVERED, "what" => "left").increment(left);
}

/// Streams with a live socket now.
pub fn set_streams_live(n: usize) {
    metrics::gauge!(STREAMS_LIVE).set(n as f64);
}

/// A configuration load finished: the start's (which succeeded, or the daemon would
/// not run) or a reload's. A failed one leaves the success time as it was.
pub fn config_loaded(ok: bool) {
    metrics::gauge!(CONFIG_RELOAD_OK).set(if ok { 1.0 } else { 0.0 });
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!(CONFIG_RELOAD_TIME).set(now);
    }
}

/// systemd's watchdog timeout (`None`: no watchdog, shown as 0).
pub fn set_watchdog_timeout(timeout: Option<Duration>) {
    metrics::gauge!(WATCHDOG_TIMEOUT).set(timeout.map_or(0.0, |t| t.as_secs_f64()));
}

// ---- the server ----

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

    use super::*;

    #[test]
    fn operations_are_bounded_names() {
        let id = "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38";
        // "METHOD path operation"; `C` is /api/v2/conversations, `N` /api/v2/notifications.
        let cases = "\
            POST /oauth/token token
            POST N/channels create_channel
            HEAD N/channels/streaming-0-x head_channel
            PUT N/channels/streaming-0-x/subscriptions?ignoreErrors=true put_subscriptions
            POST N/channels/streaming-0-x/subscriptions?ignoreErrors=true post_subscriptions
            GET N/channels/streaming-0-x/subscriptions get_subscriptions
            GET N/availabletopics?expand=transports available_topics
            PATCH C/messages/{id} patch_conversation
            PATCH C/messages/{id}/participants/{id} patch_participant
            GET C/messages/{id} get_conversation
            GET C/{id} get_communications
            POST C/{id}/disconnect teardown
            POST C/messages/{id}/communications/{id}/messages send_message
            POST C/messages/{id}/participants/{id}/communications/{id}/wrapup wrapup
            POST /api/v2/analytics/flows/activity/query?pageSize=100 flows_activity
            DELETE C/messages/{id} other
            GET C/messages other
            POST C/messages/{id}/participants other
            GET /api/v3/whatever other
            GET //../..// other
            GET / other";
        for line in cases.lines() {
            let line = line
                .trim()
                .replace("{id}", id)
                .replace(" C/", " /api/v2/conversations/")
                .replace(" N/", " /api/v2/notifications/");
            let [method, path, want] = line.split(' ').collect::<Vec<_>>()[..] else {
                panic!("bad case {line}");
            };
            assert_eq!(api_operation(method, path), want, "{line}");
        }
        // Anything else, whatever it carries, is one bounded name.
        assert_eq!(api_operation("GET", ""), "other");
    }

    #[test]
    fn reconnect_and_rotation_reasons_map_to_classes() {
        for (reason, class) in [
            ("socket closed by the server", "socket_closed"),
            ("socket closed by the server 1001 bye", "socket_closed"),
            ("no heartbeat or pong for 45000 ms", "silent"),
            ("socket error: reset", "socket_error"),
            ("a frame over 16 MiB cannot be skipped", "socket_error"),
            ("cannot send ping: broken pipe", "socket_error"),
            ("cannot connect the socket: refused", "connect_failed"),
            ("socket connect and handshake took 10 s", "connect_failed"),
        ] {
            assert_eq!(reconnect_class(reason), class, "{reason}");
            assert!(RECONNECT_CLASSES.contains(&class));
        }
        assert_eq!(rotation_class("socket_closing"), "socket_closing");
        assert_eq!(rotation_class("channel expires soon"), "expiry");
        assert_eq!(rotation_class("retry"), "other");
    }

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
