//! `[metrics]`: the daemon against the simulator, scraped over its loopback endpoints.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use genesys_closer::closer::Outcome;
use genesys_sim::SimConfig;

const WAIT: Duration = Duration::from_secs(10);

/// A family after `genesys_closer_`, labels its sample must have, and its least value.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// The sum of the samples of `name` whose labels include every one of `labels`;
/// `None` when there is no such sample.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match head.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        if metric != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")))
        {
            let v: f64 = value.parse().expect("a number");
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `/metrics` until `cond` holds on it.
async fn scrape_until(addr: SocketAddr, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(addr).await;
        if cond(&text) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http(addr, "GET", "/readyz", "").await;
        if status == 200 {
            return;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready in time: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_rotations_and_reconnects_show_in_the_metrics() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, maddr, intake) = start_metrics_daemon(bot_config(&url, ""), &sim).await;
    let intake = intake.expect("the bot config has the intake");
    ready(maddr).await;
    let (status, body) = http(maddr, "GET", "/healthz", "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // One matching queue conversation, closed and confirmed.
    let bye = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, bye.as_str());
    assert_eq!(r.outcome, Outcome::Confirmed);
    // One intake call without its credential.
    let (status, _) = http(intake, "POST", "/v1/intents", "Content-Length: 2\r\n\r\n{}").await;
    assert_eq!(status, 401);

    // A maintenance warning (a rotation), then every socket dropped (a reconnect).
    sim.send_socket_closing();
    let rotation = [("reason", "socket_closing")];
    scrape_until(maddr, "a rotation counted", |t| {
        sample(t, "genesys_closer_rotations_total", &rotation).unwrap_or(0.0) >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sim.drop_sockets();
    scrape_until(maddr, "a reconnect counted", |t| {
        sample(t, "genesys_closer_reconnects_total", &[]).unwrap_or(0.0) >= 1.0
    })
    .await;
    ready(maddr).await;
    // `/readyz` may still answer from before the drop was noticed, so the
    // final scrape waits for the replacement socket itself.
    let text = scrape_until(maddr, "the socket back", |t| {
        sample(t, "genesys_closer_streams_live", &[]).unwrap_or(0.0) >= 1.0
            && sample(t, "genesys_closer_tracked_conversations", &[]).is_some()
    })
    .await;

    let rule = ("rule", "goodbye");
    let queue = ("source", "queue");
    let op = |name| ("operation", name);
    let confirmed = ("outcome", "confirmed");
    let expected: [Expected; 17] = [
        ("frames_total", &[("kind", "conversation")], 1.0),
        ("decisions_total", &[rule, queue], 1.0),
        ("outcomes_total", &[rule, queue, confirmed], 1.0),
        ("close_latency_seconds_count", &[rule], 1.0),
        ("close_latency_seconds_bucket", &[rule, ("le", "60")], 1.0),
        ("api_requests_total", &[op("patch_conversation")], 1.0),
        ("api_requests_total", &[op("token"), ("status", "200")], 1.0),
        ("api_requests_total", &[op("create_channel")], 2.0),
        ("api_requests_total", &[op("put_subscriptions")], 1.0),
        ("budget_wait_seconds_count", &[("priority", "close")], 1.0),
        ("budget_queued", &[("priority", "close")], 0.0),
        ("tracked_conversations", &[], 0.0),
        ("watched_topics", &[], 0.0),
        ("streams_live", &[], 1.0),
        ("journal_errors_total", &[], 0.0),
        ("intake_requests_total", &[("status", "401")], 1.0),
        ("reconnects_total", &[("reason", "socket_error")], 0.0),
    ];
    for (family, labels, least) in expected {
        let name = format!("genesys_closer_{family}");
        let v = sample(&text, &name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"));
        assert!(v >= least, "{name} {labels:?} = {v}:\n{text}");
    }
    let errors = sample(&text, "genesys_closer_journal_errors_total", &[]);
    assert_eq!(errors, Some(0.0));
    // No conversation id ever becomes a label.
    assert!(!text.contains(bye.as_str()), "a conversation id in a label");

    let (status, _) = http(maddr, "GET", "/healthz", "").await;
    assert_eq!(status, 200);
    let summary = d.shutdown().await;
    assert_eq!(summary.decisions, 1);
    sim.shutdown().await;
}

/// The body of `/readyz` once it answers 503, waiting for the streams first.
async fn readiness(addr: SocketAddr) -> (u16, String) {
    http(addr, "GET", "/readyz", "").await
}

/// Journal writes that fail some of the time (a trigger refuses every step while
/// decisions and outcomes still go in, as on a disk that fails some writes) keep
/// `/readyz` at 503 naming the journal, although writes succeed in between; once
/// they stop failing it is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_503_while_journal_writes_keep_failing() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, maddr, _) = start_metrics_daemon(config(&url, &url, ""), &sim).await;
    ready(maddr).await;
    let state = d._state.as_ref().expect("a private state dir").path();
    let db = rusqlite::Connection::open(genesys_closer::journal::db_path(state)).expect("open");
    db.busy_timeout(WAIT).expect("busy timeout");
    db.execute_batch(
        "CREATE TRIGGER refuse_steps BEFORE INSERT ON steps \
         BEGIN SELECT RAISE(ABORT, 'injected: the disk refuses this write'); END;",
    )
    .expect("trigger");
    let outcome_stored = |id: &str| {
        db.query_row(
            "SELECT outcome IS NOT NULL FROM decisions WHERE conversation_id = ?1",
            [id],
            |r| r.get::<_, bool>(0),
        )
        .unwrap_or(false)
    };

    for _ in 0..3 {
        let id = sim.create_conversation(conversation(Some("Goodbye")));
        let r = d.next_report(WAIT).await;
        assert_eq!(
            (&*r.conversation_id, r.outcome),
            (id.as_str(), Outcome::Confirmed)
        );
        // The decision and the outcome were stored after the step failed: the last
        // write succeeded, and writes are still failing.
        assert!(outcome_stored(&id), "the outcome is journalled");
        let (status, body) = readiness(maddr).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("journal: writes failing since 20"), "{body}");
        assert!(!body.contains("streams"), "{body}");
    }
    let text = scrape(maddr).await;
    let errors = sample(&text, "genesys_closer_journal_errors_total", &[]).unwrap_or(0.0);
    assert!(errors >= 3.0, "{errors}");
    assert_eq!(
        sample(&text, "genesys_closer_journal_failing", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "genesys_closer_ready", &[]), Some(0.0));

    // The disk heals: the next close is journalled whole, and readiness comes back.
    db.execute_batch("DROP TRIGGER refuse_steps;")
        .expect("drop trigger");
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = readiness(maddr).await;
        if status == 200 {
            break;
        }
        assert!(body.contains("journal"), "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = scrape(maddr).await;
    assert_eq!(
        sample(&text, "genesys_closer_journal_failing", &[]),
        Some(0.0)
    );
    assert_eq!(sample(&text, "genesys_closer_ready", &[]), Some(1.0));
    d.shutdown().await;
    sim.shutdown().await;
}
