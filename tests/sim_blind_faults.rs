//! The simulator faults behind the fault matrix's blind-window rows, seen from a raw
//! client: `refuse_sockets_for` refuses WebSocket upgrades while the REST API works;
//! `fail_endpoint_for` fails one method on one exact path (channel creation) while the
//! calls below it and other methods are served. Real clock, loopback only.

#[allow(dead_code)]
#[path = "sim_faults/support.rs"]
mod support;

use std::time::Duration;

use genesys_sim::{self as sim, SimConfig};
use tokio::time::sleep;
use tokio_tungstenite::tungstenite;

use support::*;

#[tokio::test]
async fn refused_sockets_leave_the_api_up() -> TestResult {
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;
    let topics = [queue_topic(QUEUE)];
    let (id, uri, _) = api.channel(&topics).await;
    let mut ws = connect(&uri).await;

    sim.refuse_sockets_for(Duration::from_millis(400));
    sim.drop_sockets();
    read_to_abrupt_end(&mut ws).await;
    match tokio_tungstenite::connect_async(uri.as_str()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!(
            "the upgrade must be refused with 503: {:?}",
            other.map(|_| ())
        ),
    }
    // The REST API answers meanwhile: a new channel, the old one's subscriptions.
    let (_, other_uri, _) = api.channel(&topics).await;
    assert_eq!(api.subscriptions(&id).await, Some(topics.to_vec()));
    assert!(
        tokio_tungstenite::connect_async(other_uri.as_str())
            .await
            .is_err()
    );

    sleep(Duration::from_millis(450)).await;
    let mut ws = connect(&uri).await;
    let c = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(next_json(&mut ws).await["eventBody"]["id"], c.as_str());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn one_endpoint_fails_while_its_neighbours_work() -> TestResult {
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;
    let topics = [queue_topic(QUEUE)];
    let (id, _, _) = api.channel(&topics).await;

    sim.fail_endpoint_for("POST", CHANNELS, 503, Some(1), Duration::from_millis(300));
    let refused = api.call("POST", CHANNELS, "").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["code"], "service.unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Same path, another method; a path below it: served.
    assert_eq!(api.call("GET", CHANNELS, "").await.status, 200);
    let subs = format!("{CHANNELS}/{id}/subscriptions");
    let post = api.call(
        "POST",
        &subs,
        r#"[{"id":"v2.users.u1.conversations.messages"}]"#,
    );
    assert_eq!(post.await.status, 200);

    sleep(Duration::from_millis(350)).await;
    assert_eq!(api.call("POST", CHANNELS, "").await.status, 200);
    let statuses: Vec<u16> = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == CHANNELS)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 503, 200]);
    sim.shutdown().await;
    Ok(())
}
