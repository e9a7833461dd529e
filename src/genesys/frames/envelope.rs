//! The frame's envelope (`topicName`, `eventBody`, `metadata`, `result`, `status`),
//! read in one pass.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::de::{ConversationBody, ConversationSeed, CowStr, FieldOf, OrNull};
use super::detail::{DetailBody, DetailSeed};
use super::model::{FrameError, TopicKind, topic_kind};

/// The frame's envelope. Read in one pass: when `topicName` comes before `eventBody`
/// (as Genesys sends it), a conversation or detail body is read into what the daemon
/// keeps as it goes by, skipping the rest; otherwise it is kept as raw text and read
/// once the topic is known.
pub(super) struct Envelope<'a> {
    pub(super) topic: Option<Cow<'a, str>>,
    pub(super) body: Body<'a>,
    pub(super) metadata: Option<Metadata<'a>>,
    pub(super) result: Option<StrOrNum<'a>>,
    pub(super) status: Option<Cow<'a, str>>,
}

/// An `eventBody`, read or not yet.
pub(super) enum Body<'a> {
    /// No body, or `null`.
    Absent,
    /// Read later, when the topic is known.
    Raw(&'a RawValue),
    /// Read already, for a queue or user topic.
    Conversation(ConversationBody<'a>),
    /// Read already, for a detail topic.
    Detail(DetailBody<'a>),
}

impl<'a> Body<'a> {
    /// The body as raw text, for the topics read after the envelope.
    pub(super) fn raw(&self) -> Option<&'a RawValue> {
        match self {
            Body::Raw(raw) => Some(raw),
            _ => None,
        }
    }
}

const ENVELOPE_FIELDS: &[&str] = &["topicName", "eventBody", "metadata", "result", "status"];

pub(super) struct EnvelopeSeed<'w> {
    pub(super) wanted: &'w [Box<str>],
}

impl<'de, 'w> DeserializeSeed<'de> for EnvelopeSeed<'w> {
    type Value = Envelope<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Envelope<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'w> Visitor<'de> for EnvelopeSeed<'w> {
    type Value = Envelope<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a notification frame object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        let mut env = Envelope {
            topic: None,
            body: Body::Absent,
            metadata: None,
            result: None,
            status: None,
        };
        let mut seen = [false; ENVELOPE_FIELDS.len()];
        while let Some(field) = map.next_key_seed(FieldOf(ENVELOPE_FIELDS))? {
            let Some(i) = field else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(de::Error::duplicate_field(ENVELOPE_FIELDS[i]));
            }
            match i {
                0 => env.topic = map.next_value::<Option<CowStr<'de>>>()?.map(|s| s.0),
                1 => {
                    let wanted = self.wanted;
                    env.body = match env.topic.as_deref().map(topic_kind) {
                        Some(TopicKind::QueueConversation | TopicKind::UserConversation) => map
                            .next_value_seed(OrNull(ConversationSeed { wanted }))?
                            .map_or(Body::Absent, Body::Conversation),
                        Some(TopicKind::Detail(_)) => map
                            .next_value_seed(OrNull(DetailSeed { wanted }))?
                            .map_or(Body::Absent, Body::Detail),
                        _ => map
                            .next_value::<Option<&'de RawValue>>()?
                            .map_or(Body::Absent, Body::Raw),
                    }
                }
                2 => env.metadata = map.next_value()?,
                3 => env.result = map.next_value()?,
                _ => env.status = map.next_value::<Option<CowStr<'de>>>()?.map(|s| s.0),
            }
        }
        Ok(env)
    }
}

#[derive(Deserialize)]
pub(super) struct Metadata<'a> {
    #[serde(rename = "CorrelationId", borrow, default)]
    pub(super) correlation_id: Option<Cow<'a, str>>,
}

/// `result` is documented as a string ("404") but be lenient about a number.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StrOrNum<'a> {
    Str(#[serde(borrow)] Cow<'a, str>),
    Num(i64),
}

#[derive(Deserialize, Default)]
pub(super) struct MessageBody<'a> {
    #[serde(borrow, default)]
    pub(super) message: Option<Cow<'a, str>>,
    #[serde(rename = "systemTopicType", borrow, default)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) reason: Option<Cow<'a, str>>,
}

/// The body of a `channel.metadata` or `v2.system.*` frame.
pub(super) fn message_body(raw: Option<&RawValue>) -> Result<MessageBody<'_>, FrameError> {
    match raw {
        Some(raw) => Ok(serde_json::from_str(raw.get())?),
        None => Ok(MessageBody::default()),
    }
}
