//! The simulator's fault injection does what its docs say, seen from a raw
//! client (reqwest + tokio-tungstenite) the way the daemon sees it. Real clock,
//! loopback only, short timings with generous deadlines.

#[path = "sim_faults/support.rs"]
mod support;

use std::time::{Duration, SystemTime};

use futures_util::SinkExt;
use genesys_sim::{self as sim, Faults, RestFault, SimConfig};
use jsonschema::Draft;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;

use support::*;

#[tokio::test]
async fn socket_closing_then_close_spares_the_replacement() -> TestResult {
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;
    let topics = [queue_topic(QUEUE)];
    let (a_id, a_uri, _) = api.channel(&topics).await;
    let (b_id, b_uri, _) = api.channel(&topics).await;
    let mut a1 = connect(&a_uri).await;
    let mut b = connect(&b_uri).await;

    let start = Instant::now();
    sim.socket_closing_then_close(Duration::from_millis(600));
    for ws in [&mut a1, &mut b] {
        let f = next_json(ws).await;
        assert_eq!(f["topicName"], "v2.system.socket_closing");
        assert!(f["metadata"]["CorrelationId"].is_string());
    }
    // Recorded once per call, as `send_socket_closing` does.
    let closings = sim.pushed_frames().into_iter();
    let closings = closings.filter(|f| f["topicName"] == "v2.system.socket_closing");
    assert_eq!(closings.count(), 1);
    // The client reconnects to the same channel at once (Genesys: "Yes").
    let mut a2 = connect(&a_uri).await;
    // Until the delay passes, the warned socket B still delivers events.
    let early = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(next_json(&mut b).await["eventBody"]["id"], early.as_str());
    assert_eq!(next_json(&mut a2).await["eventBody"]["id"], early.as_str());
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "too slow to tell"
    );
    read_to_abrupt_end(&mut b).await;
    assert!(start.elapsed() >= Duration::from_millis(590));
    wait_for("B detached", || sim.connected_sockets() == 1).await;

    // The replacement survived the close, and both channels kept their topics.
    let later = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(next_json(&mut a2).await["eventBody"]["id"], later.as_str());
    for id in [&a_id, &b_id] {
        assert_eq!(api.subscriptions(id).await, Some(topics.to_vec()));
    }
    let mut b2 = connect(&b_uri).await;
    let again = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(next_json(&mut b2).await["eventBody"]["id"], again.as_str());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn no_longer_subscribed_clears_the_topics_and_keeps_the_socket() -> TestResult {
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;
    let topics = [queue_topic(QUEUE)];
    let (live_id, live_uri, _) = api.channel(&topics).await;
    let (idle_id, _, _) = api.channel(&topics).await;
    let mut ws = connect(&live_uri).await;

    sim.no_longer_subscribed();
    let f = next_json(&mut ws).await;
    assert_eq!(
        f["topicName"],
        format!("v2.system.no_longer_subscribed.{live_id}")
    );
    assert_eq!(f["version"], "2");
    let body = f["eventBody"].as_object().ok_or("no body")?;
    let mut fields: Vec<&str> = body.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["channelId", "message", "reason", "systemTopicType"]
    );
    assert_eq!(body["systemTopicType"], "no_longer_subscribed");
    assert_eq!(body["reason"], "another_channel_subscribed");
    assert_eq!(body["channelId"], live_id.as_str());
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(f["metadata"]["CorrelationId"].is_string());
    assert!(sim.pushed_frames().contains(&f), "recorded as pushed");

    // Only the channel with a socket lost its topics.
    assert_eq!(api.subscriptions(&live_id).await, Some(vec![]));
    assert_eq!(api.subscriptions(&idle_id).await, Some(topics.to_vec()));
    // The socket is still open: ping gets pong, but events no longer come.
    ws.send(Message::Text(r#"{"message":"ping"}"#.into()))
        .await?;
    assert_eq!(next_json(&mut ws).await["eventBody"]["message"], "pong");
    let lost = sim.create_conversation(conversation(QUEUE, None));
    assert_quiet(&mut ws, Duration::from_millis(150)).await;
    assert_eq!(events_of(&sim, &lost)[0].delivered, 0);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn topics_drop_silently_while_heartbeats_go_on() -> TestResult {
    let sim = sim::start(SimConfig {
        heartbeat_interval: Duration::from_millis(80),
        ..SimConfig::default()
    })
    .await?;
    let api = Api::login(&sim).await?;
    let (id, uri, _) = api.channel(&[queue_topic(QUEUE)]).await;
    let mut ws = connect(&uri).await;
    let before = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(next_json(&mut ws).await["eventBody"]["id"], before.as_str());

    sim.drop_topics_silently();
    assert_eq!(api.subscriptions(&id).await, Some(vec![]));
    let lost = sim.create_conversation(conversation(QUEUE, None));
    let mut heartbeats = 0;
    let until = Instant::now() + Duration::from_millis(400);
    while let Some(m) = next_msg(&mut ws, until.saturating_duration_since(Instant::now())).await {
        let Message::Text(t) = m else {
            panic!("unexpected {m:?}")
        };
        let f: Value = serde_json::from_str(t.as_str())?;
        assert_eq!(f["eventBody"]["message"], "WebSocket Heartbeat", "{f}");
        heartbeats += 1;
    }
    assert!(heartbeats >= 2, "heartbeats stopped: {heartbeats}");
    assert_eq!(events_of(&sim, &lost)[0].delivered, 0);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn channels_expire_after_their_ttl_unless_resubscribed() -> TestResult {
    let ttl = Duration::from_millis(800);
    let sim = sim::start(SimConfig {
        channel_ttl: ttl,
        ..SimConfig::default()
    })
    .await?;
    let api = Api::login(&sim).await?;
    let topics = json!([{ "id": queue_topic(QUEUE) }]);
    let t0 = SystemTime::now();
    let (id, uri, created) = api.channel(&[queue_topic(QUEUE)]).await;
    let lifetime = expires(&created).duration_since(t0)?;
    assert!(lifetime <= ttl + Duration::from_millis(50), "{lifetime:?}");
    assert!(lifetime >= ttl - Duration::from_millis(200), "{lifetime:?}");
    let mut ws = connect(&uri).await;

    // Renewal half-way: the documented "resubscribe to topics".
    sleep(ttl / 2).await;
    let renewed_at = SystemTime::now();
    assert_eq!(api.subscribe(&id, &topics).await, 200);
    let listed = api.call("GET", CHANNELS, "").await;
    let entry = &listed.body["entities"][0];
    assert_eq!(entry["id"], id.as_str());
    assert!(expires(entry) >= renewed_at + ttl - Duration::from_millis(10));
    assert!(expires(entry) > expires(&created) + ttl / 4);
    // Past the first expiry the channel still lives, socket and all.
    sleep(ttl / 2 + Duration::from_millis(100)).await;
    let head = format!("{CHANNELS}/{id}");
    assert_eq!(api.call("HEAD", &head, "").await.status, 200);
    let alive = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(next_json(&mut ws).await["eventBody"]["id"], alive.as_str());

    // Not renewed again: the socket hears 404 and is dropped; REST says 404.
    let texts = read_to_abrupt_end(&mut ws).await;
    assert_eq!(texts, [r#"{"result":"404"}"#]);
    assert!(SystemTime::now() >= renewed_at + ttl - Duration::from_millis(10));
    assert_eq!(api.call("HEAD", &head, "").await.status, 404);
    assert_eq!(api.subscriptions(&id).await, None);
    assert!(
        tokio_tungstenite::connect_async(uri.as_str())
            .await
            .is_err()
    );
    assert_eq!(sim.connected_sockets(), 0);

    // A shorter lifetime for channels created from now on.
    sim.expire_channels_after(Duration::from_millis(100));
    let t1 = SystemTime::now();
    let (short, short_uri, ch) = api.channel(&[]).await;
    assert!(expires(&ch).duration_since(t1)? <= Duration::from_millis(150));
    let mut short_ws = connect(&short_uri).await;
    assert_eq!(
        read_to_abrupt_end(&mut short_ws).await,
        [r#"{"result":"404"}"#]
    );
    assert_eq!(
        api.call("HEAD", &format!("{CHANNELS}/{short}"), "")
            .await
            .status,
        404
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rest_faults_answer_error_bodies_then_service_resumes() -> TestResult {
    let error_body = schema("openapi-subset.json", Draft::Draft4);
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;

    sim.fail_requests(RestFault {
        path_prefix: CHANNELS.into(),
        status: 429,
        retry_after: Some(7),
        count: 2,
    });
    for _ in 0..2 {
        let got = api.call("POST", CHANNELS, "").await;
        assert_eq!((got.status, got.header("retry-after")), (429, Some("7")));
        valid(&error_body, &got.body);
        assert_eq!(got.body["code"], "too.many.requests");
        assert_eq!(got.body["status"], 429);
        assert_eq!(got.body["limit"]["namespace"], "platform.api");
        assert_eq!(
            got.header("inin-correlation-id"),
            got.body["contextId"].as_str()
        );
    }
    let served = api.call("POST", CHANNELS, "").await;
    assert_eq!((served.status, served.header("retry-after")), (200, None));
    let posts: Vec<u16> = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == CHANNELS)
        .map(|r| r.status)
        .collect();
    assert_eq!(posts, [429, 429, 200]);

    // A 401 looks like a revoked token; other paths are not affected.
    let conv = sim.create_conversation(conversation(QUEUE, None));
    let path = format!("/api/v2/conversations/messages/{conv}");
    sim.fail_requests(RestFault {
        path_prefix: "/api/v2/conversations".into(),
        status: 401,
        retry_after: None,
        count: 1,
    });
    assert_eq!(api.call("GET", CHANNELS, "").await.status, 200);
    let denied = api.call("GET", &path, "").await;
    assert_eq!(denied.status, 401);
    valid(&error_body, &denied.body);
    assert_eq!(denied.body["code"], "bad.credentials");
    assert_eq!(api.call("GET", &path, "").await.status, 200);

    // "" matches every request, the login too; the login's 401 speaks OAuth.
    for (status, code) in [(503, "service.unavailable"), (500, "internal.server.error")] {
        sim.fail_requests(RestFault {
            path_prefix: String::new(),
            status,
            retry_after: None,
            count: 1,
        });
        let login = api.token().await;
        assert_eq!((login.status, &login.body["code"]), (status, &json!(code)));
        valid(&error_body, &login.body);
    }
    sim.fail_requests(RestFault {
        path_prefix: "/oauth/token".into(),
        status: 401,
        retry_after: None,
        count: 1,
    });
    let login = api.token().await;
    assert_eq!(
        (login.status, &login.body["error"]),
        (401, &json!("invalid_client"))
    );
    assert_eq!(api.token().await.status, 200);

    // The WebSocket upgrade is a request too.
    let (_, uri, _) = api.channel(&[]).await;
    sim.fail_requests(RestFault {
        path_prefix: "/channels/".into(),
        status: 503,
        retry_after: Some(1),
        count: 1,
    });
    assert!(
        tokio_tungstenite::connect_async(uri.as_str())
            .await
            .is_err()
    );
    connect(&uri).await;

    // By time: every matching request for the duration, then service resumes.
    sim.fail_requests_for(
        "/api/v2/conversations",
        502,
        Some(1),
        Duration::from_millis(300),
    );
    for _ in 0..3 {
        let got = api.call("GET", &path, "").await;
        assert_eq!((got.status, got.header("retry-after")), (502, Some("1")));
        assert_eq!(got.body["code"], "bad.gateway");
    }
    sleep(Duration::from_millis(350)).await;
    assert_eq!(api.call("GET", &path, "").await.status, 200);
    sim.fail_requests_for("", 503, None, Duration::from_secs(60));
    assert_eq!(api.call("GET", &path, "").await.status, 503);
    sim.clear_request_faults();
    assert_eq!(api.call("GET", &path, "").await.status, 200);
    let logged = sim.requests().into_iter().filter(|r| r.path == path);
    let statuses: Vec<u16> = logged.map(|r| r.status).collect();
    assert_eq!(statuses, [401, 200, 502, 502, 502, 200, 503, 200]);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn raw_binary_and_oversized_frames_arrive_unrecorded() -> TestResult {
    let metadata = schema("events/schema/channel-metadata.schema.json", Draft::Draft7);
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;
    let (_, uri, _) = api.channel(&[]).await;
    let mut ws = connect(&uri).await;
    let recorded = sim.pushed_frames().len();

    let raw = [
        r#"{"topicName":"v2.routing.queues"#,
        r#"{"topicName":42,"eventBody":"nope"}"#,
        r#"{"topicName":"v2.made.up.topic","eventBody":{}}"#,
    ];
    for text in raw {
        sim.push_raw_text(text);
    }
    sim.push_binary(vec![0, 159, 146, 150]);
    sim.push_oversized(300_000);
    for text in raw {
        let got = next_msg(&mut ws, PATIENCE).await;
        assert!(
            matches!(&got, Some(Message::Text(t)) if t.as_str() == text),
            "{got:?}"
        );
    }
    let got = next_msg(&mut ws, PATIENCE).await;
    assert!(
        matches!(&got, Some(Message::Binary(b)) if b[..] == [0, 159, 146, 150]),
        "{got:?}"
    );
    let Some(Message::Text(big)) = next_msg(&mut ws, PATIENCE).await else {
        panic!("no oversized frame")
    };
    assert_eq!(big.len(), 300_000);
    let big: Value = serde_json::from_str(big.as_str())?;
    valid(&metadata, &big);
    assert_eq!(
        sim.pushed_frames().len(),
        recorded,
        "fault frames were recorded"
    );
    // The socket is still usable afterwards.
    ws.send(Message::Text(r#"{"message":"ping"}"#.into()))
        .await?;
    assert_eq!(next_json(&mut ws).await["eventBody"]["message"], "pong");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn events_can_be_duplicated_and_reordered() -> TestResult {
    let queue = queue_schema();
    let sim = sim::start(SimConfig {
        faults: Faults {
            duplicate_events: true,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await?;
    let api = Api::login(&sim).await?;
    let (_, uri, _) = api.channel(&[queue_topic(QUEUE)]).await;
    let mut ws = connect(&uri).await;

    let twice = sim.create_conversation(conversation(QUEUE, None));
    let (first, second) = (next_json(&mut ws).await, next_json(&mut ws).await);
    assert_eq!(first, second, "a duplicate is the very same frame");
    assert_eq!(first["eventBody"]["id"], twice.as_str());
    valid(&queue, &first);
    assert_quiet(&mut ws, Duration::from_millis(100)).await;
    assert_eq!(
        events_of(&sim, &twice)[0].delivered,
        1,
        "duplicates count once"
    );

    // Reordered: the opening frame is held back and arrives after the closing one.
    sim.set_faults(Faults {
        reorder_events: true,
        ..Faults::default()
    });
    let swapped = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(
        events_of(&sim, &swapped)[0].delivered,
        0,
        "held, not sent yet"
    );
    sim.customer_leaves(&swapped);
    let (a, b) = (next_json(&mut ws).await, next_json(&mut ws).await);
    let connected = |f: &Value| f["eventBody"]["participants"][0]["state"] == "connected";
    assert!(!connected(&a) && connected(&b), "not swapped: {a} then {b}");
    valid(&queue, &a);
    valid(&queue, &b);
    let log: Vec<(u64, usize)> = events_of(&sim, &swapped)
        .iter()
        .map(|r| (r.seq, r.delivered))
        .collect();
    assert_eq!(log, [(1, 1), (2, 1)]);

    // A frame nothing follows is flushed on its own after about 50 ms.
    let alone_at = Instant::now();
    let alone = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(next_json(&mut ws).await["eventBody"]["id"], alone.as_str());
    assert!(alone_at.elapsed() >= Duration::from_millis(40));
    wait_for("flush counted", || {
        events_of(&sim, &alone)[0].delivered == 1
    })
    .await;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_event_log_numbers_events_and_counts_deliveries() -> TestResult {
    let (queue, user) = (
        queue_schema(),
        schema(
            "events/schema/user-conversations-messages.schema.json",
            Draft::Draft7,
        ),
    );
    let sim = sim::start(SimConfig::default()).await?;
    let api = Api::login(&sim).await?;
    // Published before anyone listens: lost, as on the real platform.
    let early = sim.create_conversation(conversation(QUEUE, None));
    let (_, a_uri, _) = api.channel(&[queue_topic(QUEUE)]).await;
    let (_, b_uri, _) = api.channel(&[queue_topic(QUEUE), user_topic(AGENT)]).await;
    let (mut a, mut b) = (connect(&a_uri).await, connect(&b_uri).await);

    let watched = sim.create_conversation(conversation(QUEUE, Some(AGENT)));
    let elsewhere = sim.create_conversation(conversation(OTHER_QUEUE, None));
    sim.customer_leaves(&watched);
    let on_a: Vec<Value> = [next_json(&mut a).await, next_json(&mut a).await].into();
    let mut on_b = Vec::new();
    for _ in 0..4 {
        on_b.push(next_json(&mut b).await);
    }
    for f in on_a.iter().chain(&on_b) {
        let v = if f["topicName"] == user_topic(AGENT) {
            &user
        } else {
            &queue
        };
        valid(v, f);
    }
    let rows = |id: &str| -> Vec<(u64, String, usize)> {
        let log = events_of(&sim, id).into_iter();
        log.map(|r| (r.seq, r.topic, r.delivered)).collect()
    };
    assert_eq!(rows(&early), [(1, queue_topic(QUEUE), 0)]);
    assert_eq!(rows(&elsewhere), [(1, queue_topic(OTHER_QUEUE), 0)]);
    assert_eq!(
        rows(&watched),
        [
            (1, queue_topic(QUEUE), 2),
            (2, user_topic(AGENT), 1),
            (3, queue_topic(QUEUE), 2),
            (4, user_topic(AGENT), 1),
        ]
    );

    // Sockets gone, channels still subscribed: events are published to nobody.
    sim.drop_sockets();
    wait_for("sockets gone", || sim.connected_sockets() == 0).await;
    let unheard = sim.create_conversation(conversation(QUEUE, None));
    assert_eq!(rows(&unheard), [(1, queue_topic(QUEUE), 0)]);
    // The log lists events in publish order.
    let log = sim.event_log();
    let order: Vec<&str> = log.iter().map(|r| r.conversation_id.as_str()).collect();
    assert_eq!(order.first(), Some(&early.as_str()));
    assert_eq!(order.last(), Some(&unheard.as_str()));
    sim.shutdown().await;
    Ok(())
}
