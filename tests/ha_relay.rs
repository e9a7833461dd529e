//! Intake calls on every instance of a group (issue 16): a call that reaches a standby
//! is stored in the group's database and carried out by the acting instance, and the
//! standby answers with that instance's answer. Real PostgreSQL on 127.0.0.1:5432
//! (trust, database `test`) or `GENESYS_CLOSER_TEST_PG`; each test has its own schema.

mod common;

use std::time::Duration;

use common::ha::{db, member_ha, url};
use common::*;
use genesys_closer::ha::leader::Role;
use genesys_closer::ha::relay::{self, RelaySettings};
use genesys_closer::ha::schema;
use genesys_closer::intake::{IntakeAnswer, IntakeCall};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

fn settings(schema: &str, instance: &str) -> RelaySettings {
    RelaySettings {
        schema: schema.into(),
        lease_name: "closer".into(),
        instance: instance.into(),
    }
}

/// Stores an intake call with its answer in the journal's table, as the acting
/// instance's event loop does before its answer may be written back.
async fn journal(c: &tokio_postgres::Client, schema: &str, id: &str, answer: &str) {
    c.execute(
        &format!(
            "INSERT INTO {schema}.intake (conversation_id, at_ms, intent, answer) \
             VALUES ($1, (extract(epoch from now()) * 1000)::bigint, NULL, $2)"
        ),
        &[&id, &answer],
    )
    .await
    .unwrap();
}

fn connector(url: &str) -> genesys_closer::ha::connect::Connector {
    genesys_closer::ha::connect::Database::from(url)
        .connector()
        .expect("a connection string")
}

fn leader(epoch: i64) -> Role {
    Role::Leader {
        epoch,
        trusted_until: Instant::now() + Duration::from_secs(3600),
    }
}

/// A call as the intake hands it over, and where its answer comes.
fn call(id: &str, intent: Option<&str>) -> (IntakeCall, oneshot::Receiver<IntakeAnswer>) {
    let (reply, answer) = oneshot::channel();
    (
        IntakeCall {
            conversation_id: id.into(),
            intent: intent.map(Into::into),
            attributes: vec![("Bot.Intent".into(), "Goodbye".into())],
            received: Instant::now(),
            started_ago: Some(Duration::from_secs(3)),
            reply,
            stored: false,
            earlier_steps: None,
        },
        answer,
    )
}

/// The next call the acting instance's event loop is handed (bounded).
async fn handed(rx: &mut mpsc::Receiver<IntakeCall>) -> IntakeCall {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the acting instance takes the call in time")
        .expect("queue open")
}

async fn answer_of(rx: oneshot::Receiver<IntakeAnswer>) -> IntakeAnswer {
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the standby answers in time")
        .expect("answered")
}

const A: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
const B: &str = "0b0b0b0b-0000-4000-8000-00000000000b";
const C: &str = "0c0c0c0c-0000-4000-8000-00000000000c";
const D: &str = "0d0d0d0d-0000-4000-8000-00000000000d";
const E: &str = "0e0e0e0e-0000-4000-8000-00000000000e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_answers_with_what_the_acting_instance_decided() {
    let schema = format!("t_relay_{}", std::process::id());
    let mut c = db().await;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    schema::migrate(&mut c, &schema).await.unwrap();
    c.execute(
        &format!(
            "INSERT INTO {schema}.lease VALUES ('closer', 'host-l', 5, now() + interval '1 hour')"
        ),
        &[],
    )
    .await
    .unwrap();

    let (_, standby_role) = watch::channel(Role::Standby);
    let (standby_calls, mut standby_rx) = mpsc::channel(16);
    let standby = relay::spawn(
        settings(&schema, "host-s"),
        connector(&url()),
        standby_role,
        standby_calls,
    );
    let (leader_role_tx, leader_role) = watch::channel(leader(5));
    let (leader_calls, mut leader_rx) = mpsc::channel(16);
    let acting = relay::spawn(
        settings(&schema, "host-l"),
        connector(&url()),
        leader_role,
        leader_calls,
    );

    // The leader's event loop gets the call as the standby's intake read it, and its
    // answer is the standby's.
    let (c1, a1) = call(A, Some("Goodbye"));
    standby.forward.send(c1).await.unwrap();
    let got = handed(&mut leader_rx).await;
    assert_eq!(&*got.conversation_id, A);
    assert_eq!(got.intent.as_deref(), Some("Goodbye"));
    assert_eq!(
        got.attributes,
        vec![("Bot.Intent".into(), "Goodbye".into())]
    );
    let ago = got
        .started_ago
        .expect("the start time travels with the call");
    assert!(
        ago >= Duration::from_secs(3) && ago < Duration::from_secs(60),
        "{ago:?}"
    );
    // The answer is written back only once the journal holds the call with it (the
    // event loop journals each call after deciding): until then the standby waits.
    got.reply.send(IntakeAnswer::Close).unwrap();
    let mut a1 = a1;
    assert!(
        tokio::time::timeout(Duration::from_millis(600), &mut a1)
            .await
            .is_err(),
        "answered before the journal held the call"
    );
    journal(&c, &schema, A, "close").await;
    assert_eq!(answer_of(a1).await, IntakeAnswer::Close);

    // A call the leader's loop refuses (it is stopping) is not answered with that: it
    // stays, and is taken again.
    let (c2, a2) = call(B, None);
    standby.forward.send(c2).await.unwrap();
    handed(&mut leader_rx)
        .await
        .reply
        .send(IntakeAnswer::ShuttingDown)
        .unwrap();
    let again = handed(&mut leader_rx).await;
    assert_eq!(&*again.conversation_id, B);
    journal(&c, &schema, B, "duplicate").await;
    again.reply.send(IntakeAnswer::Duplicate).unwrap();
    assert_eq!(answer_of(a2).await, IntakeAnswer::Duplicate);

    // Nobody acts: the caller hears `queued`; whoever acts next carries the call out.
    leader_role_tx.send_replace(Role::Standby);
    let (c3, a3) = call(C, Some("Goodbye"));
    standby.forward.send(c3).await.unwrap();
    assert_eq!(answer_of(a3).await, IntakeAnswer::Queued);
    assert!(leader_rx.try_recv().is_err(), "a standby takes nothing");
    leader_role_tx.send_replace(leader(5));
    let late = handed(&mut leader_rx).await;
    assert_eq!(&*late.conversation_id, C);
    journal(&c, &schema, C, "close").await;
    late.reply.send(IntakeAnswer::Close).unwrap();
    let row = async {
        loop {
            let r = c
                .query_opt(
                    &format!(
                        "SELECT answer, answered_by, answered_epoch, received_by \
                         FROM {schema}.relayed WHERE conversation_id = $1 AND answer IS NOT NULL"
                    ),
                    &[&C],
                )
                .await
                .unwrap();
            if let Some(r) = r {
                break (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, String>(3),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let row = tokio::time::timeout(Duration::from_secs(10), row)
        .await
        .expect("the answer is written back");
    assert_eq!(row, ("close".into(), "host-l".into(), 5, "host-s".into()));

    // A leader takes E, stores a step of its close, and is cut off before its
    // decision or answer reach the database (it stops acting, the call unanswered).
    let (c5, _a5) = call(E, Some("Goodbye"));
    standby.forward.send(c5).await.unwrap();
    let cut_off = handed(&mut leader_rx).await;
    assert_eq!(&*cut_off.conversation_id, E);
    assert_eq!(cut_off.earlier_steps, None, "first taken: nothing earlier");
    c.execute(
        &format!(
            "INSERT INTO {schema}.steps (conversation_id, at_ms, step, epoch, instance) \
             VALUES ($1, 1, 'about_to_send:patch_conversation', 5, 'host-l')"
        ),
        &[&E],
    )
    .await
    .unwrap();
    leader_role_tx.send_replace(Role::Standby);
    drop(cut_off);

    // A leader whose epoch is no longer the lease's takes nothing.
    c.execute(
        &format!("UPDATE {schema}.lease SET epoch = 6, holder = 'host-n'"),
        &[],
    )
    .await
    .unwrap();
    let (c4, a4) = call(D, Some("Goodbye"));
    standby.forward.send(c4).await.unwrap();
    assert_eq!(answer_of(a4).await, IntakeAnswer::Queued);
    assert!(
        leader_rx.try_recv().is_err(),
        "a stale epoch took a call (it polled every 250 ms meanwhile)"
    );
    assert!(
        standby_rx.try_recv().is_err(),
        "the standby handed itself nothing"
    );

    // The next leader takes both: E with the steps the earlier one stored (it may
    // have acted: the close is resumed, not started afresh), D with none.
    let (_, next_role) = watch::channel(leader(6));
    let (next_calls, mut next_rx) = mpsc::channel(16);
    let next = relay::spawn(
        settings(&schema, "host-n"),
        connector(&url()),
        next_role,
        next_calls,
    );
    let again = handed(&mut next_rx).await;
    assert_eq!(&*again.conversation_id, E, "oldest first");
    assert_eq!(
        again.earlier_steps.as_deref(),
        Some(&["about_to_send:patch_conversation".to_owned()][..])
    );
    let fresh = handed(&mut next_rx).await;
    assert_eq!(&*fresh.conversation_id, D);
    assert_eq!(fresh.earlier_steps, None);

    for r in [standby, acting, next] {
        r.stop.cancel();
        r.task.await.unwrap();
    }
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_standby_that_cannot_reach_the_database_answers_503_at_once() {
    let (_, role) = watch::channel(Role::Standby);
    let (calls, _rx) = mpsc::channel(1);
    // Nothing listens on port 9 of loopback: refused at once.
    let r = relay::spawn(
        settings("t_relay_none", "host-s"),
        connector("host=127.0.0.1 port=9 user=postgres dbname=test connect_timeout=2"),
        role,
        calls,
    );
    let (c, a) = call(A, Some("Goodbye"));
    r.forward.send(c).await.unwrap();
    assert_eq!(answer_of(a).await, IntakeAnswer::Standby);
    r.stop.cancel();
    r.task.await.unwrap();
}

/// A group member's config: the bot-phase config (the intake on a free port) in `[ha]`.
fn member(
    sim: &genesys_sim::SimHandle,
    schema: &str,
    instance: &str,
) -> genesys_closer::config::Config {
    let mut config = bot_config(&sim.base_url(), "");
    config.ha = Some(member_ha(&url(), schema, instance));
    config
}

/// Waits (bounded) until `instance` holds the lease.
async fn held_by(c: &tokio_postgres::Client, schema: &str, instance: &str) {
    let sql = format!("SELECT holder FROM {schema}.lease WHERE expires_at > now()");
    let held = async {
        loop {
            let h = c.query_opt(&sql, &[]).await.ok().flatten();
            if h.is_some_and(|r| r.get::<_, String>(0) == instance) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .unwrap_or_else(|_| panic!("{instance} takes the lease"));
}

/// The User-Agents of the accepted disconnects of `id`.
fn disconnects(sim: &genesys_sim::SimHandle, id: &str) -> Vec<String> {
    sim.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(id) && r.status / 100 == 2)
        .map(|r| r.user_agent.clone().unwrap_or_default())
        .collect()
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(INTAKE_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("the intake answers");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.expect("a JSON body"))
}

/// Two daemons on one database, the intake on both: calls sent to either are decided
/// once, by the acting one; the answers keep their meaning across instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_calls_to_either_instance_are_decided_once_by_the_acting_one() {
    let schema = format!("t_relay_d_{}", std::process::id());
    let c = db().await;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    let sim = start_sim(genesys_sim::SimConfig::default()).await;
    let (a, intake_a) = start_bot_daemon(member(&sim, &schema, "host-a"), &sim).await;
    held_by(&c, &schema, "host-a").await;
    let (b, intake_b) = start_bot_daemon(member(&sim, &schema, "host-b"), &sim).await;
    // A bot-phase conversation only the intake tells of (no queue, no intent pushed).
    let id = sim.create_bot_conversation(bot(None, 0, false, false));
    let call = json!({ "conversationId": id, "intent": "Goodbye" });
    let (s, body) = post(&intake_b, call.clone()).await;
    assert_eq!((s, &body["result"]), (202, &json!("close")), "{body}");
    wait_for(Duration::from_secs(20), || sim.is_closed(&id) == Some(true)).await;
    for url in [&intake_a, &intake_b] {
        let (s, body) = post(url, call.clone()).await;
        assert_eq!((s, &body["result"]), (202, &json!("duplicate")), "{body}");
    }
    let other = sim.create_bot_conversation(bot(None, 0, false, false));
    let (s, body) = post(
        &intake_b,
        json!({ "conversationId": other, "intent": "Hello" }),
    )
    .await;
    assert_eq!((s, &body["result"]), (202, &json!("no_rule")), "{body}");

    // One disconnect, sent by the acting instance.
    let disconnects = disconnects(&sim, &id);
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert!(
        disconnects[0].contains("(host-a; epoch 1)"),
        "{disconnects:?}"
    );
    assert_eq!(sim.is_closed(&other), Some(false));
    let relayed: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM {schema}.relayed WHERE received_by = 'host-b'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(relayed, 3, "B relayed its three calls");

    b.shutdown().await;
    a.shutdown().await;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

/// A conversation the old leader watched for its intent (an id-only intake call) is
/// watched by the new one after a hand-over, and closed by it once the intent comes.
/// Flows are not listed here, so the journal is the only way the new leader can know of
/// it (it is on no queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_the_old_leader_watched_is_watched_by_the_new_one() {
    let schema = format!("t_relay_w_{}", std::process::id());
    let c = db().await;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    let sim = start_sim(genesys_sim::SimConfig::default()).await;
    let no_flows = |instance: &str| {
        let mut config = member(&sim, &schema, instance);
        config.stream.flows.clear();
        config
    };
    let (a, intake_a) = start_bot_daemon(no_flows("host-a"), &sim).await;
    held_by(&c, &schema, "host-a").await;
    let (b, _) = start_bot_daemon(no_flows("host-b"), &sim).await;

    // The bot sets the intent 3 s after the start: after A has handed over.
    let id = sim.create_bot_conversation(bot(Some("Goodbye"), 3000, false, false));
    let (s, body) = post(&intake_a, json!({ "conversationId": id })).await;
    assert_eq!((s, &body["result"]), (202, &json!("watching")), "{body}");
    a.shutdown().await;
    held_by(&c, &schema, "host-b").await;
    wait_for(Duration::from_secs(30), || sim.is_closed(&id) == Some(true)).await;
    let sent = disconnects(&sim, &id);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].contains("(host-b; epoch 2)"), "{sent:?}");

    b.shutdown().await;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}
