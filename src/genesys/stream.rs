//! One notification channel: create, subscribe, connect, read, and reconnect, as an
//! explicit state machine `Connecting -> Subscribing -> Live -> Backoff(n)`.
//!
//! Each transition is logged once with its reason. Liveness is judged here, not by TCP:
//! after `ping_after` of silence we send `{"message":"ping"}`; after `heartbeat_timeout` of
//! silence the socket is dead. A channel is live only with its topics subscribed: a failed
//! subscribe is retried, never skipped. The live connection itself, with its
//! make-before-break rotations (`socket_closing`, channel expiry), is in [`super::live`].
//! Conversation events go to the event loop over a channel.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{ApiClient, Channel};
use super::frames::{ConversationEvent, FlowMetric};
use super::subscriptions::{Slot, log_rejections};
use crate::config::StreamConfig;
use crate::telemetry::Stats;

/// Frames larger than this cannot be read: tungstenite fails the socket rather than skip
/// them, so the socket is replaced (and the gap resynced). Genesys documents no limit.
pub(super) const MAX_FRAME_BYTES: usize = 16 << 20;
/// Frames larger than this are read but skipped unparsed, counted and logged: a
/// messaging conversation frame is a few KiB, so such a frame is not one the daemon needs.
pub(super) const OVERSIZED_FRAME_BYTES: usize = 1 << 20;
/// The TCP connect, TLS and WebSocket handshake together must finish within this.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A socket that was live at least this long is reconnected at once when it fails;
/// one that fails sooner goes through the backoff (no tight reconnect loop).
const RECONNECT_AT_ONCE_AFTER: Duration = Duration::from_secs(1);
/// Rotate to a fresh channel this long before the current one expires.
pub(super) const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(600);
/// While every stream is down, the first of them tries again at least this often
/// (jittered down to half of it), whatever its backoff says: a platform that recovers is
/// seen within a couple of seconds, and one probe at a time stays gentle on a platform
/// that is still down. The others wait for their backoff or for a probe that succeeds.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The reconnect attempts of every stream, coordinated: which streams are down, and a
/// wake-up for all of them when one gets its socket back.
#[derive(Debug, Default)]
pub struct Reconnects {
    /// Streams without a live socket now.
    down: std::sync::Mutex<std::collections::BTreeSet<usize>>,
    /// Woken when a stream's socket goes live: the platform is back, the others try at
    /// once rather than sit out their backoff.
    back: tokio::sync::Notify,
}

impl Reconnects {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<usize>> {
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream has no live socket.
    pub fn down(&self, stream: usize) {
        self.set().insert(stream);
    }

    /// The stream's socket is live: the others, if down, try again now.
    pub fn up(&self, stream: usize) {
        let was_down = self.set().remove(&stream);
        if was_down {
            self.back.notify_waiters();
        }
    }

    /// Whether the stream probes for the others: it is the first of those down.
    fn probes(&self, stream: usize) -> bool {
        self.set().first() == Some(&stream)
    }
}

/// What a stream tells the event loop.
#[derive(Debug)]
pub enum StreamEvent {
    /// A conversation update, stamped when its frame was read.
    Conversation(ConversationEvent, Instant),
    /// A flow-metrics record named a conversation running a watched flow.
    Discovered(FlowMetric, Instant),
    /// These conversations' per-conversation topics went live for the first time.
    Watching(Vec<Box<str>>, Instant),
    /// The stream is subscribed and reading (first time or after a reconnect).
    Live {
        /// Index of the stream (one per channel).
        stream: usize,
        /// Channel id.
        channel_id: String,
        /// How long this stream had no live socket before this one (`None` the first
        /// time): events Genesys pushed meanwhile are lost, a resync must read them.
        gap: Option<Duration>,
    },
    /// The stream's topics were missing for a while although its socket stayed up
    /// (`no_longer_subscribed`, or topics the server dropped without a word): events
    /// pushed meanwhile are lost, a resync must read them.
    Gap {
        /// Index of the stream.
        stream: usize,
        /// How long, at most, events may have been missed.
        gap: Duration,
        /// What happened.
        reason: &'static str,
        /// The server dropped the topics without a word: nothing says its twin still
        /// holds them, so the mirror is not taken to have covered the gap.
        silent: bool,
    },
    /// The stream lost its socket and is reconnecting.
    Down {
        /// Index of the stream.
        stream: usize,
        /// Why.
        reason: String,
    },
}

/// The socket state machine's states.
#[derive(Debug)]
enum State {
    /// Need a channel: `POST /api/v2/notifications/channels`.
    Connecting,
    /// Have a channel, need its topics: `PUT .../subscriptions`.
    Subscribing(Channel),
    /// Subscribed: connect to `connectUri` and read.
    Live(Channel),
    /// Wait before trying again; keep the channel if it is still usable.
    Backoff {
        /// The channel to try again, if any (it is checked first).
        channel: Option<Channel>,
        /// Whether that channel holds its topics: if not, it is subscribed again
        /// before the socket goes live (a channel without its topics receives nothing).
        subscribed: bool,
        /// Why the stream is down (logged).
        reason: String,
    },
}

/// Why a live connection ended.
pub(super) enum LiveEnd {
    /// The channel is gone (`{"result":"404"}` or expired): make a new one.
    ChannelGone(String),
    /// Socket failure or silence: back off, keeping the channel.
    Failed(Channel, String),
    /// The channel lost its topics and re-subscribing failed: subscribe again.
    Unsubscribed(Channel, String),
    /// Shutdown requested.
    Cancelled,
}

/// Runs one channel's stream until `cancel` fires.
pub struct ChannelStream {
    /// Index among the daemon's channels, for logs.
    pub index: usize,
    /// Topics this channel carries (at most 1,000): configured ones and, shared with
    /// the subscription manager, those of watched conversations.
    pub slot: Arc<Slot>,
    /// REST client.
    pub api: Arc<ApiClient>,
    /// Timing settings.
    pub config: StreamConfig,
    /// Attribute names to keep from frames.
    pub wanted_attributes: Arc<super::frames::Wanted>,
    /// To the event loop.
    pub events: mpsc::Sender<StreamEvent>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Shutdown.
    pub cancel: CancellationToken,
    /// The "every topic rejected" error was said (it is said once per episode).
    pub all_rejected: std::sync::atomic::AtomicBool,
    /// `run --record`: every text frame read is also handed here (never waits).
    pub record: Option<crate::record::Recorder>,
    /// Shared by every stream: coordinated reconnects.
    pub reconnects: Arc<Reconnects>,
    /// When this stream's topics were last known to be held (a subscribe, or a check
    /// that found them all): a silent drop is resynced from here.
    pub held_at: std::sync::Mutex<Option<Instant>>,
    /// A conversation or flow event was read since the live loop last looked.
    pub event_seen: std::sync::atomic::AtomicBool,
}

impl ChannelStream {
    /// Drives the state machine until cancelled. Every step but a live socket (a
    /// channel creation, a subscription, a check waiting on a long `Retry-After`) is
    /// dropped the moment the daemon stops, so a stop never waits for Genesys.
    pub async fn run(self) {
        let mut state = State::Connecting;
        let mut backoff = self.new_backoff();
        // Since when no socket of this stream has been live (None before the first).
        let mut down_since: Option<Instant> = None;
        self.reconnects.down(self.index);
        loop {
            // A live socket watches the stop itself (it closes politely); every other
            // step is dropped at once.
            let next = if matches!(state, State::Live(_)) {
                self.step(state, &mut backoff, &mut down_since).await
            } else {
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => None,
                    next = self.step(state, &mut backoff, &mut down_since) => next,
                }
            };
            match next {
                Some(n) => state = n,
                None => return,
            }
        }
    }

    /// One move of the state machine; `None` when the stream is to end.
    async fn step(
        &self,
        state: State,
        backoff: &mut backon::ExponentialBackoff,
        down_since: &mut Option<Instant>,
    ) -> Option<State> {
        Some(match state {
            State::Connecting => match self.new_channel().await {
                Ok(ch) => {
                    tracing::info!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, expires = ch.expires.as_deref(), "channel created; subscribing");
                    State::Subscribing(ch)
                }
                Err(e) => State::Backoff {
                    channel: None,
                    subscribed: false,
                    reason: format!("cannot create a channel: {e}"),
                },
            },
            State::Subscribing(ch) => match self.subscribe(&ch).await {
                Ok(()) => State::Live(ch),
                Err(reason) => State::Backoff {
                    channel: Some(ch),
                    subscribed: false,
                    reason,
                },
            },
            State::Live(ch) => {
                let started = Instant::now();
                let end = self.live(ch, down_since).await;
                if started.elapsed() >= self.config.healthy_after {
                    *backoff = self.new_backoff();
                }
                self.after_live(end, started.elapsed()).await?
            }
            State::Backoff {
                channel,
                subscribed,
                reason,
            } => {
                self.back_off(backoff, &reason).await?;
                match channel {
                    Some(ch) if self.channel_usable(&ch).await => {
                        if subscribed {
                            State::Live(ch)
                        } else {
                            State::Subscribing(ch)
                        }
                    }
                    _ => State::Connecting,
                }
            }
        })
    }

    /// What follows a socket that was live for `lived`: at once again when it worked
    /// for a while (every moment without a socket loses events), else through backoff;
    /// `None` when the stream is to end.
    async fn after_live(&self, end: LiveEnd, lived: Duration) -> Option<State> {
        Some(match end {
            LiveEnd::Cancelled => return None,
            LiveEnd::Unsubscribed(ch, reason) => {
                crate::metrics::reconnect("unsubscribed");
                self.down(&reason).await;
                State::Backoff {
                    channel: Some(ch),
                    subscribed: false,
                    reason,
                }
            }
            // Through backoff, so a server that keeps dropping channels is not
            // answered with a tight loop of channel creations.
            LiveEnd::ChannelGone(reason) => {
                crate::metrics::reconnect("channel_gone");
                self.down(&reason).await;
                if lived >= RECONNECT_AT_ONCE_AFTER {
                    // A channel that worked for a while (a 404, a revoked token): a new
                    // one at once, every moment without a socket loses events.
                    tracing::warn!(stream = %crate::genesys::StreamName(self.index), %reason,
                        "channel unusable; creating a new one at once");
                    State::Connecting
                } else {
                    State::Backoff {
                        channel: None,
                        subscribed: false,
                        reason: format!("channel unusable ({reason}); a new one will be created"),
                    }
                }
            }
            LiveEnd::Failed(ch, reason) => {
                crate::metrics::reconnect(crate::metrics::reconnect_class(&reason));
                self.down(&reason).await;
                if lived >= RECONNECT_AT_ONCE_AFTER {
                    // A connection that worked for a while is retried at once on the
                    // same channel. A gone channel answers the connect with 404 and
                    // takes the backoff path; so does a second failure.
                    tracing::warn!(stream = %crate::genesys::StreamName(self.index), %reason,
                        "socket lost; reconnecting at once");
                    State::Live(ch)
                } else {
                    State::Backoff {
                        channel: Some(ch),
                        subscribed: true,
                        reason,
                    }
                }
            }
        })
    }

    /// Waits out the next backoff delay (shorter while this stream probes for the
    /// others), or less when another stream's socket is live again; `None` on stop.
    async fn back_off(&self, backoff: &mut backon::ExponentialBackoff, reason: &str) -> Option<()> {
        let mut delay = backoff.next().unwrap_or(self.config.backoff_max);
        let probes = self.reconnects.probes(self.index);
        if probes {
            let probe = PROBE_EVERY.mul_f64(0.5 + fastrand::f64() * 0.5);
            delay = delay.min(probe);
        }
        tracing::warn!(stream = %crate::genesys::StreamName(self.index), %reason, delay_ms = delay.as_millis() as u64,
            probes_for_the_others = probes, "stream down; backing off");
        let back = self.reconnects.back.notified();
        tokio::pin!(back);
        back.as_mut().enable();
        tokio::select! {
            _ = self.cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
            _ = back => {
                tracing::info!(stream = %crate::genesys::StreamName(self.index),
                    "another stream's socket is live again: retrying now");
            }
        }
        Some(())
    }

    /// The topics are known to be held now.
    pub(super) fn mark_held(&self) {
        *self.held_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Since when the topics are known to be held (now, if never).
    pub(super) fn held_since(&self) -> Instant {
        self.held_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Instant::now)
    }

    /// A fresh channel; whatever the old one carried goes on the new one's `PUT`.
    async fn new_channel(&self) -> Result<Channel, super::api::ApiError> {
        self.slot.lost_channel();
        self.api.create_channel().await
    }

    fn new_backoff(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.config.backoff_min)
            .with_max_delay(self.config.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    pub(super) async fn down(&self, reason: &str) {
        self.reconnects.down(self.index);
        let _ = self
            .events
            .send(StreamEvent::Down {
                stream: self.index,
                reason: reason.to_string(),
            })
            .await;
    }

    /// A kept channel is reused unless it has expired or Genesys says it is gone.
    async fn channel_usable(&self, ch: &Channel) -> bool {
        if expires_in(ch).is_some_and(|d| d.is_zero()) {
            return false;
        }
        match self.api.channel_exists(&ch.id).await {
            Ok(exists) => exists,
            Err(e) => {
                tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, error = %e, "cannot check the channel; creating a new one");
                false
            }
        }
    }

    /// `PUT`s the slot's whole set: configured topics and every watched conversation's.
    pub(super) async fn subscribe(&self, ch: &Channel) -> Result<(), String> {
        let (topics, ids, removals) = self.slot.snapshot();
        let answer = self
            .api
            .put_subscriptions(&ch.id, &topics)
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        log_rejections(self.index, &ch.id, &answer);
        let rejected = answer
            .iter()
            .filter(|t| t.state.as_deref() == Some("Rejected"))
            .count();
        let statics = self.slot.static_len();
        let static_rejected = answer
            .iter()
            .filter(|t| {
                t.state.as_deref() == Some("Rejected")
                    && !t.id.to_ascii_lowercase().starts_with("v2.detail.events.")
            })
            .count();
        if statics > 0 && static_rejected >= statics {
            // An error state, said once and loudly; later attempts stay quiet until a
            // subscribe succeeds (permissions can be granted while it runs).
            if !self
                .all_rejected
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::error!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, topics = statics,
                    "every configured topic of this channel was rejected: it receives nothing; \
                     grant the permissions named above to the OAuth client (retrying quietly)");
            }
            return Err("every configured topic was rejected".into());
        }
        self.all_rejected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.mark_held();
        let synced = self.slot.synced(&ch.id, &ids, removals, &answer);
        tracing::info!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, topics = topics.len() - rejected,
            watched_conversations = ids.len() - synced.rejected, "subscribed");
        if !synced.newly_live.is_empty() {
            let _ = self
                .events
                .send(StreamEvent::Watching(synced.newly_live, Instant::now()))
                .await;
        }
        Ok(())
    }
}

/// Time left before the channel's `expires`, when it sent a readable one.
pub(super) fn expires_in(ch: &Channel) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(ch.expires.as_deref()?).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_stream_down_probes_and_one_coming_back_wakes_the_others() {
        let r = Reconnects::default();
        for stream in [3, 1, 100] {
            r.down(stream);
        }
        // One probe at a time: the first of those down.
        assert!(r.probes(1) && !r.probes(3) && !r.probes(100));
        let back = r.back.notified();
        tokio::pin!(back);
        back.as_mut().enable();
        // The prober's socket is live: the others are woken to try now.
        r.up(1);
        tokio::time::timeout(Duration::from_secs(1), back)
            .await
            .expect("the others are woken when one stream is back");
        assert!(r.probes(3), "the next stream down probes now");
        // A stream that was not down wakes nobody.
        let quiet = r.back.notified();
        tokio::pin!(quiet);
        quiet.as_mut().enable();
        r.up(1);
        assert!(
            tokio::time::timeout(Duration::ZERO, quiet).await.is_err(),
            "nobody is woken by a stream that was already up"
        );
    }
}
