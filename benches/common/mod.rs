//! Inputs shared by the benches: the example frames of ../shared/genesys/events with
//! fresh conversation ids, generated queue and user frames (2 to 8 participants, 1 to 20
//! messages, shaped like the examples), bot-phase frames, and the rules they are
//! decided by. Deterministic: a fixed seed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use genesys_closer::config::Config;
use genesys_closer::rules::Rules;
use serde_json::{Value, json};

/// The intent rules match; other conversations carry [`OTHER_INTENT`].
pub const MATCHING_INTENT: &str = "CancelSubscription";
/// An intent no rule matches.
pub const OTHER_INTENT: &str = "TalkToAgent";
/// The configured queue.
pub const QUEUE: &str = "8f14e45f-ceea-467a-9575-3b9d1c2e4a77";

/// One rule on `Bot.Intent`, as the old ingest bench had it.
pub fn rules() -> Rules {
    let config = Config::parse(
        r#"
[genesys]
region = "us-east-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"
[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]
[[rule]]
name = "cancel"
intents = ["CancelSubscription", "Goodbye"]
"#,
        Path::new("bench.toml"),
    )
    .expect("bench config");
    Rules::compile(&config)
}

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/genesys/events")
}

fn example(name: &str) -> String {
    let path = events_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A random version-4 UUID in canonical lowercase form.
pub fn uuid(rng: &mut fastrand::Rng) -> String {
    genesys_sim::uuid_v4_from(rng.u128(..))
}

/// `groups` copies of the example stream, each with its own conversation ids: the
/// heartbeat, the queue conversation of 01 then 03, the user-topic conversation of 02,
/// and the bot-phase conversation of 04 (flow metric), 05 (`.attributes`) and 06
/// (`.customer.end`). A quarter of the groups carry the matching intent, the others
/// another intent. Returns the frames and how many decisions they must produce.
pub fn example_frames(groups: usize) -> (Vec<String>, usize) {
    let heartbeat = example("heartbeat.json");
    let queue_open = example("01-queue-bot-handled-intent-attributes.json");
    let queue_closed = example("03-queue-fully-disconnected.json");
    let user = example("02-user-agent-connected.json");
    let flow = example("bot-phase/04-flow-metrics-bot-flow-started.json");
    let attrs = example("bot-phase/05-detail-attributes-bot-intent.json");
    let end = example("bot-phase/06-detail-customer-end-after-close.json");
    let mut rng = fastrand::Rng::with_seed(1);
    let mut frames = Vec::with_capacity(groups * 7);
    let mut decisions = 0;
    for g in 0..groups {
        let q = uuid(&mut rng);
        let u = uuid(&mut rng);
        let b = uuid(&mut rng);
        let matching = g % 4 == 0;
        let fix = |t: &str| {
            let t = t
                .replace("3a6f2b9e-7c41-4d8a-b5e2-91f0c7d3a864", &q)
                .replace("6e2d8b41-0f97-4c5a-a3e6-d8b17f4c2950", &u)
                .replace("5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38", &b);
            if matching {
                t.replace(OTHER_INTENT, MATCHING_INTENT)
            } else {
                t.replace(MATCHING_INTENT, OTHER_INTENT)
            }
        };
        for t in [
            &heartbeat,
            &queue_open,
            &user,
            &flow,
            &attrs,
            &queue_closed,
            &end,
        ] {
            frames.push(fix(t));
        }
        if matching {
            decisions += 3;
        }
    }
    (frames, decisions)
}

fn message(rng: &mut fastrand::Rng, i: usize) -> Value {
    json!({
        "message": { "id": format!("{:032x}", rng.u128(..)) },
        "messageTime": format!("2026-11-23T14:{:02}:{:02}.{:03}Z", 2 + i / 60, i % 60, rng.u32(..1000)),
        "messageStatus": if i.is_multiple_of(2) { "received" } else { "sent" },
        "messageSegmentCount": 1
    })
}

/// One participant of a queue or user frame, shaped like those of the examples.
fn participant(
    rng: &mut fastrand::Rng,
    id: &str,
    purpose: &str,
    ended: bool,
    intent: &str,
    messages: usize,
) -> Value {
    let mut p = json!({
        "id": id,
        "name": match purpose { "customer" => "Jane Doe", "workflow" => "Support Inbound Message Flow",
                                "acd" => "Support Messaging", _ => "Priya Natarajan" },
        "startTime": "2026-11-23T14:02:09.118Z",
        "connectedTime": "2026-11-23T14:02:09.245Z",
        "purpose": purpose,
        "state": if ended { "disconnected" } else { "connected" },
        "initialState": "connected",
        "direction": "inbound",
        "held": false,
        "wrapupRequired": purpose == "agent",
        "attributes": {},
        "provider": "PureCloud Messaging",
        "type": "webmessaging",
        "messages": (0..messages).map(|i| message(rng, i)).collect::<Vec<_>>(),
    });
    let o = p.as_object_mut().expect("object");
    if ended {
        o.insert("endTime".into(), json!("2026-11-23T14:09:33.512Z"));
        o.insert("disconnectType".into(), json!("client"));
    }
    match purpose {
        "customer" => {
            o.insert("address".into(), json!(uuid(rng)));
            o.insert(
                "attributes".into(),
                json!({
                    "Bot.Name": "Support Bot",
                    "Bot.Intent": intent,
                    "Bot.IntentConfidence": "0.94",
                    "Bot.Outcome": "IntentMatched",
                    "Customer.Locale": "en-US"
                }),
            );
        }
        "acd" => {
            o.insert("queue".into(), json!({ "id": QUEUE }));
            o.insert(
                "conversationRoutingData".into(),
                json!({ "queue": { "id": QUEUE }, "priority": 0, "skills": [], "scoredAgents": [] }),
            );
            o.insert(
                "queueMediaSettings".into(),
                json!({ "alertingTimeoutSeconds": 30, "enableAutoAnswer": false }),
            );
        }
        "agent" => {
            o.insert("user".into(), json!({ "id": uuid(rng) }));
            o.insert("queue".into(), json!({ "id": QUEUE }));
            o.insert("wrapupPrompt".into(), json!("mandatory"));
            o.insert("wrapupTimeoutMs".into(), json!(60000));
            o.insert("alertingTimeoutMs".into(), json!(30000));
            o.insert(
                "conversationRoutingData".into(),
                json!({ "queue": { "id": QUEUE }, "priority": 0, "skills": [], "scoredAgents": [] }),
            );
        }
        _ => {}
    }
    p
}

/// A generated conversation: its id and participants (id, purpose).
pub struct Generated {
    /// Conversation id.
    pub id: String,
    /// (participant id, purpose).
    pub participants: Vec<(String, &'static str)>,
    /// Messages its frames carry at their fullest.
    pub messages: usize,
    /// The intent on its customer.
    pub intent: &'static str,
}

/// A conversation of `participants` participants (2 to 8: customer, then the flow, the
/// queue and agents as transfers add them) and `messages` messages.
pub fn conversation(
    rng: &mut fastrand::Rng,
    participants: usize,
    messages: usize,
    matching: bool,
) -> Generated {
    const PURPOSES: [&str; 8] = [
        "customer", "workflow", "acd", "agent", "acd", "agent", "acd", "agent",
    ];
    Generated {
        id: uuid(rng),
        participants: PURPOSES[..participants]
            .iter()
            .map(|p| (uuid(rng), *p))
            .collect(),
        messages,
        intent: if matching {
            MATCHING_INTENT
        } else {
            OTHER_INTENT
        },
    }
}

/// The queue-topic frame of `c` at `stage` of `stages`: messages accumulate, the flow has
/// left from the start, everyone has left at the last stage. Compact JSON, as the socket
/// sends it.
pub fn queue_frame(rng: &mut fastrand::Rng, c: &Generated, stage: usize, stages: usize) -> String {
    let last = stage + 1 == stages;
    let shown = (c.messages * (stage + 1)).div_ceil(stages).max(1);
    let n = c.participants.len();
    let ps: Vec<Value> = c
        .participants
        .iter()
        .enumerate()
        .map(|(i, (id, purpose))| {
            // The customer carries most messages; the rest go to the others in turn.
            let mine = if i == 0 {
                shown.div_ceil(2)
            } else {
                (shown / 2) / (n - 1) + usize::from(i <= (shown / 2) % (n - 1))
            };
            participant(
                rng,
                id,
                purpose,
                last || *purpose == "workflow",
                c.intent,
                mine,
            )
        })
        .collect();
    let body = json!({
        "id": c.id,
        "participants": ps,
        "otherMediaUris": [],
        "divisions": [ { "division": { "id": "5c1e9d2a-3b47-4f0e-9a1d-6e2f7b8c9d01" },
                         "entities": [ { "id": QUEUE } ] } ]
    });
    envelope(
        &format!("v2.routing.queues.{QUEUE}.conversations.messages"),
        &body,
        &uuid(rng),
    )
}

/// A frame as Genesys sends it: `topicName` first, then `version`, `eventBody` and
/// `metadata` (`json!` would sort the keys, putting the topic last).
pub fn envelope(topic: &str, body: &Value, correlation: &str) -> String {
    format!(
        r#"{{"topicName":{},"version":"2","eventBody":{},"metadata":{{"CorrelationId":{}}}}}"#,
        Value::from(topic),
        body,
        Value::from(correlation)
    )
}

/// `conversations` generated conversations of 2 to 8 participants and 1 to 20 messages,
/// three frames each (open, busier, all ended), interleaved as a busy queue would push
/// them. Returns the frames and how many decisions they must produce (a quarter match).
pub fn generated_frames(conversations: usize) -> (Vec<String>, usize) {
    const STAGES: usize = 3;
    let mut rng = fastrand::Rng::with_seed(2);
    let convs: Vec<Generated> = (0..conversations)
        .map(|i| {
            let p = rng.usize(2..=8);
            let m = rng.usize(1..=20);
            conversation(&mut rng, p, m, i % 4 == 0)
        })
        .collect();
    let mut frames = Vec::with_capacity(conversations * STAGES);
    // Stage by stage over a sliding window, so frames of different conversations mix.
    const WINDOW: usize = 64;
    for start in (0..conversations).step_by(WINDOW) {
        let end = (start + WINDOW).min(conversations);
        for stage in 0..STAGES {
            for c in &convs[start..end] {
                frames.push(queue_frame(&mut rng, c, stage, STAGES));
            }
        }
    }
    (frames, conversations.div_ceil(4))
}

/// The bot-phase frames of one conversation before its end: the flow-metrics record, the
/// `.customer.start` and the `.attributes` detail events.
pub fn bot_frames(rng: &mut fastrand::Rng, id: &str, customer: &str, intent: &str) -> [String; 3] {
    let flow = "a3c9e5f1-8b27-4d60-9e4a-2f7b1c6d8e93";
    [
        envelope(
            &format!("v2.analytics.flow.{flow}.metrics"),
            &json!({
                "metric": "nFlow", "metricDate": "2026-11-24T09:15:02.311Z", "value": 1,
                "conversationId": id, "flowId": flow, "flowName": "Web messaging bot",
                "flowType": "inboundshortmessage", "flowVersion": "12.0", "mediaType": "message",
                "messageType": "webmessaging", "purpose": "workflow", "direction": "inbound",
                "sessionId": uuid(rng), "participantName": "Web messaging bot"
            }),
            &uuid(rng),
        ),
        envelope(
            &format!("v2.detail.events.conversation.{id}.customer.start"),
            &json!({
                "eventTime": 1795511702298u64, "conversationId": id, "participantId": customer,
                "sessionId": uuid(rng), "mediaType": "MESSAGE", "messageType": "WEBMESSAGING",
                "direction": "INBOUND", "provider": "PureCloud Webmessaging",
                "divisionId": "d4f7a2c9-3e61-4b85-8d0a-5c9e2b7f1a36"
            }),
            &uuid(rng),
        ),
        envelope(
            &format!("v2.detail.events.conversation.{id}.attributes"),
            &json!({
                "eventTime": 1795511704512u64, "conversationId": id, "participantId": customer,
                "attributes": { "Bot.Intent": intent, "Bot.Confidence": "0.93",
                                "Bot.Name": "Web messaging bot" },
                "communications": [ { "id": uuid(rng), "mediaType": "MESSAGE" } ],
                "participantStartTime": 1795511702298u64
            }),
            &uuid(rng),
        ),
    ]
}

/// A REST read of a bot-phase conversation (`GET /api/v2/conversations/messages/{id}`):
/// the customer and the flow's participant, the flow holding the bot's attributes.
pub fn bot_read(rng: &mut fastrand::Rng, id: &str, customer: &str, intent: &str) -> String {
    let flow_id = uuid(rng);
    let mut flow = participant(rng, &flow_id, "workflow", false, intent, 2);
    flow["attributes"] = json!({ "Bot.Intent": intent, "Bot.Name": "Web messaging bot" });
    json!({
        "id": id,
        "participants": [ participant(rng, customer, "customer", false, intent, 2), flow ],
    })
    .to_string()
}
