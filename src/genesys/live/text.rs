//! One text frame read from a notification socket: counted, recorded, parsed, and
//! turned into an event for the loop or an [`Action`] for the socket.

use tokio::time::Instant;

use super::{Action, Ending};
use crate::genesys::api::Channel;
use crate::genesys::frames::{Frame, parse_frame};
use crate::genesys::stream::{ChannelStream, OVERSIZED_FRAME_BYTES, StreamEvent};

impl ChannelStream {
    /// Handles one text frame.
    pub(super) async fn handle_text(&self, ch: &Channel, text: &str, received: Instant) -> Action {
        if let Some(r) = &self.record {
            r.frame(self.index, text);
        }
        if text.len() > OVERSIZED_FRAME_BYTES {
            self.stats.skipped(crate::telemetry::Skipped::Oversized);
            if let Some(held) = self.stats.log_limit.allow("oversized") {
                tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, bytes = text.len(),
                    held_back = held, "skipping an oversized frame unparsed");
            }
            return Action::Continue;
        }
        let frame = match parse_frame(text, &self.wanted_attributes.get()) {
            Ok(f) => f,
            Err(e) => {
                self.stats.skipped(crate::telemetry::Skipped::Malformed);
                if let Some(held) = self.stats.log_limit.allow("malformed") {
                    let head: String = text.chars().take(120).collect();
                    tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, error = %e,
                        bytes = text.len(), head = %head, held_back = held, "skipping malformed frame");
                }
                return Action::Continue;
            }
        };
        self.stats.frame(frame.kind());
        match frame {
            Frame::Heartbeat | Frame::Pong => Action::Continue,
            Frame::Conversation(ev) => {
                self.event_seen
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.stats.conversation_events.inc();
                if self
                    .events
                    .send(StreamEvent::Conversation(ev, received))
                    .await
                    .is_err()
                {
                    tracing::debug!("event loop gone");
                }
                Action::Continue
            }
            Frame::FlowMetric(m) => {
                self.event_seen
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.stats.conversation_events.inc();
                let _ = self.events.send(StreamEvent::Discovered(m, received)).await;
                Action::Continue
            }
            Frame::SocketClosing { message } => {
                let message: String = message.chars().take(200).collect();
                tracing::info!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, server_message = %message,
                    "v2.system.socket_closing: moving to a fresh channel before this socket closes");
                Action::Rotate("socket_closing")
            }
            Frame::System {
                topic,
                kind,
                reason,
                message,
            } => self.system(ch, &topic, kind, reason, message),
            Frame::Reply { result, status } => {
                if result == "404" {
                    tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, "socket says the channel no longer exists");
                    Action::End(Ending::Gone("channel reported 404"))
                } else {
                    tracing::debug!(stream = %crate::genesys::StreamName(self.index), %result, status = status.as_deref(), "socket reply");
                    Action::Continue
                }
            }
            Frame::Unknown { topic } => {
                self.stats.unknown_topics.inc();
                if let Some(held) = self.stats.log_limit.allow("unknown_topic") {
                    let topic: String = topic.chars().take(200).collect();
                    tracing::debug!(stream = %crate::genesys::StreamName(self.index), %topic, held_back = held, "frame on an unhandled topic");
                }
                Action::Continue
            }
        }
    }

    /// A system message: logged; `no_longer_subscribed` asks for the topics again,
    /// `token_revoked` ends the channel, anything else is only said.
    fn system(
        &self,
        ch: &Channel,
        topic: &str,
        kind: Option<String>,
        reason: Option<String>,
        message: Option<String>,
    ) -> Action {
        let clip = |s: Option<String>| s.map(|s| s.chars().take(200).collect::<String>());
        let topic: String = topic.chars().take(200).collect();
        let (kind, reason, message) = (clip(kind), clip(reason), clip(message));
        tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, %topic, kind = kind.as_deref(),
            reason = reason.as_deref(), server_message = message.as_deref(), "system message");
        let t = topic.to_ascii_lowercase();
        if t.starts_with("v2.system.no_longer_subscribed")
            || kind.as_deref() == Some("no_longer_subscribed")
        {
            Action::Resubscribe
        } else if t.starts_with("v2.system.token_revoked")
            || kind.as_deref() == Some("token_revoked")
        {
            Action::End(Ending::Gone("token revoked"))
        } else {
            Action::Continue
        }
    }
}
