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
//!
//! Here: connecting, the replacement channel, and the socket's start and end. `conn`
//! holds one live socket's loop (a method per arm), `text` one frame's handling, and
//! `checks` the REST checks and repairs that run beside the reading.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::api::Channel;
use super::stream::{
    CONNECT_TIMEOUT, ChannelStream, LiveEnd, MAX_FRAME_BYTES, RENEW_BEFORE_EXPIRY, StreamEvent,
    expires_in,
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

mod checks;
mod conn;
mod text;

use conn::Conn;

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
        let connected = tokio::select! {
            _ = self.cancel.cancelled() => return LiveEnd::Cancelled,
            r = self.connect(&ch) => r,
        };
        let (end, last_seen) = match connected {
            Err(e) => (e.into_end(ch), None),
            Ok(ws) => {
                tracing::info!(stream = %crate::genesys::StreamName(self.index), channel_id = %ch.id, "socket live");
                self.announce(&ch, down_since.take().map(|t| t.elapsed()))
                    .await;
                let mut conn = Conn::new(self, ch, ws);
                let end = conn.read().await;
                (end, Some(conn.last_seen))
            }
        };
        if !matches!(end, LiveEnd::Cancelled) && down_since.is_none() {
            // Counted from the last frame read: a socket that went silent before it was
            // declared dead may have missed events from then on.
            *down_since = Some(last_seen.unwrap_or_else(Instant::now));
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
}
