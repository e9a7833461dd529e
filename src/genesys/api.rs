//! Typed REST calls to the Genesys Platform API, with its error body and retry policy.
//!
//! Only operations from the facts sheet are used (every path here is in
//! `openapi-subset.json`). The policy follows the official .NET SDK: 429 waits
//! `Retry-After` (giving up past 180 s), 5xx and transport errors back off with jitter,
//! 401 renews the token once and retries, any other 4xx is returned at once.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::auth::{AuthError, TokenSource};
use super::budget::{Budget, Priority, priority_of};
use super::frames::{ConversationEvent, FlowMetric, parse_conversation_body};
use super::transport::{CONNECT_TIMEOUT, REQUEST_TIMEOUT, describe_transport};

/// Attempts per call for 429/5xx/transport failures (the first try included).
const MAX_ATTEMPTS: usize = 4;
/// A `Retry-After` beyond this means a daily quota, not a burst: give up (as the .NET SDK does).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(180);
/// Used when a 429 carries no `Retry-After` (the .NET SDK's default).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(3);

/// A conversation a queue observation query listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The conversation.
    pub conversation_id: Box<str>,
    /// The queue it was listed in.
    pub queue_id: Option<Box<str>>,
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Genesys answered with an error status.
    #[error("{method} {path} -> HTTP {status}{}: {message}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), correlation_id.as_deref().map(|c| format!(" (correlation id {c})")).unwrap_or_default())]
    Status {
        /// HTTP method.
        method: Method,
        /// Path without host.
        path: String,
        /// HTTP status.
        status: u16,
        /// ErrorBody `code`.
        code: Option<String>,
        /// ErrorBody `message`, or the raw body's start.
        message: String,
        /// `ININ-Correlation-Id` header or ErrorBody `contextId`, for support cases.
        correlation_id: Option<String>,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("{method} {path} failed: {reason}")]
    Transport {
        /// HTTP method.
        method: Method,
        /// Path without host.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A 2xx whose body is not what the API documents.
    #[error("{method} {path}: unexpected response body: {reason}")]
    Decode {
        /// HTTP method.
        method: Method,
        /// Path without host.
        path: String,
        /// What could not be read.
        reason: String,
    },
    /// No token could be obtained.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl ApiError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => *status == 429 || *status >= 500,
            ApiError::Transport { .. } => true,
            ApiError::Decode { .. } => false,
            ApiError::Auth(e) => e.is_retryable(),
        }
    }

    /// Genesys's correlation id, when the failure came with one.
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            ApiError::Status { correlation_id, .. } => correlation_id.as_deref(),
            _ => None,
        }
    }

    /// HTTP status, when Genesys answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `Channel` (facts sheet B.1).
#[derive(Debug, Clone, Deserialize)]
pub struct Channel {
    /// Channel id, e.g. `streaming-0-...`.
    pub id: String,
    /// WebSocket URI, used verbatim.
    #[serde(rename = "connectUri")]
    pub connect_uri: String,
    /// Expiry (ISO-8601), when sent.
    #[serde(default)]
    pub expires: Option<String>,
}

/// `ChannelTopic`: the outcome of subscribing one topic.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelTopic {
    /// The topic.
    pub id: String,
    /// `Permitted` or `Rejected`.
    #[serde(default)]
    pub state: Option<String>,
    /// Why it was rejected.
    #[serde(rename = "rejectionReason", default)]
    pub rejection_reason: Option<String>,
    /// Permissions the client lacks for it.
    #[serde(rename = "missingPermissions", default)]
    pub missing_permissions: Vec<String>,
}

/// `AvailableTopic`: what the notification service offers (only the fields read here).
#[derive(Debug, Clone, Deserialize)]
pub struct AvailableTopic {
    /// The topic template, e.g. `v2.routing.queues.{id}.conversations.messages`.
    pub id: String,
    /// "Transports that support events for the topic": `All`, `Websocket`,
    /// `EventBridge`, `ProcessAutomation`.
    #[serde(default)]
    pub transports: Vec<String>,
    /// "Permissions required to subscribe to the topic".
    #[serde(rename = "requiresPermissions", default)]
    pub requires_permissions: Vec<String>,
}

#[derive(Deserialize)]
struct Listing<T> {
    #[serde(default = "Vec::new")]
    entities: Vec<T>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(rename = "contextId", default)]
    context_id: Option<String>,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status (2xx).
    pub status: u16,
    /// `ININ-Correlation-Id`, when sent.
    pub correlation_id: Option<String>,
    /// Raw body.
    pub body: bytes::Bytes,
}

/// The Platform API client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    tokens: TokenSource,
    budget: Arc<Budget>,
    /// Since when, and why, Genesys has been unreachable (transport errors, 5xx, login
    /// down): the outage and the recovery each get one log line.
    outage: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// The budget of a client built without [`ApiClient::with_budget`]: the config default.
const DEFAULT_REQUESTS_PER_MINUTE: u32 = 240;

impl ApiClient {
    /// A client for `api_url`, authenticating with `tokens`.
    pub fn new(http: reqwest::Client, api_url: Url, tokens: TokenSource) -> Self {
        ApiClient {
            http,
            base: api_url,
            tokens,
            budget: Arc::new(Budget::new(DEFAULT_REQUESTS_PER_MINUTE)),
            outage: std::sync::Mutex::new(None),
        }
    }

    /// A call failed for a reason that says Genesys (or the way to it) is down.
    fn outage_failure(&self, err: &ApiError) {
        let down = match err {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status >= 500,
            ApiError::Auth(e) => e.is_retryable(),
            ApiError::Decode { .. } => false,
        };
        if !down {
            return;
        }
        let mut o = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if o.is_none() {
            tracing::warn!(error = %err, "Genesys unreachable; calls are retried (one line when it is back)");
            *o = Some((std::time::Instant::now(), err.to_string()));
        }
    }

    /// A call got an answer: an outage, if any, is over.
    fn outage_over(&self) {
        let mut o = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((since, what)) = o.take() {
            tracing::info!(outage_ms = since.elapsed().as_millis() as u64, first_error = %what,
                "Genesys reachable again");
        }
    }

    /// Spends `budget` (shared with whoever else holds it) instead of the default.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// The rate budget every call of this client waits on.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Builds the shared HTTP client (rustls with the ring provider, no OpenSSL).
    pub fn http_client() -> Result<reqwest::Client, ApiError> {
        crate::install_crypto_provider();
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("genesys-closer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Transport {
                method: Method::GET,
                path: String::new(),
                reason: format!("cannot build the HTTP client: {e}"),
            })
    }

    /// A token now, e.g. to check credentials at start-up.
    pub async fn token(&self) -> Result<SecretString, ApiError> {
        Ok(self.tokens.token().await?)
    }

    /// `POST /api/v2/notifications/channels`.
    pub async fn create_channel(&self) -> Result<Channel, ApiError> {
        let path = "/api/v2/notifications/channels";
        let a = self.send(Method::POST, path, None).await?;
        decode(&Method::POST, path, &a.body)
    }

    /// `HEAD /api/v2/notifications/channels/{id}`: whether the channel still exists.
    pub async fn channel_exists(&self, channel_id: &str) -> Result<bool, ApiError> {
        let path = format!("/api/v2/notifications/channels/{channel_id}");
        match self.send(Method::HEAD, &path, None).await {
            Ok(_) => Ok(true),
            Err(ApiError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PUT /api/v2/notifications/channels/{id}/subscriptions?ignoreErrors=true`: replaces
    /// the channel's topics. `ignoreErrors` keeps one topic the client may not see from
    /// failing the whole request with 403; such a topic comes back `Rejected`.
    pub async fn put_subscriptions(
        &self,
        channel_id: &str,
        topics: &[String],
    ) -> Result<Vec<ChannelTopic>, ApiError> {
        self.subscriptions(Method::PUT, channel_id, topics).await
    }

    /// `POST /api/v2/notifications/channels/{id}/subscriptions?ignoreErrors=true`: adds
    /// topics to the channel's.
    pub async fn post_subscriptions(
        &self,
        channel_id: &str,
        topics: &[String],
    ) -> Result<Vec<ChannelTopic>, ApiError> {
        self.subscriptions(Method::POST, channel_id, topics).await
    }

    async fn subscriptions(
        &self,
        method: Method,
        channel_id: &str,
        topics: &[String],
    ) -> Result<Vec<ChannelTopic>, ApiError> {
        let path =
            format!("/api/v2/notifications/channels/{channel_id}/subscriptions?ignoreErrors=true");
        let body: Vec<_> = topics.iter().map(|t| json!({ "id": t })).collect();
        let a = self
            .send(method.clone(), &path, Some(serde_json::Value::Array(body)))
            .await?;
        let listing: Listing<ChannelTopic> = decode(&method, &path, &a.body)?;
        Ok(listing.entities)
    }

    /// `GET /api/v2/notifications/channels/{id}/subscriptions`: the topics the channel holds.
    pub async fn get_subscriptions(&self, channel_id: &str) -> Result<Vec<ChannelTopic>, ApiError> {
        let path = format!("/api/v2/notifications/channels/{channel_id}/subscriptions");
        let a = self.send(Method::GET, &path, None).await?;
        let listing: Listing<ChannelTopic> = decode(&Method::GET, &path, &a.body)?;
        Ok(listing.entities)
    }

    /// `GET /api/v2/notifications/availabletopics?expand=transports&expand=requiresPermissions`.
    /// `expand` is an array with `collectionFormat: multi`: one `expand=` per field. A
    /// comma-joined value would be a single (unknown) field name, and a topic answered
    /// without `transports` would pass the WebSocket check unexamined.
    pub async fn available_topics(&self) -> Result<Vec<AvailableTopic>, ApiError> {
        let path =
            "/api/v2/notifications/availabletopics?expand=transports&expand=requiresPermissions";
        let a = self.send(Method::GET, path, None).await?;
        let listing: Listing<AvailableTopic> = decode(&Method::GET, path, &a.body)?;
        Ok(listing.entities)
    }

    /// `PATCH /api/v2/conversations/messages/{id}` `{"state":"disconnected"}`:
    /// "disconnecting all of the participants".
    pub async fn disconnect_conversation(&self, conversation_id: &str) -> Result<Answer, ApiError> {
        let path = format!("/api/v2/conversations/messages/{conversation_id}");
        self.send(
            Method::PATCH,
            &path,
            Some(json!({ "state": "disconnected" })),
        )
        .await
    }

    /// `PATCH /api/v2/conversations/messages/{id}/participants/{pid}` `{"state":"disconnected"}`.
    pub async fn disconnect_participant(
        &self,
        conversation_id: &str,
        participant_id: &str,
    ) -> Result<Answer, ApiError> {
        let path = format!(
            "/api/v2/conversations/messages/{conversation_id}/participants/{participant_id}"
        );
        self.send(
            Method::PATCH,
            &path,
            Some(json!({ "state": "disconnected" })),
        )
        .await
    }

    /// `POST /api/v2/conversations/{id}/disconnect`: full teardown, the documented last resort.
    pub async fn teardown(&self, conversation_id: &str) -> Result<Answer, ApiError> {
        let path = format!("/api/v2/conversations/{conversation_id}/disconnect");
        self.send(Method::POST, &path, None).await
    }

    /// `GET /api/v2/conversations/{id}` (facts sheet D.5/D.6; permission
    /// `conversation:communication:view`): the participants with their message
    /// communication ids, which the farewell and wrap-up calls need and which the
    /// messaging-specific GET does not carry.
    ///
    /// This generic (all-media) GET is outside `openapi-subset.json`, which has only
    /// the messaging GET; its `Conversation`/`Participant`/`Message` models are in the
    /// subset (as the PATCH body), and this reads only fields they define. The body is
    /// read leniently (see [`parse_comm_participants`]).
    pub async fn get_communications(
        &self,
        conversation_id: &str,
    ) -> Result<Vec<CommParticipant>, ApiError> {
        let path = format!("/api/v2/conversations/{conversation_id}");
        // Only close sequences (farewell, wrap-up) read this.
        let a = self
            .send_as(Priority::Close, Method::GET, &path, None)
            .await?;
        parse_comm_participants(&a.body).map_err(|reason| ApiError::Decode {
            method: Method::GET,
            path,
            reason,
        })
    }

    /// `POST /api/v2/conversations/messages/{id}/communications/{cid}/messages` with
    /// `AdditionalMessage` `{"textBody": text}` (facts sheet D.5): a message to the
    /// guest, sent as the owner of communication `cid`. Genesys accepts at most 765
    /// characters on SMS and 2000 elsewhere; the config checks the length. Whether a
    /// client-credentials app may post on a communication it does not own is not
    /// documented, so callers must treat a failure as non-fatal.
    pub async fn send_message(
        &self,
        conversation_id: &str,
        communication_id: &str,
        text: &str,
    ) -> Result<Answer, ApiError> {
        let path = format!(
            "/api/v2/conversations/messages/{conversation_id}/communications/{communication_id}/messages"
        );
        self.send_once(
            Priority::Close,
            Method::POST,
            &path,
            Some(json!({ "textBody": text })),
        )
        .await
    }

    /// `POST /api/v2/conversations/messages/{id}/participants/{pid}/communications/{cid}/wrapup`
    /// with `WrapupInput` `{"code": code, "notes": notes}` (facts sheet D.4; permission
    /// `conversation:participant:wrapup`). `code` is a wrap-up code id; empty `notes`
    /// are left out.
    pub async fn send_wrapup(
        &self,
        conversation_id: &str,
        participant_id: &str,
        communication_id: &str,
        code: &str,
        notes: &str,
    ) -> Result<Answer, ApiError> {
        let path = format!(
            "/api/v2/conversations/messages/{conversation_id}/participants/{participant_id}/communications/{communication_id}/wrapup"
        );
        let mut body = json!({ "code": code });
        if !notes.is_empty() {
            body["notes"] = json!(notes);
        }
        self.send(Method::POST, &path, Some(body)).await
    }

    /// `GET /api/v2/conversations/messages/{id}`, read as the same event shape the socket
    /// delivers, so the state map can apply it like any other event.
    pub async fn get_conversation(
        &self,
        conversation_id: &str,
        wanted_attributes: &[Box<str>],
    ) -> Result<ConversationEvent, ApiError> {
        self.get_conversation_as(Priority::Read, conversation_id, wanted_attributes)
            .await
    }

    /// [`ApiClient::get_conversation`] at budget priority `priority` (the closer's
    /// confirming read goes as [`Priority::Close`]).
    pub async fn get_conversation_as(
        &self,
        priority: Priority,
        conversation_id: &str,
        wanted_attributes: &[Box<str>],
    ) -> Result<ConversationEvent, ApiError> {
        let path = format!("/api/v2/conversations/messages/{conversation_id}");
        let a = self.send_as(priority, Method::GET, &path, None).await?;
        let text = std::str::from_utf8(&a.body).map_err(|e| ApiError::Decode {
            method: Method::GET,
            path: path.clone(),
            reason: e.to_string(),
        })?;
        parse_conversation_body(text, a.correlation_id.as_deref(), wanted_attributes).map_err(|e| {
            ApiError::Decode {
                method: Method::GET,
                path,
                reason: e.to_string(),
            }
        })
    }

    /// `POST /api/v2/analytics/flows/activity/query` (facts sheet C.3, the polling
    /// fallback for discovery; permission `analytics:flowObservation:view`): the
    /// conversations in these flows now, as `(conversationId, flowId)`, and whether
    /// Genesys truncated a flow's list (it then keeps the oldest and newest halves).
    pub async fn flows_activity(
        &self,
        flow_ids: &[String],
        page_size: usize,
    ) -> Result<(Vec<FlowMetric>, bool), ApiError> {
        let path = format!("/api/v2/analytics/flows/activity/query?pageSize={page_size}");
        let predicates: Vec<_> = flow_ids
            .iter()
            .map(
                |f| serde_json::json!({ "dimension": "flowId", "operator": "matches", "value": f }),
            )
            .collect();
        let body = serde_json::json!({
            "metrics": [{ "metric": "oFlow", "details": true }],
            "groupBy": ["flowId"],
            "filter": { "type": "or", "predicates": predicates },
        });
        // With the subscriptions: a listing is how the daemon sees what it missed.
        let a = self
            .send_as(Priority::Subscribe, Method::POST, &path, Some(body))
            .await?;
        let decode = |reason: String| ApiError::Decode {
            method: Method::POST,
            path: path.clone(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&a.body).map_err(|e| decode(e.to_string()))?;
        let mut found = Vec::new();
        let mut truncated = false;
        let results = v.get("results").and_then(|r| r.as_array());
        for r in results.into_iter().flatten() {
            truncated |= r.get("truncated").and_then(serde_json::Value::as_bool) == Some(true);
            let entities = r.get("entities").and_then(|e| e.as_array());
            for e in entities.into_iter().flatten() {
                let Some(id) = e.get("conversationId").and_then(|v| v.as_str()) else {
                    continue;
                };
                found.push(FlowMetric {
                    conversation_id: id.into(),
                    flow_id: e.get("flowId").and_then(|v| v.as_str()).map(Into::into),
                    metric: Some("oFlow".into()),
                });
            }
        }
        Ok((found, truncated))
    }

    /// `POST /api/v2/analytics/queues/observations/query` (facts sheet D.6; permission
    /// `analytics:queueObservation:view`): the conversations waiting in and interacting
    /// with these queues now, by `detailMetrics` observations of `oWaiting` and
    /// `oInteracting`. One request covers every queue given (the caller pages the list);
    /// groups of another media type than `message` are skipped. Returns the listed
    /// conversations (once each, with the queue they were listed in) and whether Genesys
    /// truncated a list (it then keeps the oldest and the newest halves).
    pub async fn queue_observations(
        &self,
        queue_ids: &[String],
    ) -> Result<(Vec<Listed>, bool), ApiError> {
        let path = "/api/v2/analytics/queues/observations/query";
        let predicates: Vec<_> = queue_ids
            .iter()
            .map(|q| {
                serde_json::json!({
                    "type": "dimension", "dimension": "queueId", "operator": "matches", "value": q
                })
            })
            .collect();
        let metrics = ["oWaiting", "oInteracting"];
        let body = serde_json::json!({
            "filter": { "type": "or", "predicates": predicates },
            "metrics": metrics,
            "detailMetrics": metrics,
        });
        // With the subscriptions: a listing is how the daemon sees what it missed.
        let a = self
            .send_as(Priority::Subscribe, Method::POST, path, Some(body))
            .await?;
        let v: serde_json::Value =
            serde_json::from_slice(&a.body).map_err(|e| ApiError::Decode {
                method: Method::POST,
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        let mut listed: Vec<Listed> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut truncated = false;
        let results = v.get("results").and_then(|r| r.as_array());
        for r in results.into_iter().flatten() {
            let group = r.get("group");
            let field = |k: &str| group.and_then(|g| g.get(k)).and_then(|v| v.as_str());
            if field("mediaType").is_some_and(|m| !m.eq_ignore_ascii_case("message")) {
                continue;
            }
            let queue_id = field("queueId").map(Box::<str>::from);
            let data = r.get("data").and_then(|d| d.as_array());
            for d in data.into_iter().flatten() {
                truncated |= d.get("truncated").and_then(serde_json::Value::as_bool) == Some(true);
                let observations = d.get("observations").and_then(|o| o.as_array());
                for o in observations.into_iter().flatten() {
                    let Some(id) = o.get("conversationId").and_then(|v| v.as_str()) else {
                        continue;
                    };
                    if seen.insert(id.to_string()) {
                        listed.push(Listed {
                            conversation_id: id.into(),
                            queue_id: queue_id.clone(),
                        });
                    }
                }
            }
        }
        Ok((listed, truncated))
    }

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

    async fn send_inner(
        &self,
        priority: Priority,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        retry_ambiguous: bool,
    ) -> Result<Answer, ApiError> {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        // `path` may carry a query (`?ignoreErrors=true`); it is kept out of the path.
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        url.set_path(&format!("{base_path}{path}"));
        url.set_query(query);
        let operation = crate::metrics::api_operation(method.as_str(), path);
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build();
        let mut renewed = false;
        let mut attempt = 0;
        'attempts: loop {
            attempt += 1;
            // The permit first, the token after it: a wait behind the budget (or a 429
            // pause) cannot leave the request holding a token that expired meanwhile.
            self.budget.acquire(priority).await;
            let token = self.tokens.token().await.inspect_err(|_| {
                crate::metrics::api_failure(operation, "auth");
            })?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret());
            if let Some(b) = &body {
                req = req.json(b);
            }
            let result = req.send().await;
            let (err, wait) = match result {
                Err(e) => {
                    crate::metrics::api_failure(operation, "transport");
                    let err = ApiError::Transport {
                        method: method.clone(),
                        path: path.to_string(),
                        reason: describe_transport(&url, &e),
                    };
                    (err, None)
                }
                Ok(resp) => 'answered: {
                    let status = resp.status();
                    crate::metrics::api_request(operation, status.as_u16());
                    let correlation_id = header(&resp, "inin-correlation-id");
                    let retry_after =
                        header(&resp, "retry-after").and_then(|v| parse_retry_after(&v));
                    // A connection lost while the body is read is a transport failure
                    // (retried like any other), not an empty or undecodable answer.
                    let bytes = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            crate::metrics::api_failure(operation, "transport");
                            let err = ApiError::Transport {
                                method: method.clone(),
                                path: path.to_string(),
                                reason: format!(
                                    "the answer (HTTP {}) broke off: {}",
                                    status.as_u16(),
                                    describe_transport(&url, &e)
                                ),
                            };
                            break 'answered (err, None);
                        }
                    };
                    if status.is_success() {
                        self.outage_over();
                        return Ok(Answer {
                            status: status.as_u16(),
                            correlation_id,
                            body: bytes,
                        });
                    }
                    if status.as_u16() < 500 {
                        self.outage_over();
                    }
                    let err = status_error(&method, path, status, correlation_id, &bytes);
                    if status == StatusCode::UNAUTHORIZED && !renewed {
                        // The token may have been revoked or expired early: renew once.
                        renewed = true;
                        tracing::warn!(%method, path, "HTTP 401: renewing the access token and retrying once");
                        self.tokens.invalidate(&token).await;
                        continue 'attempts;
                    }
                    let wait = (status == StatusCode::TOO_MANY_REQUESTS)
                        .then(|| retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
                    if let Some(w) = wait {
                        // The limit is the client's, not this call's: every request
                        // waits it out. A daily quota's long wait (this call gives up
                        // below) pauses the others no longer than a burst's would.
                        self.budget.pause_for(w.min(MAX_RETRY_AFTER));
                    }
                    (err, wait)
                }
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
            // Every call retrying through an outage would write a line per try: one
            // warning per operation per interval, the rest at debug (counted in it).
            let conversation_id = conversation_in(path);
            match RETRY_LOG.allow_every(operation, RETRY_LOG_EVERY) {
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
            tokio::time::sleep(delay).await;
        }
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
fn parse_retry_after(v: &str) -> Option<Duration> {
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

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn status_error(
    method: &Method,
    path: &str,
    status: StatusCode,
    correlation_id: Option<String>,
    body: &[u8],
) -> ApiError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let message = parsed.message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(200).collect();
        if text.is_empty() {
            status.canonical_reason().unwrap_or("").to_string()
        } else {
            text
        }
    });
    // Text from the server reaches logs bounded, whatever size it came in.
    let clip = |s: String, n: usize| -> String {
        if s.chars().count() > n {
            let mut c: String = s.chars().take(n).collect();
            c.push('…');
            c
        } else {
            s
        }
    };
    ApiError::Status {
        method: method.clone(),
        path: path.to_string(),
        status: status.as_u16(),
        code: parsed.code.map(|c| clip(c, 100)),
        message: clip(message, 300),
        correlation_id: correlation_id.or(parsed.context_id).map(|c| clip(c, 100)),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Decode {
        method: method.clone(),
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// One message communication of a participant (`Participant.messages[]`, model `Message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Communication {
    /// The communication id, as the send-message and wrap-up paths want it.
    pub id: String,
    /// `alerting`, `connected`, `parked` or `disconnected`, when sent.
    pub state: Option<String>,
}

impl Communication {
    /// Whether the communication says it has ended (an absent state does not).
    pub fn is_ended(&self) -> bool {
        self.state.as_deref().is_some_and(is_ended_state)
    }
}

/// One participant of `GET /api/v2/conversations/{id}` (`Conversation.participants[]`),
/// reduced to what the farewell and wrap-up steps need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommParticipant {
    /// Participant id.
    pub id: String,
    /// `customer`, `agent`, `acd`, `workflow`, `botflow`, ... (a free string).
    pub purpose: Option<String>,
    /// Participant-level state, when sent. The generic `Participant` model has none
    /// (state lives on each communication); kept for bodies that do carry it.
    pub state: Option<String>,
    /// `endTime` is present, or `state` is `disconnected`/`terminated`.
    pub ended: bool,
    /// `wrapupRequired` is `true` (anything else, including a wrong type, is `false`).
    pub wrapup_required: bool,
    /// A wrap-up is already on the participant (`wrapup.code` set and not
    /// `provisional`), or `wrapupSkipped` is `true`.
    pub wrapup_done: bool,
    /// `messages[]`: the message communications, in the order Genesys lists them.
    pub communications: Vec<Communication>,
}

impl CommParticipant {
    /// Whether `purpose` is `p` (case-insensitive).
    pub fn has_purpose(&self, p: &str) -> bool {
        self.purpose
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(p))
    }
}

fn is_ended_state(s: &str) -> bool {
    s.eq_ignore_ascii_case("disconnected") || s.eq_ignore_ascii_case("terminated")
}

/// Reads a `Conversation` body into its participants. Lenient on purpose: unknown
/// fields are ignored, a field read here with the wrong type counts as absent, a
/// participant without an `id` and a communication without an `id` are skipped, and
/// nothing else in the (deeply recursive) model is looked at. Only a body that is not
/// JSON or has no `participants` array is an error.
pub fn parse_comm_participants(body: &[u8]) -> Result<Vec<CommParticipant>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let parts = v
        .get("participants")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| "no `participants` array in the Conversation".to_string())?;
    Ok(parts.iter().filter_map(comm_participant).collect())
}

fn json_str(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn comm_participant(p: &serde_json::Value) -> Option<CommParticipant> {
    let id = json_str(p, "id")?;
    let state = json_str(p, "state");
    let has_end_time = match p.get("endTime") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    let ended = has_end_time || state.as_deref().is_some_and(is_ended_state);
    let wrapped = p
        .get("wrapup")
        .is_some_and(|w| json_str(w, "code").is_some() && !flag_of(w, "provisional"));
    let communications = p
        .get("messages")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(Communication {
                id: json_str(m, "id")?,
                state: json_str(m, "state"),
            })
        })
        .collect();
    Some(CommParticipant {
        id,
        purpose: json_str(p, "purpose"),
        state,
        ended,
        wrapup_required: flag_of(p, "wrapupRequired"),
        wrapup_done: wrapped || flag_of(p, "wrapupSkipped"),
        communications,
    })
}

fn flag_of(v: &serde_json::Value, key: &str) -> bool {
    v.get(key).and_then(serde_json::Value::as_bool) == Some(true)
}

#[cfg(test)]
mod retry_after_tests {
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
