//! The REST checks and repairs that run beside a live socket: the subscription check
//! (topics the server dropped without a word), re-subscribing after
//! `no_longer_subscribed`, and a reload's new topic set; each reports a gap to resync.

use std::time::Duration;

use tokio::time::Instant;

use super::Ending;
use crate::genesys::api::Channel;
use crate::genesys::stream::{ChannelStream, StreamEvent};

impl ChannelStream {
    /// After `no_longer_subscribed`: the topics again, in place, then a resync of the
    /// stretch (events pushed while the channel had no topics are lost).
    pub(super) async fn resubscribe(&self, ch: &Channel) -> Option<Ending> {
        let since = Instant::now();
        if let Err(e) = self.subscribe(ch).await {
            tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, error = %e,
                "re-subscribing after no_longer_subscribed failed; the channel will be subscribed again");
            return Some(Ending::Unsubscribed(
                "re-subscribing after no_longer_subscribed failed",
            ));
        }
        self.stats.rotated("no_longer_subscribed");
        self.gap(
            since.elapsed(),
            "no_longer_subscribed: topics re-added in place",
            false,
        )
        .await;
        None
    }

    /// A reload changed the configured topics: `PUT` the whole set on this channel (no
    /// reconnect; topics kept are never absent, so nothing is missed on them).
    pub(super) async fn apply_topic_change(&self, ch: &Channel) -> Option<Ending> {
        match self.subscribe(ch).await {
            Ok(()) => {
                tracing::info!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id,
                    "configured topics changed by a reload: subscribed in place");
                None
            }
            Err(e) => {
                tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, error = %e,
                    "subscribing the reloaded topics failed; the channel will be subscribed again");
                Some(Ending::Unsubscribed(
                    "subscribing the reloaded topics failed",
                ))
            }
        }
    }

    pub(super) async fn gap(&self, gap: Duration, reason: &'static str, silent: bool) {
        let _ = self
            .events
            .send(StreamEvent::Gap {
                stream: self.index,
                gap,
                reason,
                silent,
            })
            .await;
    }

    /// `GET .../subscriptions` (one request per channel per `verify_every`, and one
    /// when events stop while the socket still answers): topics the server no longer
    /// holds are re-added and the stretch since `held_at` (the last check that found
    /// them all, or the subscribe) resynced.
    pub(super) async fn verify(&self, ch: &Channel) -> Option<Ending> {
        let held_at = self.held_since();
        let held = match self.api.get_subscriptions(&ch.id).await {
            Ok(t) => t,
            Err(e) if e.status() == Some(404) => {
                tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, "subscription check: the channel no longer exists");
                return Some(Ending::Gone("channel gone (subscription check)"));
            }
            Err(e) => {
                tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, error = %e, "subscription check failed; will try again");
                return None;
            }
        };
        let held: std::collections::HashSet<String> = held
            .into_iter()
            .map(|t| t.id.to_ascii_lowercase())
            .collect();
        let missing = self
            .slot
            .expected_live()
            .into_iter()
            .filter(|t| !held.contains(&t.to_ascii_lowercase()))
            .count();
        if missing == 0 {
            self.mark_held();
            tracing::debug!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, topics = held.len(), "subscription check: all topics held");
            return None;
        }
        self.stats.dropped_topics.add(missing as u64);
        tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, missing, held = held.len(),
            "subscription check: the server dropped topics without notice; re-adding them");
        if let Err(e) = self.subscribe(ch).await {
            tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, error = %e, "re-adding dropped topics failed; will try again");
            return None;
        }
        self.stats.rotated("topics_dropped");
        self.gap(
            held_at.elapsed(),
            "topics dropped silently by the server",
            true,
        )
        .await;
        None
    }
}
