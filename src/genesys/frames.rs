//! Notification frames: the text the WebSocket pushes, read tolerantly into [`Frame`].
//!
//! Unknown fields are ignored, missing ones defaulted, unknown topics kept by name and
//! counted upstream. Only what state, rules and confirmation need is kept from a
//! conversation event (ids, participant states, the attributes rules read, queue and
//! message type), so a tracked conversation stays small whatever the frame size.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One frame from the notification socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `channel.metadata` "WebSocket Heartbeat": the server is alive.
    Heartbeat,
    /// `channel.metadata` "pong": the answer to our `{"message":"ping"}`.
    Pong,
    /// `v2.system.socket_closing`: the server will close this socket in about a minute.
    SocketClosing {
        /// Free text from Genesys.
        message: String,
    },
    /// Any other `v2.system.*` frame (`no_longer_subscribed`, `token_revoked`, ...).
    System {
        /// Full topic name.
        topic: String,
        /// `systemTopicType` when present.
        kind: Option<String>,
        /// `reason` when present.
        reason: Option<String>,
        /// `message` when present.
        message: Option<String>,
    },
    /// A conversation update: a queue or user topic (the whole conversation), or a
    /// per-conversation detail-event topic (one fact about it).
    Conversation(ConversationEvent),
    /// `v2.analytics.flow.{flowId}.metrics`: a conversation is running a watched flow.
    FlowMetric(FlowMetric),
    /// A reply to a socket-level request, e.g. `{"result":"404"}` when the channel is gone.
    Reply {
        /// The `result` code as sent (a string such as "200" or "404").
        result: String,
        /// The `status` text, if any.
        status: Option<String>,
    },
    /// A well-formed frame on a topic this daemon does not handle.
    Unknown {
        /// The topic name.
        topic: String,
    },
}

/// Where an event about a conversation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `v2.routing.queues.{id}.conversations.messages`.
    Queue,
    /// `v2.users.{id}.conversations.messages`.
    User,
    /// `v2.detail.events.conversation.{id}.*` (the bot phase).
    Detail,
    /// `v2.analytics.flow.{flowId}.metrics` (flow discovery).
    Flow,
    /// The intake endpoint (the bot flow's data action, or a Process Automation workflow).
    Intake,
    /// A REST read of the conversation.
    Read,
}

impl Source {
    /// Stable name used in logs, reports and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Queue => "queue",
            Source::User => "user",
            Source::Detail => "detail",
            Source::Flow => "flow",
            Source::Intake => "intake",
            Source::Read => "read",
        }
    }

    /// The source named by [`Source::as_str`] (a journalled decision); `read` for an
    /// unknown name.
    pub fn from_name(name: &str) -> Source {
        match name {
            "queue" => Source::Queue,
            "user" => Source::User,
            "detail" => Source::Detail,
            "flow" => Source::Flow,
            "intake" => Source::Intake,
            _ => Source::Read,
        }
    }
}

/// What one frame (or REST read, or intake call) says about one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationEvent {
    /// Conversation id.
    pub conversation_id: Box<str>,
    /// Genesys's `metadata.CorrelationId`, for support cases.
    pub correlation_id: Option<Box<str>>,
    /// Which kind of source spoke.
    pub source: Source,
    /// The event lists every participant (queue and user topics, REST reads); a detail
    /// event names one participant at most.
    pub full_view: bool,
    /// Participants as this event shows them.
    pub participants: Vec<ParticipantUpdate>,
    /// Attributes not tied to a known participant (detail `.attributes` events, intake
    /// calls); only those rules read. Latest wins.
    pub attributes: Vec<(Box<str>, Box<str>)>,
    /// An intent supplied by the intake endpoint (rules match it when the attribute
    /// they read is unknown).
    pub intent: Option<Box<str>>,
    /// A `.flow.end` whose `exitReason` ends the conversation (`*DISCONNECT`), as
    /// opposed to a transfer or an exit to another flow.
    pub flow_disconnected: bool,
}

impl ConversationEvent {
    /// An event from `source` that says nothing yet.
    pub fn empty(conversation_id: Box<str>, source: Source) -> Self {
        ConversationEvent {
            conversation_id,
            correlation_id: None,
            source,
            full_view: matches!(source, Source::Queue | Source::User | Source::Read),
            participants: Vec::new(),
            attributes: Vec::new(),
            intent: None,
            flow_disconnected: false,
        }
    }
}

/// A flow-metrics record: the conversation it names, and which metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMetric {
    /// The conversation running the flow.
    pub conversation_id: Box<str>,
    /// The flow.
    pub flow_id: Option<Box<str>>,
    /// `nFlow` (the flow started), `tFlow`, `tFlowExit`, ... (it ended).
    pub metric: Option<Box<str>>,
}

/// One participant in a conversation event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantUpdate {
    /// Participant id.
    pub id: Box<str>,
    /// `purpose`: `customer`, `agent`, `acd`, `workflow`, ... (free text in the model).
    pub purpose: Box<str>,
    /// `disconnected` or `terminated`, or an `endTime` is set.
    pub ended: bool,
    /// `queue.id`, when the participant has one.
    pub queue_id: Option<Box<str>>,
    /// Messaging `type` (`webmessaging`, `open`, ...).
    pub message_type: Option<Box<str>>,
    /// Only the attributes that some rule reads, as `(name, value)`.
    pub attributes: Vec<(Box<str>, Box<str>)>,
}

/// Why a text could not be read as a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or not the envelope shape.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A conversation topic whose body has no conversation id.
    #[error("conversation frame on {topic} has no eventBody.id")]
    MissingId {
        /// The topic it came on.
        topic: String,
    },
}

impl FrameError {
    /// Frame errors come from the server's data; retrying the same text cannot help.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "topicName", borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(rename = "eventBody", borrow, default)]
    body: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow, default)]
    result: Option<StrOrNum<'a>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(rename = "CorrelationId", borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
}

/// `result` is documented as a string ("404") but be lenient about a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum<'a> {
    Str(#[serde(borrow)] Cow<'a, str>),
    Num(i64),
}

#[derive(Deserialize, Default)]
struct MessageBody<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "systemTopicType", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ConversationBody<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    participants: Vec<ParticipantBody<'a>>,
}

#[derive(Deserialize)]
struct ParticipantBody<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    purpose: Text<'a>,
    #[serde(borrow, default)]
    state: Text<'a>,
    #[serde(rename = "endTime", borrow, default)]
    end_time: Text<'a>,
    #[serde(borrow, default)]
    queue: Option<&'a RawValue>,
    #[serde(rename = "type", borrow, default)]
    message_type: Text<'a>,
    #[serde(borrow, default)]
    attributes: Option<&'a RawValue>,
}

/// A string field read leniently: any other JSON type (a number, `null`, an object)
/// reads as absent instead of failing the whole frame, which may carry what matters.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    fn get(self) -> Option<Cow<'a, str>> {
        self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_none<E>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The fields the daemon reads from any `v2.detail.events.conversation.{id}.*` body.
#[derive(Deserialize, Default)]
struct DetailBody<'a> {
    #[serde(rename = "conversationId", borrow, default)]
    conversation_id: Text<'a>,
    #[serde(rename = "participantId", borrow, default)]
    participant_id: Text<'a>,
    #[serde(borrow, default)]
    attributes: Option<&'a RawValue>,
    #[serde(rename = "messageType", borrow, default)]
    message_type: Text<'a>,
    #[serde(rename = "exitReason", borrow, default)]
    exit_reason: Text<'a>,
}

#[derive(Deserialize, Default)]
struct FlowMetricBody<'a> {
    #[serde(rename = "conversationId", borrow, default)]
    conversation_id: Text<'a>,
    #[serde(rename = "flowId", borrow, default)]
    flow_id: Text<'a>,
    #[serde(borrow, default)]
    metric: Text<'a>,
}

#[derive(Deserialize)]
struct EntityRef<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
}

/// Which topic family a topic name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `channel.metadata`.
    ChannelMetadata,
    /// `v2.system.*`.
    System,
    /// `v2.routing.queues.{id}.conversations.messages`.
    QueueConversation,
    /// `v2.users.{id}.conversations.messages`.
    UserConversation,
    /// `v2.detail.events.conversation.{id}.{kind}`.
    Detail(DetailKind),
    /// `v2.analytics.flow.{flowId}.metrics`.
    FlowMetrics,
    /// Anything else.
    Other,
}

/// Which detail event a `v2.detail.events.conversation.{id}.*` topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailKind {
    /// `.attributes`: participant data set (by the bot flow, say).
    Attributes,
    /// `.customer.start`: the guest arrived.
    CustomerStart,
    /// `.customer.end`: the guest's participant ended.
    CustomerEnd,
    /// `.flow.end`: a flow ended (transfer, exit or disconnect).
    FlowEnd,
    /// Any other detail event (`.flow.start`, `.acd.start`, ...): kept alive, no state.
    Other,
}

/// The three per-conversation topics the daemon subscribes for a bot-phase conversation:
/// the intent (`.attributes`) and the two ends (`.customer.end`, `.flow.end`).
pub const WATCH_SUFFIXES: [&str; 3] = ["attributes", "customer.end", "flow.end"];

/// The per-conversation topics watched for `conversation_id`.
pub fn watch_topics(conversation_id: &str) -> [String; 3] {
    WATCH_SUFFIXES.map(|s| format!("v2.detail.events.conversation.{conversation_id}.{s}"))
}

/// Classifies a topic name, case-insensitively as the official .NET handler does.
pub fn topic_kind(topic: &str) -> TopicKind {
    // Byte-wise, so a topic with multi-byte characters cannot split a char and panic.
    let t = topic.as_bytes();
    let lower = |prefix: &str| {
        t.len() >= prefix.len() && t[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    let ends = |suffix: &str| {
        t.len() >= suffix.len()
            && t[t.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    if topic.eq_ignore_ascii_case("channel.metadata") {
        TopicKind::ChannelMetadata
    } else if lower("v2.system.") {
        TopicKind::System
    } else if lower("v2.routing.queues.") && ends(".conversations.messages") {
        TopicKind::QueueConversation
    } else if lower("v2.users.") && ends(".conversations.messages") {
        TopicKind::UserConversation
    } else if lower("v2.detail.events.conversation.") {
        TopicKind::Detail(if ends(".attributes") {
            DetailKind::Attributes
        } else if ends(".customer.start") {
            DetailKind::CustomerStart
        } else if ends(".customer.end") {
            DetailKind::CustomerEnd
        } else if ends(".flow.end") {
            DetailKind::FlowEnd
        } else {
            DetailKind::Other
        })
    } else if lower("v2.analytics.flow.") && ends(".metrics") {
        TopicKind::FlowMetrics
    } else {
        TopicKind::Other
    }
}

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
    let env: Envelope<'_> = serde_json::from_str(text)?;
    let Some(topic) = env.topic else {
        return Ok(match env.result {
            Some(r) => Frame::Reply {
                result: match r {
                    StrOrNum::Str(s) => s.into_owned(),
                    StrOrNum::Num(n) => n.to_string(),
                },
                status: env.status.map(Cow::into_owned),
            },
            None => Frame::Unknown {
                topic: String::new(),
            },
        });
    };
    let kind = topic_kind(&topic);
    match kind {
        TopicKind::ChannelMetadata => {
            let body = message_body(env.body)?;
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
            let body = message_body(env.body)?;
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
            let raw = env.body.map_or("{}", RawValue::get);
            let correlation = env.metadata.and_then(|m| m.correlation_id);
            parse_detail_body(&topic, kind, raw, correlation.as_deref(), wanted_attributes)
        }
        TopicKind::FlowMetrics => {
            let raw = env.body.map_or("{}", RawValue::get);
            let body: FlowMetricBody<'_> = serde_json::from_str(raw)?;
            match body.conversation_id.get().filter(|c| !c.is_empty()) {
                Some(id) => Ok(Frame::FlowMetric(FlowMetric {
                    conversation_id: id.into(),
                    flow_id: body.flow_id.get().map(Into::into),
                    metric: body.metric.get().map(Into::into),
                })),
                None => Err(FrameError::MissingId {
                    topic: topic.into_owned(),
                }),
            }
        }
        TopicKind::QueueConversation | TopicKind::UserConversation => {
            let raw = env.body.map_or("{}", RawValue::get);
            let correlation = env.metadata.and_then(|m| m.correlation_id);
            let source = if kind == TopicKind::QueueConversation {
                Source::Queue
            } else {
                Source::User
            };
            parse_conversation_body(raw, correlation.as_deref(), wanted_attributes)
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
        TopicKind::Other => Ok(Frame::Unknown {
            topic: topic.into_owned(),
        }),
    }
}

/// Reads a conversation object (an event body, or the answer of
/// `GET /api/v2/conversations/messages/{id}`, which has the same participant fields).
pub fn parse_conversation_body(
    raw: &str,
    correlation_id: Option<&str>,
    wanted_attributes: &[Box<str>],
) -> Result<ConversationEvent, FrameError> {
    let body: ConversationBody<'_> = serde_json::from_str(raw)?;
    let Some(id) = body.id.filter(|id| !id.is_empty()) else {
        return Err(FrameError::MissingId {
            topic: String::new(),
        });
    };
    let participants = body
        .participants
        .into_iter()
        .filter_map(|p| participant(p, wanted_attributes))
        .collect();
    let mut ev = ConversationEvent::empty(id.into(), Source::Read);
    ev.correlation_id = correlation_id.map(Into::into);
    ev.participants = participants;
    Ok(ev)
}

/// `exitReason` values of `.flow.end` after which the conversation is over, rather than
/// handed on (`TRANSFER`) or continued in another flow (`*_EXIT`).
fn exit_ends_conversation(reason: &str) -> bool {
    reason.to_ascii_uppercase().ends_with("DISCONNECT")
}

/// Reads a detail-event body into the one fact it carries about its conversation.
fn parse_detail_body(
    topic: &str,
    kind: DetailKind,
    raw: &str,
    correlation_id: Option<&str>,
    wanted: &[Box<str>],
) -> Result<Frame, FrameError> {
    let body: DetailBody<'_> = serde_json::from_str(raw)?;
    // The body names the conversation; the topic does too, as a fallback.
    let from_topic = topic
        .get("v2.detail.events.conversation.".len()..)
        .and_then(|rest| rest.split('.').next())
        .filter(|id| !id.is_empty());
    let conversation_id = body.conversation_id.get();
    let id = match conversation_id.as_deref().filter(|c| !c.is_empty()) {
        Some(id) => id,
        None => from_topic.ok_or_else(|| FrameError::MissingId {
            topic: topic.to_string(),
        })?,
    };
    let mut ev = ConversationEvent::empty(id.into(), Source::Detail);
    ev.correlation_id = correlation_id.map(Into::into);
    let message_type = body
        .message_type
        .get()
        .map(|t| t.to_ascii_lowercase().into_boxed_str());
    let participant_id = body.participant_id.get().filter(|p| !p.is_empty());
    match kind {
        DetailKind::Attributes => {
            ev.attributes = wanted_attributes(body.attributes, wanted);
        }
        DetailKind::CustomerStart | DetailKind::CustomerEnd => {
            if let Some(pid) = participant_id {
                ev.participants.push(ParticipantUpdate {
                    id: pid.into(),
                    purpose: "customer".into(),
                    ended: kind == DetailKind::CustomerEnd,
                    queue_id: None,
                    message_type,
                    attributes: Vec::new(),
                });
            }
        }
        DetailKind::FlowEnd => {
            ev.flow_disconnected = body
                .exit_reason
                .get()
                .as_deref()
                .is_some_and(exit_ends_conversation);
            if let Some(pid) = participant_id {
                ev.participants.push(ParticipantUpdate {
                    id: pid.into(),
                    purpose: FLOW_PURPOSE.into(),
                    ended: true,
                    queue_id: None,
                    message_type,
                    attributes: Vec::new(),
                });
            }
        }
        DetailKind::Other => {}
    }
    Ok(Frame::Conversation(ev))
}

/// Purpose given to a participant known only from `.flow.end`: the sources leave open
/// whether Genesys calls it `workflow` or `botflow` (facts sheet H.2).
pub const FLOW_PURPOSE: &str = "flow";

/// Keeps only the attributes rules read; a value that is not a string is ignored rather
/// than failing the whole frame (the rest of the frame may carry what matters).
fn wanted_attributes(attrs: Option<&RawValue>, wanted: &[Box<str>]) -> Vec<(Box<str>, Box<str>)> {
    // Not an object (a wrong type): no attributes, the rest of the frame still counts.
    let Some(attrs) = attrs
        .and_then(|raw| serde_json::from_str::<HashMap<Cow<'_, str>, &RawValue>>(raw.get()).ok())
    else {
        return Vec::new();
    };
    attrs
        .into_iter()
        .filter(|(k, _)| wanted.iter().any(|w| **w == **k))
        .filter_map(|(k, v)| {
            let v: Cow<'_, str> = serde_json::from_str(v.get()).ok()?;
            Some((k.into(), v.into()))
        })
        .collect()
}

fn message_body(raw: Option<&RawValue>) -> Result<MessageBody<'_>, FrameError> {
    match raw {
        Some(raw) => Ok(serde_json::from_str(raw.get())?),
        None => Ok(MessageBody::default()),
    }
}

/// A participant without an id cannot be tracked across events; it is skipped.
fn participant(p: ParticipantBody<'_>, wanted: &[Box<str>]) -> Option<ParticipantUpdate> {
    let id = p.id.get().filter(|id| !id.is_empty())?;
    let ended = p.end_time.get().is_some_and(|t| !t.is_empty())
        || p.state.get().as_deref().is_some_and(|s| {
            s.eq_ignore_ascii_case("disconnected") || s.eq_ignore_ascii_case("terminated")
        });
    let attributes = wanted_attributes(p.attributes, wanted);
    // A queue that is not an object with a string id is ignored, not fatal.
    let queue_id = p
        .queue
        .and_then(|raw| serde_json::from_str::<EntityRef<'_>>(raw.get()).ok())
        .and_then(|q| q.id.get())
        .map(|q| q.into_owned().into_boxed_str());
    Some(ParticipantUpdate {
        id: id.into(),
        purpose: p.purpose.get().unwrap_or_default().into(),
        ended,
        queue_id,
        message_type: p.message_type.get().map(Into::into),
        attributes,
    })
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
