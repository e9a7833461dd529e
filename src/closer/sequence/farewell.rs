//! Step 1 of a close (optional): the farewell to the guest, before the disconnect, at
//! most once over every run (journalled durably before it is sent).

use crate::closer::{CloseReport, Closer, Resume};
use crate::farewell;
use crate::step::{Call, Step};

use super::Close;

impl Closer {
    /// Step 1 (optional): the farewell, before the disconnect, at most once, and never
    /// to a conversation already seen closed.
    pub(super) async fn farewell_step(&self, c: &mut Close<'_>) {
        let id = &*c.d.conversation_id;
        if let Some(text) = &c.rule.farewell
            && !self.store.is_closed(id)
        {
            self.farewell(id, text, c.d.resume.as_ref(), &mut c.r).await;
        }
    }

    /// The farewell: journalled "about to send" (durably) before it goes, "sent" after;
    /// a past run that journalled the first and not the second may have sent it, so it
    /// is skipped. Any failure leaves the close to go on without it.
    async fn farewell(&self, id: &str, text: &str, resume: Option<&Resume>, r: &mut CloseReport) {
        if resume.is_some_and(|res| self.farewell_went_before(id, res)) {
            return;
        }
        let Some(communication) = self.farewell_communication(id, r).await else {
            return;
        };
        if let Err(e) = self
            .journal
            .step_durable(id, &Step::AboutToSend(Call::Farewell))
            .await
        {
            if matches!(e, crate::journal::JournalError::Fenced { .. }) {
                // [ha]: another instance acts now; the disconnect that follows is
                // refused the same way and the close left to it.
                tracing::warn!(conversation_id = id, error = %e,
                    "farewell not sent: this instance no longer acts (lease)");
                return;
            }
            // Without the record, a crash could send it twice: better none than two.
            tracing::error!(conversation_id = id, error = %e,
                "farewell skipped: it could not be journalled first");
            return;
        }
        if self.closed_before_farewell(id) {
            return;
        }
        self.send_farewell(id, &communication, text, r).await;
    }

    /// Whether a past run sent the farewell, or may have (it journalled "about to send"
    /// and not "sent"): either way it is not sent again.
    fn farewell_went_before(&self, id: &str, res: &Resume) -> bool {
        if res.has(&Step::Sent(Call::Farewell)) {
            return true;
        }
        if res.farewell_may_have_gone() {
            tracing::warn!(
                conversation_id = id,
                "farewell skipped: a past run was about to send it when it stopped and \
                 may have (or journalled a step this version cannot read); a guest never \
                 gets it twice"
            );
            self.journal.note(
                id,
                &Step::Skipped(Call::Farewell, "a past run may have sent it".into()),
            );
            return true;
        }
        false
    }

    /// The communication to send the farewell on, read from the conversation; `None`
    /// (journalled as skipped) when it cannot be read, there is none, or the
    /// conversation closed meanwhile.
    async fn farewell_communication(&self, id: &str, r: &mut CloseReport) -> Option<String> {
        let parts = match self.api.get_communications(id).await {
            Ok(p) => {
                r.sent.push("get_conversation_communications");
                p
            }
            Err(e) => {
                tracing::warn!(conversation_id = id, error = %e, correlation_id = e.correlation_id(),
                    "farewell skipped: cannot read the conversation's communications; closing without it");
                self.journal.note(
                    id,
                    &Step::Skipped(Call::Farewell, format!("cannot read communications: {e}")),
                );
                return None;
            }
        };
        // It ended while its communications were read: no farewell to a closed one.
        if self.closed_before_farewell(id) {
            return None;
        }
        match farewell::farewell_communication(&parts) {
            Ok((_participant, communication)) => Some(communication),
            Err(why) => {
                tracing::warn!(conversation_id = id, reason = %why,
                    "farewell skipped: no communication to send it on; closing without it");
                self.journal
                    .note(id, &Step::Skipped(Call::Farewell, why.to_string()));
                None
            }
        }
    }

    /// Whether the conversation is seen closed, the farewell then journalled as skipped.
    fn closed_before_farewell(&self, id: &str) -> bool {
        let closed = self.store.is_closed(id);
        if closed {
            self.journal.note(
                id,
                &Step::Skipped(Call::Farewell, "the conversation closed".into()),
            );
        }
        closed
    }

    /// Sends the farewell on `communication` and journals how it went; counted as sent
    /// when Genesys answered it.
    async fn send_farewell(&self, id: &str, communication: &str, text: &str, r: &mut CloseReport) {
        match self.api.send_message(id, communication, text).await {
            Ok(_) => {
                r.sent.push("farewell");
                self.journal.note(id, &Step::Sent(Call::Farewell));
            }
            Err(e) => {
                if e.was_answered() {
                    r.sent.push("farewell");
                }
                tracing::warn!(conversation_id = id, error = %e, correlation_id = e.correlation_id(),
                    "farewell not sent; closing without it");
                self.journal
                    .note(id, &Step::Failed(Call::Farewell, e.to_string()));
            }
        }
    }
}
