//! The bot phase: conversations no queue or user topic shows, learned of through the
//! intake endpoint or flow discovery, watched through their per-conversation detail
//! topics, closed, and confirmed by the pushed `.customer.end`. Loopback only.

mod common;

use std::time::Duration;

use common::*;
use genesys_closer::closer::{ConfirmedBy, Outcome};
use genesys_closer::genesys::frames::Source;
use genesys_sim::{DataAction, SimConfig, SimHandle};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn data_action(url: &str) -> DataAction {
    DataAction {
        url: url.to_string(),
        authorization: Some(format!("Bearer {INTAKE_TOKEN}")),
    }
}

fn conversation_reads(sim: &SimHandle) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/api/v2/conversations"))
        .count()
}

fn subscription_calls(sim: &SimHandle) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path.ends_with("/subscriptions") && r.method != "GET")
        .count()
}

fn patches(sim: &SimHandle, id: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains(id))
        .count()
}

/// Total topics on every channel.
fn topics(sim: &SimHandle) -> usize {
    sim.channel_topic_counts().iter().map(|(_, n)| n).sum()
}

async fn call(url: &str, auth: Option<&str>, body: String) -> (u16, Value) {
    genesys_closer::install_crypto_provider();
    let client = reqwest::Client::new();
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("intake answers");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn bearer() -> String {
    format!("Bearer {INTAKE_TOKEN}")
}

/// Waits until the daemon's start-up listing of the watched flow was answered: a
/// conversation that listing found would be taken as discovered late and read once,
/// which tests counting reads must not race with.
async fn wait_for_start_up_listing(sim: &SimHandle) {
    wait_for(WAIT, || {
        sim.requests()
            .iter()
            .any(|r| r.path == "/api/v2/analytics/flows/activity/query" && r.status == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_paths_close_and_confirm_by_the_pushed_end_without_polling() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, intake) =
        start_bot_daemon(bot_config(&url, "basic_user = \"genesys\""), &sim).await;
    let baseline = topics(&sim);
    assert_eq!(baseline, 2, "the queue and the flow-metrics topic");

    // 1. The flow's data action posts the intent: the daemon never heard of it before.
    // Its integration uses a Basic Auth credential, as the README's set-up A does.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("genesys:{INTAKE_TOKEN}"));
    sim.set_data_action(Some(DataAction {
        url: intake.clone(),
        authorization: Some(format!("Basic {basic}")),
    }));
    let mut spec = bot(Some("Goodbye"), 50, false, true);
    spec.flow_id = "0b0b0b0b-1111-4222-8333-444455556666".into(); // not a watched flow
    let by_intake = sim.create_bot_conversation(spec);
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, by_intake.as_str());
    assert_eq!(
        (r.outcome, r.confirmed_by, r.source),
        (Outcome::Confirmed, Some(ConfirmedBy::Event), Source::Intake),
        "{r:?}"
    );
    assert_eq!(sim.is_closed(&by_intake), Some(true));
    assert_eq!(patches(&sim, &by_intake), 1);

    // 2. Flow discovery: the flow-metrics record names it, the intent arrives on `.attributes`.
    let by_flow = sim.create_bot_conversation(bot(Some("CancelSubscription"), 700, false, false));
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, by_flow.as_str());
    assert_eq!(
        (r.outcome, r.confirmed_by, r.source),
        (Outcome::Confirmed, Some(ConfirmedBy::Event), Source::Detail),
        "{r:?}"
    );

    // 3. A trigger on `.customer.start` posts the id alone; the intent comes on `.attributes`.
    sim.set_data_action(Some(data_action(&intake)));
    let mut spec = bot(Some("Goodbye"), 700, true, false);
    spec.flow_id = "0b0b0b0b-1111-4222-8333-444455556666".into();
    let by_trigger = sim.create_bot_conversation(spec);
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, by_trigger.as_str());
    assert_eq!(
        (r.outcome, r.confirmed_by, r.source),
        (Outcome::Confirmed, Some(ConfirmedBy::Event), Source::Detail),
        "{r:?}"
    );
    let posted: Vec<String> = sim
        .data_action_log()
        .into_iter()
        .filter(|c| c.conversation_id == by_trigger)
        .map(|c| format!("{} {}", c.status, c.body))
        .collect();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert!(posted[0].starts_with("202 "), "{posted:?}");

    // No polling anywhere: every close was confirmed by the pushed event.
    assert_eq!(conversation_reads(&sim), 0);
    // Once confirmed, the per-conversation topics are removed (batched PUT).
    wait_for(WAIT, || topics(&sim) == baseline).await;
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_intake_input_closes_and_subscribes_nothing_and_retries_are_duplicates() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    // A live bot conversation whose id a hostile caller might know (in a flow the
    // daemon does not watch, so only the intake could tell it).
    let mut spec = bot(None, 60_000, false, false);
    spec.flow_id = "0b0b0b0b-1111-4222-8333-444455556666".into();
    let id = sim.create_bot_conversation(spec);
    let subs_before = subscription_calls(&sim);
    let good = json!({ "conversationId": id, "intent": "Goodbye" }).to_string();

    let (s, b) = call(&intake, None, good.clone()).await;
    // No detail, and no `"field": null` either.
    assert_eq!((s, b), (401, json!({ "error": "unauthorized" })));
    let (s, _) = call(&intake, Some("Bearer wrong-token-0123456789"), good.clone()).await;
    assert_eq!(s, 401);
    let (s, _) = call(
        &intake,
        Some(&format!("Basic {INTAKE_TOKEN}")),
        good.clone(),
    )
    .await;
    assert_eq!(s, 401, "Basic is off unless basic_user is set");
    let huge = json!({ "conversationId": id, "intent": "Goodbye", "pad": "x".repeat(20_000) });
    let (s, b) = call(&intake, Some(&bearer()), huge.to_string()).await;
    assert_eq!((s, &b["field"]), (413, &json!("body")));
    let (s, b) = call(&intake, Some(&bearer()), "{\"conversationId\":".into()).await;
    assert_eq!((s, &b["field"]), (400, &json!("body")));
    let (s, b) = call(
        &intake,
        Some(&bearer()),
        json!({"conversationId": "c0ffee", "intent": "Goodbye"}).to_string(),
    )
    .await;
    assert_eq!((s, &b["field"]), (400, &json!("conversationId")));
    let (s, b) = call(
        &intake,
        Some(&bearer()),
        json!({"intent": "Goodbye"}).to_string(),
    )
    .await;
    assert_eq!((s, &b["field"]), (400, &json!("conversationId")));
    let (s, b) = call(
        &intake,
        Some(&bearer()),
        json!({"conversationId": id, "intent": "x".repeat(300)}).to_string(),
    )
    .await;
    assert_eq!((s, &b["field"]), (400, &json!("intent")));
    // The README's table, status by status, with the bodies as sent.
    let (s, b) = call(
        &intake.replace("/v1/intents", "/nope"),
        Some(&bearer()),
        good.clone(),
    )
    .await;
    assert_eq!(
        (s, b),
        (404, json!({ "error": "not found: POST /v1/intents" }))
    );
    let resp = reqwest::Client::new()
        .get(&intake)
        .bearer_auth(INTAKE_TOKEN)
        .send()
        .await
        .expect("intake answers");
    assert_eq!(resp.status().as_u16(), 405);
    let b: Value = resp.json().await.expect("json body");
    assert_eq!(
        b,
        json!({ "error": "method not allowed: POST /v1/intents" })
    );
    let resp = reqwest::Client::new()
        .post(&intake)
        .bearer_auth(INTAKE_TOKEN)
        .header("x-padding", "x".repeat(40_000))
        .body(good.clone())
        .send()
        .await
        .expect("intake answers");
    assert_eq!(resp.status().as_u16(), 431);
    assert!(resp.bytes().await.expect("body").is_empty());
    // Nothing was decided, closed or subscribed.
    d.assert_no_report(Duration::from_millis(300)).await;
    assert_eq!(patches(&sim, &id), 0);
    assert_eq!(subscription_calls(&sim), subs_before);
    assert_eq!(sim.is_closed(&id), Some(false));

    // The real call closes it; the data action's retry is a duplicate, never a second close.
    let (s, b) = call(&intake, Some(&bearer()), good.clone()).await;
    assert_eq!((s, &b["result"]), (202, &json!("close")), "{b}");
    let (s, b) = call(&intake, Some(&bearer()), good.clone()).await;
    assert_eq!((s, &b["result"]), (202, &json!("duplicate")), "{b}");
    let r = d.next_report(WAIT).await;
    assert_eq!((r.outcome, r.source), (Outcome::Confirmed, Source::Intake));
    let (s, b) = call(&intake, Some(&bearer()), good).await;
    assert_eq!((s, &b["result"]), (202, &json!("duplicate")), "{b}");
    d.assert_no_report(Duration::from_millis(300)).await;
    assert_eq!(patches(&sim, &id), 1);

    // An intent no rule matches.
    let other = sim.create_bot_conversation(bot(None, 60_000, false, false));
    let (s, b) = call(
        &intake,
        Some(&bearer()),
        json!({"conversationId": other, "intent": "TalkToAgent"}).to_string(),
    )
    .await;
    assert_eq!((s, &b["result"]), (202, &json!("no_rule")), "{b}");

    // A conversation the daemon saw close (the guest left, on the queue topic).
    let queued = sim.create_conversation(conversation(None));
    wait_for(WAIT, || {
        sim.pushed_frames()
            .iter()
            .any(|f| f.to_string().contains(&queued))
    })
    .await;
    sim.customer_leaves(&queued);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, b) = call(
        &intake,
        Some(&bearer()),
        json!({"conversationId": queued, "intent": "Goodbye"}).to_string(),
    )
    .await;
    assert_eq!((s, &b["result"]), (202, &json!("already_closed")), "{b}");
    d.assert_no_report(Duration::from_millis(300)).await;
    assert_eq!(patches(&sim, &queued), 0);
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_once_and_acts_only_on_genesys_own_attribute() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, intake) = start_bot_daemon(bot_config(&url, "verify = true"), &sim).await;
    wait_for_start_up_listing(&sim).await;
    // Genesys holds no intent: a leaked credential alone cannot end it.
    let id = sim.create_bot_conversation(bot(None, 60_000, false, false));
    let body = json!({ "conversationId": id, "intent": "Goodbye" }).to_string();
    let (s, b) = call(&intake, Some(&bearer()), body.clone()).await;
    assert_eq!((s, &b["result"]), (202, &json!("verifying")), "{b}");
    wait_for(WAIT, || conversation_reads(&sim) == 1).await;
    d.assert_no_report(Duration::from_millis(500)).await;
    assert_eq!(patches(&sim, &id), 0);
    // Genesys does hold it: the read decides.
    let held = sim.create_bot_conversation(bot(None, 60_000, false, false));
    sim.set_intent(&held, "Goodbye");
    let body = json!({ "conversationId": held, "intent": "Goodbye" }).to_string();
    let (s, b) = call(&intake, Some(&bearer()), body).await;
    assert_eq!((s, &b["result"]), (202, &json!("verifying")), "{b}");
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, held.as_str());
    assert_eq!(
        (r.outcome, r.source),
        (Outcome::Confirmed, Source::Read),
        "{r:?}"
    );
    assert_eq!(conversation_reads(&sim), 2, "one verify read per call");
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_replaced_midway_keeps_the_watched_conversation_and_confirms_the_close() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, _intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    let baseline = topics(&sim);
    // Discovered through the flow, watched; no intent yet.
    let id = sim.create_bot_conversation(bot(None, 60_000, false, false));
    wait_for(WAIT, || topics(&sim) == baseline + 3).await;
    let channels_before = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v2/notifications/channels")
        .count();
    sim.expire_channels();
    // A new channel carries the configured topics and the watched conversation's.
    wait_for(WAIT, || {
        sim.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/api/v2/notifications/channels")
            .count()
            > channels_before
            && sim.connected_sockets() == 1
            && topics(&sim) == baseline + 3
    })
    .await;
    sim.set_intent(&id, "Goodbye");
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!(
        (r.outcome, r.confirmed_by),
        (Outcome::Confirmed, Some(ConfirmedBy::Event)),
        "{r:?}"
    );
    wait_for(WAIT, || topics(&sim) == baseline).await;
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_topics_offered_only_over_eventbridge_leave_the_queue_path_working() {
    let sim = start_sim(SimConfig {
        refused_transports: vec!["v2.detail.events.conversation.{id}.customer.end".into()],
        ..SimConfig::default()
    })
    .await;
    let url = sim.base_url();

    // `check --online` names the family in one clear line and exits non-zero.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bot.toml");
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bot_phase.toml"))
            .expect("template")
            .replace("{URL}", &url)
            .replace("{QUEUE}", QUEUE);
    std::fs::write(&path, text).expect("write config");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
            .args(["check", "--online", "--config"])
            .arg(&path)
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "sim-secret")
            .env("GENESYS_CLOSER_INTAKE_TOKEN", INTAKE_TOKEN)
            .output()
            .expect("binary runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("error:"))
        .unwrap_or_else(|| panic!("no error line in {stdout}"));
    assert!(
        line.contains("v2.detail.events.conversation.{id}.customer.end")
            && line.contains("EventBridge"),
        "{line}"
    );

    // The daemon runs with what works: the queue path still closes and confirms.
    let (mut d, _intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    let id = sim.create_conversation(conversation(Some("Goodbye")));
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!((r.outcome, r.source), (Outcome::Confirmed, Source::Queue));
    // Flow discovery needs detail topics, so it is off: only the queue topic is subscribed.
    assert_eq!(topics(&sim), 1);
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_flow_record_earns_one_catch_up_read_that_decides() {
    // The flow-metrics record only comes when the flow ends (one of the open questions):
    // by then the intent is set, and only a read can tell.
    let sim = start_sim(SimConfig {
        flow_metrics: genesys_sim::FlowMetricsMode::AtEnd,
        ..SimConfig::default()
    })
    .await;
    let url = sim.base_url();
    let (mut d, _intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    let mut spec = bot(Some("Goodbye"), 100, false, false);
    // To a queue the daemon does not watch: no queue topic will show it.
    spec.transfer = Some((
        "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
        Duration::from_millis(200),
    ));
    let id = sim.create_bot_conversation(spec);
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!(
        (r.outcome, r.confirmed_by, r.source),
        (Outcome::Confirmed, Some(ConfirmedBy::Event), Source::Read),
        "{r:?}"
    );
    assert_eq!(conversation_reads(&sim), 1, "one catch-up read");
    assert_eq!(patches(&sim, &id), 1);
    let summary = d.shutdown().await;
    assert_eq!((summary.discovered, summary.catchup_reads), (1, 1));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_phase_conversation_that_reaches_a_queue_keeps_one_entry_and_one_decision() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, _intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    let baseline = topics(&sim);
    // Discovered in the bot phase (watched), then handed to the watched queue.
    let mut spec = bot(None, 50, false, false);
    spec.transfer = Some((QUEUE.into(), Duration::from_millis(600)));
    let id = sim.create_bot_conversation(spec);
    wait_for(WAIT, || topics(&sim) == baseline + 3).await;
    // In the queue, the queue topic carries it: its detail topics are given back.
    wait_for(WAIT, || topics(&sim) == baseline).await;
    // The intent comes later: one decision, one close, confirmed.
    sim.set_intent(&id, "Goodbye");
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, id.as_str());
    assert_eq!(
        (r.outcome, r.source),
        (Outcome::Confirmed, Source::Queue),
        "{r:?}"
    );
    assert_eq!(r.queue_id.as_deref(), Some(QUEUE));
    d.assert_no_report(Duration::from_millis(300)).await;
    assert_eq!(patches(&sim, &id), 1);
    let summary = d.shutdown().await;
    assert_eq!(summary.decisions, 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_thousand_topics_spread_over_channels_and_are_given_back() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, _intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    let baseline = topics(&sim);
    // 400 watched conversations need 1,200 topics: more than one channel holds.
    let ids: Vec<String> = (0..400)
        .map(|_| sim.create_bot_conversation(bot(None, 600_000, false, false)))
        .collect();
    wait_for(Duration::from_secs(20), || topics(&sim) == baseline + 1200).await;
    let counts = sim.channel_topic_counts();
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.iter().all(|(_, n)| *n <= 1000), "{counts:?}");
    assert_eq!(sim.connected_sockets(), 2);
    // Their guests leave: every per-conversation topic is removed, in few requests.
    let before = subscription_calls(&sim);
    for id in &ids {
        sim.customer_leaves(id);
    }
    wait_for(Duration::from_secs(20), || topics(&sim) == baseline).await;
    let removals = subscription_calls(&sim) - before;
    assert!(
        removals <= 4,
        "{removals} requests to remove 400 conversations' topics"
    );
    d.assert_no_report(Duration::from_millis(100)).await;
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_serves_https_itself_when_given_a_certificate() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_pem = cert.cert.pem();
    let (cert_path, key_path) = (dir.path().join("intake.crt"), dir.path().join("intake.key"));
    std::fs::write(&cert_path, &cert_pem).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    let (mut d, intake) = start_bot_daemon(bot_config(&url, &extra), &sim).await;
    let https = intake.replace("http://127.0.0.1", "https://localhost");
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem")])
        .build()
        .expect("client");
    let mut spec = bot(None, 60_000, false, false);
    spec.flow_id = "0b0b0b0b-1111-4222-8333-444455556666".into();
    let id = sim.create_bot_conversation(spec);
    let resp = client
        .post(&https)
        .bearer_auth(INTAKE_TOKEN)
        .json(&json!({ "conversationId": id, "intent": "Goodbye" }))
        .send()
        .await
        .expect("https answer");
    assert_eq!(resp.status().as_u16(), 202);
    let r = d.next_report(WAIT).await;
    assert_eq!(
        (r.outcome, r.source),
        (Outcome::Confirmed, Source::Intake),
        "{r:?}"
    );
    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .post(&intake)
        .bearer_auth(INTAKE_TOKEN)
        .json(&json!({ "conversationId": id, "intent": "Goodbye" }))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status().as_u16() != 202));
    d.shutdown().await;
    sim.shutdown().await;
}

/// A flow the daemon does not watch: only the intake tells of its conversations.
const OTHER_FLOW: &str = "0b0b0b0b-1111-4222-8333-444455556666";

/// A bot conversation in [`OTHER_FLOW`] with no intent yet and no data-action posts.
fn unwatched_bot(sim: &SimHandle) -> String {
    let mut spec = bot(None, 60_000, false, false);
    spec.flow_id = OTHER_FLOW.into();
    sim.create_bot_conversation(spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_match_exactly_whatever_path_brings_them() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    wait_for_start_up_listing(&sim).await;
    let baseline = topics(&sim);
    // The rule holds "Goodbye"; each of these is another value.
    let near = [
        "Goodbye\n",
        "Goodbye\u{a0}",
        " Goodbye",
        "Goodbye ",
        "goodbye",
    ];
    let mut untouched = Vec::new();
    for value in near {
        // The data action's intent.
        let id = unwatched_bot(&sim);
        let body = json!({ "conversationId": id, "intent": value }).to_string();
        let (s, b) = call(&intake, Some(&bearer()), body).await;
        assert_eq!(
            (s, &b["result"]),
            (202, &json!("no_rule")),
            "{value:?}: {b}"
        );
        untouched.push(id);
        // A trigger on `.attributes` posting the attributes map.
        let id = unwatched_bot(&sim);
        let body = json!({ "conversationId": id, "attributes": { "Bot.Intent": value } });
        let (s, b) = call(&intake, Some(&bearer()), body.to_string()).await;
        assert_eq!(
            (s, &b["result"]),
            (202, &json!("no_rule")),
            "{value:?}: {b}"
        );
        untouched.push(id);
    }
    // The `.attributes` event of a watched conversation: each near value is pushed, then
    // the exact one; the one close is decided on the exact value, after all the others
    // (the channel keeps the order).
    let watched = sim.create_bot_conversation(bot(None, 60_000, false, false));
    wait_for(WAIT, || topics(&sim) == baseline + 3).await;
    for value in near {
        sim.set_intent(&watched, value);
    }
    sim.set_intent(&watched, "Goodbye");
    let r = d.next_report(WAIT).await;
    assert_eq!(&*r.conversation_id, watched.as_str(), "{r:?}");
    assert_eq!((&*r.intent, r.source), ("Goodbye", Source::Detail), "{r:?}");
    assert_eq!(r.outcome, Outcome::Confirmed, "{r:?}");
    // Nothing else was decided or sent.
    d.assert_no_report(Duration::from_millis(300)).await;
    for id in &untouched {
        assert_eq!(patches(&sim, id), 0, "{id}");
        assert_eq!(sim.is_closed(id), Some(false), "{id}");
    }
    assert_eq!(d.shutdown().await.decisions, 1);
    sim.shutdown().await;
}

/// Whether a channel holds a topic of the conversation now.
fn holds_topics_of(sim: &SimHandle, id: &str) -> bool {
    sim.channel_topic_counts().iter().any(|(channel, _)| {
        sim.channel_topics(channel)
            .is_some_and(|t| t.iter().any(|t| t.contains(id)))
    })
}

/// Whether a subscription request ever carried a topic of the conversation.
fn ever_subscribed(sim: &SimHandle, id: &str) -> bool {
    sim.requests()
        .iter()
        .any(|r| r.path.ends_with("/subscriptions") && r.method != "GET" && r.body.contains(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_close_gives_its_topics_back_at_once() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    let baseline = topics(&sim);
    // An id Genesys does not know, with a matching intent: the close subscribes its
    // confirming topics, the PATCH and the read answer 404, the close fails.
    let unknown = "00000000-1111-4222-8333-444455556666";
    let body = json!({ "conversationId": unknown, "intent": "Goodbye" }).to_string();
    let (s, b) = call(&intake, Some(&bearer()), body).await;
    assert_eq!((s, &b["result"]), (202, &json!("close")), "{b}");
    let r = d.next_report(WAIT).await;
    assert_eq!(
        (&*r.conversation_id, r.outcome),
        (unknown, Outcome::Failed),
        "{r:?}"
    );
    assert!(ever_subscribed(&sim, unknown));
    // Its three topics go in the next removal batch, not at the 48 h eviction.
    wait_for(WAIT, || !holds_topics_of(&sim, unknown)).await;
    assert_eq!(topics(&sim), baseline);
    d.shutdown().await;
    sim.shutdown().await;
}

fn reads_of(sim: &SimHandle, id: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains(id))
        .count()
}

/// Whether the simulator pushed an `.attributes` event for the conversation.
fn intent_pushed(sim: &SimHandle, id: &str) -> bool {
    let topic = format!("v2.detail.events.conversation.{id}.attributes");
    sim.pushed_frames()
        .iter()
        .any(|f| f["topicName"].as_str() == Some(topic.as_str()))
}

/// Collects one report per conversation in `ids` (any order), each confirmed.
async fn closes_of(d: &mut Running, ids: &[String]) -> Vec<genesys_closer::closer::CloseReport> {
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let r = d.next_report(WAIT).await;
        assert!(ids.iter().any(|i| *i == *r.conversation_id), "{r:?}");
        assert_eq!(r.outcome, Outcome::Confirmed, "{r:?}");
        got.push(r);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_bot_whose_intent_comes_before_the_trigger_call_is_still_closed() {
    // Set-up B with a bot faster than the trigger: the intent is set 50 ms after the
    // start, the trigger's id-only call arrives 800 ms after it. With nobody subscribed
    // then, the `.attributes` event went to nobody; only a read can find the intent.
    let sim = start_sim(SimConfig {
        trigger_delay: Duration::from_millis(800),
        ..SimConfig::default()
    })
    .await;
    let url = sim.base_url();
    let mut config = bot_config(&url, "");
    config.stream.catchup_after = Duration::from_millis(400);
    let (mut d, intake) = start_bot_daemon(config, &sim).await;
    sim.set_data_action(Some(data_action(&intake)));
    // The trigger passes the `.customer.start` event's `eventTime`: the daemon sees it
    // heard of each conversation later than `catchup_after` after its start.
    let with_time: Vec<String> = (0..10)
        .map(|_| {
            let mut spec = bot(Some("Goodbye"), 50, true, false);
            spec.flow_id = OTHER_FLOW.into();
            sim.create_bot_conversation(spec)
        })
        .collect();
    for r in closes_of(&mut d, &with_time).await {
        assert_eq!(r.source, Source::Read, "{r:?}");
    }
    let posted = sim.data_action_log();
    assert!(
        posted
            .iter()
            .filter(|c| with_time.contains(&c.conversation_id))
            .all(|c| c.status == 202 && c.body.contains("\"eventTime\":")),
        "{posted:?}"
    );
    // A caller that does not pass `eventTime`: the daemon cannot know how late it
    // heard, so every such conversation is read once its topics are live.
    let without_time: Vec<String> = (0..10)
        .map(|_| {
            let mut spec = bot(Some("Goodbye"), 20, false, false);
            spec.flow_id = OTHER_FLOW.into();
            sim.create_bot_conversation(spec)
        })
        .collect();
    for id in &without_time {
        wait_for(WAIT, || intent_pushed(&sim, id)).await;
        sim.post_trigger(id, false);
    }
    for r in closes_of(&mut d, &without_time).await {
        assert_eq!(r.source, Source::Read, "{r:?}");
    }
    // One catch-up read each, one PATCH each.
    for id in with_time.iter().chain(&without_time) {
        assert_eq!((reads_of(&sim, id), patches(&sim, id)), (1, 1), "{id}");
    }
    let summary = d.shutdown().await;
    assert_eq!(summary.catchup_reads, 20);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_call_on_time_with_its_event_time_costs_no_read() {
    // The trigger calls at once with `eventTime`; the bot sets its intent later, once
    // the topics are live: `.attributes` decides, nothing is read.
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    sim.set_data_action(Some(data_action(&intake)));
    let ids: Vec<String> = (0..5)
        .map(|_| {
            let mut spec = bot(Some("Goodbye"), 700, true, false);
            spec.flow_id = OTHER_FLOW.into();
            sim.create_bot_conversation(spec)
        })
        .collect();
    for r in closes_of(&mut d, &ids).await {
        assert_eq!(r.source, Source::Detail, "{r:?}");
    }
    assert_eq!(conversation_reads(&sim), 0);
    assert_eq!(d.shutdown().await.catchup_reads, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_only_call_for_an_unknown_conversation_gives_its_topics_back() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    let baseline = topics(&sim);
    let unknown = "00000000-2222-4333-8444-555566667777";
    let body = json!({ "conversationId": unknown }).to_string();
    let (s, b) = call(&intake, Some(&bearer()), body).await;
    assert_eq!((s, &b["result"]), (202, &json!("watching")), "{b}");
    // Watched, then read (heard of without its start time): 404, and 404 again two
    // seconds later; its topics go in the next removal batch.
    wait_for(WAIT, || {
        ever_subscribed(&sim, unknown) && reads_of(&sim, unknown) == 2
    })
    .await;
    wait_for(WAIT, || !holds_topics_of(&sim, unknown)).await;
    assert_eq!(topics(&sim), baseline);
    d.assert_no_report(Duration::from_millis(100)).await;
    d.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_data_action_in_contrib_renders_a_call_the_intake_takes() {
    let sim = start_sim(SimConfig::default()).await;
    let url = sim.base_url();
    let (mut d, intake) = start_bot_daemon(bot_config(&url, ""), &sim).await;
    let action: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contrib/intake-trigger-data-action.json"
        ))
        .expect("contrib file"),
    )
    .expect("json");
    let template = action["config"]["request"]["requestTemplate"]
        .as_str()
        .expect("template");
    let required = &action["contract"]["input"]["inputSchema"]["required"];
    assert_eq!(required, &json!(["conversationId", "eventTime"]));
    // What Genesys's Velocity rendering makes of it for a conversation that started
    // three seconds ago.
    let id = unwatched_bot(&sim);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        - 3_000;
    let body = template
        .replace("${input.conversationId}", &id)
        .replace("${input.eventTime}", &started.to_string());
    let (s, b) = call(&intake, Some(&bearer()), body).await;
    assert_eq!((s, &b["result"]), (202, &json!("watching")), "{b}");
    // Started 3 s ago, its topics go live within `catchup_after` (5 s in these tests)
    // of the start: it is watched, and not read.
    wait_for(WAIT, || holds_topics_of(&sim, &id)).await;
    d.assert_no_report(Duration::from_millis(300)).await;
    assert_eq!(reads_of(&sim, &id), 0);
    d.shutdown().await;
    sim.shutdown().await;
}
