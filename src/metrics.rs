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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod health;
mod process;
mod server;

pub use health::{JOURNAL_QUIET, JournalHealth, Probes};
pub use server::{Limits, MetricsError, Server, serve, start};

/// Frames read from the notification sockets, by `kind`.
pub const FRAMES: &str = "genesys_closer_frames_total";
/// Rule decisions (close sequences started, or deferred while stopping), by `rule` and `source`.
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
/// `[ha]`: intake calls stored in the group's database (every call in a group), by the
/// `result` answered (the acting instance's answer, `queued`, or `standby` when the
/// call could not be stored).
pub const INTAKE_RELAYED: &str = "genesys_closer_intake_relayed_total";
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
    describe_families();
    initial_values();
}

/// Every family's HELP line (and unit), one after the other.
// One flat list, a call per family: split, one would only be harder to find.
fn describe_families() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(FRAMES, "Frames read from the notification sockets, by kind");
    describe_counter!(
        DECISIONS,
        "Rule decisions (a close sequence started, or journalled as deferred while stopping), by rule and source"
    );
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
    describe_counter!(
        INTAKE_RELAYED,
        "[ha]: intake calls stored in the group's database for the acting instance, by the result answered"
    );
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
    describe_gauge!(
        WATCH_CAPACITY,
        "How many bot-phase conversations the channels left to this instance can watch at most (20 channels per OAuth client, across a group)"
    );
    describe_gauge!(
        LEADER,
        "[ha]: 1 while this instance holds the lease and acts, 0 while it stands by"
    );
    describe_gauge!(
        GROUP_SEEN,
        "[ha]: instances of the group seen alive within one lease TTL, this one included"
    );
    describe_gauge!(
        LEASE_EPOCH,
        "[ha]: the epoch of the lease this instance holds or last held"
    );
    describe_histogram!(
        LEASE_RENEW,
        Unit::Seconds,
        "[ha]: how long each lease renew took"
    );
    describe_gauge!(
        LEASE_LAST_RENEW,
        Unit::Seconds,
        "[ha]: when the lease was last taken or renewed, Unix time"
    );
}

/// What the exposition shows before the first event: the build's info, and zero for
/// every series an alert or a panel watches.
fn initial_values() {
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

/// A rule decided: a close sequence starts (or is journalled as deferred while stopping).
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

/// How many conversations' per-conversation topics the channels left to this instance
/// hold at most.
pub fn set_watch_capacity(n: usize) {
    metrics::gauge!(WATCH_CAPACITY).set(n as f64);
}

/// A journal write failed.
pub fn journal_error() {
    metrics::counter!(JOURNAL_ERRORS).increment(1);
}

/// The intake answered with `status`.
pub fn intake_request(status: u16) {
    metrics::counter!(INTAKE_REQUESTS, "status" => status.to_string()).increment(1);
}

/// `[ha]`: an intake call stored in the group's database was answered `result`.
pub fn intake_relayed(result: &'static str) {
    metrics::counter!(INTAKE_RELAYED, "result" => result).increment(1);
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

/// How many watched conversations the channels left to this instance hold at most.
pub const WATCH_CAPACITY: &str = "genesys_closer_watch_capacity_conversations";
/// 1 while this instance holds the lease and acts (`[ha]`), else 0.
pub const LEADER: &str = "genesys_closer_leader";
/// The epoch of the lease this instance holds or last held.
pub const LEASE_EPOCH: &str = "genesys_closer_lease_epoch";
/// How long each lease renew took.
pub const LEASE_RENEW: &str = "genesys_closer_lease_renew_seconds";
/// When the lease was last renewed (Unix time): `time() - this` is the time since.
pub const LEASE_LAST_RENEW: &str = "genesys_closer_lease_last_renew_timestamp_seconds";

/// `[ha]`: instances of the group seen alive within one lease TTL, this one included.
pub const GROUP_SEEN: &str = "genesys_closer_group_instances_seen";

/// `[ha]`: `n` instances of the group were seen alive.
pub fn group_seen(n: i64) {
    metrics::gauge!(GROUP_SEEN).set(n as f64);
}

/// The lease was taken (`leader`) or lost or resigned, under `epoch`.
pub fn lease(leader: bool, epoch: i64) {
    metrics::gauge!(LEADER).set(if leader { 1.0 } else { 0.0 });
    metrics::gauge!(LEASE_EPOCH).set(epoch as f64);
    if leader {
        lease_renewed_now();
    }
}

/// A renew kept the lease; it took `took`.
pub fn lease_renewed(took: Duration) {
    metrics::histogram!(LEASE_RENEW).record(took.as_secs_f64());
    lease_renewed_now();
}

fn lease_renewed_now() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!(LEASE_LAST_RENEW).set(now);
}

#[cfg(test)]
mod tests {
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
}
