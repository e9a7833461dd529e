//! The frame model: what one frame says, in the shapes the rest of the daemon reads
//! (state, rules, confirmation), and the topic names that say which frame it is.

use std::borrow::Cow;

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

    /// Every source.
    pub const ALL: [Source; 7] = [
        Source::Queue,
        Source::User,
        Source::Detail,
        Source::Flow,
        Source::Intake,
        Source::Read,
        Source::Recovery,
    ];
}

/// Text that names no source (a typo, a newer version's source, in a journalled
/// decision).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an event source this version knows")]
pub struct UnknownSource(pub String);

impl std::str::FromStr for Source {
    type Err = UnknownSource;

    /// The source [`Source::as_str`] names; anything else is an error, never a default
    /// (what a restart does with a journalled decision's unknown source is the event
    /// loop's to say).
    fn from_str(name: &str) -> Result<Source, UnknownSource> {
        Source::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| UnknownSource(name.to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_round_trips_through_its_name() {
        // Fails to compile when a source is added: add it to `Source::ALL`.
        let listed = |s: Source| match s {
            Source::Queue
            | Source::User
            | Source::Detail
            | Source::Flow
            | Source::Intake
            | Source::Read
            | Source::Recovery => Source::ALL.contains(&s),
        };
        assert!(Source::ALL.into_iter().all(listed));
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>(), Ok(s));
        }
        let mut names = Source::ALL.map(Source::as_str).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Source::ALL.len());
        for bad in ["", "Queue", "reed", "detail_events"] {
            assert_eq!(bad.parse::<Source>(), Err(UnknownSource(bad.into())));
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
}
