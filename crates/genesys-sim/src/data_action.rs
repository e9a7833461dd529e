//! The outside-service side of the bot phase: an Architect "Call Data Action"
//! (Web Services Data Action) or a Process Automation workflow POSTs JSON to an
//! external endpoint (README C.3). The simulator makes those POSTs for real, so
//! the daemon's intake endpoint is tested over HTTP, and logs each with its status.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use super::world::{World, lock};
use super::{DataAction, DataActionCall};

/// A data action that gets no answer in time takes its failure path; Genesys's
/// own limit is longer, but tests want a stuck endpoint to show up quickly.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Calls kept for `data_action_log()`.
const LOG_CAP: usize = 10_000;

impl World {
    pub(crate) fn set_data_action(&self, d: Option<DataAction>) {
        *lock(&self.data_action) = d;
    }

    pub(crate) fn data_action_log(&self) -> Vec<DataActionCall> {
        lock(&self.data_action_log).iter().cloned().collect()
    }

    /// POSTs `body` in the background to the data action configured now (none:
    /// nothing happens). The world lock is never held across the request.
    pub(crate) fn post_data_action(self: &Arc<Self>, conversation_id: &str, body: Value) {
        let Some(action) = lock(&self.data_action).clone() else {
            return;
        };
        let world = Arc::clone(self);
        let conversation_id = conversation_id.to_owned();
        tokio::spawn(async move {
            let body = body.to_string();
            let client = world.http_client();
            let status = tokio::select! {
                // Shutdown: an unfinished call is dropped, not logged.
                _ = world.cancel.cancelled() => return,
                s = send(client, &action, &body) => s,
            };
            if !(200..300).contains(&status) {
                tracing::warn!(conversation_id = %conversation_id, status, url = %action.url,
                    "sim: data action failed");
            }
            let mut log = lock(&world.data_action_log);
            if log.len() >= LOG_CAP {
                log.pop_front();
            }
            log.push_back(DataActionCall {
                conversation_id,
                body,
                status,
            });
        });
    }

    /// The shared client, built on first use; `None` if it cannot be built.
    fn http_client(&self) -> Option<reqwest::Client> {
        self.http
            .get_or_init(|| {
                // reqwest is built without a TLS provider; the sim cannot rely on the
                // daemon having installed one, so it installs ring (idempotent).
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    .build()
                    .inspect_err(|e| tracing::error!(error = %e, "sim: cannot build HTTP client"))
                    .ok()
            })
            .clone()
    }
}

/// The HTTP status answered, or 0 on a transport error or timeout.
async fn send(client: Option<reqwest::Client>, action: &DataAction, body: &str) -> u16 {
    let Some(client) = client else {
        return 0;
    };
    let mut req = client
        .post(&action.url)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned());
    if let Some(auth) = &action.authorization {
        req = req.header(AUTHORIZATION, auth);
    }
    match req.send().await {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => {
            tracing::warn!(error = %e, url = %action.url, "sim: data action request failed");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::SimConfig;
    use super::*;

    #[tokio::test]
    async fn unreachable_endpoint_is_logged_with_status_zero() {
        // A port that was just free: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let cfg = SimConfig::default();
        let world = World::new(&cfg, cfg.listen);
        world.post_data_action("c1", json!({ "conversationId": "c1" }));
        // Nothing configured: nothing posted.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(world.data_action_log().is_empty());
        world.set_data_action(Some(DataAction {
            url: format!("http://127.0.0.1:{port}/v1/intents"),
            authorization: None,
        }));
        world.post_data_action("c1", json!({ "conversationId": "c1" }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while world.data_action_log().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = world.data_action_log();
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].status, log[0].body.as_str()),
            (0, r#"{"conversationId":"c1"}"#)
        );
        world.cancel.cancel();
    }
}
