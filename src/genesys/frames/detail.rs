//! Detail-event and flow-metrics bodies: what the daemon reads from them, and the one
//! fact each carries about its conversation.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::de::{AttributesSeed, FieldOf, Text};
use super::model::{
    ConversationEvent, DetailKind, FlowMetric, Frame, FrameError, InlineStr, ParticipantUpdate,
    Source,
};

/// The fields the daemon reads from any `v2.detail.events.conversation.{id}.*` body
/// (each read leniently: a wrong type reads as absent), the attributes only those
/// some rule reads.
#[derive(Default)]
pub(super) struct DetailBody<'a> {
    conversation_id: Option<Cow<'a, str>>,
    participant_id: Option<Cow<'a, str>>,
    attributes: Vec<(Box<str>, Box<str>)>,
    message_type: Option<Cow<'a, str>>,
    exit_reason: Option<Cow<'a, str>>,
}

const DETAIL_FIELDS: &[&str] = &[
    "conversationId",
    "participantId",
    "attributes",
    "messageType",
    "exitReason",
];

pub(super) struct DetailSeed<'w> {
    pub(super) wanted: &'w [Box<str>],
}

impl<'de> DeserializeSeed<'de> for DetailSeed<'_> {
    type Value = DetailBody<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DetailSeed<'_> {
    type Value = DetailBody<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a detail event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut body = DetailBody::default();
        while let Some(field) = map.next_key_seed(FieldOf(DETAIL_FIELDS))? {
            match field {
                Some(0) => body.conversation_id = map.next_value::<Text<'de>>()?.get(),
                Some(1) => body.participant_id = map.next_value::<Text<'de>>()?.get(),
                Some(2) => {
                    body.attributes = map.next_value_seed(AttributesSeed::new(self.wanted))?
                }
                Some(3) => body.message_type = map.next_value::<Text<'de>>()?.get(),
                Some(_) => body.exit_reason = map.next_value::<Text<'de>>()?.get(),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
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

/// The frame a `v2.analytics.flow.{flowId}.metrics` body makes: the conversation it
/// names, which must be there.
pub(super) fn flow_metric(
    topic: Cow<'_, str>,
    raw: Option<&RawValue>,
) -> Result<Frame, FrameError> {
    let raw = raw.map_or("{}", RawValue::get);
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

/// `exitReason` values of `.flow.end` after which the conversation is over, rather than
/// handed on (`TRANSFER`) or continued in another flow (`*_EXIT`).
fn exit_ends_conversation(reason: &str) -> bool {
    reason.to_ascii_uppercase().ends_with("DISCONNECT")
}

/// The one fact a detail-event body carries about its conversation.
pub(super) fn detail_event(
    topic: &str,
    kind: DetailKind,
    body: DetailBody<'_>,
    correlation_id: Option<&str>,
) -> Result<Frame, FrameError> {
    // The body names the conversation; the topic does too, as a fallback.
    let from_topic = topic
        .get("v2.detail.events.conversation.".len()..)
        .and_then(|rest| rest.split('.').next())
        .filter(|id| !id.is_empty());
    let conversation_id = body.conversation_id;
    let id = match conversation_id.as_deref().filter(|c| !c.is_empty()) {
        Some(id) => id,
        None => from_topic.ok_or_else(|| FrameError::MissingId {
            topic: topic.to_string(),
        })?,
    };
    let mut ev = ConversationEvent::empty(id.into(), Source::Detail);
    ev.correlation_id = correlation_id.map(Into::into);
    let message_type = body.message_type.map(|t| {
        let mut t = InlineStr::new(&t);
        t.make_ascii_lowercase();
        t
    });
    let participant_id = body.participant_id.filter(|p| !p.is_empty());
    match kind {
        DetailKind::Attributes => {
            ev.attributes = body.attributes;
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
