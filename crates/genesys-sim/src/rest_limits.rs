//! The org's API rate limit and held (slow) requests.
//!
//! - Rate limit (`SimConfig::rate_limit`, `SimHandle::set_rate_limit`): at most N API
//!   requests (`/api/...`; never `/oauth/token` or the WebSocket) in any sliding window;
//!   one more is answered 429 `too.many.requests` with the limit's own numbers and a
//!   `Retry-After` of the whole seconds until the oldest request in the window leaves it.
//!   Only requests that reach the limiter count: an injected fault answers first, and a
//!   request answered 429 does not use up the allowance.
//! - Held requests (`SimHandle::delay_requests`, `SimHandle::hold_requests`): the next
//!   matching requests are held for a while on arrival (logged with status 0 meanwhile),
//!   then served normally, as a slow platform would. That lets a test kill a client while
//!   its request is in flight, and choose what the platform does with it:
//!   `completes_without_client` (the default of `delay_requests`) serves it even if the
//!   client has gone, as a platform that already accepted the request would; otherwise a
//!   request whose client went away while it was held is never served and is logged
//!   with status 499 (nginx's "client closed request").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::SimHandle;
use super::ids::uuid_v4;
use super::rest::CORRELATION_HEADER;
use super::world::{World, lock};

/// Status logged for a held request whose client went away before it was served.
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Requests to hold before serving them (`SimHandle::hold_requests`).
#[derive(Clone, Debug)]
pub struct RequestDelay {
    /// Only requests whose path starts with this (`""`: every request).
    pub path_prefix: String,
    /// Only this method (`"PATCH"`, `"POST"`, ...; case-insensitive); `None`: any.
    pub method: Option<String>,
    /// How long each is held before it is served.
    pub delay: Duration,
    /// How many matching requests are held; later ones are served at once.
    pub count: usize,
    /// Serve a held request even if its client went away meanwhile (the platform had
    /// it already); `false`: such a request is dropped unserved and logged as 499.
    pub completes_without_client: bool,
}

/// The sliding window of the org's rate limit.
#[derive(Debug)]
pub(crate) struct RateWindow {
    limit: u32,
    window: Duration,
    /// Arrival times of the requests let through, oldest first, within `window`.
    accepted: VecDeque<Instant>,
}

impl RateWindow {
    pub(crate) fn new((limit, window): (u32, Duration)) -> Self {
        RateWindow {
            limit,
            window,
            accepted: VecDeque::new(),
        }
    }

    /// Lets one request through at `now`, or says how long until one may go
    /// (rounded up to whole seconds, at least 1).
    fn admit(&mut self, now: Instant) -> Result<(), u64> {
        while self
            .accepted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.accepted.pop_front();
        }
        if (self.accepted.len() as u64) < u64::from(self.limit) {
            self.accepted.push_back(now);
            return Ok(());
        }
        let frees_at = self
            .accepted
            .front()
            .map_or(now + self.window, |t| *t + self.window);
        let wait = frees_at.saturating_duration_since(now);
        Err(wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

/// A rate-limited request's answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limited {
    limit: u32,
    window_secs: u64,
    retry_after: u64,
}

/// One hold in force.
#[derive(Clone, Debug)]
struct ActiveDelay {
    spec: RequestDelay,
    left: usize,
}

/// What to do with one held request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hold {
    pub(crate) delay: Duration,
    pub(crate) completes_without_client: bool,
}

/// The state this module keeps in `World`.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    rate: Option<RateWindow>,
    delays: Vec<ActiveDelay>,
}

impl Limits {
    pub(crate) fn new(rate: Option<(u32, Duration)>) -> Self {
        Limits {
            rate: rate.map(RateWindow::new),
            delays: Vec::new(),
        }
    }
}

impl World {
    pub(crate) fn set_rate_limit(&self, rate: Option<(u32, Duration)>) {
        lock(&self.limits).rate = rate.map(RateWindow::new);
    }

    /// Counts an API request against the rate limit; `Some` when it is over it.
    pub(crate) fn take_rate_limit(&self, path: &str) -> Option<Limited> {
        if !path.starts_with("/api/") {
            return None;
        }
        let mut limits = lock(&self.limits);
        let rate = limits.rate.as_mut()?;
        match rate.admit(Instant::now()) {
            Ok(()) => None,
            Err(retry_after) => Some(Limited {
                limit: rate.limit,
                window_secs: rate.window.as_secs_f64().ceil() as u64,
                retry_after,
            }),
        }
    }

    fn add_delay(&self, spec: RequestDelay) {
        if spec.count == 0 {
            return;
        }
        let left = spec.count;
        lock(&self.limits).delays.push(ActiveDelay { spec, left });
    }

    fn clear_delays(&self) {
        lock(&self.limits).delays.clear();
    }

    /// The first hold in force for this request (in the order they were added), with
    /// one use taken from it; spent holds are forgotten.
    pub(crate) fn take_hold(&self, method: &str, path: &str) -> Option<Hold> {
        let mut limits = lock(&self.limits);
        let d = limits.delays.iter_mut().find(|d| {
            path.starts_with(d.spec.path_prefix.as_str())
                && d.spec
                    .method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        d.left -= 1;
        let hold = Hold {
            delay: d.spec.delay,
            completes_without_client: d.spec.completes_without_client,
        };
        limits.delays.retain(|d| d.left > 0);
        Some(hold)
    }
}

/// The 429 of the org's rate limit: an `ErrorBody` with the limit's own numbers,
/// `Retry-After`, `ININ-Correlation-Id`.
pub(crate) fn answer(l: Limited) -> Response {
    let ctx = uuid_v4();
    let body = json!({
        "message": format!(
            "Rate limit exceeded the maximum [{}] requests within [{}] seconds",
            l.limit, l.window_secs
        ),
        "code": "too.many.requests",
        "status": 429,
        "contextId": ctx,
        "details": [],
        "errors": [],
        "messageWithParams": "Rate limit exceeded the maximum [{0}] requests within [{1}] seconds",
        "messageParams": { "0": l.limit.to_string(), "1": l.window_secs.to_string() },
        "limit": { "key": "client.credentials.token.rate.per.minute",
                   "namespace": "platform.api", "value": l.limit },
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx) {
        headers.insert(CORRELATION_HEADER, v);
    }
    headers.insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(l.retry_after),
    );
    resp
}

impl SimHandle {
    /// Sets (or, with `None`, lifts) the org's API rate limit from now on: at most
    /// `requests` API calls in any `window`; one more gets 429 with `Retry-After`
    /// (see `SimConfig::rate_limit`). Changing it starts an empty window.
    pub fn set_rate_limit(&self, rate: Option<(u32, Duration)>) {
        self.world().set_rate_limit(rate);
    }

    /// How many requests were answered 429 so far (rate limit and injected faults).
    pub fn rate_limited(&self) -> usize {
        self.requests().iter().filter(|r| r.status == 429).count()
    }

    /// The next `count` requests whose path starts with `path_prefix` (and, when given,
    /// whose method is `method`) are held `delay` on arrival, then served normally,
    /// even if their client has gone meanwhile (the platform had them already). While
    /// held they are in `requests()` with status 0.
    pub fn delay_requests(
        &self,
        path_prefix: &str,
        method: Option<&str>,
        delay: Duration,
        count: usize,
    ) {
        self.hold_requests(RequestDelay {
            path_prefix: path_prefix.to_owned(),
            method: method.map(str::to_owned),
            delay,
            count,
            completes_without_client: true,
        });
    }

    /// `delay_requests` with every choice spelt out (see [`RequestDelay`]).
    pub fn hold_requests(&self, d: RequestDelay) {
        self.world().add_delay(d);
    }

    /// Ends every hold not yet used (requests held now are still served).
    pub fn clear_request_delays(&self) {
        self.world().clear_delays();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides_and_retry_after_counts_whole_seconds() {
        let mut w = RateWindow::new((2, Duration::from_secs(10)));
        let t0 = Instant::now();
        assert_eq!(w.admit(t0), Ok(()));
        assert_eq!(w.admit(t0 + Duration::from_secs(4)), Ok(()));
        // Full: the first leaves the window at t0 + 10 s.
        assert_eq!(w.admit(t0 + Duration::from_millis(5_500)), Err(5));
        assert_eq!(w.admit(t0 + Duration::from_millis(9_999)), Err(1));
        assert_eq!(w.admit(t0 + Duration::from_secs(10)), Ok(()));
        // The second (t0 + 4 s) is the oldest now.
        assert_eq!(w.admit(t0 + Duration::from_secs(11)), Err(3));
        let mut none = RateWindow::new((0, Duration::from_secs(60)));
        assert_eq!(none.admit(t0), Err(60));
    }

    #[test]
    fn holds_match_prefix_and_method_and_run_out() {
        let cfg = super::super::SimConfig::default();
        let w = World::new(&cfg, cfg.listen);
        w.add_delay(RequestDelay {
            path_prefix: "/api/v2/conversations/messages/".into(),
            method: Some("patch".into()),
            delay: Duration::from_secs(1),
            count: 2,
            completes_without_client: false,
        });
        let p = "/api/v2/conversations/messages/c1";
        assert!(w.take_hold("GET", p).is_none());
        assert!(w.take_hold("PATCH", "/api/v2/conversations/c1").is_none());
        let h = w.take_hold("PATCH", p).expect("held");
        assert_eq!(h.delay, Duration::from_secs(1));
        assert!(!h.completes_without_client);
        assert!(w.take_hold("PATCH", p).is_some());
        assert!(w.take_hold("PATCH", p).is_none(), "used up");
        assert!(w.take_rate_limit("/api/v2/x").is_none(), "no limit set");
        w.set_rate_limit(Some((1, Duration::from_secs(60))));
        assert!(w.take_rate_limit("/oauth/token").is_none());
        assert!(w.take_rate_limit("/api/v2/x").is_none());
        assert!(w.take_rate_limit("/channels/abc").is_none());
        let l = w.take_rate_limit("/api/v2/x").expect("over the limit");
        assert_eq!((l.limit, l.window_secs, l.retry_after), (1, 60, 60));
    }
}
