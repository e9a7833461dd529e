//! One live socket and what runs beside it, from the moment it is live to its end.

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{
    Action, Draining, Ending, OVERLAP, PONG_WITHIN, Preparing, ROTATION_ATTEMPTS, ROTATION_RETRY,
    SILENCE_VERIFY_SPACING, Side, Ws, next_draining, prepared, rotation_time, side,
    sleep_until_opt,
};
use crate::genesys::api::Channel;
use crate::genesys::stream::{ChannelStream, LiveEnd, MAX_FRAME_BYTES};
/// One live socket and what runs beside it, from the moment it is live to its end: the
/// reading, the liveness deadlines, the rotation to a fresh channel and the REST checks.
/// Each arm of [`Conn::read`]'s loop is one method; `Some(end)` from one ends the socket.
pub(super) struct Conn<'s> {
    s: &'s ChannelStream,
    ch: Channel,
    ws: Ws,
    /// When any frame was last read: the silence deadline runs from it.
    last_frame: Instant,
    /// When a text frame was last read (or the socket went live): what a later gap is
    /// counted from.
    pub(super) last_seen: Instant,
    /// A ping was sent for a silence: the next silence ends the socket.
    pinged: bool,
    /// When to rotate before the channel expires.
    renew_at: Option<Instant>,
    /// A replacement being made ready, and why.
    preparing: Option<(Preparing<'s>, &'static str)>,
    /// A failed rotation is tried again at this time, for this reason.
    retry: Option<(Instant, &'static str)>,
    /// Failed rotation attempts in a row.
    attempts: u32,
    /// The old socket of a rotation, read during the overlap.
    draining: Option<Draining>,
    /// When the periodic subscription check is due.
    verify_at: Instant,
    /// A REST check or repair running beside the reading.
    checking: Option<Side<'s>>,
    /// When the last event was read, while events flow (cleared once a silence has
    /// been checked, so one silence costs one check).
    last_event: Option<Instant>,
    /// A ping was sent because events stopped: the socket must answer by then.
    pong_by: Option<Instant>,
    /// When events stopping last led to a subscription check.
    silence_verified: Option<Instant>,
}

impl<'s> Conn<'s> {
    pub(super) fn new(s: &'s ChannelStream, ch: Channel, ws: Ws) -> Conn<'s> {
        s.event_seen
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        Conn {
            s,
            renew_at: rotation_time(&ch, s.index),
            ch,
            ws,
            last_frame: now,
            last_seen: now,
            pinged: false,
            preparing: None,
            retry: None,
            attempts: 0,
            draining: None,
            verify_at: now + s.config.verify_every,
            checking: None,
            last_event: None,
            pong_by: None,
            silence_verified: None,
        }
    }

    fn stream(&self) -> crate::genesys::StreamName {
        crate::genesys::StreamName(self.s.index)
    }

    /// Reads until the socket ends.
    pub(super) async fn read(&mut self) -> LiveEnd {
        let s = self.s;
        loop {
            let silence_deadline = self.last_frame
                + if self.pinged {
                    s.config.heartbeat_timeout
                } else {
                    s.config.ping_after
                };
            let end = tokio::select! {
                // Reading comes first: frames already queued must be read before a
                // silence deadline is judged.
                biased;
                _ = s.cancel.cancelled() => Some(self.cancelled().await),
                msg = self.ws.next() => self.on_message(msg).await,
                // A reload changed the configured topics: write the whole set in place.
                _ = s.slot.static_changed(), if self.checking.is_none() => {
                    let c = self.ch.clone();
                    self.checking = Some(Box::pin(async move { s.apply_topic_change(&c).await }));
                    None
                }
                end = side(&mut self.checking) => {
                    self.checking = None;
                    self.end_with(end).await
                }
                // The channel expires soon: move to a fresh one while this one works.
                _ = sleep_until_opt(self.renew_at), if self.preparing.is_none() => {
                    self.renew_at = None;
                    self.attempts = 0;
                    self.prepare("channel expires soon");
                    None
                }
                _ = sleep_until_opt(self.retry.map(|r| r.0)), if self.preparing.is_none() => {
                    let reason = self.retry.take().map_or("retry", |r| r.1);
                    self.prepare(reason);
                    None
                }
                r = prepared(&mut self.preparing) => {
                    self.on_prepared(r).await;
                    None
                }
                _ = sleep_until_opt(self.draining.as_ref().map(|d| d.since + OVERLAP)) => {
                    self.overlap_over("").await;
                    None
                }
                msg = next_draining(&mut self.draining) => {
                    self.on_draining(msg).await;
                    None
                }
                // Topics the server dropped without a word are found here and re-added.
                _ = tokio::time::sleep_until(self.verify_at) => {
                    self.verify_at = Instant::now() + s.config.verify_every;
                    if self.checking.is_none() {
                        self.check();
                    }
                    None
                }
                _ = sleep_until_opt(self.last_event.map(|t| t + s.config.silence_check)) => {
                    self.on_events_stopped().await
                }
                _ = sleep_until_opt(self.pong_by) => Some(self.no_pong().await),
                // Silence: ping once, then declare the socket dead.
                _ = tokio::time::sleep_until(silence_deadline) => self.on_silence().await,
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Shutdown: close politely; the server drops the channel's socket.
    async fn cancelled(&mut self) -> LiveEnd {
        if let Some(mut d) = self.draining.take() {
            let _ = d.ws.close(None).await;
        }
        let _ = self.ws.close(None).await;
        LiveEnd::Cancelled
    }

    /// What the socket read: a text frame is handled, anything else ends the socket or
    /// is skipped.
    async fn on_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Option<LiveEnd> {
        let text = match msg {
            None => return Some(self.failed("socket closed by the server".into())),
            Some(Err(e)) => {
                let why = if matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)) {
                    self.s.stats.skipped(crate::telemetry::Skipped::Oversized);
                    format!(
                        "a frame over {} MiB cannot be skipped by the socket library: {e}",
                        MAX_FRAME_BYTES >> 20
                    )
                } else {
                    format!("socket error: {e}")
                };
                return Some(self.failed(why));
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                let why = frame
                    .map(|f| {
                        let reason: String = f.reason.chars().take(200).collect();
                        format!("{} {reason}", u16::from(f.code))
                    })
                    .unwrap_or_default();
                let why = format!("socket closed by the server {why}");
                return Some(self.failed(why.trim_end().to_string()));
            }
            Some(Ok(Message::Binary(b))) => {
                self.s.stats.skipped(crate::telemetry::Skipped::Binary);
                if let Some(held) = self.s.stats.log_limit.allow("binary") {
                    tracing::warn!(stream = %self.stream(), channel_id = %self.ch.id, bytes = b.len(),
                        held_back = held, "skipping a binary frame (Genesys sends text)");
                }
                self.last_frame = Instant::now();
                self.pinged = false;
                return None;
            }
            // Transport pings are answered by tungstenite.
            Some(Ok(_)) => return None,
        };
        self.last_frame = Instant::now();
        self.last_seen = self.last_frame;
        self.pinged = false;
        self.pong_by = None;
        let action = self.s.handle_text(&self.ch, &text, self.last_frame).await;
        if self
            .s
            .event_seen
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.last_event = Some(self.last_frame);
        }
        match action {
            Action::Continue => None,
            Action::End(end) => self.end_with(Some(end)).await,
            Action::Rotate(reason) => {
                if self.preparing.is_none() && self.draining.is_none() {
                    self.attempts = 0;
                    self.retry = None;
                    self.prepare(reason);
                }
                None
            }
            Action::Resubscribe => {
                let (s, c) = (self.s, self.ch.clone());
                // Replaces a running check: the re-PUT covers what it would find.
                self.checking = Some(Box::pin(async move { s.resubscribe(&c).await }));
                None
            }
        }
    }

    /// The socket failed: it ends, its channel kept for the state machine to judge.
    fn failed(&self, why: String) -> LiveEnd {
        LiveEnd::Failed(self.ch.clone(), why)
    }

    /// A check or a frame said the channel must end (closed politely), else nothing.
    async fn end_with(&mut self, end: Option<Ending>) -> Option<LiveEnd> {
        let end = end?;
        let _ = self.ws.close(None).await;
        Some(end.with(self.ch.clone()))
    }

    /// Starts making a replacement channel ready.
    fn prepare(&mut self, reason: &'static str) {
        self.preparing = Some((Box::pin(self.s.replacement()), reason));
    }

    /// Starts the subscription check beside the reading.
    fn check(&mut self) {
        let (s, c) = (self.s, self.ch.clone());
        self.checking = Some(Box::pin(async move { s.verify(&c).await }));
    }

    /// The replacement is ready: it becomes the connection; the old one is read a
    /// little longer, then let go. A failed one is tried again a few times.
    async fn on_prepared(&mut self, r: Result<(Channel, Ws), String>) {
        let reason = self.preparing.take().map_or("rotation", |p| p.1);
        match r {
            Ok((new_ch, new_ws)) => {
                self.attempts = 0;
                let old_ch = std::mem::replace(&mut self.ch, new_ch);
                let old_ws = std::mem::replace(&mut self.ws, new_ws);
                if let Some(mut d) = self.draining.take() {
                    let _ = d.ws.close(None).await;
                }
                self.draining = Some(Draining {
                    channel: old_ch,
                    ws: old_ws,
                    since: Instant::now(),
                    reason,
                });
                self.last_frame = Instant::now();
                self.last_seen = self.last_frame;
                self.pinged = false;
                self.renew_at = rotation_time(&self.ch, self.s.index);
                self.s.stats.rotated(crate::metrics::rotation_class(reason));
                self.s.announce(&self.ch, None).await;
            }
            Err(e) => {
                self.attempts += 1;
                let again = self.attempts < ROTATION_ATTEMPTS;
                tracing::warn!(stream = %self.stream(), channel_id = %self.ch.id, reason, error = %e,
                    attempt = self.attempts, retrying = again,
                    "rotation to a fresh channel failed; the current socket stays in use");
                if again {
                    self.retry = Some((Instant::now() + ROTATION_RETRY, reason));
                }
            }
        }
    }

    /// The rotation's old socket is let go (`how`: why, when not at the overlap's end).
    async fn overlap_over(&mut self, how: &'static str) {
        let Some(mut d) = self.draining.take() else {
            return;
        };
        if how.is_empty() {
            let _ = d.ws.close(None).await;
        }
        tracing::info!(stream = %self.stream(), reason = d.reason,
            old_channel_id = %d.channel.id, channel_id = %self.ch.id,
            overlap_ms = d.since.elapsed().as_millis() as u64,
            "rotated to a fresh channel without a gap{how}");
    }

    /// A frame on the rotation's old socket: only its events matter now.
    async fn on_draining(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        match msg {
            Some(Ok(Message::Text(t))) => {
                if let Some(d) = &self.draining {
                    let old = d.channel.clone();
                    // What it asks is moot.
                    let _ = self.s.handle_text(&old, &t, Instant::now()).await;
                }
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => {
                self.overlap_over(" (old socket closed by the server)")
                    .await;
            }
        }
    }

    /// Events were flowing and stopped, though the socket may still send heartbeats: a
    /// stalled socket or topics dropped without a word look like this. A ping (a stall
    /// answers nothing) and a subscription check.
    async fn on_events_stopped(&mut self) -> Option<LiveEnd> {
        let config = &self.s.config;
        self.last_event = None;
        let verify = self.checking.is_none()
            && self
                .silence_verified
                .is_none_or(|t| t.elapsed() >= SILENCE_VERIFY_SPACING);
        // Debug only: a quiet moment in a quiet org is no news; what the checks find (a
        // socket that does not answer, topics missing) is logged at warn level.
        tracing::debug!(stream = %self.stream(), channel_id = %self.ch.id,
            silent_ms = config.silence_check.as_millis() as u64, verify,
            "events stopped on this channel: checking the socket and its subscriptions");
        if self.pong_by.is_none() {
            if let Some(end) = self.ping().await {
                return Some(end);
            }
            self.pong_by = Some(Instant::now() + PONG_WITHIN.min(config.heartbeat_timeout));
        }
        if verify {
            self.silence_verified = Some(Instant::now());
            self.check();
        }
        None
    }

    async fn ping(&mut self) -> Option<LiveEnd> {
        match self.ws.send(Message::text(r#"{"message":"ping"}"#)).await {
            Ok(()) => None,
            Err(e) => Some(self.failed(format!("cannot send ping: {e}"))),
        }
    }

    async fn no_pong(&mut self) -> LiveEnd {
        let _ = self.ws.close(None).await;
        self.failed(format!(
            "no pong within {} ms of a ping sent when events stopped (socket stalled)",
            PONG_WITHIN.min(self.s.config.heartbeat_timeout).as_millis()
        ))
    }

    /// No frame for `ping_after`: ping once; no frame for `heartbeat_timeout` after
    /// that: the socket is dead.
    async fn on_silence(&mut self) -> Option<LiveEnd> {
        if self.pinged {
            let _ = self.ws.close(None).await;
            return Some(self.failed(format!(
                "no heartbeat or pong for {} ms",
                self.s.config.heartbeat_timeout.as_millis()
            )));
        }
        self.pinged = true;
        tracing::warn!(stream = %self.stream(), channel_id = %self.ch.id,
            silent_ms = self.s.config.ping_after.as_millis() as u64,
            "no heartbeat: socket silent; sending a ping");
        self.ping().await
    }
}
