//! The bot phase: a web-messaging guest alone with an inbound message flow,
//! before any queue (README C.3). No queue or user topic shows such a
//! conversation; what does is its per-conversation detail events, the per-flow
//! metrics topic, and whatever the flow itself POSTs to an outside service.
//!
//! Timeline of one bot conversation:
//! 1. start: `.customer.start`, `.flow.start`, flow metrics `nFlow` (if `AtStart`);
//!    `trigger_delay` later the Process Automation POST `{"conversationId","eventTime"}`
//!    (if `post_on_start`);
//! 2. after `intent_after`: the intent attribute on the customer, `.attributes`,
//!    and the data-action POST `{"conversationId","intent"}` (if `post_on_intent`);
//! 3. after the transfer delay: `.flow.end` (TRANSFER/ACD), flow metrics `tFlow`
//!    (if `AtEnd`), `.acd.start`, then the queue-topic frame as for any queued
//!    conversation;
//! 4. on any close: `.customer.end`, plus `.flow.end` / `.acd.end` for whoever
//!    was still connected (see `publish_ends`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::detail::{self, FlowMetric};
use super::ids::{hex32, uuid_v4};
use super::model::{Conversation, MessageRef, Participant, Role};
use super::world::{World, lock};
use super::{BotConversationSpec, BotPurpose, FlowMetricsMode};

/// The flow participant's name (and the flow's name in metrics).
const FLOW_NAME: &str = "Support Inbound Message Flow";
/// The queue participant's name after a transfer, as for queue conversations.
const ACD_NAME: &str = "Support Messaging";

/// What a bot conversation adds to the conversation model.
#[derive(Clone, Debug)]
pub(crate) struct BotInfo {
    pub(crate) flow_id: String,
    pub(crate) flow_version: String,
    /// The flow's Call Data Action posts when the intent is set.
    pub(crate) post_on_intent: bool,
}

fn is_flow(p: &Participant) -> bool {
    matches!(p.role, Role::Workflow | Role::Botflow)
}

/// A participant connected since `now`, with no messages and no attributes.
fn participant(role: Role, name: &str, now: SystemTime) -> Participant {
    Participant {
        id: uuid_v4(),
        role,
        name: name.to_owned(),
        address: None,
        start: now,
        connected: now,
        end: None,
        initial_state: "connected",
        disconnect_type: None,
        wrapup_required: false,
        queue_id: None,
        user_id: None,
        attributes: Map::new(),
        messages: Vec::new(),
        session: uuid_v4(),
    }
}

/// The guest and the flow, both connected now; the guest's first message is in.
fn bot_participants(purpose: BotPurpose, now: SystemTime) -> Vec<Participant> {
    let mut customer = participant(Role::Customer, "Guest", now);
    customer.address = Some(uuid_v4());
    customer
        .attributes
        .insert("Bot.Name".into(), json!("Support Bot"));
    customer
        .attributes
        .insert("Customer.Locale".into(), json!("en-US"));
    customer.messages.push(MessageRef {
        id: hex32(),
        time: now,
        status: "received",
    });
    let role = match purpose {
        BotPurpose::Workflow => Role::Workflow,
        BotPurpose::Botflow => Role::Botflow,
    };
    let mut flow = participant(role, FLOW_NAME, now);
    flow.messages.push(MessageRef {
        id: hex32(),
        time: now,
        status: "sent",
    });
    vec![customer, flow]
}

impl World {
    /// Creates a bot conversation, publishes its start events and spawns its
    /// timed steps (which stop at shutdown).
    pub(crate) fn create_bot_conversation(self: &Arc<Self>, spec: BotConversationSpec) -> String {
        let bot = BotInfo {
            flow_id: spec.flow_id.clone(),
            flow_version: "1.0".into(),
            post_on_intent: spec.post_on_intent,
        };
        let participants = bot_participants(spec.purpose, SystemTime::now());
        let conv = Conversation::new_bot(
            uuid_v4(),
            &self.division_id,
            participants,
            &spec.intent_attribute,
            bot.clone(),
        );
        let id = conv.id.clone();
        {
            let mut convs = lock(&self.conversations);
            // Published under the store lock so frames of one conversation leave in order.
            for p in &conv.participants {
                if p.role == Role::Customer {
                    self.publish_detail(&conv, "customer.start", detail::customer_start(&conv, p));
                } else if is_flow(p) {
                    self.publish_detail(&conv, "flow.start", detail::flow_start(&conv, p, &bot));
                    if self.flow_metrics == FlowMetricsMode::AtStart {
                        self.publish_flow_metric(&conv, p, FlowMetric::Started);
                    }
                }
            }
            convs.insert(conv);
        }
        if spec.post_on_start {
            self.post_trigger_after(&id, self.trigger_delay);
        }
        if spec.intent.is_some() || spec.transfer.is_some() {
            let world = Arc::clone(self);
            let conv_id = id.clone();
            tokio::spawn(async move {
                let cancel = world.cancel.clone();
                tokio::select! {
                    // Shutdown: the remaining steps are simply dropped.
                    _ = cancel.cancelled() => {}
                    _ = timeline(&world, &conv_id, spec) => {}
                }
            });
        }
        id
    }

    /// The trigger on `.customer.start` fires `delay` from now (at once for zero).
    fn post_trigger_after(self: &Arc<Self>, id: &str, delay: Duration) {
        if delay.is_zero() {
            self.post_trigger(id, true);
            return;
        }
        let world = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                // Shutdown: the trigger never fires.
                _ = world.cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => world.post_trigger(&id, true),
            }
        });
    }

    /// What the workflow of a trigger on `.customer.start` POSTs: the conversation id,
    /// and the trigger event's `eventTime` if asked (the customer's start, the time the
    /// `.customer.start` event carries) and the conversation is known.
    pub(crate) fn post_trigger(self: &Arc<Self>, id: &str, with_event_time: bool) {
        let started = with_event_time
            .then(|| {
                let mut convs = lock(&self.conversations);
                let c = convs.get_mut(id)?;
                let customer = c.participants.iter().find(|p| p.role == Role::Customer)?;
                Some(detail::epoch_ms(customer.start))
            })
            .flatten();
        let body = match started {
            Some(ms) => json!({ "conversationId": id, "eventTime": ms }),
            None => json!({ "conversationId": id }),
        };
        self.post_data_action(id, body);
    }

    /// The flow sets the intent attribute on the customer now. Only an open
    /// conversation changes: a flow cannot write to an ended participant.
    pub(crate) fn set_intent(self: &Arc<Self>, id: &str, intent: &str) {
        let post = {
            let mut convs = lock(&self.conversations);
            let Some(c) = convs.get_mut(id) else {
                return;
            };
            let attr = c.intent_attribute.clone();
            let Some(customer) = c.customer_mut().filter(|p| p.is_connected()) else {
                return;
            };
            customer.attributes.insert(attr, json!(intent));
            let customer = customer.clone();
            self.publish_detail(c, "attributes", detail::attributes(c, &customer));
            // Once queued, the queue topic shows the changed attributes too.
            self.publish_conversation(c);
            c.bot.as_ref().is_some_and(|b| b.post_on_intent)
        };
        if post {
            self.post_data_action(id, json!({ "conversationId": id, "intent": intent }));
        }
    }

    /// The flow transfers to `queue`: it ends with `transfer`, an `acd`
    /// participant joins, and from now on the queue topic shows the conversation.
    /// Nothing happens if the conversation or its flow already ended.
    fn transfer(&self, id: &str, queue: &str) {
        let mut convs = lock(&self.conversations);
        let Some(c) = convs.get_mut(id) else {
            return;
        };
        if c.is_closed() || c.customer_mut().is_none_or(|p| !p.is_connected()) {
            return;
        }
        let Some(fi) = c.participants.iter().position(is_flow) else {
            return;
        };
        let now = SystemTime::now();
        if !c.participants[fi].end(now, "transfer") {
            return;
        }
        self.publish_ends(c, &[fi]);
        let mut acd = participant(Role::Acd, ACD_NAME, now);
        acd.queue_id = Some(queue.to_owned());
        self.publish_detail(c, "acd.start", detail::acd_start(c, &acd));
        c.participants.push(acd);
        c.queue_id = Some(queue.to_owned());
        self.publish_conversation(c);
    }

    /// Detail events for participants that just ended (indices into
    /// `participants`): `.customer.end`, `.flow.end` (plus `tFlow` if `AtEnd`),
    /// `.acd.end`. Queue conversations publish none, as before the bot phase existed.
    pub(crate) fn publish_ends(&self, c: &Conversation, ended: &[usize]) {
        let Some(bot) = &c.bot else {
            return;
        };
        for p in ended.iter().filter_map(|&i| c.participants.get(i)) {
            match p.role {
                Role::Customer => {
                    self.publish_detail(c, "customer.end", detail::customer_end(c, p));
                }
                Role::Workflow | Role::Botflow => {
                    self.publish_detail(c, "flow.end", detail::flow_end(c, p, bot));
                    if self.flow_metrics == FlowMetricsMode::AtEnd {
                        self.publish_flow_metric(c, p, FlowMetric::Ended);
                    }
                }
                Role::Acd => self.publish_detail(c, "acd.end", detail::acd_end(c, p)),
                Role::Agent => {}
            }
        }
    }

    /// Publishes `body` on `v2.detail.events.conversation.{id}.{suffix}`; only
    /// bot conversations have detail events in this simulator.
    fn publish_detail(&self, c: &Conversation, suffix: &str, body: Value) {
        if c.bot.is_none() {
            return;
        }
        let topic = detail::topic(&c.id, suffix);
        self.publish_event(&c.id, &topic, World::conversation_frame(&topic, body));
    }

    fn publish_flow_metric(&self, c: &Conversation, flow: &Participant, which: FlowMetric) {
        let Some(bot) = &c.bot else {
            return;
        };
        let topic = detail::flow_metrics_topic(&bot.flow_id);
        let body = detail::flow_metric(c, flow, bot, which);
        self.publish_event(&c.id, &topic, World::conversation_frame(&topic, body));
    }
}

/// The timed steps: intent after `intent_after`, transfer `delay` later. Steps
/// on a conversation that closed meanwhile do nothing.
async fn timeline(world: &Arc<World>, id: &str, spec: BotConversationSpec) {
    tokio::time::sleep(spec.intent_after).await;
    if let Some(intent) = &spec.intent {
        world.set_intent(id, intent);
    }
    if let Some((queue, delay)) = &spec.transfer {
        if !world.is_open(id) {
            return;
        }
        tokio::time::sleep(*delay).await;
        world.transfer(id, queue);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::SimConfig;
    use super::*;

    fn world(mode: FlowMetricsMode) -> Arc<World> {
        let cfg = SimConfig {
            flow_metrics: mode,
            ..SimConfig::default()
        };
        World::new(&cfg, cfg.listen)
    }

    fn spec(transfer: Option<(String, Duration)>) -> BotConversationSpec {
        BotConversationSpec {
            flow_id: "f1".into(),
            purpose: BotPurpose::Botflow,
            intent_attribute: "Bot.Intent".into(),
            intent: Some("Goodbye".into()),
            intent_after: Duration::from_millis(5),
            transfer,
            post_on_start: false,
            post_on_intent: false,
        }
    }

    fn topics(w: &World) -> Vec<String> {
        w.frames()
            .iter()
            .map(|f| {
                let t = f["topicName"].as_str().unwrap_or("");
                // Keep the family only: ids differ per run.
                t.rsplit_once(".conversation.")
                    .and_then(|(_, rest)| rest.split_once('.'))
                    .map_or(t.to_owned(), |(_, suffix)| suffix.to_owned())
            })
            .collect()
    }

    /// Waits until the timed steps are surely done.
    async fn settle(s: &BotConversationSpec) {
        let transfer = s.transfer.as_ref().map_or(Duration::ZERO, |t| t.1);
        tokio::time::sleep(s.intent_after + transfer + Duration::from_millis(60)).await;
    }

    #[tokio::test]
    async fn transfer_then_close_with_metrics_at_end() {
        let w = world(FlowMetricsMode::AtEnd);
        let s = spec(Some(("q1".into(), Duration::from_millis(5))));
        let id = w.create_bot_conversation(s.clone());
        settle(&s).await;
        w.customer_leaves(&id);
        w.customer_leaves(&id);
        let metrics = "v2.analytics.flow.f1.metrics".to_owned();
        let queue = "v2.routing.queues.q1.conversations.messages".to_owned();
        assert_eq!(
            topics(&w),
            [
                "customer.start",
                "flow.start",
                "attributes",
                "flow.end",
                &metrics,
                "acd.start",
                &queue,
                &queue,
                "customer.end",
                "acd.end",
            ]
        );
        let frames = w.frames();
        assert_eq!(frames[4]["eventBody"]["metric"], "tFlow");
        assert_eq!(frames[4]["eventBody"]["purpose"], "botflow");
        assert_eq!(frames[3]["eventBody"]["exitReason"], "TRANSFER");
        assert_eq!(frames[8]["eventBody"]["disconnectType"], "CLIENT");
        w.cancel.cancel();
    }

    #[tokio::test]
    async fn close_in_the_bot_phase_with_metrics_at_start() {
        let w = world(FlowMetricsMode::AtStart);
        let s = spec(None);
        let id = w.create_bot_conversation(s.clone());
        settle(&s).await;
        assert_eq!(w.is_closed(&id), Some(false));
        w.customer_leaves(&id);
        let metrics = "v2.analytics.flow.f1.metrics".to_owned();
        assert_eq!(
            topics(&w),
            [
                "customer.start",
                "flow.start",
                &metrics,
                "attributes",
                "customer.end",
                "flow.end",
            ]
        );
        let frames = w.frames();
        assert_eq!(frames[2]["eventBody"]["metric"], "nFlow");
        assert_eq!(
            frames[3]["eventBody"]["attributes"]["Bot.Intent"],
            "Goodbye"
        );
        assert_eq!(frames[5]["eventBody"]["exitReason"], "DISCONNECT");
        // A closed conversation takes no intent and pushes nothing more.
        w.set_intent(&id, "Other");
        assert_eq!(w.frames().len(), frames.len());
        w.cancel.cancel();
    }

    #[tokio::test]
    async fn never_mode_emits_no_metrics() {
        let w = world(FlowMetricsMode::Never);
        let s = spec(Some(("q1".into(), Duration::from_millis(1))));
        let id = w.create_bot_conversation(s.clone());
        settle(&s).await;
        w.customer_leaves(&id);
        assert!(!topics(&w).iter().any(|t| t.contains("analytics")));
        w.cancel.cancel();
    }
}
