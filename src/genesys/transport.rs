//! What every HTTP request to Genesys shares below the REST calls and the token grant:
//! the connection and request deadlines, and the words for a request that got no answer.
//!
//! Both [`super::api`] and [`super::auth`] use it; it uses neither.

use std::time::Duration;

use url::Url;

/// Per-request deadline, so a hung connection cannot stall a close sequence.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline for a TCP (and TLS) connection: a host that drops packets is said within
/// this, not after the whole request's deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong with a request that got no answer, in words an operator can act on:
/// the class with the host and port (the name does not resolve, nothing listens, TLS
/// failed, no answer in time), then every cause the libraries gave.
pub fn describe_transport(url: &Url, e: &reqwest::Error) -> String {
    // reqwest's own text ends in " for url (...)": the host is said in the class.
    let mut chain = e.to_string();
    if let Some(i) = chain.find(" for url (") {
        chain.truncate(i);
    }
    if let Some(cause) = std::error::Error::source(e) {
        let rest = crate::telemetry::error_chain(cause);
        if !chain.contains(&rest) {
            chain = format!("{chain}: {rest}");
        }
    }
    let host = url.host_str().unwrap_or("?");
    let at = match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let io_kind = {
        let mut kind = None;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
            }
            cause = c.source();
        }
        kind
    };
    let lower = chain.to_ascii_lowercase();
    let class = if lower.contains("dns error") || lower.contains("failed to lookup address") {
        format!("the host name {host} does not resolve")
    } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        format!("connection refused by {at} (nothing listens there)")
    } else if e.is_timeout() && e.is_connect() {
        format!(
            "no connection to {at} within {} s (a firewall dropping packets, or a wrong address)",
            CONNECT_TIMEOUT.as_secs()
        )
    } else if e.is_timeout() {
        format!("no answer from {at} within {} s", REQUEST_TIMEOUT.as_secs())
    } else if lower.contains("invalidcontenttype")
        || lower.contains("corrupt message")
        || lower.contains("tls")
        || lower.contains("certificate")
    {
        format!(
            "TLS with {at} failed (a plain-http port, a proxy in between, or a certificate \
             this machine does not trust)"
        )
    } else if io_kind == Some(std::io::ErrorKind::ConnectionReset)
        || io_kind == Some(std::io::ErrorKind::UnexpectedEof)
        || lower.contains("connection closed")
    {
        format!("{at} closed the connection without an answer")
    } else if e.is_connect() {
        format!("cannot connect to {at}")
    } else {
        format!("the request to {at} failed")
    };
    format!("{class}: {chain}")
}
