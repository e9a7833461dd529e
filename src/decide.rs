//! The decision step, one for the daemon and for `replay`: an event goes into the state
//! map, and while no rule has decided on its conversation the rules are asked. A
//! flow-metrics record makes a conversation the map does not know yet known.
//!
//! The event loop adds what only a running daemon does (waiters, watching, the closer);
//! `replay` adds its counts. Neither decides any other way.

use tokio::time::Instant;

use crate::genesys::frames::{ConversationEvent, FlowMetric, Source};
use crate::rules::{Rules, Verdict};
use crate::state::{Applied, Conversation, Store};

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
    store.apply(ev, at, |conv| matched(rules, conv))
}

/// What the rules say of `conv` as the map knows it now.
fn matched(rules: &Rules, conv: &Conversation) -> Option<Matched> {
    let verdict = rules.evaluate(conv)?;
    Some(Matched {
        verdict,
        queue_id: conv.queue_id().map(Into::into),
        customer_id: conv.customer_id().map(Into::into),
        already_closed: conv.is_closed(),
        seen_on_topic: conv.seen_on_topic(),
    })
}

/// Applies `ev` at `at` without asking the rules (a standby keeps its map warm; the
/// leader decides). A conversation applied so stays undecided until
/// [`undecided`] asks about it.
pub fn apply_only(store: &Store, ev: &ConversationEvent, at: Instant) -> Applied<Matched> {
    store.apply(ev, at, |_| None)
}

/// Asks the rules about every open conversation not decided yet (at a takeover).
pub fn undecided(store: &Store, rules: &Rules) -> Vec<(Box<str>, Matched)> {
    store.decide_undecided(|conv| matched(rules, conv))
}

/// The event a flow-metrics record stands for: the conversation made known (with no
/// intent yet), unless the map already knows it (decided, closed or watched).
pub fn discovered(store: &Store, m: &FlowMetric) -> Option<ConversationEvent> {
    let known = store.with(&m.conversation_id, |c| {
        c.is_decided() || c.is_closed() || c.is_watched()
    });
    (known != Some(true)).then(|| ConversationEvent::empty(m.conversation_id.clone(), Source::Flow))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn rules() -> Rules {
        let text = r#"
[genesys]
region = "us-east-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"
[stream]
queues = ["11111111-1111-4111-8111-111111111111"]
[[rule]]
name = "bye"
intents = ["Goodbye"]
"#;
        Rules::compile(&Config::parse(text, Path::new("t.toml")).expect("valid"))
    }

    fn intent(id: &str, intent: &str) -> ConversationEvent {
        let mut ev = ConversationEvent::empty(id.into(), Source::Queue);
        ev.participants = vec![crate::genesys::frames::ParticipantUpdate {
            id: "cust".into(),
            purpose: "customer".into(),
            ended: false,
            queue_id: None,
            message_type: Some("webmessaging".into()),
            attributes: vec![("Bot.Intent".into(), intent.into())],
        }];
        ev
    }

    #[test]
    fn a_standby_keeps_the_map_warm_and_decides_at_takeover_once() {
        let (store, rules, now) = (Store::new(), rules(), Instant::now());
        // Standing by: a matching intent is applied, no rule is asked.
        assert!(
            apply_only(&store, &intent("c-1", "Goodbye"), now)
                .decision
                .is_none()
        );
        assert!(
            apply_only(&store, &intent("c-2", "Hello"), now)
                .decision
                .is_none()
        );
        // c-3 was decided (by this instance before, or from the journal): not again.
        store.mark_decided("c-3", now);
        apply_only(&store, &intent("c-3", "Goodbye"), now);
        // Takeover: the rules see what the map kept.
        let decided = undecided(&store, &rules);
        let ids: Vec<&str> = decided.iter().map(|(id, _)| &**id).collect();
        assert_eq!(ids, ["c-1"]);
        assert_eq!(&*decided[0].1.verdict.rule.name, "bye");
        // Decided now: neither a second takeover nor the next event decides it again.
        assert!(undecided(&store, &rules).is_empty());
        assert!(
            step(&store, &rules, &intent("c-1", "Goodbye"), now)
                .decision
                .is_none()
        );
        // An undecided one still decides on its next event as usual.
        assert!(
            step(&store, &rules, &intent("c-2", "Goodbye"), now)
                .decision
                .is_some()
        );
    }
}
