//! Typed REST calls to the Genesys Platform API, with its error body and retry policy.
//!
//! Only operations from the facts sheet are used (every path here is in
//! `openapi-subset.json`). The policy follows the official .NET SDK: 429 waits
//! `Retry-After` (giving up past 180 s), 5xx and transport errors back off with jitter,
//! 401 renews the token once and retries, any other 4xx is returned at once.
//!
//! Here: the client and one method per operation. `send` holds the retry policy every
//! call goes through, `error` the failed call and Genesys's `ErrorBody`,
//! `communications` the participants' message communications (farewell, wrap-up).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::auth::TokenSource;
use super::budget::{Budget, Priority};
use super::frames::{ConversationEvent, FlowMetric, parse_conversation_body};

mod communications;
mod error;
mod send;

use super::transport::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};
pub use communications::{CommParticipant, Communication, parse_comm_participants};
pub use error::ApiError;
pub use send::conversation_in;

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
    /// `[ha]`: every request's User-Agent names this instance and the epoch it acts
    /// under (or `standby`), so Genesys-side logs and the tests tell who sent what.
    agent: Option<Agent>,
}

/// This instance in a group, for the User-Agent.
#[derive(Debug)]
struct Agent {
    instance: String,
    role: tokio::sync::watch::Receiver<crate::ha::leader::Role>,
    /// Every acting request passes it right before it leaves (see `crate::ha::gate`).
    gate: Arc<crate::ha::gate::SendGate>,
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
            agent: None,
        }
    }

    /// A call failed for a reason that says Genesys (or the way to it) is down.
    fn outage_failure(&self, err: &ApiError) {
        let down = match err {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status >= 500,
            ApiError::Auth(e) => e.is_retryable(),
            ApiError::Decode { .. } | ApiError::NotActing { .. } => false,
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

    /// `[ha]`: name `instance` and the epoch `role` holds in every request's
    /// User-Agent (`genesys-closer/VERSION (host-a; epoch 3)`, or `standby`), and send
    /// a request that acts on a conversation only through `gate`, while `role` acts.
    pub fn in_group(
        mut self,
        instance: &str,
        role: tokio::sync::watch::Receiver<crate::ha::leader::Role>,
        gate: Arc<crate::ha::gate::SendGate>,
    ) -> Self {
        self.agent = Some(Agent {
            instance: instance.to_owned(),
            role,
            gate,
        });
        self
    }

    /// `[ha]`: a request that acts on a conversation (anything but a read under
    /// `/api/v2/conversations/`) passes the gate right before it leaves: `Err` when
    /// this instance no longer acts; the guard counts it in flight until dropped. Out
    /// of a group, and for other requests, `Ok(None)`.
    pub(super) fn gate(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<Option<crate::ha::gate::InFlight>, ApiError> {
        let Some(a) = self.agent.as_ref() else {
            return Ok(None);
        };
        if *method == Method::GET || !path.starts_with("/api/v2/conversations/") {
            return Ok(None);
        }
        let acting = a
            .role
            .borrow()
            .acting(tokio::time::Instant::now())
            .is_some();
        acting
            .then(|| a.gate.enter())
            .flatten()
            .map(Some)
            .ok_or_else(|| ApiError::NotActing {
                method: method.clone(),
                path: path.to_owned(),
            })
    }

    /// The User-Agent of a request now, when in a group.
    pub(super) fn group_agent(&self) -> Option<String> {
        let a = self.agent.as_ref()?;
        let epoch = match *a.role.borrow() {
            crate::ha::leader::Role::Leader { epoch, .. } => format!("epoch {epoch}"),
            crate::ha::leader::Role::Standby => "standby".into(),
        };
        Some(format!(
            "genesys-closer/{} ({}; {epoch})",
            env!("CARGO_PKG_VERSION"),
            a.instance
        ))
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
