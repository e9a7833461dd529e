//! The outcome feed: every final outcome, as one JSON object, to an HTTPS endpoint and/or
//! a JSON-lines file, for the analytics pipeline.
//!
//! Delivery is at least once across crashes: the journal writes each outcome and its
//! outbox entry in one transaction, and this task delivers from the outbox, marking an
//! entry done only after the endpoint answered 2xx (or the line was written). A crash
//! between the delivery and the mark delivers it again, with the same
//! `Idempotency-Key` header (and `idempotency_key` field) so the receiver can drop the
//! repeat. Failures are retried with backoff (1 s doubling to 5 min), logged at most
//! once a minute, and counted in metrics; the task runs on its own and never slows a
//! close down.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{FEED_TOKEN_ENV, FeedConfig};
use crate::journal::{Journal, OutboxItem, now_ms};

/// Entries taken from the outbox per round.
const BATCH: usize = 50;
/// With nothing due, look again this often (retries come due by time, not by signal).
const POLL: Duration = Duration::from_secs(1);
/// Longest wait between attempts for one entry.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// At most this much of an error body goes in a log line.
const BODY_IN_LOG: usize = 200;

/// The delivery task's settings.
pub struct Feed {
    /// Where outcomes wait.
    pub journal: Journal,
    /// HTTP client (rustls).
    pub http: reqwest::Client,
    /// `POST` here.
    pub url: Option<Url>,
    /// Bearer token for `url`.
    pub token: Option<SecretString>,
    /// Append here.
    pub file: Option<PathBuf>,
    /// Per attempt.
    pub timeout: Duration,
}

/// Reads the feed's bearer token: `token_file`, else the environment, else none.
pub fn load_token(cfg: &FeedConfig) -> Result<Option<SecretString>, String> {
    if let Some(path) = &cfg.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("[feed] token_file {}: {e}", path.display()))?;
        let t = text.trim();
        if t.is_empty() {
            return Err(format!("[feed] token_file {} is empty", path.display()));
        }
        return Ok(Some(SecretString::from(t.to_string())));
    }
    Ok(std::env::var(FEED_TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| SecretString::from(t.trim().to_string())))
}

fn backoff(attempts: i64) -> Duration {
    let secs = 1u64 << attempts.clamp(0, 9);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write per line: appends of a line this size do not interleave.
    f.write_all(format!("{line}\n").as_bytes())?;
    f.flush()
}

impl Feed {
    /// Delivers until `cancel`; what is left stays in the outbox for the next start.
    pub async fn run(self, cancel: CancellationToken) {
        let log = crate::telemetry::LogLimit::default();
        loop {
            let due = tokio::select! {
                _ = cancel.cancelled() => return,
                d = self.journal.outbox_due(BATCH) => d,
            };
            let (due, pending) = match due {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "outcome feed stopped: the journal is gone");
                    return;
                }
            };
            metrics::gauge!("genesys_closer_feed_pending").set(pending as f64);
            if due.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.journal.outbox_ready() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            for item in due {
                if cancel.is_cancelled() {
                    return;
                }
                self.deliver(&item, &log).await;
            }
        }
    }

    async fn deliver(&self, item: &OutboxItem, log: &crate::telemetry::LogLimit) {
        let mut file_ok = false;
        let mut http_ok = false;
        let mut errors = Vec::new();
        if item.file_pending {
            match &self.file {
                Some(path) => match append(path, &item.payload) {
                    Ok(()) => file_ok = true,
                    Err(e) => errors.push(format!("file {}: {e}", path.display())),
                },
                // The file was configured when the outcome was journalled, not now.
                None => file_ok = true,
            }
            metrics::counter!("genesys_closer_feed_deliveries_total",
                "sink" => "file", "result" => if file_ok { "ok" } else { "failed" })
            .increment(1);
        }
        if item.http_pending {
            match &self.url {
                Some(url) => match self.post(url, item).await {
                    Ok(()) => http_ok = true,
                    Err(e) => errors.push(e),
                },
                None => http_ok = true,
            }
            metrics::counter!("genesys_closer_feed_deliveries_total",
                "sink" => "http", "result" => if http_ok { "ok" } else { "failed" })
            .increment(1);
        }
        if file_ok || http_ok {
            self.journal.outbox_done(item.id, http_ok, file_ok);
        }
        if !errors.is_empty() {
            let wait = backoff(item.attempts);
            let error = errors.join("; ");
            if let Some(held) = log.allow("feed") {
                tracing::warn!(key = %item.key, attempts = item.attempts + 1,
                    retry_in_s = wait.as_secs(), held_back = held, %error,
                    "outcome feed delivery failed; retrying (the outcome stays in the journal)");
            }
            self.journal
                .outbox_retry(item.id, now_ms() + wait.as_millis() as i64, &error);
        }
    }

    async fn post(&self, url: &Url, item: &OutboxItem) -> Result<(), String> {
        let mut req = self
            .http
            .post(url.clone())
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .header("idempotency-key", &item.key)
            .body(item.payload.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose_secret());
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let body: String = body.chars().take(BODY_IN_LOG).collect();
                Err(format!("{url} answered {status}: {body}"))
            }
            Err(e) => Err(format!("{url}: {}", crate::telemetry::error_chain(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }
}
