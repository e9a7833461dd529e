//! Notification frames: the text the WebSocket pushes, read tolerantly into [`Frame`].
//!
//! Unknown fields are ignored, missing ones defaulted, unknown topics kept by name and
//! counted upstream. Only what state, rules and confirmation need is kept from a
//! conversation event (ids, participant states, the attributes rules read, queue and
//! message type), so a tracked conversation stays small whatever the frame size.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

impl Frame {
    /// A bounded name for the frame's kind: the `kind` label metrics count frames under,
    /// and the key of `replay`'s summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Heartbeat => "heartbeat",
            Frame::Pong => "pong",
            Frame::SocketClosing { .. } | Frame::System { .. } => "system",
            Frame::Conversation(_) => "conversation",
            Frame::FlowMetric(_) => "flow_metric",
            Frame::Reply { .. } => "reply",
            Frame::Unknown { .. } => "unknown_topic",
        }
    }
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
    /// A REST read of a conversation a queue observation listed in a watched queue
    /// after a blind window (start-up, or a gap no mirror covered): like [`Source::Read`],
    /// and the queue's topic carries the conversation from now on.
    Recovery,
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
            Source::Recovery => "recovery",
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
            "recovery" => Source::Recovery,
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
            full_view: matches!(
                source,
                Source::Queue | Source::User | Source::Read | Source::Recovery
            ),
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

/// One participant in a conversation event. Its short texts are [`InlineStr`]s: reading
/// a participant allocates nothing but the attributes rules read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantUpdate {
    /// Participant id.
    pub id: InlineStr,
    /// `purpose`: `customer`, `agent`, `acd`, `workflow`, ... (free text in the model).
    pub purpose: InlineStr,
    /// `disconnected` or `terminated`, or an `endTime` is set.
    pub ended: bool,
    /// `queue.id`, when the participant has one.
    pub queue_id: Option<InlineStr>,
    /// Messaging `type` (`webmessaging`, `open`, ...).
    pub message_type: Option<InlineStr>,
    /// Only the attributes that some rule reads, as `(name, value)`.
    pub attributes: Vec<(InlineStr, InlineStr)>,
}

/// Most bytes an [`InlineStr`] holds without the heap (a UUID is 36).
const INLINE_STR: usize = 38;

/// Text kept inline when short (ids, purposes, messaging types: a UUID fits), on the
/// heap when longer. Reads as a `str`; made from any string with `into()`.
#[derive(Clone)]
pub struct InlineStr(InlineRepr);

#[derive(Clone)]
enum InlineRepr {
    Inline(u8, [u8; INLINE_STR]),
    Heap(Box<str>),
}

impl InlineStr {
    /// A copy of `s`.
    pub fn new(s: &str) -> InlineStr {
        if s.len() <= INLINE_STR {
            let mut b = [0u8; INLINE_STR];
            b[..s.len()].copy_from_slice(s.as_bytes());
            InlineStr(InlineRepr::Inline(s.len() as u8, b))
        } else {
            InlineStr(InlineRepr::Heap(s.into()))
        }
    }

    /// Lowercases ASCII letters in place.
    pub fn make_ascii_lowercase(&mut self) {
        match &mut self.0 {
            InlineRepr::Inline(n, b) => b[..usize::from(*n)].make_ascii_lowercase(),
            InlineRepr::Heap(s) => s.make_ascii_lowercase(),
        }
    }

    /// The text's bytes (no UTF-8 check: for comparing and hashing).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            InlineRepr::Inline(n, b) => &b[..usize::from(*n)],
            InlineRepr::Heap(s) => s.as_bytes(),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Whole characters only: always copied from a `str`.
            InlineRepr::Inline(n, b) => std::str::from_utf8(&b[..usize::from(*n)]).unwrap_or(""),
            InlineRepr::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for InlineStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for InlineStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for InlineStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for InlineStr {
    fn from(s: &str) -> InlineStr {
        InlineStr::new(s)
    }
}

impl From<String> for InlineStr {
    fn from(s: String) -> InlineStr {
        InlineStr::new(&s)
    }
}

impl From<Box<str>> for InlineStr {
    fn from(s: Box<str>) -> InlineStr {
        if s.len() <= INLINE_STR {
            InlineStr::new(&s)
        } else {
            InlineStr(InlineRepr::Heap(s))
        }
    }
}

impl From<Cow<'_, str>> for InlineStr {
    fn from(s: Cow<'_, str>) -> InlineStr {
        InlineStr::new(&s)
    }
}

impl From<InlineStr> for Box<str> {
    fn from(s: InlineStr) -> Box<str> {
        match s.0 {
            InlineRepr::Heap(b) => b,
            InlineRepr::Inline(..) => s.as_str().into(),
        }
    }
}

impl PartialEq for InlineStr {
    fn eq(&self, other: &InlineStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for InlineStr {}

impl PartialEq<str> for InlineStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for InlineStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::hash::Hash for InlineStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for InlineStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl std::fmt::Display for InlineStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
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

/// The frame's envelope. Read in one pass: when `topicName` comes before `eventBody`
/// (as Genesys sends it), a conversation or detail body is read into what the daemon
/// keeps as it goes by, skipping the rest; otherwise it is kept as raw text and read
/// once the topic is known.
struct Envelope<'a> {
    topic: Option<Cow<'a, str>>,
    body: Body<'a>,
    metadata: Option<Metadata<'a>>,
    result: Option<StrOrNum<'a>>,
    status: Option<Cow<'a, str>>,
}

/// An `eventBody`, read or not yet.
enum Body<'a> {
    /// No body, or `null`.
    Absent,
    /// Read later, when the topic is known.
    Raw(&'a RawValue),
    /// Read already, for a queue or user topic.
    Conversation(ConversationBody<'a>),
    /// Read already, for a detail topic.
    Detail(DetailBody<'a>),
}

const ENVELOPE_FIELDS: &[&str] = &["topicName", "eventBody", "metadata", "result", "status"];

struct EnvelopeSeed<'w> {
    wanted: &'w [Box<str>],
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

/// Which of `names` a map key is (`None`: another key), read without copying it.
struct FieldOf<'n, N>(&'n [N]);

impl<'de, N: AsRef<str>> DeserializeSeed<'de> for FieldOf<'_, N> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, N: AsRef<str>> Visitor<'de> for FieldOf<'_, N> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| n.as_ref() == v))
    }
}

/// A string, borrowed from the frame unless it has escapes; any other type is an error.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `S`, or `None` for `null` (as an absent field would be).
struct OrNull<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OrNull<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<S::Value>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OrNull<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_none<E>(self) -> Result<Option<S::Value>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<S::Value>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<S::Value>, D::Error> {
        self.0.deserialize(d).map(Some)
    }
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

/// A conversation object as read: its id and the participants that have one.
#[derive(Default)]
struct ConversationBody<'a> {
    id: Option<Cow<'a, str>>,
    participants: Vec<ParticipantUpdate>,
}

const CONVERSATION_FIELDS: &[&str] = &["id", "participants"];

/// Reads a conversation object, skipping every field but `id` and `participants`.
/// `id` must be a string (or null); `participants` an array of objects.
struct ConversationSeed<'w> {
    wanted: &'w [Box<str>],
}

impl<'de> DeserializeSeed<'de> for ConversationSeed<'_> {
    type Value = ConversationBody<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConversationSeed<'_> {
    type Value = ConversationBody<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a conversation object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut body = ConversationBody::default();
        while let Some(field) = map.next_key_seed(FieldOf(CONVERSATION_FIELDS))? {
            match field {
                Some(0) => body.id = map.next_value::<Option<CowStr<'de>>>()?.map(|s| s.0),
                Some(_) => {
                    body.participants = map.next_value_seed(ParticipantsSeed {
                        wanted: self.wanted,
                    })?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
}

struct ParticipantsSeed<'w> {
    wanted: &'w [Box<str>],
}

impl<'de> DeserializeSeed<'de> for ParticipantsSeed<'_> {
    type Value = Vec<ParticipantUpdate>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ParticipantsSeed<'_> {
    type Value = Vec<ParticipantUpdate>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of participants")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(4);
        while let Some(p) = seq.next_element_seed(ParticipantSeed {
            wanted: self.wanted,
        })? {
            v.extend(p);
        }
        Ok(v)
    }
}

const PARTICIPANT_FIELDS: &[&str] = &[
    "id",
    "purpose",
    "state",
    "endTime",
    "queue",
    "type",
    "attributes",
];

/// Reads one participant object, leniently: a field of a wrong type reads as absent. A
/// participant without a string id cannot be tracked across events: `None`.
struct ParticipantSeed<'w> {
    wanted: &'w [Box<str>],
}

impl<'de> DeserializeSeed<'de> for ParticipantSeed<'_> {
    type Value = Option<ParticipantUpdate>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ParticipantSeed<'_> {
    type Value = Option<ParticipantUpdate>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a participant object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        let mut purpose = None;
        let mut state = None;
        let mut end_time = None;
        let mut queue_id = None;
        let mut message_type = None;
        let mut attributes = Vec::new();
        while let Some(field) = map.next_key_seed(FieldOf(PARTICIPANT_FIELDS))? {
            match field {
                Some(0) => id = map.next_value::<Text<'de>>()?.get(),
                Some(1) => purpose = map.next_value::<Text<'de>>()?.get(),
                Some(2) => state = map.next_value::<Text<'de>>()?.get(),
                Some(3) => end_time = map.next_value::<Text<'de>>()?.get(),
                // A queue that is not an object with a string id is ignored, not fatal.
                Some(4) => queue_id = map.next_value_seed(EntityIdSeed)?,
                Some(5) => message_type = map.next_value::<Text<'de>>()?.get(),
                Some(_) => attributes = map.next_value_seed(AttributesSeed::new(self.wanted))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        let ended = end_time.is_some_and(|t| !t.is_empty())
            || state.is_some_and(|s| {
                s.eq_ignore_ascii_case("disconnected") || s.eq_ignore_ascii_case("terminated")
            });
        Ok(Some(ParticipantUpdate {
            id: id.into(),
            purpose: purpose.as_deref().unwrap_or_default().into(),
            ended,
            queue_id,
            message_type: message_type.map(Into::into),
            attributes,
        }))
    }
}

/// Visitor methods for a value of any type that only a map can give a result: every
/// other type is skipped and reads as the default.
macro_rules! lenient_non_map {
    ($t:ty) => {
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$t, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// The string `id` of an entity reference (`{"id": "..."}`); anything else reads as
/// absent.
struct EntityIdSeed;

impl<'de> DeserializeSeed<'de> for EntityIdSeed {
    type Value = Option<InlineStr>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntityIdSeed {
    type Value = Option<InlineStr>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    lenient_non_map!(Option<InlineStr>);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(field) = map.next_key_seed(FieldOf(&["id"]))? {
            match field {
                Some(_) => id = map.next_value::<Text<'de>>()?.get().map(Into::into),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(id)
    }
}

/// The attributes some rule reads, from an attributes object: other names are skipped
/// unread, a value that is not a string is ignored, and anything but an object reads as
/// no attributes (the rest of the frame may carry what matters). Latest wins. `T` is the
/// text type kept ([`InlineStr`] for participants, `Box<str>` for events).
struct AttributesSeed<'w, T> {
    wanted: &'w [Box<str>],
    text: std::marker::PhantomData<T>,
}

impl<'w, T> AttributesSeed<'w, T> {
    fn new(wanted: &'w [Box<str>]) -> Self {
        AttributesSeed {
            wanted,
            text: std::marker::PhantomData,
        }
    }
}

impl<'de, T: for<'s> From<&'s str> + std::ops::Deref<Target = str>> DeserializeSeed<'de>
    for AttributesSeed<'_, T>
{
    type Value = Vec<(T, T)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: for<'s> From<&'s str> + std::ops::Deref<Target = str>> Visitor<'de>
    for AttributesSeed<'_, T>
{
    type Value = Vec<(T, T)>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    lenient_non_map!(Vec<(T, T)>);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept: Vec<(T, T)> = Vec::new();
        while let Some(field) = map.next_key_seed(FieldOf(self.wanted))? {
            let Some(i) = field else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let Some(value) = map.next_value::<Text<'de>>()?.get() else {
                continue;
            };
            let name: &str = &self.wanted[i];
            match kept.iter_mut().find(|(k, _)| &**k == name) {
                Some(slot) => slot.1 = T::from(&value),
                None => kept.push((T::from(name), T::from(&value))),
            }
        }
        Ok(kept)
    }
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

/// The fields the daemon reads from any `v2.detail.events.conversation.{id}.*` body
/// (each read leniently: a wrong type reads as absent), the attributes only those
/// some rule reads.
#[derive(Default)]
struct DetailBody<'a> {
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

struct DetailSeed<'w> {
    wanted: &'w [Box<str>],
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
    let mut de = serde_json::Deserializer::from_str(text);
    let env = EnvelopeSeed {
        wanted: wanted_attributes,
    }
    .deserialize(&mut de)?;
    de.end()?;
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
        TopicKind::FlowMetrics => {
            let raw = env.body.raw().map_or("{}", RawValue::get);
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
            let correlation = env.metadata.and_then(|m| m.correlation_id);
            let source = if kind == TopicKind::QueueConversation {
                Source::Queue
            } else {
                Source::User
            };
            let body = match env.body {
                Body::Conversation(body) => body,
                Body::Raw(raw) => read_raw(
                    raw.get(),
                    ConversationSeed {
                        wanted: wanted_attributes,
                    },
                )?,
                Body::Absent | Body::Detail(_) => ConversationBody::default(),
            };
            conversation_event(body, correlation.as_deref())
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
    let body = read_raw(
        raw,
        ConversationSeed {
            wanted: wanted_attributes,
        },
    )?;
    conversation_event(body, correlation_id)
}

/// Reads `raw`, a whole JSON text, with `seed`.
fn read_raw<'de, S: DeserializeSeed<'de>>(raw: &'de str, seed: S) -> Result<S::Value, FrameError> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let v = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
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

/// `exitReason` values of `.flow.end` after which the conversation is over, rather than
/// handed on (`TRANSFER`) or continued in another flow (`*_EXIT`).
fn exit_ends_conversation(reason: &str) -> bool {
    reason.to_ascii_uppercase().ends_with("DISCONNECT")
}

/// The one fact a detail-event body carries about its conversation.
fn detail_event(
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

impl<'a> Body<'a> {
    /// The body as raw text, for the topics read after the envelope.
    fn raw(&self) -> Option<&'a RawValue> {
        match self {
            Body::Raw(raw) => Some(raw),
            _ => None,
        }
    }
}

fn message_body(raw: Option<&RawValue>) -> Result<MessageBody<'_>, FrameError> {
    match raw {
        Some(raw) => Ok(serde_json::from_str(raw.get())?),
        None => Ok(MessageBody::default()),
    }
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
    fn inline_strings_hold_any_length() {
        let long = "x".repeat(100);
        for s in [
            "",
            "customer",
            "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38",
            &long,
            "é",
        ] {
            let i = InlineStr::from(s);
            assert_eq!(&*i, s);
            assert_eq!(Box::<str>::from(i.clone()), s.into());
            assert_eq!(i, InlineStr::from(Box::<str>::from(s)));
        }
        let mut m = InlineStr::from("WebMessaging");
        m.make_ascii_lowercase();
        assert_eq!(m, "webmessaging");
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
