//! The intake endpoint: the HTTP listener the bot flow's data action (or a Process
//! Automation workflow) calls with a conversation id and, optionally, its intent or
//! attributes, so the daemon learns of a conversation no queue or user topic shows.
//!
//! `POST /v1/intents`
//! `{"conversationId":"<uuid>","intent":"<value>","attributes":{...},"eventTime":<epoch ms>}`
//! (`eventTime`: when the conversation started, for a call made without the intent by
//! a trigger seconds later; it tells the event loop whether the intent may already
//! have been set unseen)
//! - authenticates every call (bearer token, or HTTP Basic with the token as password),
//!   comparing in constant time; a failure is a bare 401;
//! - bounds what it reads: 16 KiB bodies, 32 KiB of headers (431, answered by the HTTP
//!   layer with no body), a deadline for headers and body, at most
//!   `max_connections` connections (more get 503 at once), and a bounded queue to the
//!   event loop (full: 503 with `Retry-After`);
//! - answers bad input with a JSON error that names the field, and closes nothing;
//! - answers at once with `202 {"result": ...}`: it hands the call to the event loop,
//!   which decides (rules still decide; the intake only supplies an intent), and never
//!   waits for the close itself.
//!
//! It serves plain HTTP on loopback (behind a reverse proxy) or HTTPS itself (rustls).
//!
//! Here: the limits, the call and its answer, start-up and the handler;
//! `credentials.rs` holds the credential check, `parse.rs` the reading of a call's body.

mod credentials;
mod parse;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::credentials::Credentials;
use self::parse::parse_call;
use crate::config::{IntakeConfig, TlsFiles, TokenSource};

/// Largest request body read.
pub const MAX_BODY: usize = 16 * 1024;
/// Largest request head (request line and headers) read; more is answered 431. A data
/// action's request carries a few short headers.
pub const MAX_HEAD: usize = 32 * 1024;
/// Longest intent value accepted.
pub const MAX_INTENT: usize = 256;
/// Most attributes one call may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute name or value.
const MAX_ATTRIBUTE_TEXT: usize = 1024;
/// How far ahead of this host's clock an `eventTime` may be (clocks differ a little);
/// more is a bad value, not a start.
const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(300);
/// Calls queued for the event loop before new ones get 503.
pub const QUEUE: usize = 4096;
/// How long a call waits for the event loop's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// A connection is asked to close after this long, so idle keep-alive connections
/// cannot hold the connection slots forever.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// One accepted intake call, handed to the event loop.
#[derive(Debug)]
pub struct IntakeCall {
    /// The conversation (a UUID, checked).
    pub conversation_id: Box<str>,
    /// The intent the flow recognised, if the call carries one.
    pub intent: Option<Box<str>>,
    /// Attributes the call carries (a trigger on `.attributes` with the `Json` format).
    pub attributes: Vec<(Box<str>, Box<str>)>,
    /// When the request was read.
    pub received: Instant,
    /// How long before `received` the conversation started, from the call's
    /// `eventTime` (the trigger event's own time) read against this host's clock (zero
    /// when it is ahead); `None` when the call did not say.
    pub started_ago: Option<Duration>,
    /// Where the event loop answers.
    pub reply: oneshot::Sender<IntakeAnswer>,
    /// `[ha]`: taken from the group's table of stored calls (`crate::ha::relay`), to be
    /// decided here; `false` for a call this instance's own intake read.
    pub stored: bool,
    /// `[ha]`: the call was taken before by an earlier leader, which may have acted on
    /// it without its decision reaching the journal: the steps the journal holds for
    /// the conversation (a close they show is resumed, not started afresh).
    pub earlier_steps: Option<Vec<String>>,
}

/// What the event loop made of an intake call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeAnswer {
    /// A rule matched: the close sequence has started.
    Close,
    /// No rule matches what the call says.
    NoRule,
    /// This conversation was already decided (a retried call, say): nothing more.
    Duplicate,
    /// The conversation is already closed: nothing sent.
    AlreadyClosed,
    /// No intent yet: the conversation is watched and decided when its intent appears.
    Watching,
    /// `verify` is on: the conversation is read once, and Genesys's own attribute decides.
    Verifying,
    /// The daemon is shutting down and takes no new work.
    ShuttingDown,
    /// `[ha]`: the call could not be stored in the group's database (out of reach), so
    /// it was not accepted: 503, retry.
    Standby,
    /// `[ha]`: a standby stored the call in the group's database, and the acting
    /// instance did not answer in time (a takeover under way, say): whoever acts carries
    /// it out.
    Queued,
}

impl IntakeAnswer {
    /// The `result` value in the answer body.
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeAnswer::Close => "close",
            IntakeAnswer::NoRule => "no_rule",
            IntakeAnswer::Duplicate => "duplicate",
            IntakeAnswer::AlreadyClosed => "already_closed",
            IntakeAnswer::Watching => "watching",
            IntakeAnswer::Verifying => "verifying",
            IntakeAnswer::ShuttingDown => "shutting_down",
            IntakeAnswer::Standby => "standby",
            IntakeAnswer::Queued => "queued",
        }
    }

    /// Every answer.
    pub const ALL: [IntakeAnswer; 9] = [
        IntakeAnswer::Close,
        IntakeAnswer::NoRule,
        IntakeAnswer::Duplicate,
        IntakeAnswer::AlreadyClosed,
        IntakeAnswer::Watching,
        IntakeAnswer::Verifying,
        IntakeAnswer::ShuttingDown,
        IntakeAnswer::Standby,
        IntakeAnswer::Queued,
    ];

    /// The answer an `as_str` value names (the group's relay stores answers as text).
    pub fn parse(text: &str) -> Option<IntakeAnswer> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Why the intake could not start.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The credential could not be read.
    #[error("intake credential: {0}")]
    Token(String),
    /// The TLS files could not be used.
    #[error("intake TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("intake cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

/// Reads the intake credential from where the config says.
pub fn load_token(source: &TokenSource) -> Result<SecretString, IntakeError> {
    let text = match source {
        TokenSource::File(p) | TokenSource::Credential(p) => std::fs::read_to_string(p)
            .map_err(|e| IntakeError::Token(format!("cannot read {}: {e}", p.display())))?,
        TokenSource::Env => std::env::var(crate::config::INTAKE_TOKEN_ENV).map_err(|_| {
            IntakeError::Token(format!(
                "[intake] is enabled but no credential is set: use `token_file`, systemd \
                 LoadCredential={}, or the environment variable {}",
                crate::config::INTAKE_TOKEN_CREDENTIAL,
                crate::config::INTAKE_TOKEN_ENV
            ))
        })?,
    };
    let token = text.trim();
    if token.len() < 16 {
        return Err(IntakeError::Token(
            "the intake credential must be at least 16 characters".into(),
        ));
    }
    Ok(SecretString::from(token.to_string()))
}

fn load_tls(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, IntakeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crate::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| IntakeError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(IntakeError::Tls(format!(
            "{}: no certificate found",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| IntakeError::Tls(format!("{}: {e}", files.key.display())))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| IntakeError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

struct Shared {
    credentials: Credentials,
    calls: mpsc::Sender<IntakeCall>,
    request_timeout: Duration,
}

/// A running intake listener.
pub struct Intake {
    /// The bound address (useful when the config asked for port 0).
    pub addr: SocketAddr,
}

/// Binds and starts serving; calls go to `calls`. Stops when `cancel` fires.
pub async fn start(
    cfg: &IntakeConfig,
    token: SecretString,
    calls: mpsc::Sender<IntakeCall>,
    cancel: CancellationToken,
) -> Result<Intake, IntakeError> {
    let tls = cfg.tls.as_ref().map(load_tls).transpose()?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|error| IntakeError::Bind {
            addr: cfg.listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| IntakeError::Bind {
        addr: cfg.listen,
        error,
    })?;
    let shared = Arc::new(Shared {
        credentials: Credentials::new(&token, cfg.basic_user.as_deref()),
        calls,
        request_timeout: cfg.request_timeout,
    });
    let app = router(shared);
    tracing::info!(%addr, tls = tls.is_some(), max_connections = cfg.max_connections,
        "intake listening (POST /v1/intents)");
    tokio::spawn(crate::listen::accept_loop(
        listener,
        tls,
        hyper_util::service::TowerToHyperService::new(app),
        crate::listen::Bounds {
            max_connections: cfg.max_connections,
            head_timeout: cfg.request_timeout,
            lifetime: CONNECTION_LIFETIME,
            max_head: MAX_HEAD,
            max_buf: 64 * 1024,
        },
        crate::listen::Busy {
            content_type: "application/json",
            body: r#"{"error":"too many connections; retry later"}"#,
            counted: || crate::metrics::intake_request(503),
            name: "intake",
        },
        cancel,
    ));
    Ok(Intake { addr })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/intents", post(intents))
        .fallback(|| async { error(StatusCode::NOT_FOUND, None, "not found: POST /v1/intents") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                "method not allowed: POST /v1/intents",
            )
        })
        .with_state(shared)
        .layer(axum::middleware::map_response(count_answer))
}

/// Counts every answer by status (`genesys_closer_intake_requests_total`).
async fn count_answer(resp: Response) -> Response {
    crate::metrics::intake_request(resp.status().as_u16());
    resp
}

/// A JSON error naming the field at fault, if one is (no `field` key otherwise).
fn error(status: StatusCode, field: Option<&str>, message: &str) -> Response {
    let body = match field {
        Some(field) => serde_json::json!({ "error": message, "field": field }),
        None => serde_json::json!({ "error": message }),
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// Milliseconds since the epoch on this host's clock.
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// `POST /v1/intents`: checks the credentials, reads and checks the body, hands the
/// call to the event loop and answers what it says.
async fn intents(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let received = Instant::now();
    let (parts, body) = req.into_parts();
    if !shared.credentials.admits(&parts.headers) {
        return error(StatusCode::UNAUTHORIZED, None, "unauthorized");
    }
    let bytes = match read_body(&shared, &parts.headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let received_ms = now_ms();
    let parts = match parse_call(&bytes, received_ms) {
        Ok(p) => p,
        Err((field, message)) => {
            return error(
                StatusCode::BAD_REQUEST,
                Some(field),
                &format!("{field}: {message}"),
            );
        }
    };
    let (reply, answer) = oneshot::channel();
    let conversation_id = parts.conversation_id;
    let started_ago = parts
        .event_time
        .map(|ms| Duration::from_millis(received_ms.saturating_sub(ms)));
    let call = IntakeCall {
        conversation_id: conversation_id.clone(),
        intent: parts.intent,
        attributes: parts.attributes,
        received,
        started_ago,
        reply,
        stored: false,
        earlier_steps: None,
    };
    if shared.calls.try_send(call).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "busy: too many calls queued; retry later",
        );
    }
    respond(answer, &conversation_id).await
}

/// Reads a call's body, at most [`MAX_BODY`] bytes (judged first by its declared
/// length) within the request timeout; the error answer otherwise.
async fn read_body(
    shared: &Shared,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, Response> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        shared.request_timeout,
        axum::body::to_bytes(Body::new(body), MAX_BODY),
    )
    .await
    {
        Ok(Ok(b)) => Ok(b),
        // `to_bytes` fails past the limit (or on a broken body).
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            Some("body"),
            "the body did not arrive in time",
        )),
    }
}

/// The answer to a call the event loop was handed: its answer, or busy when none
/// comes within [`ANSWER_WITHIN`].
async fn respond(answer: oneshot::Receiver<IntakeAnswer>, conversation_id: &str) -> Response {
    match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(IntakeAnswer::ShuttingDown)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "shutting down; retry later",
        ),
        Ok(Ok(IntakeAnswer::Standby)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "this instance cannot store the call in the group's database (out of reach); \
             retry (another instance, or later)",
        ),
        Ok(Ok(a)) => {
            let body =
                serde_json::json!({ "result": a.as_str(), "conversationId": conversation_id });
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "busy: no answer in time; retry later",
        ),
    }
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("body"),
        &format!("body larger than {MAX_BODY} bytes"),
    )
}

#[cfg(test)]
mod tests;
