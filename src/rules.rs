//! Compiled rules: a conversation's state in, at most one matching rule and intent out.
//!
//! Rules are tried in file order and the first match wins. A rule matches when the
//! participant attribute it reads holds one of its intents exactly and every filter it
//! sets (queues, message types) admits the conversation.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, DisconnectMode, RuleConfig};
use crate::state::Conversation;

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Name from the config, logged with every decision.
    pub name: Arc<str>,
    /// Attribute read for the intent.
    pub attribute: Box<str>,
    /// Intent values that match, exactly.
    pub intents: Vec<Box<str>>,
    /// Queue filter (empty: any queue).
    pub queues: Vec<Box<str>>,
    /// Message type filter (empty: any type).
    pub message_types: Vec<Box<str>>,
    /// Log "would close" and send nothing (already merged with the global switch).
    pub dry_run: bool,
    /// What the disconnect step ends.
    pub disconnect: DisconnectMode,
    /// How long to wait for the confirming event.
    pub confirm_timeout: Duration,
    /// How long a disconnect that failed for a reason that passes (429, 5xx, transport)
    /// is retried; waiting for a refused login is not bounded by it.
    pub retry_for: Duration,
    /// Farewell text sent before the disconnect, at most once.
    pub farewell: Option<Box<str>>,
    /// Wrap-up code id for agents that need one, after the disconnect.
    pub wrapup_code: Option<Box<str>>,
}

/// A rule's verdict on one conversation.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The rule that matched.
    pub rule: Arc<Rule>,
    /// The intent value that matched.
    pub intent: Box<str>,
}

/// All rules, in file order.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Arc<Rule>>,
    /// Distinct attribute names the rules read; the frame reader keeps only these.
    attributes: Vec<Box<str>>,
}

impl Rules {
    /// Compiles the rules of a validated config.
    pub fn compile(config: &Config) -> Rules {
        let rules: Vec<Arc<Rule>> = config
            .rules
            .iter()
            .map(|r| Arc::new(compile_rule(r, config)))
            .collect();
        let mut attributes: Vec<Box<str>> = Vec::new();
        for r in &rules {
            if !attributes.contains(&r.attribute) {
                attributes.push(r.attribute.clone());
            }
        }
        Rules { rules, attributes }
    }

    /// Attribute names some rule reads.
    pub fn attributes(&self) -> &[Box<str>] {
        &self.attributes
    }

    /// The rule of this name.
    pub fn rule(&self, name: &str) -> Option<Arc<Rule>> {
        self.rules.iter().find(|r| &*r.name == name).cloned()
    }

    /// The rules in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter()
    }

    /// The first rule that matches `conv`, with the intent it matched.
    pub fn evaluate(&self, conv: &Conversation) -> Option<Verdict> {
        self.rules.iter().find_map(|rule| {
            let intent = conv.intent(&rule.attribute)?;
            if !rule.intents.iter().any(|i| &**i == intent) {
                return None;
            }
            if !rule.queues.is_empty()
                && !conv
                    .queue_id()
                    .is_some_and(|q| rule.queues.iter().any(|r| &**r == q))
            {
                return None;
            }
            if !rule.message_types.is_empty()
                && !conv
                    .message_type()
                    .is_some_and(|t| rule.message_types.iter().any(|r| r.eq_ignore_ascii_case(t)))
            {
                return None;
            }
            Some(Verdict {
                rule: Arc::clone(rule),
                intent: intent.into(),
            })
        })
    }
}

fn compile_rule(r: &RuleConfig, config: &Config) -> Rule {
    let boxed = |v: &[String]| v.iter().map(|s| s.as_str().into()).collect();
    Rule {
        name: r.name.as_str().into(),
        attribute: r
            .attribute
            .as_deref()
            .unwrap_or(&config.intent_attribute)
            .into(),
        intents: boxed(&r.intents),
        queues: boxed(&r.queues),
        message_types: boxed(&r.message_types),
        dry_run: r.dry_run || config.dry_run,
        disconnect: r.disconnect,
        confirm_timeout: r.confirm_timeout,
        retry_for: r.retry_for,
        farewell: r.farewell.as_deref().map(Into::into),
        wrapup_code: r.wrapup_code.as_deref().map(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesys::frames::{ConversationEvent, ParticipantUpdate, Source};
    use crate::state::Store;
    use std::path::Path;
    use tokio::time::Instant;

    fn rules(top: &str, extra: &str) -> Rules {
        let text = format!(
            r#"{top}
[genesys]
region = "us-east-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"
[stream]
queues = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"]
{extra}
"#
        );
        Rules::compile(&Config::parse(&text, Path::new("t.toml")).expect("valid"))
    }

    fn conversation(intent: Option<&str>, queue: &str, mtype: &str) -> Conversation {
        let store = Store::new();
        let mut ev = ConversationEvent::empty("c".into(), Source::Queue);
        ev.participants = vec![
            ParticipantUpdate {
                id: "cust".into(),
                purpose: "customer".into(),
                ended: false,
                queue_id: None,
                message_type: Some(mtype.into()),
                attributes: intent
                    .map(|i| vec![("Bot.Intent".into(), i.into())])
                    .unwrap_or_default(),
            },
            ParticipantUpdate {
                id: "acd".into(),
                purpose: "acd".into(),
                ended: false,
                queue_id: Some(queue.into()),
                message_type: Some(mtype.into()),
                attributes: vec![],
            },
        ];
        store.apply(&ev, Instant::now(), |_| None::<()>);
        store.get("c").unwrap()
    }

    #[test]
    fn exact_intent_matches_first_rule() {
        let r = rules(
            "",
            r#"
[[rule]]
name = "bye"
intents = ["Goodbye"]
[[rule]]
name = "cancel"
intents = ["CancelSubscription", "Goodbye"]
"#,
        );
        let v = r
            .evaluate(&conversation(
                Some("Goodbye"),
                "11111111-1111-4111-8111-111111111111",
                "webmessaging",
            ))
            .unwrap();
        assert_eq!(&*v.rule.name, "bye");
        assert_eq!(&*v.intent, "Goodbye");
        assert!(
            r.evaluate(&conversation(
                Some("goodbye"),
                "11111111-1111-4111-8111-111111111111",
                "webmessaging"
            ))
            .is_none()
        );
        assert!(
            r.evaluate(&conversation(
                None,
                "11111111-1111-4111-8111-111111111111",
                "webmessaging"
            ))
            .is_none()
        );
        assert!(
            r.evaluate(&conversation(
                Some("TalkToAgent"),
                "11111111-1111-4111-8111-111111111111",
                "webmessaging"
            ))
            .is_none()
        );
    }

    #[test]
    fn filters_and_dry_run() {
        let r = rules(
            "dry_run = true",
            r#"
[[rule]]
name = "q2-open-only"
intents = ["Goodbye"]
queues = ["22222222-2222-4222-8222-222222222222"]
message_types = ["open"]
"#,
        );
        assert!(
            r.evaluate(&conversation(
                Some("Goodbye"),
                "11111111-1111-4111-8111-111111111111",
                "open"
            ))
            .is_none()
        );
        assert!(
            r.evaluate(&conversation(
                Some("Goodbye"),
                "22222222-2222-4222-8222-222222222222",
                "webmessaging"
            ))
            .is_none()
        );
        let v = r
            .evaluate(&conversation(
                Some("Goodbye"),
                "22222222-2222-4222-8222-222222222222",
                "open",
            ))
            .unwrap();
        assert!(v.rule.dry_run, "global dry run reaches every rule");
    }
}
