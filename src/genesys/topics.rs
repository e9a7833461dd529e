//! The start-up check of the topic families the config uses, against
//! `GET /api/v2/notifications/availabletopics?expand=transports&expand=requiresPermissions`.
//!
//! Some topics are EventBridge-only, and whether the detail-event and flow-metrics
//! families reach a WebSocket is a fact of the org, not of the docs (facts sheet C.3).
//! So the daemon asks, says in one line per family what cannot work and why, and runs
//! with the sources that do. `check --online` prints the same report.

use std::fmt;

use super::api::{ApiClient, ApiError, AvailableTopic};
use crate::config::Config;

/// A topic family the daemon may subscribe, and what it is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `v2.routing.queues.{id}.conversations.messages`.
    Queue,
    /// `v2.users.{id}.conversations.messages`.
    User,
    /// `v2.analytics.flow.{id}.metrics`.
    FlowMetrics,
    /// `v2.detail.events.conversation.{id}.attributes`.
    DetailAttributes,
    /// `v2.detail.events.conversation.{id}.customer.end`.
    DetailCustomerEnd,
    /// `v2.detail.events.conversation.{id}.flow.end`.
    DetailFlowEnd,
}

impl Family {
    /// The topic template as `availabletopics` names it.
    pub fn template(self) -> &'static str {
        match self {
            Family::Queue => "v2.routing.queues.{id}.conversations.messages",
            Family::User => "v2.users.{id}.conversations.messages",
            Family::FlowMetrics => "v2.analytics.flow.{id}.metrics",
            Family::DetailAttributes => "v2.detail.events.conversation.{id}.attributes",
            Family::DetailCustomerEnd => "v2.detail.events.conversation.{id}.customer.end",
            Family::DetailFlowEnd => "v2.detail.events.conversation.{id}.flow.end",
        }
    }

    /// What the daemon loses without it, worded to follow "no" in a sentence.
    pub fn used_for(self) -> &'static str {
        match self {
            Family::Queue => "conversations in the configured queues",
            Family::User => "conversations of the configured users",
            Family::FlowMetrics => "flow discovery of bot-phase conversations",
            Family::DetailAttributes => "intents of watched bot-phase conversations",
            Family::DetailCustomerEnd | Family::DetailFlowEnd => {
                "confirmation of a bot-phase conversation's end"
            }
        }
    }

    /// Whether it is one of the per-conversation detail families.
    pub fn is_detail(self) -> bool {
        matches!(
            self,
            Family::DetailAttributes | Family::DetailCustomerEnd | Family::DetailFlowEnd
        )
    }
}

/// The families a config uses.
pub fn families_in_use(config: &Config) -> Vec<Family> {
    let mut out = Vec::new();
    if !config.stream.queues.is_empty() {
        out.push(Family::Queue);
    }
    if !config.stream.users.is_empty() {
        out.push(Family::User);
    }
    if !config.stream.flows.is_empty() {
        out.push(Family::FlowMetrics);
    }
    if !config.stream.flows.is_empty() || config.intake.is_some() {
        out.extend([
            Family::DetailAttributes,
            Family::DetailCustomerEnd,
            Family::DetailFlowEnd,
        ]);
    }
    out
}

/// What `availabletopics` says of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Offered over the WebSocket; subscribing needs these permissions (maybe none).
    Usable {
        /// `requiresPermissions`.
        permissions: Vec<String>,
    },
    /// Offered, but not over the WebSocket (e.g. EventBridge only).
    NotOverWebSocket {
        /// `transports` as answered.
        transports: Vec<String>,
    },
    /// Not in the answer at all.
    NotOffered,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct FamilyReport {
    /// The family.
    pub family: Family,
    /// The verdict.
    pub verdict: Verdict,
}

impl FamilyReport {
    /// Whether the daemon can use the family.
    pub fn usable(&self) -> bool {
        matches!(self.verdict, Verdict::Usable { .. })
    }
}

impl fmt::Display for FamilyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.family.template();
        match &self.verdict {
            Verdict::Usable { permissions } if permissions.is_empty() => {
                write!(f, "ok: {t} (WebSocket; no permission listed)")
            }
            Verdict::Usable { permissions } => write!(
                f,
                "ok: {t} (WebSocket; the OAuth client's role needs: {})",
                permissions.join(", ")
            ),
            Verdict::NotOverWebSocket { transports } => write!(
                f,
                "error: {t} is offered only over {} and cannot reach the WebSocket: no {}",
                transports.join(", "),
                self.family.used_for()
            ),
            Verdict::NotOffered => write!(
                f,
                "error: {t} is not offered by this org's notification service: no {}",
                self.family.used_for()
            ),
        }
    }
}

/// Normalises a template for comparison: lowercase, any `{...}` placeholder as `{id}`.
fn normalise(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_brace = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_brace = true;
                out.push_str("{id}");
            }
            '}' => in_brace = false,
            _ if in_brace => {}
            _ => out.push(c.to_ascii_lowercase()),
        }
    }
    out
}

/// Judges each family against the `availabletopics` answer.
pub fn judge(families: &[Family], offered: &[AvailableTopic]) -> Vec<FamilyReport> {
    families
        .iter()
        .map(|&family| {
            let want = normalise(family.template());
            let verdict = match offered.iter().find(|t| normalise(&t.id) == want) {
                None => Verdict::NotOffered,
                Some(t) => {
                    // An empty list says nothing either way; subscribing will tell.
                    let websocket = t.transports.is_empty()
                        || t.transports.iter().any(|x| {
                            x.eq_ignore_ascii_case("All") || x.eq_ignore_ascii_case("Websocket")
                        });
                    if websocket {
                        Verdict::Usable {
                            permissions: t.requires_permissions.clone(),
                        }
                    } else {
                        Verdict::NotOverWebSocket {
                            transports: t.transports.clone(),
                        }
                    }
                }
            };
            FamilyReport { family, verdict }
        })
        .collect()
}

/// Asks Genesys and judges every family the config uses.
pub async fn check(api: &ApiClient, config: &Config) -> Result<Vec<FamilyReport>, ApiError> {
    let offered = api.available_topics().await?;
    Ok(judge(&families_in_use(config), &offered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(id: &str, transports: &[&str], perms: &[&str]) -> AvailableTopic {
        AvailableTopic {
            id: id.into(),
            transports: transports.iter().map(|s| s.to_string()).collect(),
            requires_permissions: perms.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn eventbridge_only_and_missing_families_are_named() {
        let offered = [
            topic(
                "v2.routing.queues.{queueId}.conversations.messages",
                &["All"],
                &[],
            ),
            topic(
                "v2.detail.events.conversation.{id}.attributes",
                &["EventBridge"],
                &["analytics:conversationDetail:view"],
            ),
            topic(
                "v2.detail.events.conversation.{id}.customer.end",
                &["Websocket", "EventBridge"],
                &["x:y:z"],
            ),
        ];
        let r = judge(
            &[
                Family::Queue,
                Family::DetailAttributes,
                Family::DetailCustomerEnd,
                Family::FlowMetrics,
            ],
            &offered,
        );
        assert!(r[0].usable());
        assert_eq!(
            r[1].verdict,
            Verdict::NotOverWebSocket {
                transports: vec!["EventBridge".into()]
            }
        );
        assert!(
            r[1].to_string()
                .contains("v2.detail.events.conversation.{id}.attributes")
        );
        assert!(r[1].to_string().contains("only over EventBridge"));
        // What is lost reads as a sentence after "no" for every family.
        assert!(
            r[1].to_string()
                .ends_with(": no intents of watched bot-phase conversations"),
            "{}",
            r[1]
        );
        assert!(
            r[3].to_string()
                .ends_with(": no flow discovery of bot-phase conversations")
        );
        assert!(r[2].usable());
        assert!(r[2].to_string().contains("x:y:z"));
        assert_eq!(r[3].verdict, Verdict::NotOffered);
    }
}
