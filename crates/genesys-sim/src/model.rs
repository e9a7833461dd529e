//! The simulated conversation and its renderings: the notification `eventBody`
//! (queue/user `conversations.messages` topics), the REST `MessageConversation`, and
//! the generic REST `Conversation` of `GET /api/v2/conversations/{id}`, the one that
//! names each participant's message communication.
//!
//! The renderings use only fields that exist in the shared schemas and models
//! (`additionalProperties:false`), so a test can validate every frame.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::ConversationSpec;
use super::bot::BotInfo;
use super::ids::{hex32, rfc3339, uuid_v4};

/// What a participant stands for; decides its `purpose` and how it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Customer,
    Workflow,
    /// A flow participant shown as `botflow` (real orgs may use either purpose).
    Botflow,
    Acd,
    Agent,
}

impl Role {
    pub(crate) fn purpose(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Workflow => "workflow",
            Role::Botflow => "botflow",
            Role::Acd => "acd",
            Role::Agent => "agent",
        }
    }
}

/// Why participants are being disconnected; picks the `disconnectType` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndCause {
    /// The guest left: the customer is "client", everyone else "peer".
    CustomerLeft,
    /// PATCH by the API client: shaped like the example frame 03 (customer "peer", others "client").
    ApiDisconnect,
    /// `POST .../disconnect`: the platform tears everything down ("system").
    Teardown,
}

impl EndCause {
    fn disconnect_type(self, role: Role) -> &'static str {
        match (self, role) {
            (EndCause::CustomerLeft, Role::Customer) => "client",
            (EndCause::CustomerLeft, _) => "peer",
            (EndCause::ApiDisconnect, Role::Customer) => "peer",
            (EndCause::ApiDisconnect, _) => "client",
            (EndCause::Teardown, _) => "system",
        }
    }
}

/// The messenger type of every simulated conversation (`Message.type`).
pub(crate) const MESSAGE_TYPE: &str = "webmessaging";

/// Longest `AdditionalMessage.textBody` on any channel, in characters (facts sheet D.5:
/// "SMS - 765 characters, other channels - 2000 characters").
pub(crate) const TEXT_MAX: usize = 2000;
/// Longest `textBody` on SMS.
pub(crate) const TEXT_MAX_SMS: usize = 765;

/// Longest `textBody` for a messenger type.
pub(crate) fn text_limit(message_type: &str) -> usize {
    if message_type == "sms" {
        TEXT_MAX_SMS
    } else {
        TEXT_MAX
    }
}

/// A wrap-up applied through `POST .../communications/{cid}/wrapup`; the generic
/// `Conversation` shows it as the participant's `wrapup`.
#[derive(Clone, Debug)]
pub(crate) struct AppliedWrapup {
    pub(crate) code: String,
    pub(crate) notes: Option<String>,
    pub(crate) at: SystemTime,
}

/// One message reference on a participant (the text itself is never in events).
#[derive(Clone, Debug)]
pub(crate) struct MessageRef {
    pub(crate) id: String,
    pub(crate) time: SystemTime,
    pub(crate) status: &'static str,
}

/// One participant of a simulated messaging conversation.
/// Fields are crate-visible so the bot module can build and change participants;
/// the module itself is private to the simulator.
#[derive(Clone, Debug)]
pub(crate) struct Participant {
    pub(crate) id: String,
    pub(crate) role: Role,
    pub(crate) name: String,
    pub(crate) address: Option<String>,
    pub(crate) start: SystemTime,
    pub(crate) connected: SystemTime,
    pub(crate) end: Option<SystemTime>,
    pub(crate) initial_state: &'static str,
    pub(crate) disconnect_type: Option<&'static str>,
    pub(crate) wrapup_required: bool,
    pub(crate) queue_id: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) attributes: Map<String, Value>,
    pub(crate) messages: Vec<MessageRef>,
    /// The analytics session (communication) id that detail events name; also the
    /// participant's one message communication id (`Participant.messages[].id` of the
    /// generic `Conversation`), stable from creation on.
    pub(crate) session: String,
}

impl Participant {
    /// Connected means "not yet ended"; the sim never un-ends a participant.
    pub(crate) fn is_connected(&self) -> bool {
        self.end.is_none()
    }

    /// Ends the participant now unless it already ended (ending is idempotent
    /// so a late duplicate request cannot move `endTime`).
    pub(crate) fn end(&mut self, now: SystemTime, disconnect_type: &'static str) -> bool {
        if self.end.is_some() {
            return false;
        }
        self.end = Some(now);
        self.disconnect_type = Some(disconnect_type);
        true
    }

    fn state(&self) -> &'static str {
        if self.is_connected() {
            "connected"
        } else {
            "disconnected"
        }
    }

    /// Fields the event and REST participant models share, with the same meaning.
    fn shared_fields(&self) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("id".into(), json!(self.id));
        p.insert("name".into(), json!(self.name));
        if let Some(a) = &self.address {
            p.insert("address".into(), json!(a));
        }
        self.times_into(&mut p);
        p.insert("purpose".into(), json!(self.role.purpose()));
        p.insert("state".into(), json!(self.state()));
        p.insert("direction".into(), json!("inbound"));
        if let Some(d) = self.disconnect_type {
            p.insert("disconnectType".into(), json!(d));
        }
        p.insert("held".into(), json!(false));
        p.insert("wrapupRequired".into(), json!(self.wrapup_required));
        self.agent_fields_into(&mut p);
        p
    }

    fn event_json(&self) -> Value {
        let mut p = self.shared_fields();
        // Only the event model has `initialState`.
        p.insert("initialState".into(), json!(self.initial_state));
        if let Some(u) = &self.user_id {
            p.insert("user".into(), json!({ "id": u }));
        }
        if let Some(q) = &self.queue_id {
            p.insert("queue".into(), json!({ "id": q }));
        }
        p.insert("attributes".into(), Value::Object(self.attributes.clone()));
        p.insert("provider".into(), json!("PureCloud Messaging"));
        p.insert("type".into(), json!("webmessaging"));
        if let Some(q) = &self.queue_id {
            p.insert(
                "conversationRoutingData".into(),
                json!({ "queue": { "id": q }, "priority": 0, "skills": [], "scoredAgents": [] }),
            );
        }
        if self.role == Role::Acd {
            p.insert(
                "queueMediaSettings".into(),
                json!({ "alertingTimeoutSeconds": 30, "enableAutoAnswer": false }),
            );
        }
        // Events name a message as `message{id}`.
        let msgs: Vec<Value> = self
            .messages
            .iter()
            .map(|m| {
                json!({ "message": { "id": m.id }, "messageTime": rfc3339(m.time),
                        "messageStatus": m.status, "messageSegmentCount": 1 })
            })
            .collect();
        p.insert("messages".into(), Value::Array(msgs));
        Value::Object(p)
    }

    /// `MessageMediaParticipant` of the REST API: no `initialState`, references carry
    /// `selfUri`, messages are `MessageDetails{messageId,...}`.
    fn rest_json(&self) -> Value {
        let mut p = self.shared_fields();
        if let Some(u) = &self.user_id {
            p.insert(
                "user".into(),
                json!({ "id": u, "selfUri": format!("/api/v2/users/{u}") }),
            );
        }
        if let Some(q) = &self.queue_id {
            let uri = format!("/api/v2/routing/queues/{q}");
            p.insert("queue".into(), json!({ "id": q, "selfUri": uri }));
        }
        p.insert("attributes".into(), Value::Object(self.attributes.clone()));
        p.insert("provider".into(), json!("PureCloud Messaging"));
        let msgs: Vec<Value> = self
            .messages
            .iter()
            .map(|m| {
                json!({ "messageId": m.id, "messageTime": rfc3339(m.time),
                        "messageStatus": m.status, "messageSegmentCount": 1 })
            })
            .collect();
        p.insert("messages".into(), Value::Array(msgs));
        p.insert("type".into(), json!("webmessaging"));
        Value::Object(p)
    }

    /// The `Participant` shape inside the PATCH answer's `Conversation`: that model has
    /// no `state` field, so only identity and times.
    fn summary_json(&self) -> Value {
        let mut p = Map::new();
        p.insert("id".into(), json!(self.id));
        p.insert("name".into(), json!(self.name));
        p.insert("purpose".into(), json!(self.role.purpose()));
        self.times_into(&mut p);
        Value::Object(p)
    }

    /// The participant's message communication (model `Message`): where its state,
    /// direction and disconnect details live in the generic `Conversation`.
    fn communication_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.session));
        m.insert("state".into(), json!(self.state()));
        m.insert("initialState".into(), json!(self.initial_state));
        m.insert("direction".into(), json!("inbound"));
        m.insert("held".into(), json!(false));
        m.insert("connectedTime".into(), json!(rfc3339(self.connected)));
        if let Some(e) = self.end {
            m.insert("disconnectedTime".into(), json!(rfc3339(e)));
        }
        if let Some(d) = self.disconnect_type {
            m.insert("disconnectType".into(), json!(d));
        }
        m.insert("provider".into(), json!("PureCloud Messaging"));
        m.insert("type".into(), json!(MESSAGE_TYPE));
        let msgs: Vec<Value> = self
            .messages
            .iter()
            .map(|m| {
                json!({ "messageId": m.id, "messageTime": rfc3339(m.time),
                        "messageStatus": m.status, "messageSegmentCount": 1 })
            })
            .collect();
        m.insert("messages".into(), Value::Array(msgs));
        Value::Object(m)
    }

    /// The generic `Participant`: no participant-level `state`, `direction` or
    /// `disconnectType` in that model (they are on the communication), references
    /// as plain ids (`userId`, `queueId`), `wrapupRequired` as in the other models.
    fn generic_json(&self, wrapup: Option<&AppliedWrapup>) -> Value {
        let mut p = Map::new();
        p.insert("id".into(), json!(self.id));
        p.insert("name".into(), json!(self.name));
        if let Some(a) = &self.address {
            p.insert("address".into(), json!(a));
        }
        self.times_into(&mut p);
        p.insert("purpose".into(), json!(self.role.purpose()));
        if let Some(u) = &self.user_id {
            p.insert("userId".into(), json!(u));
        }
        if let Some(q) = &self.queue_id {
            p.insert("queueId".into(), json!(q));
        }
        p.insert("wrapupRequired".into(), json!(self.wrapup_required));
        self.agent_fields_into(&mut p);
        if let Some(w) = wrapup {
            let mut body = json!({ "code": w.code, "endTime": rfc3339(w.at) });
            if let Some(n) = &w.notes {
                body["notes"] = json!(n);
            }
            p.insert("wrapup".into(), body);
        }
        p.insert("attributes".into(), Value::Object(self.attributes.clone()));
        p.insert("messages".into(), json!([self.communication_json()]));
        Value::Object(p)
    }

    fn times_into(&self, p: &mut Map<String, Value>) {
        p.insert("startTime".into(), json!(rfc3339(self.start)));
        p.insert("connectedTime".into(), json!(rfc3339(self.connected)));
        if let Some(e) = self.end {
            p.insert("endTime".into(), json!(rfc3339(e)));
        }
    }

    fn agent_fields_into(&self, p: &mut Map<String, Value>) {
        if self.role == Role::Agent {
            p.insert("wrapupPrompt".into(), json!("mandatory"));
            p.insert("wrapupTimeoutMs".into(), json!(60_000));
            p.insert("alertingTimeoutMs".into(), json!(30_000));
        }
    }
}

/// A simulated messaging conversation.
#[derive(Clone, Debug)]
pub(crate) struct Conversation {
    pub(crate) id: String,
    /// `None` while a bot flow still has the conversation: no queue topic shows it.
    pub(crate) queue_id: Option<String>,
    agent_user_id: Option<String>,
    pub(crate) division_id: String,
    pub(crate) start: SystemTime,
    pub(crate) participants: Vec<Participant>,
    /// A disconnect was accepted and its delayed effect is scheduled; further
    /// requests are answered without scheduling a second one.
    pub(crate) close_pending: bool,
    /// The customer attribute the bot writes its intent to.
    pub(crate) intent_attribute: String,
    /// Set for conversations created in the bot phase: they also publish detail
    /// events. Queue conversations keep today's frames only.
    pub(crate) bot: Option<BotInfo>,
    /// Wrap-ups applied through the REST API, by participant id.
    pub(crate) wrapups: HashMap<String, AppliedWrapup>,
}

pub(crate) fn before(now: SystemTime, ms: u64) -> SystemTime {
    now.checked_sub(Duration::from_millis(ms)).unwrap_or(now)
}

impl Conversation {
    /// Builds the conversation as it looks when the bot flow has just handed it to the queue.
    pub(crate) fn new(spec: &ConversationSpec, division_id: &str) -> Self {
        let now = SystemTime::now();
        // The guest arrived ~25 s ago, talked to the bot, then the flow transferred to ACD.
        let cust_start = before(now, 25_000);
        let flow_start = before(now, 24_870);
        let flow_end = before(now, 20);
        let mut attrs = Map::new();
        attrs.insert("Bot.Name".into(), json!("Support Bot"));
        if let Some(intent) = &spec.intent {
            attrs.insert(spec.intent_attribute.clone(), json!(intent));
        }
        attrs.insert("Customer.Locale".into(), json!("en-US"));
        let customer = Participant {
            id: uuid_v4(),
            role: Role::Customer,
            name: "Guest".into(),
            address: Some(uuid_v4()),
            start: cust_start,
            connected: flow_start,
            end: None,
            initial_state: "connected",
            disconnect_type: None,
            wrapup_required: false,
            queue_id: None,
            user_id: None,
            attributes: attrs,
            messages: vec![MessageRef {
                id: hex32(),
                time: before(now, 24_800),
                status: "received",
            }],
            session: uuid_v4(),
        };
        let workflow = Participant {
            id: uuid_v4(),
            role: Role::Workflow,
            name: "Support Inbound Message Flow".into(),
            address: None,
            start: flow_start,
            connected: before(now, 24_850),
            end: Some(flow_end),
            initial_state: "connected",
            disconnect_type: Some("transfer"),
            wrapup_required: false,
            queue_id: None,
            user_id: None,
            attributes: Map::new(),
            messages: vec![MessageRef {
                id: hex32(),
                time: before(now, 24_100),
                status: "sent",
            }],
            session: uuid_v4(),
        };
        let acd = Participant {
            id: uuid_v4(),
            role: Role::Acd,
            name: "Support Messaging".into(),
            address: None,
            start: before(now, 30),
            connected: before(now, 10),
            end: None,
            initial_state: "connected",
            disconnect_type: None,
            wrapup_required: false,
            queue_id: Some(spec.queue_id.clone()),
            user_id: None,
            attributes: Map::new(),
            messages: Vec::new(),
            session: uuid_v4(),
        };
        let mut participants = vec![customer, workflow, acd];
        if let Some(user) = &spec.agent_user_id {
            participants.push(Participant {
                id: uuid_v4(),
                role: Role::Agent,
                name: "Sim Agent".into(),
                address: None,
                start: before(now, 5),
                connected: now,
                end: None,
                initial_state: "alerting",
                disconnect_type: None,
                wrapup_required: true,
                queue_id: Some(spec.queue_id.clone()),
                user_id: Some(user.clone()),
                attributes: Map::new(),
                messages: Vec::new(),
                session: uuid_v4(),
            });
        }
        Conversation {
            id: uuid_v4(),
            queue_id: Some(spec.queue_id.clone()),
            agent_user_id: spec.agent_user_id.clone(),
            division_id: division_id.to_owned(),
            start: cust_start,
            participants,
            close_pending: false,
            intent_attribute: spec.intent_attribute.clone(),
            bot: None,
            wrapups: HashMap::new(),
        }
    }

    /// A conversation in the bot phase: the customer and the flow participant.
    pub(crate) fn new_bot(
        id: String,
        division_id: &str,
        participants: Vec<Participant>,
        intent_attribute: &str,
        bot: BotInfo,
    ) -> Self {
        let start = participants
            .iter()
            .map(|p| p.start)
            .min()
            .unwrap_or_else(SystemTime::now);
        Conversation {
            id,
            queue_id: None,
            agent_user_id: None,
            division_id: division_id.to_owned(),
            start,
            participants,
            close_pending: false,
            intent_attribute: intent_attribute.to_owned(),
            bot: Some(bot),
            wrapups: HashMap::new(),
        }
    }

    /// Closed means every participant has ended: the rule the daemon confirms by.
    pub(crate) fn is_closed(&self) -> bool {
        self.participants.iter().all(|p| !p.is_connected())
    }

    /// Ends every still-connected participant; returns the indices of those that
    /// ended now (none means no frame, as Genesys sends none for a no-op).
    pub(crate) fn end_all(&mut self, cause: EndCause) -> Vec<usize> {
        let now = SystemTime::now();
        let mut ended = Vec::new();
        for (i, p) in self.participants.iter_mut().enumerate() {
            if p.end(now, cause.disconnect_type(p.role)) {
                ended.push(i);
            }
        }
        self.close_pending = false;
        ended
    }

    /// The customer participant (every simulated conversation has one).
    pub(crate) fn customer_mut(&mut self) -> Option<&mut Participant> {
        self.participants
            .iter_mut()
            .find(|p| p.role == Role::Customer)
    }

    /// The topics this conversation is published on: its queue, plus the agent's
    /// user; none while a bot flow has it.
    pub(crate) fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .queue_id
            .iter()
            .map(|q| format!("v2.routing.queues.{q}.conversations.messages"))
            .collect();
        if let Some(u) = &self.agent_user_id {
            t.push(format!("v2.users.{u}.conversations.messages"));
        }
        t
    }

    /// The division and the entity that puts the conversation in it: the queue,
    /// or the flow while the bot has it.
    fn divisions(&self) -> Value {
        let entity = self
            .queue_id
            .as_deref()
            .or(self.bot.as_ref().map(|b| b.flow_id.as_str()))
            .unwrap_or(&self.id);
        json!([{ "division": { "id": self.division_id }, "entities": [{ "id": entity }] }])
    }

    /// The notification `eventBody`.
    pub(crate) fn event_body(&self) -> Value {
        let parts: Vec<Value> = self
            .participants
            .iter()
            .map(Participant::event_json)
            .collect();
        json!({ "id": self.id, "participants": parts, "otherMediaUris": [], "divisions": self.divisions() })
    }

    /// The REST `MessageConversation`.
    pub(crate) fn rest_body(&self) -> Value {
        let parts: Vec<Value> = self
            .participants
            .iter()
            .map(Participant::rest_json)
            .collect();
        json!({
            "id": self.id,
            "participants": parts,
            "otherMediaUris": [],
            "divisions": self.divisions(),
            "selfUri": format!("/api/v2/conversations/messages/{}", self.id),
        })
    }

    /// The participant whose message communication is `communication_id`.
    pub(crate) fn by_communication(&self, communication_id: &str) -> Option<&Participant> {
        self.participants
            .iter()
            .find(|p| p.session == communication_id)
    }

    /// The generic `Conversation` of `GET /api/v2/conversations/{id}`: `endTime` is
    /// the last participant's end once all have ended, absent while active (the
    /// model's "null when the conversation is still active"; Genesys leaves nulls
    /// out). `state` is left out: "When reading conversations, this field will never
    /// have a value present".
    pub(crate) fn generic_body(&self) -> Value {
        let parts: Vec<Value> = self
            .participants
            .iter()
            .map(|p| p.generic_json(self.wrapups.get(&p.id)))
            .collect();
        let mut body = json!({
            "id": self.id,
            "startTime": rfc3339(self.start),
            "participants": parts,
            "divisions": self.divisions(),
            "selfUri": format!("/api/v2/conversations/{}", self.id),
        });
        let last_end = self.participants.iter().filter_map(|p| p.end).max();
        if let Some(end) = last_end.filter(|_| self.is_closed()) {
            body["endTime"] = json!(rfc3339(end));
        }
        body
    }

    /// The `Conversation` answered by an accepted PATCH (its `startTime` and
    /// `participants` are required by the model).
    pub(crate) fn patch_answer(&self) -> Value {
        let parts: Vec<Value> = self
            .participants
            .iter()
            .map(Participant::summary_json)
            .collect();
        json!({
            "id": self.id,
            "startTime": rfc3339(self.start),
            "state": "disconnected",
            "participants": parts,
            "selfUri": format!("/api/v2/conversations/{}", self.id),
        })
    }
}
