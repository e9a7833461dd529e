//! The close sequence once the close is seen, and while no token can be had (issue 13,
//! items 5 and 6): a disconnect in flight when the closing event arrives is never sent
//! again, whatever its request then does; a close that could not be sent for want of a
//! token is kept (and survives a restart) until the login works again, never `failed`.
//! The real daemon in-process against the simulator on loopback, and the closer alone
//! for the step where the wrap-up must still run.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use genesys_closer::closer::{CloseReport, Closer, ConfirmedBy, Decision, Outcome, Waiters};
use genesys_closer::genesys::api::ApiClient;
use genesys_closer::genesys::auth::TokenSource;
use genesys_closer::genesys::frames::{Source, Wanted};
use genesys_closer::genesys::subscriptions::Subscriptions;
use genesys_closer::journal::Backend as _;
use genesys_closer::rules::{Rules, Verdict};
use genesys_closer::state::Store;
use genesys_sim::{ConversationSpec, RequestDelay, RestFault, SimConfig, SimHandle};
use secrecy::SecretString;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use url::Url;

const WAIT: Duration = Duration::from_secs(10);
const MESSAGES: &str = "/api/v2/conversations/messages/";
const AGENT: &str = "5a5a5a5a-1111-4222-8333-444455556666";
const TOKEN: &str = "/oauth/token";

/// The disconnect PATCHes of a conversation (whole or customer only), with their
/// arrival time and the status answered (0: still held).
fn patches(sim: &SimHandle, id: &str) -> Vec<(Instant, u16)> {
    let own = format!("{MESSAGES}{id}");
    sim.requests_timed()
        .into_iter()
        .filter(|(_, r)| {
            r.method == "PATCH"
                && (r.path == own || r.path.starts_with(&format!("{own}/participants/")))
        })
        .map(|(at, r)| (at, r.status))
        .collect()
}

fn accepted_patches(sim: &SimHandle, id: &str) -> usize {
    patches(sim, id)
        .iter()
        .filter(|(_, s)| (200..300).contains(s))
        .count()
}

/// Token grants the login host refused so far.
fn refused_logins(sim: &SimHandle) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path == TOKEN && r.status == 401)
        .count()
}

fn with_agent(intent: Option<&str>) -> ConversationSpec {
    ConversationSpec {
        agent_user_id: Some(AGENT.into()),
        ..conversation(intent)
    }
}

/// The next `n` reports, in whatever order they come.
async fn reports(d: &mut Running, n: usize, within: Duration) -> Vec<CloseReport> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        out.push(d.next_report(left).await);
    }
    out
}

/// Stops the daemon and returns its summary, keeping its report stream.
async fn stop(
    d: Running,
) -> (
    genesys_closer::daemon::Summary,
    mpsc::UnboundedReceiver<CloseReport>,
) {
    let Running {
        reports,
        stop,
        task,
        _state,
    } = d;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("daemon stops in time")
        .expect("daemon task did not panic")
        .expect("daemon ran");
    (summary, reports)
}

/// Disconnects hang (held far beyond the client's 15 s request time-out) while the
/// conversations end by another path and their closing events are pushed: each close
/// is confirmed by its event at once, and no conversation gets a second disconnect,
/// neither a retry of the hung one nor a fresh one, before or after its close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_hanging_when_the_close_is_seen_is_never_sent_again() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, ""), &sim).await;
    sim.hold_requests(RequestDelay {
        path_prefix: MESSAGES.into(),
        method: Some("PATCH".into()),
        delay: Duration::from_secs(30),
        count: 3,
        completes_without_client: false,
    });
    let ids: Vec<String> = (0..3)
        .map(|_| sim.create_conversation(conversation(Some("Goodbye"))))
        .collect();
    wait_for(WAIT, || {
        ids.iter()
            .all(|id| patches(&sim, id).iter().any(|(_, s)| *s == 0))
    })
    .await;
    // The guests leave while the disconnects hang: their closing events are pushed.
    let mut closed_at = Vec::new();
    for id in &ids {
        closed_at.push(Instant::now());
        sim.customer_leaves(id);
    }

    for r in reports(&mut d, ids.len(), WAIT).await {
        assert!(ids.iter().any(|id| *id == *r.conversation_id), "{r:?}");
        assert_eq!(
            (r.outcome, r.confirmed_by),
            (Outcome::Confirmed, Some(ConfirmedBy::Event)),
            "{r:?}"
        );
        // The hung disconnect was never answered: it is not counted as sent.
        assert!(r.sent.is_empty(), "{r:?}");
        assert!(
            r.latency < Duration::from_secs(5),
            "confirmed by the event, not after the request time-out: {r:?}"
        );
    }
    // Every sequence has ended: whatever they would still send, they would have sent.
    let (summary, _) = stop(d).await;
    assert_eq!(summary.abandoned, 0);
    for (id, closed_at) in ids.iter().zip(&closed_at) {
        let sent = patches(&sim, id);
        assert_eq!(sent.len(), 1, "{id}: exactly one disconnect: {sent:?}");
        assert!(
            sent.iter().all(|(at, _)| at < closed_at),
            "{id}: no disconnect after its closing event"
        );
        let teardown = format!("POST /api/v2/conversations/{id}/disconnect");
        assert!(
            !calls_for(&sim, id).contains(&teardown),
            "{id}: no teardown"
        );
    }
    sim.shutdown().await;
}

/// A burst of 503s on the disconnect (the client's own retries, then the sequence's)
/// while the guest leaves: no disconnect goes out after the closing event, and the
/// close is confirmed, with the rule's wrap-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_seen_during_a_503_burst_stops_the_disconnects_and_still_wraps_up() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, "wrapup_code = \"w-bye\""), &sim).await;
    // Every messaging call answers 503 until the conversation has closed.
    sim.fail_requests_for(MESSAGES, 503, None, Duration::from_secs(120));
    let id = sim.create_conversation(with_agent(Some("Goodbye")));
    let refused = |n: usize| {
        let sim = sim.clone();
        let id = id.clone();
        move || patches(&sim, &id).iter().filter(|(_, s)| *s == 503).count() >= n
    };
    wait_for(WAIT, refused(2)).await;
    // Right after a 503 (the next retry is at least 200 ms away), the guest leaves.
    let closed_at = Instant::now();
    sim.customer_leaves(&id);
    // The burst ends, so the wrap-up (under the same path) can be served.
    sim.clear_request_faults();

    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!(
        (r.outcome, r.confirmed_by),
        (Outcome::Confirmed, Some(ConfirmedBy::Event)),
        "{r:?}"
    );
    assert!(r.sent.contains(&"wrapup"), "the rule's wrap-up ran: {r:?}");
    let wrapups: Vec<_> = sim
        .wrapups()
        .into_iter()
        .filter(|w| w.conversation_id == id)
        .collect();
    assert_eq!(wrapups.len(), 1, "{wrapups:?}");
    assert_eq!(wrapups[0].code, "w-bye");
    stop(d).await;
    let sent = patches(&sim, &id);
    assert!(
        sent.iter().all(|(at, _)| *at < closed_at),
        "no disconnect after the closing event: {sent:?}"
    );
    assert_eq!(accepted_patches(&sim, &id), 0);
    sim.shutdown().await;
}

/// The login refused (the client secret revoked: `/oauth/token` answers 401) while
/// conversations match: no close fails, not even past the rule's `retry_for`; once the
/// login works again each is disconnected once and confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_keeps_the_closes_until_it_works_again() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    // A short deadline for failures that pass: it must not apply to a refused login.
    let mut d = start_daemon(config(&url, &url, "retry_for = \"2s\""), &sim).await;
    sim.fail_requests_for(TOKEN, 401, None, Duration::from_secs(3600));
    sim.revoke_tokens();
    let ids: Vec<String> = (0..3)
        .map(|_| sim.create_conversation(conversation(Some("Goodbye"))))
        .collect();
    // The first call met the revoked token, and every close then asked for a token in
    // vain (without sending its disconnect).
    wait_for(WAIT, || refused_logins(&sim) >= ids.len()).await;
    let refused_before = refused_logins(&sim);
    // Longer than `retry_for`: nothing is reported, and the login is tried again.
    d.assert_no_report(Duration::from_secs(4)).await;
    assert!(
        refused_logins(&sim) > refused_before,
        "the login is tried again"
    );
    for id in &ids {
        assert_eq!(accepted_patches(&sim, id), 0);
        assert_eq!(sim.is_closed(id), Some(false));
    }

    // The credential works again.
    sim.clear_request_faults();
    for r in reports(&mut d, ids.len(), Duration::from_secs(60)).await {
        assert_eq!(
            (r.outcome, r.confirmed_by),
            (Outcome::Confirmed, Some(ConfirmedBy::Event)),
            "{r:?}"
        );
        assert_eq!(r.sent, ["patch_conversation"], "{r:?}");
    }
    stop(d).await;
    for id in &ids {
        assert_eq!(
            accepted_patches(&sim, id),
            1,
            "{id}: one disconnect accepted"
        );
        assert_eq!(sim.is_closed(id), Some(true));
    }
    sim.shutdown().await;
}

/// The daemon stops while the login is refused: the close is left unfinished (no
/// outcome; the drain does not wait for the login), and the next start, with the
/// login working, resumes it and closes the conversation with one disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_waiting_for_the_login_survives_a_restart() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let state = tempfile::tempdir().expect("state dir");
    let cfg = || {
        let mut c = config(&url, &url, "");
        c.daemon.state_dir = state.path().to_path_buf();
        c
    };
    let mut d = start_daemon(cfg(), &sim).await;
    sim.fail_requests_for(TOKEN, 401, None, Duration::from_secs(3600));
    sim.revoke_tokens();
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    wait_for(WAIT, || refused_logins(&sim) >= 1).await;
    // Past the first refusal: the close is in its wait for the login.
    d.assert_no_report(Duration::from_millis(500)).await;
    let asked = Instant::now();
    let (summary, mut reports) = stop(d).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the drain does not wait for the login"
    );
    assert_eq!(summary.abandoned, 0, "{summary:?}");
    assert!(
        reports.try_recv().is_err(),
        "no outcome for a close that never got a token"
    );
    let unfinished = genesys_closer::journal::open_read(state.path())
        .expect("journal readable")
        .unfinished()
        .expect("unfinished closes");
    assert!(
        unfinished.iter().any(|u| u.decision.conversation_id == id),
        "{unfinished:?}"
    );
    assert_eq!(accepted_patches(&sim, &id), 0);

    sim.clear_request_faults();
    let mut d = start_daemon(cfg(), &sim).await;
    let r = d.next_report(Duration::from_secs(30)).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!(r.outcome, Outcome::Confirmed, "{r:?}");
    stop(d).await;
    assert_eq!(accepted_patches(&sim, &id), 1);
    assert_eq!(sim.is_closed(&id), Some(true));
    sim.shutdown().await;
}

/// The login refused after the disconnect was accepted (it did not take): the
/// confirming read, and then the teardown, wait for the login instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_at_the_confirming_read_waits_instead_of_failing() {
    let sim = start_sim(SimConfig::default()).await;
    sim.set_faults(genesys_sim::Faults {
        ignore_disconnect: true,
        ..Default::default()
    });
    let url = sim.base_url();
    let mut d = start_daemon(config(&url, &url, "confirm_timeout = \"1s\""), &sim).await;
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    wait_for(WAIT, || accepted_patches(&sim, &id) == 1).await;
    // Within the confirm time: the read will need a new token, and get none.
    sim.fail_requests_for(TOKEN, 401, None, Duration::from_secs(3600));
    sim.revoke_tokens();
    wait_for(WAIT, || refused_logins(&sim) >= 1).await;
    d.assert_no_report(Duration::from_secs(3)).await;

    sim.clear_request_faults();
    let r = d.next_report(Duration::from_secs(40)).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!(r.outcome, Outcome::EscalatedConfirmed, "{r:?}");
    assert_eq!(
        r.sent,
        ["patch_conversation", "get_conversation", "teardown"],
        "{r:?}"
    );
    stop(d).await;
    assert_eq!(accepted_patches(&sim, &id), 1);
    sim.shutdown().await;
}

/// The closer alone: the disconnect answered 503 (one call's worth of tries, so the
/// sequence is in its retry pause), then the closing event: the close is confirmed
/// with the rule's wrap-up, and no disconnect goes out after the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrapup_runs_when_the_close_is_seen_while_a_503_is_retried() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let cfg = config(&url, &url, "wrapup_code = \"w-unit\"");
    genesys_closer::telemetry::init_logging(&cfg.log);
    let rule = Rules::compile(&cfg).rule("goodbye").expect("the rule");
    let base = Url::parse(&url).expect("sim url");
    let http = ApiClient::http_client().expect("http client");
    let tokens = TokenSource::new(
        http.clone(),
        &base,
        "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7".into(),
        SecretString::from("sim-secret".to_string()),
    );
    let state = tempfile::tempdir().expect("state dir");
    let opened = genesys_closer::journal::open(state.path(), 0).expect("journal");
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (resync_tx, _resync) = mpsc::channel(16);
    let closer = Closer {
        api: Arc::new(ApiClient::new(http, base, tokens)),
        store: Arc::new(Store::new()),
        waiters: Arc::new(Waiters::default()),
        resync: resync_tx,
        wanted_attributes: Wanted::new(&["Bot.Intent".into()]),
        reports: reports_tx,
        tracker: TaskTracker::new(),
        subs: Subscriptions::disabled("not needed here"),
        journal: opened.journal.clone(),
        running: Arc::new(Semaphore::new(4)),
        in_progress: Default::default(),
    };

    let id = sim.create_conversation(with_agent(Some("Goodbye")));
    const TRIES: usize = 4; // one call's tries under the client's retry policy
    sim.fail_requests(RestFault {
        path_prefix: format!("{MESSAGES}{id}"),
        status: 503,
        retry_after: None,
        count: TRIES,
    });
    closer.start(Decision {
        conversation_id: id.as_str().into(),
        verdict: Verdict {
            rule,
            intent: "Goodbye".into(),
        },
        queue_id: Some(QUEUE.into()),
        customer_id: None,
        already_closed: false,
        decided_at: tokio::time::Instant::now(),
        source: Source::Queue,
        watch: false,
        resume: None,
        event_correlation_id: None,
    });
    wait_for(WAIT, || {
        patches(&sim, &id).iter().filter(|(_, s)| *s == 503).count() >= TRIES
    })
    .await;
    // The guest leaves; its closing event reaches the waiter.
    sim.customer_leaves(&id);
    let seen = Instant::now();
    closer.waiters.notify(&id, tokio::time::Instant::now());

    let r = tokio::time::timeout(WAIT, reports.recv())
        .await
        .expect("a report in time")
        .expect("a report");
    assert_eq!(
        (r.outcome, r.confirmed_by),
        (Outcome::Confirmed, Some(ConfirmedBy::Event)),
        "{r:?}"
    );
    assert!(r.reason.is_none(), "{r:?}");
    assert!(r.sent.contains(&"wrapup"), "{r:?}");
    let wrapups = sim.wrapups();
    assert_eq!(wrapups.len(), 1, "{wrapups:?}");
    assert_eq!(
        (
            wrapups[0].conversation_id.as_str(),
            wrapups[0].code.as_str()
        ),
        (id.as_str(), "w-unit")
    );
    closer.tracker.close();
    closer.tracker.wait().await;
    assert!(
        patches(&sim, &id).iter().all(|(at, _)| *at < seen),
        "no disconnect after the close was seen"
    );
    sim.shutdown().await;
}
