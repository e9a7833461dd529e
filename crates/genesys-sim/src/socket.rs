//! The notification WebSocket: one connection per channel, heartbeats, ping/pong,
//! and delivery of the frames the world queues for the channel.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{
    Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::channels::SOCKET_QUEUE;
use super::rest::ApiError;
use super::world::World;

/// `GET /channels/{id}` with an upgrade. The socket is attached before the 101
/// answer goes out, so a frame published right after the client's connect
/// returns is already queued for it.
pub(crate) async fn upgrade(
    State(world): State<Arc<World>>,
    Path(channel_id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if world.sockets_refused() {
        return ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "service.unavailable",
            "Service unavailable (simulated outage).",
        )
        .into_response();
    }
    if !world.touch_channel(&channel_id) {
        return ApiError::not_found(format!("Channel {channel_id} was not found.")).into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rej) => {
            return ApiError::new(rej.status(), "bad.request", rej.body_text()).into_response();
        }
    };
    let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
    let Some(conn_id) = world.attach_socket(&channel_id, tx) else {
        return ApiError::not_found(format!("Channel {channel_id} was not found.")).into_response();
    };
    ws.on_upgrade(move |socket| run(world, channel_id, conn_id, socket, rx))
        .into_response()
}

/// A `channel.metadata` frame (heartbeat or pong), recorded as pushed.
fn channel_metadata(world: &World, message: &str) -> Message {
    let frame = json!({ "topicName": "channel.metadata", "eventBody": { "message": message } });
    let text = Utf8Bytes::from(frame.to_string());
    world.record_frame(frame);
    Message::Text(text)
}

/// The application-level health check `{"message":"ping"}` (not an RFC 6455 ping).
fn is_ping(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .is_some_and(|v| v.get("message").and_then(Value::as_str) == Some("ping"))
}

/// How the loop ended decides whether the peer gets a close frame.
enum End {
    /// The client closed: answer its close handshake.
    Polite,
    /// Replaced, dropped by the test, too slow, or shutdown: just drop the TCP connection.
    Abrupt,
}

async fn run(
    world: Arc<World>,
    channel_id: String,
    conn_id: u64,
    socket: WebSocket,
    mut rx: mpsc::Receiver<Message>,
) {
    tracing::debug!(channel_id = %channel_id, conn_id, "sim: socket connected");
    let (mut sink, mut stream) = socket.split();
    // `interval` panics on a zero period and `Instant + huge` overflows: clamp.
    let period = world
        .heartbeat_interval
        .clamp(Duration::from_millis(1), Duration::from_secs(365 * 86_400));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = loop {
        let out = tokio::select! {
            // The sim is shutting down.
            _ = world.cancel.cancelled() => break End::Abrupt,
            // A frame for this channel (text, or binary from a fault); `None`
            // means the world let go of this socket.
            queued = rx.recv() => match queued {
                Some(msg) => msg,
                None => break End::Abrupt,
            },
            // Genesys sends a heartbeat on every socket, subscribed or not.
            _ = heartbeat.tick() => {
                if world.is_stalled(conn_id) {
                    continue;
                }
                channel_metadata(&world, "WebSocket Heartbeat")
            }
            // What the client sends: ping gets pong, close ends, the rest is ignored.
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(t))) if is_ping(&t) => {
                    if world.is_stalled(conn_id) {
                        continue;
                    }
                    channel_metadata(&world, "pong")
                }
                Some(Ok(Message::Close(_))) => break End::Polite,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break End::Abrupt,
            },
        };
        if sink.send(out).await.is_err() {
            break End::Abrupt;
        }
    };
    if let End::Polite = end {
        // Bounded, so a client that stopped reading cannot hold the task.
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
    world.detach_socket(&channel_id, conn_id);
    tracing::debug!(channel_id = %channel_id, conn_id, "sim: socket ended");
}
