//! The end of a confirmed close: the report marked confirmed, then the rule's wrap-up
//! code for the agents that need one (after the disconnect).

use tokio::time::Instant;

use crate::closer::{CloseReport, Closer, ConfirmedBy, Decision, Outcome};
use crate::farewell;
use crate::rules::Rule;
use crate::step::{Call, Step};

/// Notes left on a wrap-up the daemon sends.
const WRAPUP_NOTES: &str = "closed by genesys-closer on a bot intent";

impl Closer {
    /// Marks the report confirmed, then sends the rule's wrap-up (after the disconnect,
    /// as the facts sheet describes); the finished report, for the sequence to return.
    pub(super) async fn confirmed(
        &self,
        d: &Decision,
        rule: &Rule,
        mut r: CloseReport,
        at: Option<Instant>,
        by: ConfirmedBy,
        outcome: Outcome,
    ) -> Option<CloseReport> {
        // Nothing more is waited for: the waiter goes before the wrap-up.
        self.waiters.cancel(&d.conversation_id);
        r.outcome = outcome;
        r.confirmed_by = Some(by);
        r.latency = at.map_or_else(
            || d.decided_at.elapsed(),
            |at| at.saturating_duration_since(d.decided_at),
        );
        r.reason = None;
        if let Some(code) = &rule.wrapup_code {
            self.wrapup(&d.conversation_id, code, &mut r).await;
        }
        Some(r)
    }

    /// Wrap-up codes for the agents that need one, after the disconnect.
    async fn wrapup(&self, id: &str, code: &str, r: &mut CloseReport) {
        let parts = match self.api.get_communications(id).await {
            Ok(p) => {
                r.sent.push("get_conversation_communications");
                p
            }
            Err(e) => {
                tracing::warn!(conversation_id = id, error = %e, correlation_id = e.correlation_id(),
                    "wrap-up not sent: cannot read the conversation's participants");
                self.journal.note(
                    id,
                    &Step::Failed(
                        Call::Wrapup { participant: None },
                        format!("cannot read participants: {e}"),
                    ),
                );
                return;
            }
        };
        for (participant, communication) in farewell::wrapup_targets(&parts) {
            let call = Call::Wrapup {
                participant: Some(participant.to_string()),
            };
            if let Err(e) = self.journal.fence(id, &Step::AboutToSend(call)).await {
                // [ha]: this instance no longer acts; no wrap-up goes from it.
                tracing::warn!(conversation_id = id, error = %e, "wrap-up not sent");
                return;
            }
            match self
                .api
                .send_wrapup(id, &participant, &communication, code, WRAPUP_NOTES)
                .await
            {
                Ok(_) => {
                    r.sent.push("wrapup");
                    self.journal.note(
                        id,
                        &Step::Sent(Call::Wrapup {
                            participant: Some(participant.to_string()),
                        }),
                    );
                }
                Err(e) => {
                    if e.was_answered() {
                        r.sent.push("wrapup");
                    }
                    tracing::warn!(conversation_id = id, participant_id = %participant, error = %e,
                        correlation_id = e.correlation_id(), "wrap-up code not accepted");
                    self.journal.note(
                        id,
                        &Step::Failed(
                            Call::Wrapup {
                                participant: Some(participant.to_string()),
                            },
                            e.to_string(),
                        ),
                    );
                }
            }
        }
    }
}
