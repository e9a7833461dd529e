//! Which channel carries which topic, and the per-conversation subscriptions of the bot
//! phase, added and removed in batches.
//!
//! A bot-phase conversation is visible only through its own detail-event topics
//! (`v2.detail.events.conversation.{id}.attributes`, `.customer.end`, `.flow.end`), so
//! each watched conversation costs three topic slots (1,000 per channel, 20 channels
//! per OAuth client) and REST calls. To keep that cost low the [`Manager`] gathers
//! conversations to add for `subscribe_window` into one `POST .../subscriptions` per
//! channel, and conversations to remove for `unsubscribe_window` into one `PUT` of the
//! remaining list (there is no per-topic delete); a flush that has both uses the `PUT`.
//! A close waiting for its confirming topic ([`Subscriptions::ensure`]) cuts the
//! window short.
//!
//! Each channel's desired topic set lives in a [`Slot`] shared with that channel's
//! [`super::stream::ChannelStream`]: when the stream has to make a new channel, its
//! `PUT` carries the slot's whole set, per-conversation topics included, so a replaced
//! channel keeps every watched conversation.
//!
//! Here: the handle the event loop and the closer use, and the logging of rejected
//! topics; `slot.rs` holds a channel's wanted topics, `manager.rs` the placement of
//! conversations on channels and the batching of their requests.

mod manager;
mod slot;

pub use manager::{LiveSender, Manager, SpawnStream};
pub use slot::{Slot, Synced};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::api::ChannelTopic;

/// Why a conversation cannot be watched.
pub type WatchError = String;

/// A topic name with its id segments replaced by `{id}`, to group log lines by family.
pub fn topic_family(topic: &str) -> String {
    topic
        .split('.')
        .map(|seg| {
            let idish = seg.len() >= 8
                && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
                && seg.chars().any(|c| c.is_ascii_digit());
            if idish { "{id}" } else { seg }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Logs the rejected topics of a subscriptions answer, one line per topic family
/// (a thousand rejected conversation topics are one problem, not a thousand).
pub fn log_rejections(stream: usize, channel_id: &str, answer: &[ChannelTopic]) {
    let mut by_family: HashMap<String, (usize, &ChannelTopic)> = HashMap::new();
    for t in answer
        .iter()
        .filter(|t| t.state.as_deref() == Some("Rejected"))
    {
        by_family.entry(topic_family(&t.id)).or_insert((0, t)).0 += 1;
    }
    static SAID: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    let said = SAID.get_or_init(Default::default);
    for (family, (count, example)) in by_family {
        // Once per family for the life of the process: re-subscribing (rotations,
        // checks) must not repeat the same error every time.
        let first = said
            .lock()
            .map(|mut s| s.insert(family.clone()))
            .unwrap_or(true);
        if !first {
            tracing::debug!(stream = %crate::genesys::StreamName(stream), channel_id, topic_family = %family, topics = count,
                "topic subscription rejected (said before)");
            continue;
        }
        tracing::error!(
            stream = %crate::genesys::StreamName(stream),
            channel_id,
            topic_family = %family,
            topics = count,
            example = %example.id,
            rejection_reason = example.rejection_reason.as_deref(),
            missing_permissions = ?example.missing_permissions,
            "topic subscription rejected"
        );
    }
}

enum Cmd {
    Watch {
        id: Box<str>,
        urgent: bool,
        done: Option<oneshot::Sender<Result<(), WatchError>>>,
    },
    Unwatch {
        id: Box<str>,
    },
}

/// Cheap handle the event loop and the closer use to watch conversations.
#[derive(Clone)]
pub struct Subscriptions {
    tx: Option<mpsc::UnboundedSender<Cmd>>,
    disabled_reason: Option<Arc<str>>,
}

impl Subscriptions {
    /// A handle that watches nothing, saying why (detail topics unusable, say).
    pub fn disabled(reason: &str) -> Self {
        Subscriptions {
            tx: None,
            disabled_reason: Some(reason.into()),
        }
    }

    /// Why per-conversation topics cannot be used, when they cannot.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.disabled_reason.as_deref()
    }

    /// Whether per-conversation topics can be used at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Starts watching `id` (batched, no waiting). Event loop only.
    pub fn watch(&self, id: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Watch {
                id: id.into(),
                urgent: false,
                done: None,
            });
        }
    }

    /// Stops watching `id` (its topics go in the next removal batch).
    pub fn unwatch(&self, id: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Unwatch { id: id.into() });
        }
    }

    /// Waits until `id`'s topics are live on a channel (subscribing now if needed),
    /// at most `within`. Used by a close before it sends the disconnect.
    pub async fn ensure(&self, id: &str, within: Duration) -> Result<(), WatchError> {
        let Some(tx) = &self.tx else {
            return Err(self
                .disabled_reason
                .as_deref()
                .unwrap_or("per-conversation topics are off")
                .to_string());
        };
        let (done, rx) = oneshot::channel();
        tx.send(Cmd::Watch {
            id: id.into(),
            urgent: true,
            done: Some(done),
        })
        .map_err(|_| "the subscription manager has stopped".to_string())?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the subscription manager has stopped".into()),
            Err(_) => Err(format!("topics not live within {} ms", within.as_millis())),
        }
    }
}

#[cfg(test)]
mod tests;
