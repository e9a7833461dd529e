//! A failed call, and Genesys's `ErrorBody` turned into one.

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::super::auth::AuthError;

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
    /// `[ha]`: an acting request held back at the last moment: this instance no longer
    /// acts (the lease is another's, its trust window ended, or it is stopping).
    #[error("{method} {path}: not sent: this instance no longer acts (lease)")]
    NotActing {
        /// HTTP method.
        method: Method,
        /// Path without host.
        path: String,
    },
}

impl ApiError {
    /// Whether Genesys answered the request (it then counts as sent): not when it got
    /// no answer (transport) or never went for want of a token (auth).
    pub fn was_answered(&self) -> bool {
        matches!(self, ApiError::Status { .. } | ApiError::Decode { .. })
    }

    /// Failures that pass (429, 5xx, transport, a login that may come back).
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => *status == 429 || *status >= 500,
            ApiError::Transport { .. } => true,
            ApiError::Decode { .. } | ApiError::NotActing { .. } => false,
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

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(rename = "contextId", default)]
    context_id: Option<String>,
}

pub(super) fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(super) fn status_error(
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
