//! From `[ha]` to what the lease and the journal need: the connection string (read from
//! where the configuration says, never logged), the lease's settings, and one way to
//! connect ([`Database::connector`], [`Connector::connect`]) that every connection to the
//! coordination database goes through, with TLS as the connection string's `sslmode` asks.
//!
//! TLS is rustls with the ring provider (no OpenSSL), through `tokio-postgres-rustls`
//! (which also gives SCRAM's `tls-server-end-point` channel binding). `sslmode` reads as
//! libpq reads it:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | when the server offers it | not checked |
//! | `require` | required | not checked; with `[ha] ca_file`, its chain is (as `verify-ca`) |
//! | `verify-ca` | required | chain checked against the system's roots and `ca_file` |
//! | `verify-full` | required | as `verify-ca`, and it must name the host connected to |
//!
//! The driver's parser knows the first three only: `verify-ca` and `verify-full` are
//! read here ([`split_verify`]) and handed to it as `require`, the check being this
//! module's verifier's.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::HaError;
use super::lease::LeaseSettings;
use crate::config::{Config, DATABASE_URL_ENV, DatabaseUrl, HaConfig};

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
        parse(&split_verify(s.expose_secret()).0).map_err(|e| e.to_string())?;
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
    match parse(&split_verify(url.expose_secret()).0) {
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

/// The coordination database: where it is (the connection string, never shown) and what
/// its certificate is checked against besides the system's roots (`[ha] ca_file`).
#[derive(Clone)]
pub struct Database {
    url: SecretString,
    ca_file: Option<PathBuf>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("at", &self.describe())
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Database {
    /// The database `url` names, its certificate checked against `ca_file` too.
    pub fn new(url: SecretString, ca_file: Option<PathBuf>) -> Database {
        Database { url, ca_file }
    }

    /// `config`'s `[ha]`: the connection string read where it says, and `ca_file`;
    /// `None` without `[ha]`. An error says why the string cannot be used (never what
    /// it holds).
    pub fn of(config: &Config) -> Option<Result<Database, String>> {
        let ha = config.ha.as_ref()?;
        Some(database_url(ha).map(|url| Database::new(url, ha.ca_file.clone())))
    }

    /// The connection string (it may hold a password: never log it).
    pub fn url(&self) -> &SecretString {
        &self.url
    }

    /// `[ha] ca_file`, when set.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Where it is, for messages ([`describe`]).
    pub fn describe(&self) -> String {
        describe(&self.url)
    }

    /// The connection string parsed and the TLS connector its `sslmode` asks for, with
    /// the CA file and (when the certificate is checked) the system's roots loaded: what
    /// `run` needs before it connects, so `check` calls it too. Errors name the file or
    /// option at fault, never the string.
    pub fn connector(&self) -> Result<Connector, HaError> {
        let (text, verify) = split_verify(self.url.expose_secret());
        let config = parse(&text)?;
        let extra = match &self.ca_file {
            Some(p) => load_ca_file(p)?,
            None => Vec::new(),
        };
        let check = match (verify, config.get_ssl_mode()) {
            (Some(v), _) => v,
            (None, SslMode::Disable) => Check::Off,
            (None, SslMode::Prefer) => Check::Opportunistic,
            (None, _) if self.ca_file.is_some() => Check::Chain,
            (None, _) => Check::Encrypted,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Off | Check::Opportunistic | Check::Encrypted => {
                Arc::new(Unchecked(Arc::clone(&provider)))
            }
            Check::Chain | Check::Full => {
                let roots = roots(extra, self.ca_file.as_deref())?;
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| HaError::Settings(format!("cannot check certificates: {e}")))?;
                if check == Check::Full {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let mut tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HaError::Settings(format!("cannot set up TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // PostgreSQL 17 refuses a direct TLS connection (`sslnegotiation=direct`)
        // without it; older servers ignore it.
        tls.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(tls),
            check,
        })
    }
}

impl From<SecretString> for Database {
    /// The database `url` names, its certificate checked against the system's roots only.
    fn from(url: SecretString) -> Database {
        Database::new(url, None)
    }
}

impl From<&str> for Database {
    fn from(url: &str) -> Database {
        Database::new(SecretString::from(url.to_owned()), None)
    }
}

/// How the server's certificate is checked, from `sslmode` and `[ha] ca_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// No TLS (`sslmode=disable`).
    Off,
    /// TLS when the server offers it, the certificate not checked (`prefer`, the default).
    Opportunistic,
    /// TLS required, the certificate not checked (`require` without `ca_file`).
    Encrypted,
    /// TLS required, the certificate's chain checked against the system's roots and
    /// `ca_file`, not its name (`verify-ca`; `require` with `ca_file`).
    Chain,
    /// As [`Chain`](Self::Chain), and the certificate must name the host (`verify-full`).
    Full,
}

impl Check {
    /// For `check`'s and the logs' lines.
    pub fn describe(self) -> &'static str {
        match self {
            Check::Off => "TLS off (sslmode=disable)",
            Check::Opportunistic => {
                "TLS when the server offers it, certificate not checked (sslmode=prefer)"
            }
            Check::Encrypted => "TLS required, certificate not checked (sslmode=require)",
            Check::Chain => "TLS required, certificate chain checked (verify-ca)",
            Check::Full => "TLS required, certificate chain and host name checked (verify-full)",
        }
    }
}

/// The stream of a connection [`Connector::connect`] opens (TLS or not).
pub type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// The connection half of [`Connector::connect`]: poll it (spawn it) for the client to
/// work.
pub type Connection = tokio_postgres::Connection<Socket, Stream>;

/// A parsed connection string and the TLS connector its `sslmode` asks for (from
/// [`Database::connector`]): what every connection to the coordination database goes
/// through. Cheap to clone; connect as often as needed.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    check: Check,
}

impl Connector {
    /// The parsed connection string.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The parsed connection string, to bound or name the sessions (`connect_timeout`,
    /// `keepalives`, `application_name`, ...). Its `ssl_mode` is the connector's: leave it.
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    /// How the server's certificate is checked.
    pub fn check(&self) -> Check {
        self.check
    }

    /// Opens a session. The error is [`HaError::Db`] in words safe to show
    /// ([`error_words`]), with what to do about a TLS failure (a server without TLS
    /// under `sslmode=require`, a certificate no root vouches for, one for another
    /// name).
    pub async fn connect(&self) -> Result<(Client, Connection), HaError> {
        self.config
            .connect(self.tls.clone())
            .await
            .map_err(|e| HaError::Db(explain(&e)))
    }
}

/// Connects to `database` once (parse, TLS, connect): for a single session. Whoever
/// connects again and again keeps a [`Connector`].
pub async fn connect(database: &Database) -> Result<(Client, Connection), HaError> {
    database.connector()?.connect().await
}

/// [`error_words`], and what to do when TLS is why.
pub fn explain(e: &tokio_postgres::Error) -> String {
    let mut words = error_words(e);
    if let Some(hint) = tls_hint(e) {
        words.push_str(hint);
    }
    words
}

/// What to do about a TLS failure, from the error's causes.
fn tls_hint(e: &tokio_postgres::Error) -> Option<&'static str> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let rustls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match rustls {
            // A CA of the same name with another key (a wrong bundle) is a bad signature.
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            )) => {
                return Some(
                    " (no root this instance trusts signed the server's certificate: set [ha] \
                     ca_file to the PEM of the CA that did, e.g. your cloud provider's bundle)",
                );
            }
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                return Some(
                    " (sslmode=verify-full: the server's certificate does not name the host \
                     connected to: connect by a name it carries, or use sslmode=verify-ca)",
                );
            }
            _ => {}
        }
        if c.to_string() == "server does not support TLS" {
            return Some(
                " (sslmode asks for TLS and this server offers none: turn ssl on in the \
                 server, or set sslmode=prefer or disable on a network you trust)",
            );
        }
        cause = c.source();
    }
    None
}

/// Parses a connection string (with `verify-*` already replaced); the error names the
/// option at fault (`sslmode`), never the string's text.
fn parse(text: &str) -> Result<tokio_postgres::Config, HaError> {
    text.parse::<tokio_postgres::Config>().map_err(|e| {
        // The cause of an unknown option or a bad value names the option; other causes
        // may quote a character of the string (a password's): not shown.
        let cause = std::error::Error::source(&e)
            .map(ToString::to_string)
            .filter(|c| c.contains("option `"));
        HaError::Settings(match cause {
            Some(c) if c.contains("`sslmode`") => format!(
                "the connection string: {c} (disable, prefer, require, verify-ca or verify-full)"
            ),
            Some(c) => format!("the connection string: {c}"),
            None => "the connection string is not a PostgreSQL connection string \
                     (postgres://user@host/db or key=value pairs; it is not shown: it may hold \
                     a password)"
                .into(),
        })
    })
}

/// The connection string with a `sslmode` of `verify-ca` or `verify-full` (which the
/// driver's parser refuses) replaced by `require`, and the check it asked for. The last
/// `sslmode` wins, as in the parser; the string is read as the parser reads it (libpq
/// `key=value` pairs, quoted or not, or a `postgres://` URL's query).
pub fn split_verify(url: &str) -> (Cow<'_, str>, Option<Check>) {
    let found = match url_query(url) {
        Some(query) => query_value(url, query, "sslmode"),
        None => keyword_value(url, "sslmode"),
    };
    let Some((span, value)) = found else {
        return (Cow::Borrowed(url), None);
    };
    let check = match value.as_str() {
        "verify-ca" => Check::Chain,
        "verify-full" => Check::Full,
        _ => return (Cow::Borrowed(url), None),
    };
    let mut text = String::with_capacity(url.len());
    text.push_str(&url[..span.start]);
    text.push_str("require");
    text.push_str(&url[span.end..]);
    (Cow::Owned(text), Some(check))
}

/// Where a `postgres://` URL's query starts (after its `?`), as the driver finds it:
/// past the credentials (up to the first `@`), at the first `?`. `None`: not a URL.
fn url_query(url: &str) -> Option<usize> {
    let start = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|p| url.strip_prefix(p).map(|_| p.len()))?;
    let after_credentials = url[start..].find('@').map_or(start, |at| start + at + 1);
    url[after_credentials..]
        .find('?')
        .map(|q| after_credentials + q + 1)
}

/// The span and percent-decoded value of the last `key=` in a URL's query (`&`-separated
/// from `from`).
fn query_value(url: &str, from: usize, key: &str) -> Option<(Range<usize>, String)> {
    let mut found = None;
    let mut at = from;
    for pair in url[from..].split('&') {
        if let Some((k, v)) = pair.split_once('=')
            && percent_decode(k) == key
        {
            let start = at + k.len() + 1;
            found = Some((start..start + v.len(), percent_decode(v)));
        }
        at += pair.len() + 1;
    }
    found
}

/// `%XX` decoded (anything else kept as it is).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The span (quotes included) and unescaped value of the last `key = value` of a libpq
/// `key=value` string, read as the driver reads it (whitespace around `=`, values
/// quoted with `'` or not, `\` escaping the next character). Stops where the driver
/// would refuse the string (it then says so).
fn keyword_value(s: &str, key: &str) -> Option<(Range<usize>, String)> {
    let mut it = s.char_indices().peekable();
    let pos = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        it.peek().map_or(s.len(), |&(i, _)| i)
    };
    let mut found = None;
    loop {
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let start = pos(&mut it);
        while it
            .next_if(|&(_, c)| !c.is_whitespace() && c != '=')
            .is_some()
        {}
        let keyword = &s[start..pos(&mut it)];
        if keyword.is_empty() {
            return found;
        }
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        it.next_if(|&(_, c)| c == '=')?;
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
        let value_start = pos(&mut it);
        let mut value = String::new();
        if it.next_if(|&(_, c)| c == '\'').is_some() {
            loop {
                match it.next()? {
                    (_, '\'') => break,
                    (_, '\\') => value.extend(it.next().map(|(_, c)| c)),
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|&(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        if keyword == key {
            found = Some((value_start..pos(&mut it), value));
        }
    }
}

/// `[ha] ca_file`: the PEM certificates in `path`, each one rustls can use as a root.
/// The same reading for `check` and `run`.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, HaError> {
    let bad = |why: String| HaError::Settings(format!("ca_file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut store = RootCertStore::empty();
    for (n, c) in certs.iter().enumerate() {
        store
            .add(c.clone())
            .map_err(|e| bad(format!("certificate {} cannot be a root: {e}", n + 1)))?;
    }
    Ok(certs)
}

/// The roots a certificate is checked against: the system's (`rustls-native-certs`:
/// the platform's store, `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured) and `extra`.
fn roots(
    extra: Vec<CertificateDer<'static>>,
    ca_file: Option<&Path>,
) -> Result<RootCertStore, HaError> {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    for c in extra {
        roots.add(c).map_err(|e| {
            HaError::Settings(format!(
                "ca_file {}: cannot be a root: {e}",
                ca_file.map_or_else(|| "?".into(), |p| p.display().to_string())
            ))
        })?;
    }
    if roots.is_empty() {
        let why = system
            .errors
            .first()
            .map_or_else(|| "it is empty".to_owned(), ToString::to_string);
        return Err(HaError::Settings(format!(
            "sslmode asks to check the server's certificate, and there is no root to check it \
             against: the system's store cannot be used ({why}) and ca_file is not set"
        )));
    }
    Ok(roots)
}

/// Accepts any certificate (`prefer`, `require`: encryption without authentication, as
/// libpq), but still checks the handshake's signatures with it.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked (roots, validity, usage), the name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last: a name error means the chain
        // passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;

/// What `check --online` learns of the coordination database, changing nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The server's `server_version` (`15.20 (Debian 15.20-0+deb12u1)`).
    pub server_version: String,
    /// The schema's migration version; `None`: the schema holds no migrations table (no
    /// instance has started on it yet).
    pub schema_version: Option<i32>,
    /// How TLS checks the server (from `sslmode` and `ca_file`).
    pub check: Check,
}

/// Connects to `database` once and reads its server version and `schema`'s migration
/// version, all within `within` (connecting included); nothing is written. Call inside
/// a tokio runtime.
pub async fn probe(database: &Database, schema: &str, within: Duration) -> Result<Probe, HaError> {
    super::valid_schema(schema)?;
    let mut connector = database.connector()?;
    let config = connector.config_mut();
    if config.get_connect_timeout().is_none_or(|t| *t > within) {
        config.connect_timeout(within);
    }
    if config.get_application_name().is_none() {
        config.application_name("genesys-closer check");
    }
    let check = connector.check();
    let asked = async {
        let (client, conn) = connector.connect().await?;
        let session = tokio::spawn(conn);
        let read = async {
            let version = client
                .simple_query("SHOW server_version")
                .await
                .map_err(|e| HaError::Db(explain(&e)))?
                .into_iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default();
            let schema_version = super::schema::applied(&client, schema).await?;
            Ok::<_, HaError>((version, schema_version))
        }
        .await;
        drop(client);
        let _ = session.await;
        read
    };
    let (server_version, schema_version) = tokio::time::timeout(within, asked)
        .await
        .map_err(|_| HaError::Timeout(within.as_millis()))??;
    Ok(Probe {
        server_version,
        schema_version,
        check,
    })
}
