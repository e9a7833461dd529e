//! Conversation lifecycle: creation, the guest leaving, and the delayed effect of
//! accepted disconnect requests (Genesys answers first and ends the conversation
//! a moment later, which the daemon must confirm from the pushed event).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::ConversationSpec;
use super::model::{Conversation, EndCause, Role};
use super::world::{World, lock};

/// Closed conversations kept for `is_closed` and REST reads; older ones are
/// forgotten so a generator running for days does not grow memory without bound.
const CLOSED_KEEP: usize = 100_000;

/// The conversation store.
#[derive(Default)]
pub(crate) struct Conversations {
    map: HashMap<String, Conversation>,
    /// Ids in the order they closed, to forget the oldest first.
    closed_order: VecDeque<String>,
}

impl Conversations {
    pub(crate) fn insert(&mut self, c: Conversation) {
        self.map.insert(c.id.clone(), c);
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Conversation> {
        self.map.get_mut(id)
    }

    /// `(flowId, conversationId, start)` of every open conversation a bot flow has now.
    pub(crate) fn open_in_flows(&self) -> Vec<(String, String, SystemTime)> {
        self.map
            .values()
            .filter(|c| c.queue_id.is_none() && !c.is_closed())
            .filter_map(|c| Some((c.bot.as_ref()?.flow_id.clone(), c.id.clone(), c.start)))
            .collect()
    }

    /// Every open conversation in a queue now, as the queue observations see it:
    /// `Interacting` once an agent of the queue is connected, else `Waiting` while
    /// its `acd` participant for the queue has not ended. Conversations a bot flow
    /// still has (no queue) and closed ones are not in any queue.
    pub(crate) fn in_queues(&self) -> Vec<InQueue> {
        let mut out = Vec::new();
        for c in self.map.values().filter(|c| !c.is_closed()) {
            let connected = |role: Role| {
                c.participants
                    .iter()
                    .filter(move |p| p.role == role && p.is_connected())
            };
            let agent = connected(Role::Agent).find_map(|p| {
                let queue = p.queue_id.as_ref().or(c.queue_id.as_ref())?;
                Some((queue, p))
            });
            let (queue, p, state) = match agent {
                Some((queue, p)) => (queue, p, QueueState::Interacting),
                None => {
                    let Some(acd) = connected(Role::Acd).find(|p| p.queue_id.is_some()) else {
                        continue;
                    };
                    let Some(queue) = acd.queue_id.as_ref() else {
                        continue;
                    };
                    (queue, acd, QueueState::Waiting)
                }
            };
            out.push(InQueue {
                queue_id: queue.clone(),
                state,
                conversation_id: c.id.clone(),
                session_id: p.session.clone(),
                // Waiting since the conversation entered the queue; interacting
                // since the agent connected.
                since: match state {
                    QueueState::Waiting => p.start,
                    QueueState::Interacting => p.connected,
                },
                user_id: p.user_id.clone(),
            });
        }
        out
    }

    /// Remembers a conversation that just closed, forgetting the oldest closed
    /// ones past `CLOSED_KEEP`.
    pub(crate) fn note_if_closed(&mut self, id: &str) {
        if self.map.get(id).is_some_and(Conversation::is_closed) {
            self.closed_order.push_back(id.to_owned());
            while self.closed_order.len() > CLOSED_KEEP {
                if let Some(old) = self.closed_order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// Where an open conversation stands in its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueState {
    /// In the queue, no agent connected (`oWaiting`).
    Waiting,
    /// Connected to an agent of the queue (`oInteracting`).
    Interacting,
}

/// One conversation in a queue now (`Conversations::in_queues`).
#[derive(Clone, Debug)]
pub(crate) struct InQueue {
    pub(crate) queue_id: String,
    pub(crate) state: QueueState,
    pub(crate) conversation_id: String,
    /// The session the observation is about: the `acd` participant's while waiting,
    /// the agent's while interacting.
    pub(crate) session_id: String,
    /// Since when it is in that state.
    pub(crate) since: SystemTime,
    /// The agent, while interacting.
    pub(crate) user_id: Option<String>,
}

/// A delayed change to apply to a conversation.
enum Effect {
    EndAll(EndCause),
    EndOne(String),
}

/// What an accepted participant PATCH found.
pub(crate) enum ParticipantRequest {
    UnknownConversation,
    UnknownParticipant,
    Accepted,
}

impl World {
    /// Creates a conversation and pushes its first frame(s).
    pub(crate) fn create_conversation(&self, spec: &ConversationSpec) -> String {
        let conv = Conversation::new(spec, &self.division_id);
        let id = conv.id.clone();
        let mut convs = lock(&self.conversations);
        // Published under the store lock so frames of one conversation leave in order.
        self.publish_conversation(&conv);
        convs.map.insert(id.clone(), conv);
        id
    }

    /// Publishes the conversation's frame on its queue/user topics (none while a
    /// bot flow has it).
    pub(crate) fn publish_conversation(&self, conv: &Conversation) {
        let body = conv.event_body();
        for topic in conv.topics() {
            let frame = World::conversation_frame(&topic, body.clone());
            self.publish_event(&conv.id, &topic, frame);
        }
    }

    /// The guest ends the conversation: everyone still connected is disconnected now.
    pub(crate) fn customer_leaves(&self, id: &str) {
        let mut convs = lock(&self.conversations);
        let Some(c) = convs.map.get_mut(id) else {
            return;
        };
        let ended = c.end_all(EndCause::CustomerLeft);
        if !ended.is_empty() {
            self.publish_conversation(c);
            self.publish_ends(c, &ended);
            convs.note_if_closed(id);
        }
    }

    pub(crate) fn is_closed(&self, id: &str) -> Option<bool> {
        lock(&self.conversations)
            .map
            .get(id)
            .map(Conversation::is_closed)
    }

    /// Still open (nobody has ended it yet), for the generator.
    pub(crate) fn is_open(&self, id: &str) -> bool {
        self.is_closed(id) == Some(false)
    }

    /// `GET /api/v2/conversations/messages/{id}`.
    pub(crate) fn rest_view(&self, id: &str) -> Option<Value> {
        lock(&self.conversations)
            .map
            .get(id)
            .map(Conversation::rest_body)
    }

    /// `PATCH /api/v2/conversations/messages/{id}` with `state: disconnected`;
    /// `None` if unknown, else the answer body.
    pub(crate) fn request_disconnect(self: &Arc<Self>, id: &str) -> Option<Value> {
        let mut convs = lock(&self.conversations);
        let c = convs.map.get_mut(id)?;
        let answer = c.patch_answer();
        if !self.faults().ignore_disconnect && !c.is_closed() && !c.close_pending {
            c.close_pending = true;
            self.schedule(
                self.close_delay,
                id,
                Effect::EndAll(EndCause::ApiDisconnect),
            );
        }
        Some(answer)
    }

    /// `PATCH .../participants/{pid}`; `disconnect` is whether the body asked for it.
    pub(crate) fn request_participant_disconnect(
        self: &Arc<Self>,
        id: &str,
        pid: &str,
        disconnect: bool,
    ) -> ParticipantRequest {
        let mut convs = lock(&self.conversations);
        let Some(c) = convs.map.get_mut(id) else {
            return ParticipantRequest::UnknownConversation;
        };
        let Some(p) = c.participants.iter().find(|p| p.id == pid) else {
            return ParticipantRequest::UnknownParticipant;
        };
        if !disconnect || self.faults().ignore_disconnect || !p.is_connected() {
            return ParticipantRequest::Accepted;
        }
        if p.role == Role::Customer {
            // Without its guest a messaging conversation ends for everyone.
            if !c.close_pending {
                c.close_pending = true;
                self.schedule(
                    self.close_delay,
                    id,
                    Effect::EndAll(EndCause::ApiDisconnect),
                );
            }
        } else {
            self.schedule(self.close_delay, id, Effect::EndOne(pid.to_owned()));
        }
        ParticipantRequest::Accepted
    }

    /// `POST /api/v2/conversations/{id}/disconnect`; `false` if unknown.
    pub(crate) fn request_teardown(self: &Arc<Self>, id: &str) -> bool {
        let convs = lock(&self.conversations);
        let Some(c) = convs.map.get(id) else {
            return false;
        };
        // Scheduled even when a PATCH is pending: the teardown is the escalation
        // for a PATCH that did not take, and ending is idempotent anyway.
        if !self.faults().ignore_teardown && !c.is_closed() {
            self.schedule(self.teardown_delay, id, Effect::EndAll(EndCause::Teardown));
        }
        true
    }

    fn schedule(self: &Arc<Self>, delay: Duration, id: &str, effect: Effect) {
        let world = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                // Shutdown: the effect is simply dropped.
                _ = world.cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => world.apply(&id, effect),
            }
        });
    }

    fn apply(&self, id: &str, effect: Effect) {
        let mut convs = lock(&self.conversations);
        let Some(c) = convs.map.get_mut(id) else {
            return;
        };
        let ended: Vec<usize> = match effect {
            Effect::EndAll(cause) => c.end_all(cause),
            Effect::EndOne(pid) => {
                let now = SystemTime::now();
                // Only a participant still connected counts as a change.
                match c.participants.iter().position(|p| p.id == pid) {
                    Some(i) if c.participants[i].end(now, "client") => vec![i],
                    _ => Vec::new(),
                }
            }
        };
        // No change (already ended by someone else) means no frame, like Genesys.
        if !ended.is_empty() {
            self.publish_conversation(c);
            self.publish_ends(c, &ended);
            convs.note_if_closed(id);
        }
    }
}
