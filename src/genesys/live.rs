//! One channel stream's live connection: reading frames, judging liveness, and moving to
//! a fresh channel **before** the old socket goes (make-before-break).
//!
//! Genesys has no replay: an event pushed while no socket listens is gone. So the planned
//! transitions are made without a gap: on `v2.system.socket_closing` ("sent one minute
//! prior to the socket closing") and shortly before the channel `expires`, the stream
//! creates a new channel, subscribes the same topics (the slot's whole set, per-conversation
//! topics included), connects, and only then lets the old socket go, after reading it for
//! a short overlap so frames already on their way are not dropped. Frames seen on both
//! sockets are applied twice, which the state map makes harmless (it is idempotent).
//!
//! Unplanned trouble is noticed fast and reported as a gap, so the event loop resyncs:
//! `no_longer_subscribed` (topics re-PUT in place), topics the server dropped silently
//! (found by the periodic `GET .../subscriptions`), and a socket that dies (the state
//! machine in [`super::stream`] reconnects and reports the gap).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::api::Channel;
use super::frames::{Frame, parse_frame};
use super::stream::{
    CONNECT_TIMEOUT, ChannelStream, LiveEnd, MAX_FRAME_BYTES, OVERSIZED_FRAME_BYTES,
    RENEW_BEFORE_EXPIRY, StreamEvent, expires_in,
};

/// A notification socket.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A replacement connection being prepared while the old one is still read.
type Preparing<'a> = Pin<Box<dyn Future<Output = Result<(Channel, Ws), String>> + Send + 'a>>;

/// A REST check or repair running beside the reading (it must never hold the reading up:
/// a socket not read for `heartbeat_timeout` is declared dead).
type Side<'a> = Pin<Box<dyn Future<Output = Option<Ending>> + Send + 'a>>;

/// After a ping sent because events stopped, a socket that answers nothing within this
/// long (nor within `heartbeat_timeout`, if shorter) is dead: a stall is found in
/// `silence_check` plus this, not in `heartbeat_timeout`.
const PONG_WITHIN: Duration = Duration::from_secs(5);
/// The subscription check that events stopping triggers runs at most this often per
/// channel (a quiet queue that gets an event every few seconds costs at most two reads
/// a minute); the ping that goes with it costs nothing and is always sent.
const SILENCE_VERIFY_SPACING: Duration = Duration::from_secs(30);

/// After the replacement is live, the old socket is still read this long.
const OVERLAP: Duration = Duration::from_secs(2);
/// Attempts at a rotation before waiting for the old socket to end on its own.
const ROTATION_ATTEMPTS: u32 = 3;
/// Pause between rotation attempts.
const ROTATION_RETRY: Duration = Duration::from_secs(5);

/// What one frame asks of the connection.
enum Action {
    /// Nothing: keep reading.
    Continue,
    /// End this connection.
    End(Ending),
    /// Move to a fresh channel without a gap.
    Rotate(&'static str),
    /// The channel lost its topics: subscribe them again in place.
    Resubscribe,
}

/// Why a live connection must end, before it is told with its channel.
enum Ending {
    /// The channel is gone (404, token revoked): a new one is needed.
    Gone(&'static str),
    /// The channel is kept but lost its topics: it is subscribed again.
    Unsubscribed(&'static str),
}

impl Ending {
    fn with(self, ch: Channel) -> LiveEnd {
        match self {
            Ending::Gone(why) => LiveEnd::ChannelGone(why.into()),
            Ending::Unsubscribed(why) => LiveEnd::Unsubscribed(ch, why.into()),
        }
    }
}

/// The old socket of a rotation, read until the overlap ends.
struct Draining {
    channel: Channel,
    ws: Ws,
    /// When the replacement went live.
    since: Instant,
    reason: &'static str,
}

/// Why a socket could not be connected.
enum ConnectError {
    /// The `connectUri` is unusable: the channel must be replaced.
    BadUri(String),
    /// Connecting failed or timed out: try again later.
    Failed(String),
}

impl ConnectError {
    fn into_end(self, ch: Channel) -> LiveEnd {
        match self {
            ConnectError::BadUri(r) => LiveEnd::ChannelGone(r),
            ConnectError::Failed(r) => LiveEnd::Failed(ch, r),
        }
    }
}

async fn next_draining(
    d: &mut Option<Draining>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match d {
        Some(d) => d.ws.next().await,
        None => std::future::pending().await,
    }
}

async fn prepared(p: &mut Option<(Preparing<'_>, &'static str)>) -> Result<(Channel, Ws), String> {
    match p {
        Some((f, _)) => f.await,
        None => std::future::pending().await,
    }
}

/// When to move off `ch`: [`RENEW_BEFORE_EXPIRY`] before it expires, or a fifth of its
/// lifetime before for a short-lived one; never for one that claims to have expired
/// already (a skewed clock would otherwise make it rotate without end).
fn rotation_time(ch: &Channel, stream: usize) -> Option<Instant> {
    let left = expires_in(ch)?;
    if left < Duration::from_secs(1) {
        tracing::warn!(stream = %crate::genesys::StreamName(stream), channel_id = %ch.id, expires = ch.expires.as_deref(),
            "the channel's expiry is already past (is this machine's clock right?); not rotating on it");
        return None;
    }
    Some(Instant::now() + left - RENEW_BEFORE_EXPIRY.min(left / 5))
}

async fn side(s: &mut Option<Side<'_>>) -> Option<Ending> {
    match s {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl ChannelStream {
    /// Connects to `connectUri` verbatim (no auth added, facts sheet B.2), within
    /// [`CONNECT_TIMEOUT`] for TCP, TLS and the WebSocket handshake together.
    async fn connect(&self, ch: &Channel) -> Result<Ws, ConnectError> {
        // The same rule as for configured URLs: plain ws:// only to this machine.
        match url::Url::parse(&ch.connect_uri) {
            Ok(u) if u.scheme() == "wss" || crate::config::is_loopback(&u) => {}
            Ok(u) => {
                return Err(ConnectError::BadUri(format!(
                    "refusing connectUri with scheme {} to a remote host",
                    u.scheme()
                )));
            }
            Err(e) => {
                return Err(ConnectError::BadUri(format!(
                    "connectUri is not a URL: {e}"
                )));
            }
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(
            ch.connect_uri.as_str(),
            Some(ws_config),
            true,
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(ConnectError::Failed(format!(
                "cannot connect the socket: {e}"
            ))),
            Err(_) => Err(ConnectError::Failed(format!(
                "socket connect and handshake took longer than {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// A fresh channel carrying the slot's whole set, its socket connected.
    async fn replacement(&self) -> Result<(Channel, Ws), String> {
        let ch = self
            .api
            .create_channel()
            .await
            .map_err(|e| format!("cannot create the replacement channel: {e}"))?;
        self.subscribe(&ch).await?;
        match self.connect(&ch).await {
            Ok(ws) => Ok((ch, ws)),
            Err(ConnectError::BadUri(r) | ConnectError::Failed(r)) => Err(r),
        }
    }

    /// Connects and reads until the connection ends. `down_since` is when the previous
    /// socket ended; it is reported as the gap once this one is live, and set again when
    /// this one ends.
    pub(super) async fn live(&self, ch: Channel, down_since: &mut Option<Instant>) -> LiveEnd {
        let mut last_frame = None;
        let end = self.live_inner(ch, down_since, &mut last_frame).await;
        if !matches!(end, LiveEnd::Cancelled) && down_since.is_none() {
            // Counted from the last frame read: a socket that went silent before it was
            // declared dead may have missed events from then on.
            *down_since = Some(last_frame.unwrap_or_else(Instant::now));
        }
        end
    }

    async fn announce(&self, ch: &Channel, gap: Option<Duration>) {
        self.reconnects.up(self.index);
        let _ = self
            .events
            .send(StreamEvent::Live {
                stream: self.index,
                channel_id: ch.id.clone(),
                gap,
            })
            .await;
    }

    async fn live_inner(
        &self,
        mut ch: Channel,
        down_since: &mut Option<Instant>,
        last_seen: &mut Option<Instant>,
    ) -> LiveEnd {
        let mut ws = tokio::select! {
            _ = self.cancel.cancelled() => return LiveEnd::Cancelled,
            r = self.connect(&ch) => match r {
                Ok(ws) => ws,
                Err(e) => return e.into_end(ch),
            },
        };
        tracing::info!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, "socket live");
        self.announce(&ch, down_since.take().map(|t| t.elapsed()))
            .await;
        let mut last_frame = Instant::now();
        *last_seen = Some(last_frame);
        let mut pinged = false;
        let rotate_at = |ch: &Channel| rotation_time(ch, self.index);
        let mut renew_at = rotate_at(&ch);
        let mut preparing: Option<(Preparing<'_>, &'static str)> = None;
        let mut retry: Option<(Instant, &'static str)> = None;
        let mut attempts = 0u32;
        let mut draining: Option<Draining> = None;
        let mut verify_at = Instant::now() + self.config.verify_every;
        let mut checking: Option<Side<'_>> = None;
        // When the last event was read, while events flow (cleared once a silence has
        // been checked, so one silence costs one check).
        let mut last_event: Option<Instant> = None;
        self.event_seen
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // A ping was sent because events stopped: the socket must answer by then.
        let mut pong_by: Option<Instant> = None;
        let mut silence_verified: Option<Instant> = None;
        loop {
            let silence_deadline = last_frame
                + if pinged {
                    self.config.heartbeat_timeout
                } else {
                    self.config.ping_after
                };
            tokio::select! {
                // Reading comes first: frames already queued must be read before a
                // silence deadline is judged.
                biased;
                // Shutdown: close politely; the server drops the channel's socket.
                _ = self.cancel.cancelled() => {
                    if let Some(mut d) = draining.take() {
                        let _ = d.ws.close(None).await;
                    }
                    let _ = ws.close(None).await;
                    return LiveEnd::Cancelled;
                }
                msg = ws.next() => {
                    let text = match msg {
                        None => return LiveEnd::Failed(ch, "socket closed by the server".into()),
                        Some(Err(e)) => {
                            let why = if matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                                self.stats.skipped(crate::telemetry::Skipped::Oversized);
                                format!("a frame over {} MiB cannot be skipped by the socket library: {e}", MAX_FRAME_BYTES >> 20)
                            } else {
                                format!("socket error: {e}")
                            };
                            return LiveEnd::Failed(ch, why);
                        }
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map(|f| {
                                let reason: String = f.reason.chars().take(200).collect();
                                format!("{} {reason}", u16::from(f.code))
                            }).unwrap_or_default();
                            return LiveEnd::Failed(ch, format!("socket closed by the server {why}").trim_end().to_string());
                        }
                        Some(Ok(Message::Binary(b))) => {
                            self.stats.skipped(crate::telemetry::Skipped::Binary);
                            if let Some(held) = self.stats.log_limit.allow("binary") {
                                tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, bytes = b.len(),
                                    held_back = held, "skipping a binary frame (Genesys sends text)");
                            }
                            last_frame = Instant::now();
                            pinged = false;
                            continue;
                        }
                        // Transport pings are answered by tungstenite.
                        Some(Ok(_)) => continue,
                    };
                    last_frame = Instant::now();
                    *last_seen = Some(last_frame);
                    pinged = false;
                    pong_by = None;
                    let action = self.handle_text(&ch, &text, last_frame).await;
                    if self.event_seen.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        last_event = Some(last_frame);
                    }
                    match action {
                        Action::Continue => {}
                        Action::End(end) => {
                            let _ = ws.close(None).await;
                            return end.with(ch);
                        }
                        Action::Rotate(reason) => {
                            if preparing.is_none() && draining.is_none() {
                                attempts = 0;
                                retry = None;
                                preparing = Some((Box::pin(self.replacement()), reason));
                            }
                        }
                        Action::Resubscribe => {
                            let c = ch.clone();
                            // Replaces a running check: the re-PUT covers what it would find.
                            checking = Some(Box::pin(async move { self.resubscribe(&c).await }));
                        }
                    }
                }
                // A reload changed the configured topics: write the whole set in place.
                _ = self.slot.static_changed(), if checking.is_none() => {
                    let c = ch.clone();
                    checking = Some(Box::pin(async move { self.apply_topic_change(&c).await }));
                }
                end = side(&mut checking) => {
                    checking = None;
                    if let Some(end) = end {
                        let _ = ws.close(None).await;
                        return end.with(ch);
                    }
                }
                // The channel expires soon: move to a fresh one while this one works.
                _ = sleep_until_opt(renew_at), if preparing.is_none() => {
                    renew_at = None;
                    attempts = 0;
                    preparing = Some((Box::pin(self.replacement()), "channel expires soon"));
                }
                _ = sleep_until_opt(retry.map(|r| r.0)), if preparing.is_none() => {
                    let reason = retry.take().map_or("retry", |r| r.1);
                    preparing = Some((Box::pin(self.replacement()), reason));
                }
                // The replacement is ready: it becomes the connection; the old one is
                // read a little longer, then let go.
                r = prepared(&mut preparing) => {
                    let reason = preparing.take().map_or("rotation", |p| p.1);
                    match r {
                        Ok((new_ch, new_ws)) => {
                            attempts = 0;
                            let old_ch = std::mem::replace(&mut ch, new_ch);
                            let old_ws = std::mem::replace(&mut ws, new_ws);
                            if let Some(mut d) = draining.take() {
                                let _ = d.ws.close(None).await;
                            }
                            draining = Some(Draining { channel: old_ch, ws: old_ws, since: Instant::now(), reason });
                            last_frame = Instant::now();
                            *last_seen = Some(last_frame);
                            pinged = false;
                            renew_at = rotate_at(&ch);
                            self.stats.rotated(crate::metrics::rotation_class(reason));
                            self.announce(&ch, None).await;
                        }
                        Err(e) => {
                            attempts += 1;
                            let again = attempts < ROTATION_ATTEMPTS;
                            tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, reason, error = %e,
                                attempt = attempts, retrying = again,
                                "rotation to a fresh channel failed; the current socket stays in use");
                            if again {
                                retry = Some((Instant::now() + ROTATION_RETRY, reason));
                            }
                        }
                    }
                }
                _ = sleep_until_opt(draining.as_ref().map(|d| d.since + OVERLAP)) => {
                    if let Some(mut d) = draining.take() {
                        let _ = d.ws.close(None).await;
                        tracing::info!(stream = %crate::genesys::StreamName(self.index), reason = d.reason,
                            old_channel_id = %d.channel.id, channel_id = %ch.id,
                            overlap_ms = d.since.elapsed().as_millis() as u64,
                            "rotated to a fresh channel without a gap");
                    }
                }
                msg = next_draining(&mut draining) => {
                    match msg {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(d) = &draining {
                                let old = d.channel.clone();
                                // Only its events matter now; what it asks is moot.
                                let _ = self.handle_text(&old, &t, Instant::now()).await;
                            }
                        }
                        Some(Ok(_)) => {}
                        None | Some(Err(_)) => {
                            if let Some(d) = draining.take() {
                                tracing::info!(stream = %crate::genesys::StreamName(self.index), reason = d.reason,
                                    old_channel_id = %d.channel.id, channel_id = %ch.id,
                                    overlap_ms = d.since.elapsed().as_millis() as u64,
                                    "rotated to a fresh channel without a gap (old socket closed by the server)");
                            }
                        }
                    }
                }
                // Topics the server dropped without a word are found here and re-added.
                _ = tokio::time::sleep_until(verify_at) => {
                    verify_at = Instant::now() + self.config.verify_every;
                    if checking.is_none() {
                        let c = ch.clone();
                        checking = Some(Box::pin(async move { self.verify(&c).await }));
                    }
                }
                // Events were flowing and stopped, though the socket may still send
                // heartbeats: a stalled socket or topics dropped without a word look
                // like this. A ping (a stall answers nothing) and a subscription check.
                _ = sleep_until_opt(last_event.map(|t| t + self.config.silence_check)) => {
                    last_event = None;
                    let verify = checking.is_none()
                        && silence_verified.is_none_or(|t| t.elapsed() >= SILENCE_VERIFY_SPACING);
                    // Debug only: a quiet moment in a quiet org is no news; what the
                    // checks find (a socket that does not answer, topics missing) is
                    // logged at warn level.
                    tracing::debug!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id,
                        silent_ms = self.config.silence_check.as_millis() as u64, verify,
                        "events stopped on this channel: checking the socket and its subscriptions");
                    if pong_by.is_none() {
                        if let Err(e) = ws.send(Message::text(r#"{"message":"ping"}"#)).await {
                            return LiveEnd::Failed(ch, format!("cannot send ping: {e}"));
                        }
                        pong_by = Some(Instant::now() + PONG_WITHIN.min(self.config.heartbeat_timeout));
                    }
                    if verify {
                        silence_verified = Some(Instant::now());
                        let c = ch.clone();
                        checking = Some(Box::pin(async move { self.verify(&c).await }));
                    }
                }
                _ = sleep_until_opt(pong_by) => {
                    let _ = ws.close(None).await;
                    return LiveEnd::Failed(ch, format!(
                        "no pong within {} ms of a ping sent when events stopped (socket stalled)",
                        PONG_WITHIN.min(self.config.heartbeat_timeout).as_millis()));
                }
                // Silence: ping once, then declare the socket dead.
                _ = tokio::time::sleep_until(silence_deadline) => {
                    if pinged {
                        let _ = ws.close(None).await;
                        return LiveEnd::Failed(ch, format!(
                            "no heartbeat or pong for {} ms", self.config.heartbeat_timeout.as_millis()));
                    }
                    pinged = true;
                    tracing::warn!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id,
                        silent_ms = self.config.ping_after.as_millis() as u64,
                        "no heartbeat: socket silent; sending a ping");
                    if let Err(e) = ws.send(Message::text(r#"{"message":"ping"}"#)).await {
                        return LiveEnd::Failed(ch, format!("cannot send ping: {e}"));
                    }
                }
            }
        }
    }

    /// After `no_longer_subscribed`: the topics again, in place, then a resync of the
    /// stretch (events pushed while the channel had no topics are lost).
    async fn resubscribe(&self, ch: &Channel) -> Option<Ending> {
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
    async fn apply_topic_change(&self, ch: &Channel) -> Option<Ending> {
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

    async fn gap(&self, gap: Duration, reason: &'static str, silent: bool) {
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
    async fn verify(&self, ch: &Channel) -> Option<Ending> {
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

    /// Handles one text frame.
    async fn handle_text(&self, ch: &Channel, text: &str, received: Instant) -> Action {
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
            } => {
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
}
