//! OAuth client-credentials token source (facts sheet A).
//!
//! `POST {login}/oauth/token` with HTTP Basic `client_id:client_secret` and the form
//! `grant_type=client_credentials`. Client credentials give no refresh token, so the grant
//! is simply run again before `expires_in` runs out. One token is shared by every caller;
//! a mutex makes concurrent renewals a single request.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::config::{SECRET_ENV, SecretSource};

/// Renew when this share of the lifetime has passed (a 24 h token renews after ~21.6 h).
const RENEW_AT_FRACTION: f64 = 0.9;
/// ...but never later than this before expiry, so clock skew and slow requests are covered.
const RENEW_MARGIN: Duration = Duration::from_secs(60);

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The login service refused the client (wrong id or secret, disabled client...).
    #[error("login refused with HTTP {status}: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// OAuth `error` field, e.g. `invalid_client`.
        error: String,
        /// Any description the server sent.
        description: Option<String>,
    },
    /// The login service failed or could not be reached.
    #[error("login service unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// Refusals (4xx) need an operator; outages may pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            AuthError::Refused { status, .. } => *status == 429 || *status >= 500,
            AuthError::Unavailable(_) => true,
        }
    }
}

/// Why the client secret could not be loaded. Each names the source the config chose,
/// so the message points at the one thing to fix.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or blank (and no file is configured).
    #[error(
        "no client secret: {SECRET_ENV} is not set (or blank); set it, or `client_secret_file` in [genesys], or systemd LoadCredential=client_secret:PATH"
    )]
    Missing,
    /// The configured file (or systemd credential) holds nothing but whitespace.
    #[error("the client secret file {path} is empty")]
    Empty {
        /// File that was read.
        path: String,
    },
    /// The configured path is a directory.
    #[error("the client secret path {path} is a directory, not a file")]
    Directory {
        /// Path that was tried.
        path: String,
    },
    /// The secret file could not be read.
    #[error("cannot read the client secret from {path}: {source}")]
    Unreadable {
        /// File that was tried.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Loads the client secret from where the config says it lives.
pub fn load_secret(source: &SecretSource) -> Result<SecretString, SecretError> {
    let from_file = |path: &Path| {
        let shown = path.display().to_string();
        if path.is_dir() {
            return Err(SecretError::Directory { path: shown });
        }
        let s = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        let s = s.trim();
        if s.is_empty() {
            Err(SecretError::Empty { path: shown })
        } else {
            Ok(SecretString::from(s.to_string()))
        }
    };
    match source {
        SecretSource::File(p) | SecretSource::Credential(p) => from_file(p),
        SecretSource::Env => match std::env::var(SECRET_ENV) {
            Ok(s) if !s.trim().is_empty() => Ok(SecretString::from(s.trim().to_string())),
            _ => Err(SecretError::Missing),
        },
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

struct CachedToken {
    value: SecretString,
    renew_at: Instant,
}

/// Hands out a valid bearer token, renewing it before it expires.
pub struct TokenSource {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    secret: SecretString,
    cached: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the secret nor the token may reach a log line.
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source for `{login_url}/oauth/token`.
    pub fn new(
        http: reqwest::Client,
        login_url: &Url,
        client_id: String,
        secret: SecretString,
    ) -> Self {
        let mut token_url = login_url.clone();
        let base = token_url.path().trim_end_matches('/').to_string();
        token_url.set_path(&format!("{base}/oauth/token"));
        TokenSource {
            http,
            token_url,
            client_id,
            secret,
            cached: Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a fresh grant when it is due for renewal.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref() {
            if Instant::now() < t.renew_at {
                return Ok(t.value.clone());
            }
            tracing::info!("access token due for renewal; running the client-credentials grant");
        }
        let fresh = self.grant().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Forgets `rejected` (after a 401) so the next [`token`](Self::token) runs the grant.
    /// A token already renewed by another caller is kept.
    pub async fn invalidate(&self, rejected: &SecretString) {
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == rejected.expose_secret())
        {
            *cached = None;
        }
    }

    async fn grant(&self) -> Result<CachedToken, AuthError> {
        let started = Instant::now();
        let resp = self
            .http
            .post(self.token_url.clone())
            .basic_auth(&self.client_id, Some(self.secret.expose_secret()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| {
                crate::metrics::api_failure("token", "transport");
                AuthError::Unavailable(format!(
                    "POST {}: {}",
                    self.token_url,
                    super::transport::describe_transport(&self.token_url, &e)
                ))
            })?;
        let status = resp.status().as_u16();
        crate::metrics::api_request("token", status);
        let body = resp.bytes().await.map_err(|e| {
            AuthError::Unavailable(format!(
                "POST {}: the answer broke off: {}",
                self.token_url,
                super::transport::describe_transport(&self.token_url, &e)
            ))
        })?;
        if status != 200 {
            let err: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            return Err(AuthError::Refused {
                status,
                error: err.error.unwrap_or_else(|| "unknown".into()),
                description: err.description.or(err.error_description),
            });
        }
        let tok: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            AuthError::Unavailable(format!("token response is not the documented shape: {e}"))
        })?;
        // Genesys documents 24 h as the default lifetime; trust expires_in when present.
        let lifetime = Duration::from_secs(tok.expires_in.unwrap_or(86_400));
        let by_fraction = lifetime.mul_f64(RENEW_AT_FRACTION);
        let by_margin = lifetime.saturating_sub(RENEW_MARGIN);
        let renew_in = by_fraction.min(by_margin).max(lifetime / 2);
        tracing::info!(
            expires_in_s = lifetime.as_secs(),
            renew_in_s = renew_in.as_secs(),
            "obtained access token"
        );
        Ok(CachedToken {
            value: SecretString::from(tok.access_token),
            renew_at: started + renew_in,
        })
    }
}
