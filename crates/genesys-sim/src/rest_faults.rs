//! Injected HTTP errors: a request whose path matches an active fault is
//! answered with the fault's status instead of reaching its handler, the way a
//! gateway or rate limiter in front of the platform answers. The recorder still
//! logs it, with the status answered.

use std::time::Instant;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::ids::uuid_v4;
use super::rest::CORRELATION_HEADER;
use super::world::{World, lock};

/// How long a fault lasts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Budget {
    /// This many more matching requests.
    Count(usize),
    /// Every matching request until then.
    Until(Instant),
}

/// One fault in force.
#[derive(Clone, Debug)]
pub(crate) struct ActiveFault {
    /// Only requests with this method (`None`: any method).
    pub(crate) method: Option<String>,
    /// With `exact`, the whole path; else a prefix of it.
    pub(crate) path_prefix: String,
    pub(crate) exact: bool,
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) budget: Budget,
}

impl ActiveFault {
    fn spent(&self, now: Instant) -> bool {
        match self.budget {
            Budget::Count(n) => n == 0,
            Budget::Until(t) => t <= now,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let path_ok = if self.exact {
            path == self.path_prefix
        } else {
            path.starts_with(self.path_prefix.as_str())
        };
        path_ok
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// The status and `Retry-After` a faulted request gets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit {
    status: u16,
    retry_after: Option<u64>,
}

impl World {
    pub(crate) fn add_rest_fault(&self, f: ActiveFault) {
        lock(&self.rest_faults).push(f);
    }

    pub(crate) fn clear_rest_faults(&self) {
        lock(&self.rest_faults).clear();
    }

    /// The first fault in force for `method path` (in the order they were added),
    /// with one use taken from its budget; spent faults are forgotten on the way.
    pub(crate) fn take_rest_fault(&self, method: &str, path: &str) -> Option<Hit> {
        let now = Instant::now();
        let mut faults = lock(&self.rest_faults);
        faults.retain(|f| !f.spent(now));
        let f = faults.iter_mut().find(|f| f.matches(method, path))?;
        if let Budget::Count(n) = &mut f.budget {
            *n -= 1;
        }
        Some(Hit {
            status: f.status,
            retry_after: f.retry_after,
        })
    }
}

/// `code` and `message` Genesys uses (or would plausibly use) for each status.
fn code_and_message(status: StatusCode) -> (&'static str, String) {
    let reason = status.canonical_reason().unwrap_or("Error");
    match status.as_u16() {
        // What a revoked or expired token gets (see `rest::authorize`).
        401 => ("bad.credentials", "Invalid login credentials.".into()),
        403 => (
            "missing.permissions",
            "Unable to perform the requested action.".into(),
        ),
        404 => ("not.found", "The requested resource was not found.".into()),
        408 => ("request.timeout", "The request timed out.".into()),
        429 => (
            "too.many.requests",
            "Rate limit exceeded the maximum [300] requests within [60] seconds".into(),
        ),
        500 => (
            "internal.server.error",
            "The server encountered an unexpected condition.".into(),
        ),
        502 => ("bad.gateway", "The upstream service failed.".into()),
        503 => (
            "service.unavailable",
            "The service is currently unavailable.".into(),
        ),
        504 => ("gateway.timeout", "The upstream service timed out.".into()),
        s if s >= 500 => ("internal.server.error", reason.into()),
        _ => ("bad.request", reason.into()),
    }
}

/// The answer to a faulted request: an `ErrorBody` (for 429 with the rate-limit
/// fields of README G), or on `/oauth/token` a 400/401 in the OAuth shape the
/// login host uses; `Retry-After` if given; `ININ-Correlation-Id` always. A
/// status that is not a valid HTTP status is answered as 500.
pub(crate) fn answer(path: &str, hit: Hit) -> Response {
    let status = StatusCode::from_u16(hit.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let ctx = uuid_v4();
    let body = if path == "/oauth/token" && matches!(status.as_u16(), 400 | 401) {
        let description = "client authentication failed";
        json!({ "error": "invalid_client", "description": description,
                "error_description": description })
    } else {
        error_body(status, &ctx)
    };
    let mut resp = (status, Json(body)).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx) {
        headers.insert(CORRELATION_HEADER, v);
    }
    if let Some(secs) = hit.retry_after {
        headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn error_body(status: StatusCode, ctx: &str) -> Value {
    let (code, message) = code_and_message(status);
    let mut body = json!({
        "message": message,
        "code": code,
        "status": status.as_u16(),
        "contextId": ctx,
        "details": [],
        "errors": [],
    });
    if status == StatusCode::TOO_MANY_REQUESTS {
        body["messageWithParams"] =
            json!("Rate limit exceeded the maximum [{0}] requests within [{1}] seconds");
        body["messageParams"] = json!({ "0": "300", "1": "60" });
        body["limit"] = json!({ "key": "client.credentials.token.rate.per.minute",
                                "namespace": "platform.api", "value": 300 });
    }
    body
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::SimConfig;
    use super::*;

    #[tokio::test]
    async fn budgets_run_out_and_faults_apply_in_order() {
        let cfg = SimConfig::default();
        let w = World::new(&cfg, cfg.listen);
        let fault = |prefix: &str, status, budget| ActiveFault {
            method: None,
            path_prefix: prefix.into(),
            exact: false,
            status,
            retry_after: None,
            budget,
        };
        w.add_rest_fault(fault("/api/v2/conv", 503, Budget::Count(2)));
        w.add_rest_fault(fault("", 429, Budget::Count(1)));
        let status = |p: &str| w.take_rest_fault("GET", p).map(|h| h.status);
        assert_eq!(status("/oauth/token"), Some(429));
        assert_eq!(status("/oauth/token"), None);
        assert_eq!(status("/api/v2/conversations/x"), Some(503));
        assert_eq!(status("/api/v2/conversations/x"), Some(503));
        assert_eq!(status("/api/v2/conversations/x"), None);
        let soon = Instant::now() + Duration::from_millis(30);
        w.add_rest_fault(fault("/api", 500, Budget::Until(soon)));
        assert_eq!(status("/api/v2/x"), Some(500));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(status("/api/v2/x"), None);
        w.add_rest_fault(fault("", 500, Budget::Count(5)));
        w.clear_rest_faults();
        assert_eq!(status("/api/v2/x"), None);
        // One method on one exact path: the same path's other methods and the
        // paths below it are served.
        w.add_rest_fault(ActiveFault {
            method: Some("POST".into()),
            path_prefix: "/api/v2/notifications/channels".into(),
            exact: true,
            status: 503,
            retry_after: None,
            budget: Budget::Count(5),
        });
        let post = |p: &str| w.take_rest_fault("post", p).map(|h| h.status);
        assert_eq!(status("/api/v2/notifications/channels"), None);
        assert_eq!(
            post("/api/v2/notifications/channels/c1/subscriptions"),
            None
        );
        assert_eq!(post("/api/v2/notifications/channels"), Some(503));
    }
}
