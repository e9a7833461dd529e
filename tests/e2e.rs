//! The whole loop on loopback: simulator frames in, REST closes out, confirmation from
//! the pushed events. Real clock, real sockets, the built-in simulator as Genesys.

mod common;

use std::time::Duration;

use common::*;
use genesys_closer::closer::{ConfirmedBy, Outcome};
use genesys_sim::{Faults, SimConfig};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matched_intent_is_closed_with_one_request_and_confirmed_by_the_event() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, ""), &sim).await;

    let other = sim.create_conversation(conversation(Some("TalkToAgent")));
    let silent = sim.create_conversation(conversation(None));
    let bye = sim.create_conversation(conversation(Some("Goodbye")));

    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, bye.as_str());
    assert_eq!(r.outcome, Outcome::Confirmed);
    assert_eq!(r.confirmed_by, Some(ConfirmedBy::Event));
    assert_eq!(&*r.rule, "goodbye");
    assert_eq!(&*r.intent, "Goodbye");
    assert_eq!(r.queue_id.as_deref(), Some(QUEUE));
    assert_eq!(r.requests(), 1);
    assert_eq!(sim.is_closed(&bye), Some(true));

    // Exactly one disconnect and no polling read for the happy path.
    assert_eq!(
        calls_for(&sim, &bye),
        vec![format!("PATCH /api/v2/conversations/messages/{bye}")]
    );
    let reads = sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/api/v2/conversations"))
        .count();
    assert_eq!(reads, 0, "the happy path must not poll");

    // Conversations without a matching intent are untouched.
    d.assert_no_report(Duration::from_millis(300)).await;
    assert!(calls_for(&sim, &other).is_empty());
    assert!(calls_for(&sim, &silent).is_empty());
    assert_eq!(sim.is_closed(&other), Some(false));
    assert_eq!(sim.is_closed(&silent), Some(false));

    // The same conversation closing again (duplicate frames) is not decided twice.
    sim.customer_leaves(&bye);
    d.assert_no_report(Duration::from_millis(300)).await;

    let summary = d.shutdown().await;
    assert_eq!(summary.decisions, 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_confirmation_reads_once_then_escalates_to_teardown() {
    let sim = start_sim(SimConfig::default()).await;
    sim.set_faults(Faults {
        ignore_disconnect: true,
        ignore_teardown: false,
        ..Faults::default()
    });
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, "confirm_timeout = \"400ms\""), &sim).await;

    let id = sim.create_conversation(conversation(Some("CancelSubscription")));
    let r = d.next_report(WAIT).await;
    assert_eq!(r.outcome, Outcome::EscalatedConfirmed, "{r:?}");
    assert_eq!(
        r.sent,
        ["patch_conversation", "get_conversation", "teardown"]
    );
    assert_eq!(
        calls_for(&sim, &id),
        vec![
            format!("PATCH /api/v2/conversations/messages/{id}"),
            format!("GET /api/v2/conversations/messages/{id}"),
            format!("POST /api/v2/conversations/{id}/disconnect"),
        ]
    );
    assert!(r.latency >= Duration::from_millis(400));
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_never_happens_is_reported_failed_with_the_reason() {
    let sim = start_sim(SimConfig::default()).await;
    sim.set_faults(Faults {
        ignore_disconnect: true,
        ignore_teardown: true,
        ..Faults::default()
    });
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, "confirm_timeout = \"300ms\""), &sim).await;

    let id = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.requests(), 3);
    let reason = r.reason.expect("a failure says why");
    assert!(reason.contains("after the full teardown"), "{reason}");
    assert_eq!(calls_for(&sim, &id).len(), 3);
    assert_eq!(sim.is_closed(&id), Some(false));
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_closed_before_the_decision_sends_nothing() {
    let sim = start_sim(SimConfig::default()).await;
    // Created while no daemon listens: its first frame reaches nobody.
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    let url = sim.base_url();
    let mut config = config(&url, &url, "");
    // Without the start-up listing (tests/recovery.rs has it find such a conversation
    // and close it), nothing tells the daemon of it until its next event.
    config.stream.recover_queues = false;
    let mut d = start_daemon(config, &sim).await;

    // The guest leaves; the daemon's first sight of it is closed, with the intent set.
    sim.customer_leaves(&id);
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!(r.outcome, Outcome::AlreadyClosed);
    assert_eq!(r.requests(), 0);
    assert!(calls_for(&sim, &id).is_empty());
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_decides_and_sends_nothing() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, "dry_run = true"), &sim).await;
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(r.outcome, Outcome::DryRun);
    assert_eq!(r.requests(), 0);
    assert!(calls_for(&sim, &id).is_empty());
    assert_eq!(sim.is_closed(&id), Some(false));
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_mode_disconnects_only_the_customer_participant() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, "disconnect = \"customer\""), &sim).await;
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(r.outcome, Outcome::Confirmed);
    let calls = calls_for(&sim, &id);
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0].starts_with(&format!(
            "PATCH /api/v2/conversations/messages/{id}/participants/"
        )),
        "{calls:?}"
    );
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_dropped_sockets_planned_closes_and_revoked_tokens() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, ""), &sim).await;

    // An abrupt drop: the daemon backs off and reconnects on its own.
    sim.drop_sockets();
    wait_for(WAIT, || sim.connected_sockets() == 0).await;
    wait_for(WAIT, || sim.connected_sockets() == 1).await;
    let a = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(
        (&*r.conversation_id, r.outcome),
        (a.as_str(), Outcome::Confirmed)
    );

    // A planned close: a fresh channel goes live before the old socket is let go.
    let channels_before = count(&sim, "POST", "/api/v2/notifications/channels");
    sim.send_socket_closing();
    wait_for(WAIT, || {
        count(&sim, "POST", "/api/v2/notifications/channels") == channels_before + 1
    })
    .await;
    // Both sockets overlap for a moment, then only the new one stays.
    wait_for(WAIT, || sim.connected_sockets() == 1).await;

    // A revoked token: the 401 renews the token once and the close still goes through.
    let tokens_before = count(&sim, "POST", "/oauth/token");
    let requests_before = sim.requests().len();
    sim.revoke_tokens();
    let b = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(
        (&*r.conversation_id, r.outcome),
        (b.as_str(), Outcome::Confirmed)
    );
    assert_eq!(count(&sim, "POST", "/oauth/token"), tokens_before + 1);
    // Whichever request came first after the revocation (the disconnect, or a
    // subscription call that happened to go first) met the 401 that renewed the token.
    let after: Vec<(String, u16)> = sim.requests()[requests_before..]
        .iter()
        .filter(|q| q.path != "/oauth/token" && q.auth_scheme.as_deref() == Some("Bearer"))
        .map(|q| (format!("{} {}", q.method, q.path), q.status))
        .collect();
    assert_eq!(after.first().map(|(_, s)| *s), Some(401), "{after:?}");
    let statuses: Vec<u16> = after
        .iter()
        .filter(|(p, _)| p.contains(&b))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        statuses.last().map(|s| *s < 300),
        Some(true),
        "{statuses:?}"
    );
    d.shutdown().await;
    sim.shutdown().await;
}

fn count(sim: &genesys_sim::SimHandle, method: &str, path: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_declared_dead_and_replaced() {
    // Heartbeats every 100 ms while healthy; the daemon pings after 300 ms of silence
    // and gives up after 700 ms.
    let sim = start_sim(SimConfig {
        heartbeat_interval: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let url = sim.base_url();
    let mut cfg = config(&url, &url, "");
    cfg.stream.ping_after = Duration::from_millis(300);
    cfg.stream.heartbeat_timeout = Duration::from_millis(700);
    let mut d = start_daemon(cfg, &sim).await;

    // Healthy heartbeats keep one socket for a while: no reconnect.
    let upgrades = || {
        sim.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/channels/"))
            .count()
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(upgrades(), 1, "heartbeats keep the socket alive");

    // The socket goes quiet but stays open: only the daemon's own deadline can notice.
    sim.set_faults(Faults {
        silent_sockets: true,
        ..Faults::default()
    });
    wait_for(WAIT, || upgrades() >= 2).await;
    sim.set_faults(Faults::default());
    wait_for(WAIT, || sim.connected_sockets() == 1).await;

    let id = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(
        (&*r.conversation_id, r.outcome),
        (id.as_str(), Outcome::Confirmed)
    );
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_pushed_while_the_stream_was_down_is_found_by_the_resync_read() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let mut cfg = config(&url, &url, "");
    // A slow reconnect, so the gap is certain.
    cfg.stream.backoff_min = Duration::from_millis(1500);
    cfg.stream.backoff_max = Duration::from_millis(2000);
    let mut d = start_daemon(cfg, &sim).await;
    let id = sim.create_conversation(conversation(None));
    wait_for(WAIT, || !sim.pushed_frames().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The channel vanishes; while the daemon waits to make a new one, the bot sets the
    // intent: that frame reaches nobody (Genesys has no replay).
    sim.expire_channels();
    wait_for(WAIT, || sim.connected_sockets() == 0).await;
    sim.set_intent(&id, "Goodbye");
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!(
        (r.outcome, r.source),
        (
            Outcome::Confirmed,
            genesys_closer::genesys::frames::Source::Read
        ),
        "decided from the resync read: {r:?}"
    );
    let summary = d.shutdown().await;
    assert!(summary.resync_reads >= 1, "{summary:?}");
    sim.shutdown().await;
}
