//! Notification frames: the text the WebSocket pushes, read tolerantly into [`Frame`].
//!
//! Unknown fields are ignored, missing ones defaulted, unknown topics kept by name and
//! counted upstream. Only what state, rules and confirmation need is kept from a
//! conversation event (ids, participant states, the attributes rules read, queue and
//! message type), so a tracked conversation stays small whatever the frame size.
//!
//! The model (`model.rs`: [`Frame`], [`ConversationEvent`], [`Source`], the topic kinds)
//! stands below the reader; this file holds the entry points, [`parse_frame`] and
//! [`parse_conversation_body`]. The tolerant reader is in three parts: `envelope.rs` reads
//! the frame's envelope in one pass, `de.rs` a conversation and its participants (and
//! the lenient field readers every part shares), `detail.rs` the detail-event and
//! flow-metrics bodies and the one fact each carries.

use std::borrow::Cow;

use serde::de::DeserializeSeed;

mod de;
mod detail;
mod envelope;
mod model;

pub use detail::FLOW_PURPOSE;
pub use model::{
    ConversationEvent, DetailKind, FlowMetric, Frame, FrameError, InlineStr, ParticipantUpdate,
    Source, TopicKind, UnknownSource, WATCH_SUFFIXES, topic_kind, watch_topics,
};

use de::{ConversationBody, ConversationSeed, read_raw};
use detail::{DetailBody, DetailSeed, detail_event, flow_metric};
use envelope::{Body, EnvelopeSeed, StrOrNum, message_body};

/// The participant attribute names some rule reads, shared by every reader (streams,
/// REST reads, the intake) and replaced whole when a reload changes the rules.
#[derive(Debug)]
pub struct Wanted(std::sync::RwLock<std::sync::Arc<[Box<str>]>>);

impl Wanted {
    /// Shares `names`.
    pub fn new(names: &[Box<str>]) -> std::sync::Arc<Wanted> {
        std::sync::Arc::new(Wanted(std::sync::RwLock::new(names.into())))
    }

    /// The names now (one uncontended read lock and a reference count).
    pub fn get(&self) -> std::sync::Arc<[Box<str>]> {
        std::sync::Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the names (a reload).
    pub fn set(&self, names: &[Box<str>]) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = names.into();
    }
}

/// Reads one socket text frame. `wanted_attributes` are the participant attribute names
/// some rule reads; all others are dropped here.
pub fn parse_frame(text: &str, wanted_attributes: &[Box<str>]) -> Result<Frame, FrameError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let env = EnvelopeSeed {
        wanted: wanted_attributes,
    }
    .deserialize(&mut de)?;
    de.end()?;
    let Some(topic) = env.topic else {
        return Ok(reply(env.result, env.status));
    };
    let kind = topic_kind(&topic);
    match kind {
        TopicKind::ChannelMetadata => {
            let body = message_body(env.body.raw())?;
            let msg = body.message.unwrap_or_default();
            Ok(if msg.eq_ignore_ascii_case("pong") {
                Frame::Pong
            } else {
                // Heartbeats are documented as "WebSocket Heartbeat"; any other metadata
                // text still proves the socket is alive, so treat it the same.
                Frame::Heartbeat
            })
        }
        TopicKind::System => {
            let body = message_body(env.body.raw())?;
            if topic.eq_ignore_ascii_case("v2.system.socket_closing") {
                Ok(Frame::SocketClosing {
                    message: body.message.unwrap_or_default().into_owned(),
                })
            } else {
                Ok(Frame::System {
                    topic: topic.into_owned(),
                    kind: body.kind.map(Cow::into_owned),
                    reason: body.reason.map(Cow::into_owned),
                    message: body.message.map(Cow::into_owned),
                })
            }
        }
        TopicKind::Detail(kind) => {
            let correlation = env.metadata.and_then(|m| m.correlation_id);
            let body = match env.body {
                Body::Detail(body) => body,
                Body::Raw(raw) => read_raw(
                    raw.get(),
                    DetailSeed {
                        wanted: wanted_attributes,
                    },
                )?,
                Body::Absent | Body::Conversation(_) => DetailBody::default(),
            };
            detail_event(&topic, kind, body, correlation.as_deref())
        }
        TopicKind::FlowMetrics => flow_metric(topic, env.body.raw()),
        TopicKind::QueueConversation | TopicKind::UserConversation => {
            let correlation = env.metadata.and_then(|m| m.correlation_id);
            let source = if kind == TopicKind::QueueConversation {
                Source::Queue
            } else {
                Source::User
            };
            topic_conversation(
                topic,
                source,
                env.body,
                correlation.as_deref(),
                wanted_attributes,
            )
        }
        TopicKind::Other => Ok(Frame::Unknown {
            topic: topic.into_owned(),
        }),
    }
}

/// A frame without a topic: the reply to a socket-level request, else unknown.
fn reply(result: Option<StrOrNum<'_>>, status: Option<Cow<'_, str>>) -> Frame {
    match result {
        Some(r) => Frame::Reply {
            result: match r {
                StrOrNum::Str(s) => s.into_owned(),
                StrOrNum::Num(n) => n.to_string(),
            },
            status: status.map(Cow::into_owned),
        },
        None => Frame::Unknown {
            topic: String::new(),
        },
    }
}

/// The frame of a queue or user topic: the whole conversation, from `source`.
fn topic_conversation(
    topic: Cow<'_, str>,
    source: Source,
    body: Body<'_>,
    correlation_id: Option<&str>,
    wanted_attributes: &[Box<str>],
) -> Result<Frame, FrameError> {
    let body = match body {
        Body::Conversation(body) => body,
        Body::Raw(raw) => read_raw(
            raw.get(),
            ConversationSeed {
                wanted: wanted_attributes,
            },
        )?,
        Body::Absent | Body::Detail(_) => ConversationBody::default(),
    };
    conversation_event(body, correlation_id)
        .map(|mut ev| {
            ev.source = source;
            Frame::Conversation(ev)
        })
        .map_err(|e| match e {
            FrameError::MissingId { .. } => FrameError::MissingId {
                topic: topic.into_owned(),
            },
            other => other,
        })
}

/// Reads a conversation object (an event body, or the answer of
/// `GET /api/v2/conversations/messages/{id}`, which has the same participant fields).
pub fn parse_conversation_body(
    raw: &str,
    correlation_id: Option<&str>,
    wanted_attributes: &[Box<str>],
) -> Result<ConversationEvent, FrameError> {
    let body = read_raw(
        raw,
        ConversationSeed {
            wanted: wanted_attributes,
        },
    )?;
    conversation_event(body, correlation_id)
}

fn conversation_event(
    body: ConversationBody<'_>,
    correlation_id: Option<&str>,
) -> Result<ConversationEvent, FrameError> {
    let Some(id) = body.id.filter(|id| !id.is_empty()) else {
        return Err(FrameError::MissingId {
            topic: String::new(),
        });
    };
    let mut ev = ConversationEvent::empty(id.into(), Source::Read);
    ev.correlation_id = correlation_id.map(Into::into);
    ev.participants = body.participants;
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Vec<Box<str>> {
        vec!["Bot.Intent".into()]
    }

    #[test]
    fn heartbeat_pong_and_closing() {
        let w = wanted();
        let hb =
            r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#;
        assert_eq!(parse_frame(hb, &w).unwrap(), Frame::Heartbeat);
        let pong = r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#;
        assert_eq!(parse_frame(pong, &w).unwrap(), Frame::Pong);
        let closing = r#"{"topicName":"v2.system.socket_closing","version":"2","eventBody":{"message":"bye"},"metadata":{"CorrelationId":"c"}}"#;
        assert_eq!(
            parse_frame(closing, &w).unwrap(),
            Frame::SocketClosing {
                message: "bye".into()
            }
        );
    }

    #[test]
    fn system_and_reply_and_unknown() {
        let w = wanted();
        let s = r#"{"topicName":"v2.system.no_longer_subscribed.x","eventBody":{"systemTopicType":"no_longer_subscribed","reason":"another_channel_subscribed"}}"#;
        match parse_frame(s, &w).unwrap() {
            Frame::System { kind, reason, .. } => {
                assert_eq!(kind.as_deref(), Some("no_longer_subscribed"));
                assert_eq!(reason.as_deref(), Some("another_channel_subscribed"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_frame(r#"{"result":"404"}"#, &w).unwrap(),
            Frame::Reply {
                result: "404".into(),
                status: None
            }
        );
        assert_eq!(
            parse_frame(r#"{"topicName":"v2.users.u.presence","eventBody":{}}"#, &w).unwrap(),
            Frame::Unknown {
                topic: "v2.users.u.presence".into()
            }
        );
    }

    #[test]
    fn conversation_keeps_only_wanted_attributes_and_tolerates_unknown_fields() {
        let text = r#"{"topicName":"V2.ROUTING.QUEUES.q.CONVERSATIONS.MESSAGES","novel":1,
          "eventBody":{"id":"c1","participants":[
            {"id":"p1","purpose":"customer","state":"connected","type":"webmessaging","newField":{"x":1},
             "attributes":{"Bot.Intent":"Goodbye","Other":"x"}},
            {"id":"p2","purpose":"acd","state":"connected","queue":{"id":"q"}},
            {"purpose":"ghost"},
            {"id":"p3","purpose":"workflow","state":"connected","endTime":"2026-01-01T00:00:00.000Z"}]}}"#;
        let Frame::Conversation(ev) = parse_frame(text, &wanted()).unwrap() else {
            panic!("not a conversation");
        };
        assert_eq!(&*ev.conversation_id, "c1");
        assert_eq!(ev.participants.len(), 3, "participant without id dropped");
        assert_eq!(
            ev.participants[0].attributes,
            vec![("Bot.Intent".into(), "Goodbye".into())]
        );
        assert_eq!(ev.participants[1].queue_id.as_deref(), Some("q"));
        assert!(!ev.participants[0].ended);
        assert!(ev.participants[2].ended, "endTime means ended");
    }

    #[test]
    fn wrong_types_in_fields_not_needed_keep_the_frame_and_its_intent() {
        let text = r#"{"topicName":"v2.routing.queues.q.conversations.messages",
          "eventBody":{"id":"c1","participants":[
            {"id":"p1","purpose":"customer","state":7,"type":{"x":1},"queue":"q-as-text",
             "attributes":{"Bot.Intent":"Goodbye","Bot.Score":0.9,"Other":null}},
            {"id":"p2","purpose":5,"state":"disconnected","queue":{"id":3},"attributes":[1]},
            {"id":9,"purpose":"acd"}]}}"#;
        let Frame::Conversation(ev) = parse_frame(text, &["Bot.Intent".into(), "Bot.Score".into()])
            .expect("a frame with odd types still parses")
        else {
            panic!("not a conversation");
        };
        assert_eq!(
            ev.participants.len(),
            2,
            "a participant without a string id is skipped"
        );
        let c = &ev.participants[0];
        assert_eq!(c.attributes, vec![("Bot.Intent".into(), "Goodbye".into())]);
        assert!(!c.ended && c.queue_id.is_none() && c.message_type.is_none());
        assert!(ev.participants[1].ended);
        assert_eq!(&*ev.participants[1].purpose, "");
    }

    #[test]
    fn a_body_before_its_topic_reads_the_same() {
        let w = vec!["Bot.Intent".into(), "Bot.Score".into()];
        let body = r#"{"id":"c1","participants":[
            {"id":"p1","purpose":"customer","state":"connected","type":"webmessaging",
             "attributes":{"Bot.Intent":"Good\u0062ye","Bot.Score":"1","Bot.Intent":"Goodbye"},
             "queue":{"name":"x","id":"q"},"messages":[{"a":[1,{"b":null}]}]},
            {"id":"p2","purpose":"agent","endTime":"2026-01-01T00:00:00Z"}]}"#;
        let topic = r#""v2.users.u.conversations.messages""#;
        let first = format!(
            r#"{{"topicName":{topic},"eventBody":{body},"metadata":{{"CorrelationId":"k"}}}}"#
        );
        let last = format!(
            r#"{{"metadata":{{"CorrelationId":"k"}},"eventBody":{body},"topicName":{topic}}}"#
        );
        let a = parse_frame(&first, &w).unwrap();
        assert_eq!(a, parse_frame(&last, &w).unwrap());
        let Frame::Conversation(ev) = a else {
            panic!("not a conversation")
        };
        assert_eq!(ev.source, Source::User);
        assert_eq!(ev.correlation_id.as_deref(), Some("k"));
        let p = &ev.participants[0];
        assert_eq!(
            p.attributes,
            vec![
                ("Bot.Intent".into(), "Goodbye".into()),
                ("Bot.Score".into(), "1".into())
            ],
            "escapes read, latest wins"
        );
        assert_eq!(p.queue_id.as_deref(), Some("q"));
        assert!(ev.participants[1].ended);
        assert_eq!(
            parse_conversation_body(body, None, &w)
                .unwrap()
                .participants,
            ev.participants,
            "a REST read of the same object"
        );

        let detail = r#"{"conversationId":"c2","participantId":"p","messageType":"WEBMESSAGING"}"#;
        let t = r#""v2.detail.events.conversation.c2.customer.end""#;
        let a = parse_frame(&format!(r#"{{"topicName":{t},"eventBody":{detail}}}"#), &w).unwrap();
        let b = parse_frame(&format!(r#"{{"eventBody":{detail},"topicName":{t}}}"#), &w).unwrap();
        assert_eq!(a, b);
        let Frame::Conversation(ev) = a else {
            panic!("not a conversation")
        };
        assert_eq!(
            ev.participants[0].message_type.as_deref(),
            Some("webmessaging")
        );
    }

    #[test]
    fn envelope_edges() {
        let w = wanted();
        // A repeated envelope field is refused, as before.
        assert!(
            parse_frame(
                r#"{"topicName":"channel.metadata","topicName":"x","eventBody":{}}"#,
                &w
            )
            .is_err()
        );
        // A null body is an absent body.
        assert!(matches!(
            parse_frame(
                r#"{"topicName":"v2.users.u.conversations.messages","eventBody":null}"#,
                &w
            ),
            Err(FrameError::MissingId { .. })
        ));
        let Frame::Conversation(ev) = parse_frame(
            r#"{"topicName":"v2.detail.events.conversation.c3.flow.end","eventBody":null}"#,
            &w,
        )
        .unwrap() else {
            panic!("not a conversation")
        };
        assert_eq!(&*ev.conversation_id, "c3", "the topic names it");
        // Trailing text after the frame is refused.
        assert!(parse_frame(r#"{"topicName":"channel.metadata"} x"#, &w).is_err());
        // Participants that are not objects, or not an array, refuse the frame.
        for body in [
            r#"{"id":"c","participants":[1]}"#,
            r#"{"id":"c","participants":null}"#,
        ] {
            let text = format!(
                r#"{{"topicName":"v2.users.u.conversations.messages","eventBody":{body}}}"#
            );
            assert!(parse_frame(&text, &w).is_err(), "{body}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let w = wanted();
        assert!(parse_frame("not json", &w).is_err());
        assert!(parse_frame("[1,2]", &w).is_err());
        let no_id =
            r#"{"topicName":"v2.users.u.conversations.messages","eventBody":{"participants":[]}}"#;
        assert!(matches!(
            parse_frame(no_id, &w),
            Err(FrameError::MissingId { .. })
        ));
        let wrong_types =
            r#"{"topicName":"v2.users.u.conversations.messages","eventBody":{"id":5}}"#;
        assert!(parse_frame(wrong_types, &w).is_err());
        // Multi-byte characters where a topic prefix or suffix would end.
        for topic in [
            "v2.systé",
            "é",
            "v2.routing.queuesé.conversations.messagé",
            "ü.conversations.messages",
        ] {
            let text = format!(r#"{{"topicName":"{topic}","eventBody":{{}}}}"#);
            assert!(
                matches!(parse_frame(&text, &w), Ok(Frame::Unknown { .. })),
                "{topic}"
            );
        }
    }
}
