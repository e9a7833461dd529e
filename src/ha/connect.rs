//! From `[ha]` to what the lease and the journal need: the connection string (read from
//! where the configuration says, never logged) and the lease's settings.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use super::lease::LeaseSettings;
use crate::config::{DATABASE_URL_ENV, DatabaseUrl, HaConfig};

/// Reads the connection string; an error says where it looked and why it cannot be
/// used, never what it holds.
pub fn database_url(ha: &HaConfig) -> Result<SecretString, String> {
    let from_file = |path: &Path, what: &str| -> Result<SecretString, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("{what} {} is empty", path.display()));
        }
        Ok(SecretString::from(text.to_owned()))
    };
    match &ha.database_url {
        DatabaseUrl::Inline(u) => Ok(SecretString::from(u.clone())),
        DatabaseUrl::File(p) => from_file(p, "[ha] database_url_file"),
        DatabaseUrl::Credential(p) => from_file(p, "credential database_url"),
        DatabaseUrl::Env => match std::env::var(DATABASE_URL_ENV) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_owned())),
            _ => Err(format!(
                "[ha] has no connection string: set database_url or database_url_file, \
                 LoadCredential=database_url, or the environment variable {DATABASE_URL_ENV}"
            )),
        },
    }
    .and_then(|s| {
        // Parsed once here, so a malformed string is said at start, without its text.
        s.expose_secret()
            .parse::<tokio_postgres::Config>()
            .map_err(|_| {
                "[ha] the connection string is not a PostgreSQL connection string \
                 (postgres://user@host/db or key=value pairs)"
                    .to_owned()
            })?;
        Ok(s)
    })
}

/// The lease's settings from `[ha]` (already judged by `check`).
pub fn lease_settings(ha: &HaConfig) -> Result<LeaseSettings, super::HaError> {
    LeaseSettings::new(
        &ha.schema,
        &ha.lease_name,
        &ha.instance,
        ha.lease_ttl,
        ha.renew_every,
    )
}

/// Where the coordination database is, for logs: host(s), port(s) and database name,
/// never the user's password.
pub fn describe(url: &SecretString) -> String {
    match url.expose_secret().parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            let ports: Vec<String> = match c.get_ports() {
                [] => vec!["5432".into()],
                p => p.iter().map(u16::to_string).collect(),
            };
            format!(
                "{} port {} database {}",
                hosts.join(","),
                ports.join(","),
                c.get_dbname().unwrap_or("(the user's name)")
            )
        }
        Err(_) => "(unreadable connection string)".into(),
    }
}

/// A driver error in words safe to show, with its causes (`error connecting to server:
/// Connection refused (os error 111)`, `error performing TLS handshake: server does not
/// support TLS`): the server's message and SQLSTATE for a statement the server refused.
/// A connection string that does not parse is named without its cause, which may quote
/// the string (and so a password).
pub fn error_words(e: &tokio_postgres::Error) -> String {
    use std::fmt::Write as _;
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut words = e.to_string();
    if words == "invalid connection string" {
        return words;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !words.ends_with(&text) {
            let _ = write!(words, ": {text}");
        }
        cause = c.source();
    }
    words
}
