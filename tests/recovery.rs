//! Blind windows: a conversation that started and got its intent while the daemon could
//! not see it (before it started, or while its socket was down) is found by listing the
//! watched queue (`POST /api/v2/analytics/queues/observations/query`) and closed, once.
//! Loopback only: the built-in simulator answers the listing from its own world.

mod common;

use std::time::Duration;

use common::*;
use genesys_closer::closer::Outcome;
use genesys_closer::genesys::frames::Source;
use genesys_sim::{RestFault, SimConfig};

const OBSERVATIONS: &str = "/api/v2/analytics/queues/observations/query";

fn disconnects(sim: &genesys_sim::SimHandle, id: &str) -> usize {
    calls_for(sim, id)
        .iter()
        .filter(|c| c.starts_with("PATCH "))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_that_got_their_intent_before_the_start_are_closed_once() {
    let sim = start_sim(SimConfig::default()).await;
    // Started, with their intent, while no daemon was running: no event of theirs will
    // ever be pushed again unless something happens to them.
    let matching: Vec<String> = (0..3)
        .map(|_| sim.create_conversation(conversation(Some("Goodbye"))))
        .collect();
    let other = sim.create_conversation(conversation(Some("Billing")));
    let quiet = sim.create_conversation(conversation(None));
    // One that ended before the start needs no close and is not listed.
    let ended = sim.create_conversation(conversation(Some("Goodbye")));
    sim.customer_leaves(&ended);

    let config = config(&sim.base_url(), &sim.base_url(), "");
    let mut daemon = start_daemon(config, &sim).await;
    let mut closed = Vec::new();
    for _ in 0..matching.len() {
        let r = daemon.next_report(Duration::from_secs(20)).await;
        assert_eq!(r.outcome, Outcome::Confirmed, "{r:?}");
        assert_eq!(r.source, Source::Recovery, "{r:?}");
        closed.push(r.conversation_id.to_string());
    }
    closed.sort();
    let mut want = matching.clone();
    want.sort();
    assert_eq!(closed, want);
    daemon.assert_no_report(Duration::from_millis(500)).await;
    for id in &matching {
        assert_eq!(disconnects(&sim, id), 1, "{:?}", calls_for(&sim, id));
        assert_eq!(sim.is_closed(id), Some(true));
    }
    for id in [&other, &quiet, &ended] {
        assert_eq!(disconnects(&sim, id), 0, "{:?}", calls_for(&sim, id));
    }
    // The ended one was not read: it was not listed.
    assert!(calls_for(&sim, &ended).is_empty());
    assert_eq!(sim.observation_queries(), 1, "one listing at start");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_born_while_every_socket_was_down_is_closed_after_it() {
    let sim = start_sim(SimConfig::default()).await;
    let config = config(&sim.base_url(), &sim.base_url(), "");
    let mut daemon = start_daemon(config, &sim).await;
    // The start-up listing has run (nothing to find).
    wait_for(Duration::from_secs(10), || sim.observation_queries() >= 1).await;
    // Every socket refused for a while: the daemon sees nothing.
    sim.fail_requests(RestFault {
        path_prefix: "/channels/".into(),
        status: 503,
        retry_after: None,
        count: 10,
    });
    sim.drop_sockets();
    wait_for(Duration::from_secs(5), || sim.connected_sockets() == 0).await;
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    // Back: the gap no mirror covered is recovered by a listing.
    let r = daemon.next_report(Duration::from_secs(30)).await;
    assert_eq!(r.conversation_id.as_ref(), id.as_str(), "{r:?}");
    assert_eq!(r.outcome, Outcome::Confirmed, "{r:?}");
    assert_eq!(r.source, Source::Recovery, "found by the listing: {r:?}");
    assert!(sim.observation_queries() >= 2);
    assert_eq!(disconnects(&sim, &id), 1, "{:?}", calls_for(&sim, &id));
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_listing_is_not_asked_again_and_the_daemon_carries_on() {
    let sim = start_sim(SimConfig::default()).await;
    sim.fail_requests_for(OBSERVATIONS, 403, None, Duration::from_secs(3600));
    let config = config(&sim.base_url(), &sim.base_url(), "");
    let mut daemon = start_daemon(config, &sim).await;
    let listings = || {
        sim.requests()
            .iter()
            .filter(|r| r.path.starts_with(OBSERVATIONS))
            .count()
    };
    wait_for(Duration::from_secs(10), || listings() == 1).await;
    // A gap no mirror covers would list again; a refused listing is not asked again.
    sim.drop_sockets();
    wait_for(Duration::from_secs(10), || sim.connected_sockets() >= 1).await;
    // Pushed on the new socket, after the gap was judged (the stream reports it live
    // before it reads): closed as usual.
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    let r = daemon.next_report(Duration::from_secs(20)).await;
    assert_eq!(r.conversation_id.as_ref(), id.as_str(), "{r:?}");
    assert_eq!(r.outcome, Outcome::Confirmed, "{r:?}");
    assert_eq!(listings(), 1);
    daemon.shutdown().await;
}
