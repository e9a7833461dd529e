//! The retry policy every call goes through: the budget's permit, the token, the
//! request, then what its answer asks (renew the token once on 401, wait out a 429's
//! `Retry-After`, back off on 5xx and transport failures), as the .NET SDK does.

use std::time::Duration;

use backon::BackoffBuilder;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use super::super::budget::{Priority, priority_of};
use super::super::transport::describe_transport;
use super::error::{header, status_error};
use super::{Answer, ApiClient, ApiError, DEFAULT_RETRY_AFTER, MAX_ATTEMPTS, MAX_RETRY_AFTER};

impl ApiClient {
    /// Sends one call under the retry policy, at the budget priority its method and path
    /// imply ([`priority_of`]).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, ApiError> {
        let priority = priority_of(&method, path);
        self.send_as(priority, method, path, body).await
    }

    /// Sends one call under the retry policy, every attempt waiting for a permit of the
    /// rate budget at `priority` (e.g. the closer's confirming read goes as
    /// [`Priority::Close`]).
    pub async fn send_as(
        &self,
        priority: Priority,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, ApiError> {
        self.send_inner(priority, method, path, body, true).await
    }

    /// Sends a call that must not reach Genesys twice (a message to the guest): it is
    /// retried only when Genesys surely did not act on it (429, and a 401 answered by
    /// renewing the token), never after a 5xx or a transport error, either of which may
    /// come after the call took effect.
    pub async fn send_once(
        &self,
        priority: Priority,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, ApiError> {
        self.send_inner(priority, method, path, body, false).await
    }

    /// Sends one call: attempts it until it is answered, fails for good, or runs out
    /// of attempts, waiting between tries as the failure asks.
    async fn send_inner(
        &self,
        priority: Priority,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        retry_ambiguous: bool,
    ) -> Result<Answer, ApiError> {
        let (url, path) = self.url_for(path);
        let call = Call {
            method: &method,
            path,
            url: &url,
            body: body.as_ref(),
            operation: crate::metrics::api_operation(method.as_str(), path),
        };
        let mut backoff = retry_backoff();
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (err, wait) = match self.attempt(&call, priority, &mut renewed).await? {
                Attempt::Answered(answer) => return Ok(answer),
                Attempt::Renewed => continue,
                Attempt::Failed(err, wait) => (err, wait),
            };
            self.outage_failure(&err);
            if !err.is_retryable()
                || attempt >= MAX_ATTEMPTS
                || (!retry_ambiguous && wait.is_none())
            {
                return Err(err);
            }
            let delay = match wait {
                Some(w) if w > MAX_RETRY_AFTER => return Err(err),
                Some(w) => w,
                None => backoff.next().unwrap_or(Duration::from_secs(10)),
            };
            log_retry(&call, attempt, delay, &err);
            tokio::time::sleep(delay).await;
        }
    }

    /// The URL a call goes to (the API's base, then `path`), and `path` without its
    /// query.
    fn url_for<'p>(&self, path: &'p str) -> (reqwest::Url, &'p str) {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        // `path` may carry a query (`?ignoreErrors=true`); it is kept out of the path.
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        url.set_path(&format!("{base_path}{path}"));
        url.set_query(query);
        (url, path)
    }

    /// One attempt: the budget's permit, the token, the request, and what it came to.
    /// Fails only when no token can be had.
    async fn attempt(
        &self,
        call: &Call<'_>,
        priority: Priority,
        renewed: &mut bool,
    ) -> Result<Attempt, ApiError> {
        // The permit first, the token after it: a wait behind the budget (or a 429
        // pause) cannot leave the request holding a token that expired meanwhile.
        self.budget.acquire(priority).await;
        let token = self.tokens.token().await.inspect_err(|_| {
            crate::metrics::api_failure(call.operation, "auth");
        })?;
        let mut req = self
            .http
            .request(call.method.clone(), call.url.clone())
            .bearer_auth(token.expose_secret());
        if let Some(agent) = self.group_agent() {
            req = req.header(reqwest::header::USER_AGENT, agent);
        }
        if let Some(b) = call.body {
            req = req.json(b);
        }
        // The last check, as close to the socket as it can be: held until answered.
        let _in_flight = self.gate(call.method, call.path)?;
        Ok(match req.send().await {
            Err(e) => {
                crate::metrics::api_failure(call.operation, "transport");
                let err = call.transport_error(describe_transport(call.url, &e));
                Attempt::Failed(err, None)
            }
            Ok(resp) => self.answered(call, resp, &token, renewed).await,
        })
    }

    /// What an answer comes to: a success, a token renewed after a first 401, or the
    /// failure with the wait a 429 asks for (which pauses the whole budget).
    async fn answered(
        &self,
        call: &Call<'_>,
        resp: reqwest::Response,
        token: &SecretString,
        renewed: &mut bool,
    ) -> Attempt {
        let status = resp.status();
        crate::metrics::api_request(call.operation, status.as_u16());
        let correlation_id = header(&resp, "inin-correlation-id");
        let retry_after = header(&resp, "retry-after").and_then(|v| parse_retry_after(&v));
        // A connection lost while the body is read is a transport failure
        // (retried like any other), not an empty or undecodable answer.
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                crate::metrics::api_failure(call.operation, "transport");
                let err = call.transport_error(format!(
                    "the answer (HTTP {}) broke off: {}",
                    status.as_u16(),
                    describe_transport(call.url, &e)
                ));
                return Attempt::Failed(err, None);
            }
        };
        if status.is_success() {
            self.outage_over();
            return Attempt::Answered(Answer {
                status: status.as_u16(),
                correlation_id,
                body: bytes,
            });
        }
        if status.as_u16() < 500 {
            self.outage_over();
        }
        let err = status_error(call.method, call.path, status, correlation_id, &bytes);
        if status == StatusCode::UNAUTHORIZED && !*renewed {
            // The token may have been revoked or expired early: renew once.
            *renewed = true;
            tracing::warn!(method = %call.method, path = call.path, "HTTP 401: renewing the access token and retrying once");
            self.tokens.invalidate(token).await;
            return Attempt::Renewed;
        }
        let wait = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
        if let Some(w) = wait {
            // The limit is the client's, not this call's: every request
            // waits it out. A daily quota's long wait (this call gives up
            // below) pauses the others no longer than a burst's would.
            self.budget.pause_for(w.min(MAX_RETRY_AFTER));
        }
        Attempt::Failed(err, wait)
    }
}

/// One call as every attempt sends it.
struct Call<'a> {
    method: &'a Method,
    /// The path without its query.
    path: &'a str,
    url: &'a reqwest::Url,
    body: Option<&'a serde_json::Value>,
    /// The metrics' name for it ([`crate::metrics::api_operation`]).
    operation: &'static str,
}

impl Call<'_> {
    /// The call failed in transport (no answer, or an answer broken off) for `reason`.
    fn transport_error(&self, reason: String) -> ApiError {
        ApiError::Transport {
            method: self.method.clone(),
            path: self.path.to_string(),
            reason,
        }
    }
}

/// What one attempt came to.
enum Attempt {
    /// Genesys answered with a success.
    Answered(Answer),
    /// A first 401: the token was dropped, the call goes again at once.
    Renewed,
    /// The failure, and the wait a 429 asked for (none for any other).
    Failed(ApiError, Option<Duration>),
}

/// The delays between retries that no `Retry-After` sets: exponential from 200 ms to
/// 10 s, with jitter, never running out.
fn retry_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Logs a retry of `call` after `delay`.
fn log_retry(call: &Call<'_>, attempt: usize, delay: Duration, err: &ApiError) {
    let (method, path) = (call.method, call.path);
    // Every call retrying through an outage would write a line per try: one
    // warning per operation per interval, the rest at debug (counted in it).
    let conversation_id = conversation_in(path);
    match RETRY_LOG.allow_every(call.operation, RETRY_LOG_EVERY) {
        Some(held_back) => tracing::warn!(
            %method, path, conversation_id, attempt, delay_ms = delay.as_millis() as u64,
            error = %err, similar_held_back = held_back,
            "API call failed; retrying"
        ),
        None => tracing::debug!(
            %method, path, conversation_id, attempt, delay_ms = delay.as_millis() as u64,
            error = %err, "API call failed; retrying"
        ),
    }
}

/// Retry warnings: at most one per operation per [`RETRY_LOG_EVERY`].
static RETRY_LOG: std::sync::LazyLock<crate::telemetry::LogLimit> =
    std::sync::LazyLock::new(crate::telemetry::LogLimit::default);
/// How often one operation's retries are logged at warn.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(10);

/// The conversation a path is about (`/api/v2/conversations/{id}/...`,
/// `/api/v2/conversations/messages/{id}/...`), for the log line's `conversation_id`.
pub fn conversation_in(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/v2/conversations/")?;
    let rest = rest.strip_prefix("messages/").unwrap_or(rest);
    let id = rest.split(['/', '?']).next()?;
    crate::ids::is_uuid(id).then_some(id)
}

/// `Retry-After`: delay-seconds, or an HTTP-date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) turned into the time left until then.
pub(super) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = imf_fixdate_unix(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs((at - now).max(0) as u64))
}

/// Seconds since the Unix epoch of an IMF-fixdate (RFC 9110 5.6.7).
fn imf_fixdate_unix(v: &str) -> Option<i64> {
    let rest = v.split_once(", ")?.1;
    let mut it = rest.split(' ');
    let day: i64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let (h, m, s): (i64, i64, i64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            imf_fixdate_unix("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            imf_fixdate_unix("Tue, 29 Feb 2028 00:00:00 GMT"),
            Some(1_835_395_200)
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(imf_fixdate_unix("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }
}
