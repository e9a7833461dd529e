//! One notification channel: create, subscribe, connect, read, and reconnect, as an
//! explicit state machine `Connecting -> Subscribing -> Live -> Backoff(n)`.
//!
//! Each transition is logged once with its reason. Liveness is judged here, not by TCP:
//! after `ping_after` of silence we send `{"message":"ping"}`; after `heartbeat_timeout` of
//! silence the socket is dead. `v2.system.socket_closing` is a planned move to a fresh
//! connection on the same `connectUri`, without backoff. Channels are renewed (topics
//! re-PUT) before `expires`. Conversation events go to the event loop over a channel.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::api::{ApiClient, Channel};
use super::frames::{ConversationEvent, FlowMetric, Frame, parse_frame};
use super::subscriptions::{Slot, log_rejections};
use crate::config::StreamConfig;
use crate::telemetry::Stats;

/// Frames larger than this are refused (the socket is then reconnected). Genesys
/// documents no limit; a messaging conversation frame is a few KiB.
const MAX_FRAME_BYTES: usize = 4 << 20;
/// The TCP connect, TLS and WebSocket handshake together must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Renew (re-PUT the topics of) a channel this long before it expires.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(600);
/// Documented channel lifetime; a resubscribe resets it (facts sheet B.3).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

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
    /// Wait before trying again; keep the channel if it is still usable. The flag says
    /// whether that channel holds its topics: if not, it is subscribed again before the
    /// socket goes live (a channel without its topics receives nothing).
    Backoff(Option<Channel>, bool, String),
}

/// Why a live connection ended.
enum LiveEnd {
    /// Planned (`socket_closing`): reconnect at once to the same channel.
    Planned(Channel),
    /// The channel is gone (`{"result":"404"}` or expired): make a new one.
    ChannelGone(String),
    /// The channel lost its topics: subscribe again.
    Resubscribe(Channel),
    /// Socket failure or silence: back off, keeping the channel.
    Failed(Channel, String),
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
    pub wanted_attributes: Arc<[Box<str>]>,
    /// To the event loop.
    pub events: mpsc::Sender<StreamEvent>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Shutdown.
    pub cancel: CancellationToken,
}

impl ChannelStream {
    /// Drives the state machine until cancelled.
    pub async fn run(self) {
        let mut state = State::Connecting;
        let mut backoff = self.new_backoff();
        // Since when no socket of this stream has been live (None before the first).
        let mut down_since: Option<Instant> = None;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            state = match state {
                State::Connecting => match self.new_channel().await {
                    Ok(ch) => {
                        tracing::info!(stream = self.index, channel_id = %ch.id, expires = ch.expires.as_deref(), "channel created; subscribing");
                        State::Subscribing(ch)
                    }
                    Err(e) => State::Backoff(None, false, format!("cannot create a channel: {e}")),
                },
                State::Subscribing(ch) => match self.subscribe(&ch).await {
                    Ok(()) => State::Live(ch),
                    Err(reason) => State::Backoff(Some(ch), false, reason),
                },
                State::Live(ch) => {
                    let started = Instant::now();
                    let end = self.live(ch, &mut down_since).await;
                    if started.elapsed() >= self.config.healthy_after {
                        backoff = self.new_backoff();
                    }
                    match end {
                        LiveEnd::Cancelled => return,
                        LiveEnd::Planned(ch) => {
                            tracing::info!(stream = self.index, channel_id = %ch.id, "planned socket close: reconnecting to the same channel now");
                            State::Live(ch)
                        }
                        LiveEnd::Resubscribe(ch) => {
                            tracing::info!(stream = self.index, channel_id = %ch.id, "channel lost its subscriptions; subscribing again");
                            State::Subscribing(ch)
                        }
                        // Through backoff, so a server that keeps dropping channels is not
                        // answered with a tight loop of channel creations.
                        LiveEnd::ChannelGone(reason) => {
                            self.down(&reason).await;
                            State::Backoff(
                                None,
                                false,
                                format!("channel unusable ({reason}); a new one will be created"),
                            )
                        }
                        LiveEnd::Failed(ch, reason) => {
                            self.down(&reason).await;
                            State::Backoff(Some(ch), true, reason)
                        }
                    }
                }
                State::Backoff(ch, subscribed, reason) => {
                    let delay = backoff.next().unwrap_or(self.config.backoff_max);
                    tracing::warn!(stream = self.index, %reason, delay_ms = delay.as_millis() as u64, "stream down; backing off");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    match ch {
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
            };
        }
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

    async fn down(&self, reason: &str) {
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
                tracing::warn!(stream = self.index, channel_id = %ch.id, error = %e, "cannot check the channel; creating a new one");
                false
            }
        }
    }

    /// `PUT`s the slot's whole set: configured topics and every watched conversation's.
    async fn subscribe(&self, ch: &Channel) -> Result<(), String> {
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
            return Err("every configured topic was rejected".into());
        }
        let synced = self.slot.synced(&ch.id, &ids, removals, &answer);
        tracing::info!(stream = self.index, channel_id = %ch.id, topics = topics.len() - rejected,
            watched_conversations = ids.len() - synced.rejected, "subscribed");
        if !synced.newly_live.is_empty() {
            let _ = self
                .events
                .send(StreamEvent::Watching(synced.newly_live, Instant::now()))
                .await;
        }
        Ok(())
    }

    /// Connects and reads until the socket ends. `down_since` is when the previous
    /// socket ended; it is reported as the gap once this one is live, and set again when
    /// this one ends.
    async fn live(&self, ch: Channel, down_since: &mut Option<Instant>) -> LiveEnd {
        let end = self.live_inner(ch, down_since).await;
        if !matches!(end, LiveEnd::Cancelled) && down_since.is_none() {
            *down_since = Some(Instant::now());
        }
        end
    }

    async fn live_inner(&self, ch: Channel, down_since: &mut Option<Instant>) -> LiveEnd {
        // The same rule as for configured URLs: plain ws:// only to this machine.
        match url::Url::parse(&ch.connect_uri) {
            Ok(u) if u.scheme() == "wss" || crate::config::is_loopback(&u) => {}
            Ok(u) => {
                let reason = format!(
                    "refusing connectUri with scheme {} to a remote host",
                    u.scheme()
                );
                return LiveEnd::ChannelGone(reason);
            }
            Err(e) => return LiveEnd::ChannelGone(format!("connectUri is not a URL: {e}")),
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        // connectUri is used verbatim, with no auth added (facts sheet B.2).
        let connect = tokio_tungstenite::connect_async_with_config(
            ch.connect_uri.as_str(),
            Some(ws_config),
            true,
        );
        let mut ws = tokio::select! {
            _ = self.cancel.cancelled() => return LiveEnd::Cancelled,
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match r {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => return LiveEnd::Failed(ch, format!("cannot connect the socket: {e}")),
                Err(_) => return LiveEnd::Failed(ch, format!(
                    "socket connect and handshake took longer than {} s", CONNECT_TIMEOUT.as_secs())),
            },
        };
        tracing::info!(stream = self.index, channel_id = %ch.id, "socket live");
        let _ = self
            .events
            .send(StreamEvent::Live {
                stream: self.index,
                channel_id: ch.id.clone(),
                gap: down_since.take().map(|t| t.elapsed()),
            })
            .await;
        let mut last_frame = Instant::now();
        let mut pinged = false;
        let mut renew_at =
            expires_in(&ch).map(|d| Instant::now() + d.saturating_sub(RENEW_BEFORE_EXPIRY));
        loop {
            let silence_deadline = last_frame
                + if pinged {
                    self.config.heartbeat_timeout
                } else {
                    self.config.ping_after
                };
            let renew = async {
                match renew_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Shutdown: close politely; the server drops the channel's socket.
                _ = self.cancel.cancelled() => {
                    let _ = ws.close(None).await;
                    return LiveEnd::Cancelled;
                }
                // Channels live 24 h; re-PUT the topics to extend them, on the live socket.
                _ = renew => {
                    if let Err(reason) = self.subscribe(&ch).await {
                        let _ = ws.close(None).await;
                        return LiveEnd::Failed(ch, format!("channel renewal failed: {reason}"));
                    }
                    tracing::info!(stream = self.index, channel_id = %ch.id, "channel renewed before expiry");
                    renew_at = Some(Instant::now() + CHANNEL_LIFETIME.saturating_sub(RENEW_BEFORE_EXPIRY));
                }
                // Silence: ping once, then declare the socket dead.
                _ = tokio::time::sleep_until(silence_deadline) => {
                    if pinged {
                        let _ = ws.close(None).await;
                        return LiveEnd::Failed(ch, format!(
                            "no heartbeat or pong for {} ms", self.config.heartbeat_timeout.as_millis()));
                    }
                    pinged = true;
                    tracing::warn!(stream = self.index, channel_id = %ch.id,
                        silent_ms = self.config.ping_after.as_millis() as u64,
                        "no heartbeat: socket silent; sending a ping");
                    if let Err(e) = ws.send(Message::text(r#"{"message":"ping"}"#)).await {
                        return LiveEnd::Failed(ch, format!("cannot send ping: {e}"));
                    }
                }
                msg = ws.next() => {
                    let text = match msg {
                        None => return LiveEnd::Failed(ch, "socket closed by the server".into()),
                        Some(Err(e)) => return LiveEnd::Failed(ch, format!("socket error: {e}")),
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                            return LiveEnd::Failed(ch, format!("socket closed by the server {why}").trim_end().to_string());
                        }
                        // Transport pings are answered by tungstenite; binary is not used.
                        Some(Ok(_)) => continue,
                    };
                    last_frame = Instant::now();
                    pinged = false;
                    if let Some(end) = self.handle_text(&ch, &text, last_frame).await {
                        let _ = ws.close(None).await;
                        return end(ch);
                    }
                }
            }
        }
    }

    /// Handles one text frame; `Some` ends the connection.
    async fn handle_text(
        &self,
        ch: &Channel,
        text: &str,
        received: Instant,
    ) -> Option<fn(Channel) -> LiveEnd> {
        self.stats.frames.inc();
        let frame = match parse_frame(text, &self.wanted_attributes) {
            Ok(f) => f,
            Err(e) => {
                self.stats.malformed_frames.inc();
                let head: String = text.chars().take(120).collect();
                tracing::warn!(stream = self.index, channel_id = %ch.id, error = %e, bytes = text.len(), head = %head, "skipping malformed frame");
                return None;
            }
        };
        match frame {
            Frame::Heartbeat | Frame::Pong => None,
            Frame::Conversation(ev) => {
                self.stats.conversation_events.inc();
                if self
                    .events
                    .send(StreamEvent::Conversation(ev, received))
                    .await
                    .is_err()
                {
                    tracing::debug!("event loop gone");
                }
                None
            }
            Frame::FlowMetric(m) => {
                self.stats.conversation_events.inc();
                let _ = self.events.send(StreamEvent::Discovered(m, received)).await;
                None
            }
            Frame::SocketClosing { message } => {
                tracing::info!(stream = self.index, channel_id = %ch.id, %message, "v2.system.socket_closing received");
                Some(LiveEnd::Planned)
            }
            Frame::System {
                topic,
                kind,
                reason,
                message,
            } => {
                tracing::warn!(stream = self.index, channel_id = %ch.id, %topic, kind = kind.as_deref(), reason = reason.as_deref(), message = message.as_deref(), "system message");
                let t = topic.to_ascii_lowercase();
                if t.starts_with("v2.system.no_longer_subscribed")
                    || kind.as_deref() == Some("no_longer_subscribed")
                {
                    Some(LiveEnd::Resubscribe)
                } else if t.starts_with("v2.system.token_revoked")
                    || kind.as_deref() == Some("token_revoked")
                {
                    Some(|_| LiveEnd::ChannelGone("token revoked".into()))
                } else {
                    None
                }
            }
            Frame::Reply { result, status } => {
                if result == "404" {
                    tracing::warn!(stream = self.index, channel_id = %ch.id, "socket says the channel no longer exists");
                    Some(|_| LiveEnd::ChannelGone("channel reported 404".into()))
                } else {
                    tracing::debug!(stream = self.index, %result, status = status.as_deref(), "socket reply");
                    None
                }
            }
            Frame::Unknown { topic } => {
                self.stats.unknown_topics.inc();
                tracing::debug!(stream = self.index, %topic, "frame on an unhandled topic");
                None
            }
        }
    }
}

/// Time left before the channel's `expires`, when it sent a readable one.
fn expires_in(ch: &Channel) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(ch.expires.as_deref()?).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}
