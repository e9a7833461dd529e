//! The decision step, one for the daemon and for `replay`: an event goes into the state
//! map, and while no rule has decided on its conversation the rules are asked. A
//! flow-metrics record makes a conversation the map does not know yet known.
//!
//! The event loop adds what only a running daemon does (waiters, watching, the closer);
//! `replay` adds its counts. Neither decides any other way.

use tokio::time::Instant;

use crate::genesys::frames::{ConversationEvent, FlowMetric, Source};
use crate::rules::{Rules, Verdict};
use crate::state::{Applied, Store};

/// A rule matched: the verdict and what the map knew of the conversation then.
#[derive(Debug)]
pub struct Matched {
    /// The rule and the intent that matched.
    pub verdict: Verdict,
    /// Its queue, if a queue event named one.
    pub queue_id: Option<Box<str>>,
    /// Its customer participant, if known.
    pub customer_id: Option<Box<str>>,
    /// The conversation was already closed when the rule matched.
    pub already_closed: bool,
    /// A queue or user topic carries it (else its own topics must be watched).
    pub seen_on_topic: bool,
}

/// Applies `ev` at `at` and asks the rules, once per conversation.
pub fn step(store: &Store, rules: &Rules, ev: &ConversationEvent, at: Instant) -> Applied<Matched> {
    store.apply(ev, at, |conv| {
        let verdict = rules.evaluate(conv)?;
        Some(Matched {
            verdict,
            queue_id: conv.queue_id().map(Into::into),
            customer_id: conv.customer_id().map(Into::into),
            already_closed: conv.is_closed(),
            seen_on_topic: conv.seen_on_topic(),
        })
    })
}

/// The event a flow-metrics record stands for: the conversation made known (with no
/// intent yet), unless the map already knows it (decided, closed or watched).
pub fn discovered(store: &Store, m: &FlowMetric) -> Option<ConversationEvent> {
    let known = store.with(&m.conversation_id, |c| {
        c.is_decided() || c.is_closed() || c.is_watched()
    });
    (known != Some(true)).then(|| ConversationEvent::empty(m.conversation_id.clone(), Source::Flow))
}
