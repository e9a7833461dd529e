//! The misbehaviours a test can switch on through `SimHandle`, beyond the
//! `Faults` flags: socket and channel loss, silent or announced topic loss,
//! HTTP errors, malformed frames, and the event log that lets a test prove
//! what reached the daemon. See the module doc of `sim` for the overview.

use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use serde_json::json;

use super::SimHandle;
use super::channels::{Scope, socket_closing_frame};
use super::rest_faults::{ActiveFault, Budget};
use super::world::lock;

/// What "for ever" means for a fault duration too large for `Instant`.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// HTTP errors to answer instead of serving requests (`SimHandle::fail_requests`).
#[derive(Clone, Debug)]
pub struct RestFault {
    /// Only requests whose path starts with this (e.g.
    /// `"/api/v2/notifications/channels"`, `"/api/v2/conversations"`,
    /// `"/oauth/token"`, `"/channels/"` for WebSocket upgrades); `""` = every request.
    pub path_prefix: String,
    /// HTTP status to answer (429, 500, 502, 503, 401, ...), as a Genesys `ErrorBody`.
    pub status: u16,
    /// `Retry-After` seconds to send (429/503), if any.
    pub retry_after: Option<u64>,
    /// How many matching requests get it; then normal service resumes.
    pub count: usize,
}

/// One event frame the simulator published, as numbered in `SimHandle::event_log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The conversation the event is about.
    pub conversation_id: String,
    /// 1, 2, 3, ... per conversation, one per frame and topic, in publish order.
    pub seq: u64,
    /// The topic it was published on, as the frame's `topicName`.
    pub topic: String,
    /// Sockets the frame was handed to (0: nobody was subscribed and attached).
    pub delivered: usize,
}

impl SimHandle {
    /// Pushes a `v2.system.socket_closing` frame to every socket (no subscription needed).
    pub fn send_socket_closing(&self) {
        self.world().broadcast(socket_closing_frame());
    }

    /// Maintenance as Genesys announces it: pushes `v2.system.socket_closing` to
    /// every attached socket (recorded once, as by `send_socket_closing`) and,
    /// `after` later, closes each of those sockets abruptly (no close frame). A
    /// socket attached to a channel in between (the client's replacement) is
    /// not closed. Channels and subscriptions stay. Needs a Tokio runtime.
    pub fn socket_closing_then_close(&self, after: Duration) {
        self.world().socket_closing_then_close(after);
    }

    /// Closes every socket abruptly (no close frame); channels and subscriptions stay.
    pub fn drop_sockets(&self) {
        self.world().drop_sockets(Scope::Every);
    }

    /// Closes abruptly the sockets of the channels `scope` picks.
    pub fn drop_sockets_on(&self, scope: Scope) {
        self.world().drop_sockets(scope);
    }

    /// An outage: every socket closed abruptly, and for `d` new WebSocket connections
    /// are refused (503) and every API call is answered 503, so events published
    /// meanwhile reach nobody. Needs a Tokio runtime.
    pub fn outage(&self, d: Duration) {
        let world = self.world();
        *lock(&world.refuse_sockets_until) = Some(Instant::now() + d);
        self.fail_requests_for("/api/", 503, None, d);
        world.drop_sockets(Scope::Every);
    }

    /// For `d` from now, WebSocket connections are refused (503), while the REST API
    /// keeps working. Sockets attached now stay (see `drop_sockets` to close them).
    pub fn refuse_sockets_for(&self, d: Duration) {
        let now = Instant::now();
        *lock(&self.world().refuse_sockets_until) =
            Some(now.checked_add(d).unwrap_or(now + FOREVER));
    }

    /// Every issued token becomes invalid: the next API call with one gets 401.
    pub fn revoke_tokens(&self) {
        self.world().revoke_tokens();
    }

    /// The access tokens issued and still valid (for tests proving none is logged).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.world().issued_tokens()
    }

    /// Removes every channel at once, as if expired or evicted: each attached socket
    /// gets the text frame `{"result":"404"}` and is then closed abruptly, and
    /// later REST calls on the channel answer 404. The `404` frame is not a
    /// notification, so it is not in `pushed_frames()`.
    pub fn expire_channels(&self) {
        self.world().expire_channels(Scope::Every);
    }

    /// Removes the channels `scope` picks, as `expire_channels` does.
    pub fn expire_channels_on(&self, scope: Scope) {
        self.world().expire_channels(scope);
    }

    /// Channels created from now on live `ttl` instead of `SimConfig::channel_ttl`
    /// (existing channels keep theirs). See `SimConfig::channel_ttl` for what
    /// expiry and renewal do.
    pub fn expire_channels_after(&self, ttl: Duration) {
        self.world().set_channel_ttl(ttl);
    }

    /// For every channel with an attached socket: its topics are cleared and the
    /// socket gets `v2.system.no_longer_subscribed.{channelId}` with a
    /// `SystemMessageSystemMessage` body (`systemTopicType: no_longer_subscribed`,
    /// `reason: another_channel_subscribed`, `channelId`, `message`), recorded in
    /// `pushed_frames()` once per socket. The socket stays open; channels
    /// without a socket keep their topics.
    pub fn no_longer_subscribed(&self) {
        self.world().no_longer_subscribed(Scope::Every);
    }

    /// `no_longer_subscribed` for the channels `scope` picks.
    pub fn no_longer_subscribed_on(&self, scope: Scope) {
        self.world().no_longer_subscribed(scope);
    }

    /// Every channel's topics are cleared without telling anyone: sockets stay
    /// open, heartbeats go on, events simply stop arriving, and
    /// `GET .../subscriptions` lists none.
    pub fn drop_topics_silently(&self) {
        self.world().drop_topics_silently(Scope::Every);
    }

    /// `drop_topics_silently` for the channels `scope` picks.
    pub fn drop_topics_silently_on(&self, scope: Scope) {
        self.world().drop_topics_silently(scope);
    }

    /// From now on the next `f.count` requests whose path starts with
    /// `f.path_prefix` are answered `f.status` without reaching their handler
    /// (no auth check, no effect): an `ErrorBody` whose `code` fits the status
    /// (401 `bad.credentials` like a revoked token, 429 `too.many.requests` with
    /// the rate-limit fields, 503 `service.unavailable`, ...), `Retry-After` if
    /// given, `ININ-Correlation-Id`. On `/oauth/token` a 400/401 uses the OAuth
    /// error shape instead. Faulted requests stay in `requests()` with the status
    /// answered. Several faults may be in force; the first added that matches
    /// answers. `count: 0` does nothing.
    pub fn fail_requests(&self, f: RestFault) {
        self.world().add_rest_fault(ActiveFault {
            method: None,
            path_prefix: f.path_prefix,
            exact: false,
            status: f.status,
            retry_after: f.retry_after,
            budget: Budget::Count(f.count),
        });
    }

    /// Like `fail_requests`, but every matching request gets the error for
    /// `duration` from now, however many there are.
    pub fn fail_requests_for(
        &self,
        path_prefix: &str,
        status: u16,
        retry_after: Option<u64>,
        duration: Duration,
    ) {
        let now = Instant::now();
        let until = now.checked_add(duration).unwrap_or(now + FOREVER);
        self.world().add_rest_fault(ActiveFault {
            method: None,
            path_prefix: path_prefix.to_owned(),
            exact: false,
            status,
            retry_after,
            budget: Budget::Until(until),
        });
    }

    /// Like `fail_requests_for`, but only requests with `method` on exactly `path`
    /// (e.g. `POST /api/v2/notifications/channels`, channel creation, while the
    /// subscription calls under it are served).
    pub fn fail_endpoint_for(
        &self,
        method: &str,
        path: &str,
        status: u16,
        retry_after: Option<u64>,
        duration: Duration,
    ) {
        let now = Instant::now();
        let until = now.checked_add(duration).unwrap_or(now + FOREVER);
        self.world().add_rest_fault(ActiveFault {
            method: Some(method.to_owned()),
            path_prefix: path.to_owned(),
            exact: true,
            status,
            retry_after,
            budget: Budget::Until(until),
        });
    }

    /// Ends every REST fault now.
    pub fn clear_request_faults(&self) {
        self.world().clear_rest_faults();
    }

    /// Pushes `text` as a text frame to every attached socket, whatever it is
    /// (malformed JSON, wrong types, unknown topics). Not a notification, so
    /// not in `pushed_frames()`.
    pub fn push_raw_text(&self, text: &str) {
        self.world()
            .push_raw(Message::Text(Utf8Bytes::from(text.to_owned())));
    }

    /// Pushes a binary frame to every attached socket (Genesys sends only text).
    /// Not in `pushed_frames()`.
    pub fn push_binary(&self, bytes: Vec<u8>) {
        self.world().push_raw(Message::Binary(Bytes::from(bytes)));
    }

    /// Pushes to every attached socket a valid `channel.metadata` frame whose
    /// `message` is padded with `x` so the frame is exactly `bytes` bytes (or
    /// the 59-byte minimum if `bytes` is smaller). It tests the client's size
    /// limits, not the platform, so it is not in `pushed_frames()`.
    pub fn push_oversized(&self, bytes: usize) {
        self.world()
            .push_raw(Message::Text(Utf8Bytes::from(oversized(bytes))));
    }

    /// Every conversation, detail and flow-metrics frame published (the last
    /// 100,000, oldest first), numbered per conversation, with how many sockets
    /// took it. A frame held back by `reorder_events` counts once it is sent;
    /// a frame on a topic nobody subscribed (or whose channel has no socket)
    /// shows `delivered: 0`.
    pub fn event_log(&self) -> Vec<EventRecord> {
        self.world().event_log()
    }
}

/// A `channel.metadata` frame of exactly `len` bytes (or the shortest one).
fn oversized(len: usize) -> String {
    let empty = json!({ "topicName": "channel.metadata", "eventBody": { "message": "" } });
    let base = empty.to_string();
    // `x` needs no JSON escaping: each adds exactly one byte.
    let pad = "x".repeat(len.saturating_sub(base.len()));
    json!({ "topicName": "channel.metadata", "eventBody": { "message": pad } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_frames_have_the_exact_size_and_stay_valid_json() {
        let min = oversized(0).len();
        assert_eq!(min, 59);
        for len in [min, min + 1, 70_000] {
            let text = oversized(len);
            assert_eq!(text.len(), len);
            let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(v["topicName"], "channel.metadata");
        }
    }
}
