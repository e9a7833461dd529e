//! The HTTP surface: one axum router for the OAuth token endpoint, the REST API
//! and the WebSocket upgrade; a recorder that logs every request with its answer;
//! Genesys-shaped errors (`ErrorBody` plus `ININ-Correlation-Id`).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, head, patch, post};
use base64::Engine as _;
use serde_json::{Value, json};

use super::ids::uuid_v4;
use super::world::World;
use super::{
    RecordedRequest, available_topics, rest_conversations as conv, rest_faults, rest_limits,
    rest_notifications as notif, socket,
};

/// Largest request body read; bigger ones get 413. A full 1,000-topic
/// subscription list is about 80 KB, so this leaves ample room.
const MAX_BODY: usize = 4 * 1024 * 1024;

pub(crate) const CORRELATION_HEADER: &str = "inin-correlation-id";

/// Builds the router serving everything on one listener.
pub(crate) fn router(world: Arc<World>) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route(
            "/api/v2/notifications/channels",
            post(notif::create_channel).get(notif::list_channels),
        )
        .route(
            "/api/v2/notifications/channels/{channel_id}",
            head(notif::head_channel),
        )
        .route(
            "/api/v2/notifications/availabletopics",
            get(available_topics::list),
        )
        .route(
            "/api/v2/notifications/channels/{channel_id}/subscriptions",
            get(notif::get_subscriptions)
                .put(notif::put_subscriptions)
                .post(notif::post_subscriptions)
                .delete(notif::delete_subscriptions),
        )
        .route(
            "/api/v2/conversations/messages/{conversation_id}",
            get(conv::get_conversation).patch(conv::patch_conversation),
        )
        .route(
            "/api/v2/conversations/messages/{conversation_id}/participants/{participant_id}",
            patch(conv::patch_participant),
        )
        .route(
            "/api/v2/conversations/messages/{conversation_id}/communications/{communication_id}/messages",
            post(conv::post_message),
        )
        .route(
            "/api/v2/conversations/messages/{conversation_id}/participants/{participant_id}/communications/{communication_id}/wrapup",
            post(conv::post_wrapup),
        )
        // Generic (all-media) read; `messages` above is a static segment, so
        // `/api/v2/conversations/messages/{id}` still reaches the messaging handler.
        .route(
            "/api/v2/conversations/{conversation_id}",
            get(conv::get_generic_conversation),
        )
        .route(
            "/api/v2/conversations/{conversation_id}/disconnect",
            post(conv::teardown),
        )
        .route(
            "/api/v2/analytics/flows/activity/query",
            post(super::flow_activity::query),
        )
        .route(
            "/api/v2/analytics/queues/observations/query",
            post(super::queue_observations::query),
        )
        .route("/channels/{channel_id}", get(socket::upgrade))
        .fallback(not_found)
        // Genesys answers an unsupported method on a known path like an unknown path.
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&world), record))
        .with_state(world)
}

/// A Genesys error to answer, rendered as `ErrorBody`; the same fresh id goes in
/// `contextId` and the `ININ-Correlation-Id` header.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Named in `details[].fieldName` when one request field is wrong.
    field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 400 that names the offending field in the message and in `details`.
    pub(crate) fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad.request",
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not.found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ctx = uuid_v4();
        let details: Vec<Value> = self
            .field
            .iter()
            .map(|f| json!({ "errorCode": "invalid.value", "fieldName": f }))
            .collect();
        let body = json!({
            "message": self.message,
            "code": self.code,
            "status": self.status.as_u16(),
            "contextId": ctx,
            "details": details,
            "errors": [],
        });
        let mut resp = (self.status, Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&ctx) {
            resp.headers_mut().insert(CORRELATION_HEADER, v);
        }
        resp
    }
}

/// What every API handler returns: an answer or a Genesys error.
pub(crate) type ApiResult = Result<Response, ApiError>;

/// Checks `Authorization: Bearer <token>` against the tokens this sim issued.
pub(crate) fn authorize(world: &World, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match token {
        Some(t) if world.token_valid(t) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad.credentials",
            "Invalid login credentials.",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad.credentials",
            "No authentication bearer token specified in authorization header.",
        )),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "The requested resource {} {} was not found.",
        req.method(),
        req.uri().path()
    ))
}

/// The OAuth error shape (not `ErrorBody`: the login host speaks OAuth).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body =
        json!({ "error": error, "description": description, "error_description": description });
    (status, Json(body)).into_response()
}

/// `POST /oauth/token`: client-credentials grant with HTTP Basic client authentication.
async fn token(State(world): State<Arc<World>>, headers: HeaderMap, body: Bytes) -> Response {
    let creds = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let authenticated = creds
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(id, secret)| id == world.client_id && secret == world.client_secret);
    if !authenticated {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let grant = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v);
    if grant.as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let access_token = world.issue_token();
    Json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": world.token_ttl.as_secs(),
    }))
    .into_response()
}

/// The auth scheme only, never the credentials; "(malformed)" for a header
/// that has no separate scheme word, since its single token might be a secret.
fn auth_scheme(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(AUTHORIZATION)?;
    let s = v.to_str().unwrap_or("");
    match s.trim().split_once(' ') {
        Some((scheme, _))
            if scheme.len() <= 16 && scheme.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Some(scheme.to_owned())
        }
        _ => Some("(malformed)".to_owned()),
    }
}

/// Request bodies are logged as text; a form body's `client_secret` is masked in
/// case a client sends its secret there instead of in Basic auth.
fn loggable_body(path: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if path != "/oauth/token" || !text.contains("client_secret") {
        return text.into_owned();
    }
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(bytes) {
        let v = if k == "client_secret" {
            "REDACTED".into()
        } else {
            v
        };
        out.append_pair(&k, &v);
    }
    out.finish()
}

/// Logs every request in arrival order, answers it, and normalises the answer:
/// every error becomes an `ErrorBody`, every answer carries `ININ-Correlation-Id`.
/// A request a hold matches (`rest_limits`) waits first, then is served the same way.
async fn record(State(world): State<Arc<World>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let seq = world.start_request(RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        auth_scheme: auth_scheme(&parts.headers),
        body: String::new(),
        user_agent: parts.headers.get(axum::http::header::USER_AGENT).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(200)
                .collect()
        }),
        status: 0,
    });
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let msg = format!("Request body unreadable or larger than {MAX_BODY} bytes.");
            let resp = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request.entity.too.large",
                msg,
            )
            .into_response();
            let resp = normalise(resp);
            world.finish_request(
                seq,
                "<unreadable or too large>".to_owned(),
                resp.status().as_u16(),
            );
            return resp;
        }
    };
    let logged = loggable_body(&path, &bytes);
    let hold = world.take_hold(parts.method.as_str(), &path);
    let req = Request::from_parts(parts, Body::from(bytes));
    let Some(hold) = hold else {
        return serve(&world, seq, logged, req, next).await;
    };
    let cancel = world.cancel.clone();
    let held = {
        let world = Arc::clone(&world);
        async move {
            tokio::select! {
                _ = cancel.cancelled() => None,
                _ = tokio::time::sleep(hold.delay) => Some(serve(&world, seq, logged, req, next).await),
            }
        }
    };
    // The simulator shut down while the request was held.
    let unserved = || {
        let resp = normalise(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service.unavailable",
                "The service is shutting down.",
            )
            .into_response(),
        );
        world.finish_request(
            seq,
            "<simulator stopped while the request was held>".to_owned(),
            resp.status().as_u16(),
        );
        resp
    };
    if hold.completes_without_client {
        // Its own task: served even if the client goes and this future is dropped.
        match tokio::spawn(held).await {
            Ok(Some(resp)) => resp,
            _ => unserved(),
        }
    } else {
        // Dropped with this future if the client goes first: logged as 499.
        let mut guard = Unserved {
            world: &world,
            seq,
            armed: true,
        };
        let resp = held.await;
        guard.armed = false;
        resp.unwrap_or_else(unserved)
    }
}

/// Logs a held request dropped before it was served (its client went away) as 499.
struct Unserved<'a> {
    world: &'a World,
    seq: u64,
    armed: bool,
}

impl Drop for Unserved<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.world.finish_request(
                self.seq,
                "<client went away while the request was held>".to_owned(),
                rest_limits::CLIENT_CLOSED_REQUEST,
            );
        }
    }
}

/// Answers one request (an injected fault, the org's rate limit, or its handler) and
/// logs the answer's status.
async fn serve(world: &World, seq: u64, logged: String, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    // An injected fault, then the rate limit, answer in place of the handler, like a
    // gateway would.
    let resp = if let Some(hit) = world.take_rest_fault(req.method().as_str(), &path) {
        rest_faults::answer(&path, hit)
    } else if let Some(limited) = world.take_rate_limit(&path) {
        rest_limits::answer(limited)
    } else {
        next.run(req).await
    };
    let resp = normalise(resp);
    world.finish_request(seq, logged, resp.status().as_u16());
    resp
}

fn normalise(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut resp = if status == StatusCode::METHOD_NOT_ALLOWED {
        ApiError::not_found("The requested resource was not found.").into_response()
    } else if (status.is_client_error() || status.is_server_error()) && !is_json {
        // axum's own rejections are plain text; callers must always get an ErrorBody.
        let code = match status.as_u16() {
            400 => "bad.request",
            401 => "bad.credentials",
            404 => "not.found",
            413 => "request.entity.too.large",
            415 => "unsupported.media.type",
            s if s >= 500 => "internal.server.error",
            _ => "bad.request",
        };
        ApiError::new(status, code, status.canonical_reason().unwrap_or("error")).into_response()
    } else {
        resp
    };
    if !resp.headers().contains_key(CORRELATION_HEADER)
        && let Ok(v) = HeaderValue::from_str(&uuid_v4())
    {
        resp.headers_mut().insert(CORRELATION_HEADER, v);
    }
    resp
}
