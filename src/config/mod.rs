//! TOML configuration: raw text -> validated, typed [`Config`].
//!
//! Everything is checked here, before any network I/O, in one pass that reports every
//! problem with its file, line and column (and the rule it belongs to), not only the first.
//! The CLI turns a [`ConfigErrors`] into exit status 64 ([`Exit::BadConfig`], `EX_USAGE`), as
//! linkerd does; `crate::findings` is what `check` adds by looking at the files the config names.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

mod check;
pub mod exit;
mod log_level;
#[cfg(test)]
mod tests;

pub use exit::Exit;
pub use log_level::parse_level;

/// Most topics one notification channel may carry (facts sheet B.3).
pub const TOPICS_PER_CHANNEL: usize = 1000;
/// Most channels one OAuth client may hold; a 21st evicts the oldest (facts sheet B.3).
pub const MAX_CHANNELS: usize = 20;

/// Default participant attribute that carries the bot intent.
pub const DEFAULT_INTENT_ATTRIBUTE: &str = "Bot.Intent";

/// Environment variable holding the OAuth client secret (the name the Genesys tools use).
pub const SECRET_ENV: &str = "GENESYSCLOUD_OAUTHCLIENT_SECRET";

/// Environment variable holding the intake endpoint's credential.
pub const INTAKE_TOKEN_ENV: &str = "GENESYS_CLOSER_INTAKE_TOKEN";

/// systemd credential name (`LoadCredential=intake_token:...`) of the intake credential.
pub const INTAKE_TOKEN_CREDENTIAL: &str = "intake_token";

/// Messaging `type` values of a participant (facts sheet C.1); a rule filter must use one.
pub const MESSAGE_TYPES: &[&str] = &[
    "unknown",
    "sms",
    "twitter",
    "facebook",
    "line",
    "viber",
    "wechat",
    "whatsapp",
    "telegram",
    "kakao",
    "webmessaging",
    "open",
    "instagram",
    "apple",
];

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// File the configuration came from (for messages; `<built-in>` for the demo).
    pub source: PathBuf,
    /// `[daemon]`: the state directory and the bounds of the close work.
    pub daemon: DaemonConfig,
    /// Where and as whom to talk to Genesys.
    pub genesys: GenesysConfig,
    /// Which topics to watch and how to keep the socket alive.
    pub stream: StreamConfig,
    /// Global dry run: decide and log, send nothing.
    pub dry_run: bool,
    /// Attribute that carries the intent when a rule names none.
    pub intent_attribute: String,
    /// Log format and level.
    pub log: LogConfig,
    /// The intake endpoint the bot flow's data action calls; `None` when off.
    pub intake: Option<IntakeConfig>,
    /// `[metrics]`: Prometheus metrics and health endpoints; `None` when off.
    pub metrics: Option<MetricsConfig>,
    /// `[feed]`: every final outcome delivered to an endpoint and/or a file; `None`: off.
    pub feed: Option<FeedConfig>,
    /// `[ha]`: several instances on one PostgreSQL, exactly one acting; `None`: off
    /// (one instance, the SQLite journal under `state_dir`).
    pub ha: Option<HaConfig>,
    /// Rules in file order; the first that matches decides.
    pub rules: Vec<RuleConfig>,
}

/// Genesys endpoints and the OAuth client.
#[derive(Debug, Clone, PartialEq)]
pub struct GenesysConfig {
    /// Base URL of the Platform API, e.g. `https://api.mypurecloud.com`.
    pub api_url: Url,
    /// Base URL of the login service; the token endpoint is `{login_url}/oauth/token`.
    pub login_url: Url,
    /// OAuth client id (not secret).
    pub client_id: String,
    /// Where the client secret is read from at start-up.
    pub secret: SecretSource,
    /// The one budget every REST call shares, requests per minute; below the org's
    /// limit (Genesys: about 300 per minute per OAuth client). Default 240.
    pub requests_per_minute: u32,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Where the journal lives (systemd `StateDirectory=`). Default
    /// `/var/lib/genesys-closer`.
    pub state_dir: PathBuf,
    /// Finished closes older than this are pruned from the journal. Default 30 days.
    pub retention: Duration,
    /// Close sequences running at once, at most. Default 200.
    pub max_concurrent_closes: usize,
    /// SIGTERM to exit, at most: closes whose disconnect is out get until the last few
    /// seconds of it to be confirmed; the rest stay unfinished in the journal for the
    /// next start. Default 20 s (the unit's `TimeoutStopSec=` is 30 s).
    pub stop_timeout: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::from("/var/lib/genesys-closer"),
            retention: Duration::from_secs(30 * 86_400),
            max_concurrent_closes: 200,
            stop_timeout: Duration::from_secs(20),
        }
    }
}

/// `[feed]`: the outcome feed for analytics. Each final outcome is one JSON object,
/// delivered at least once across crashes (an outbox in the journal) with an
/// idempotency key, retried with backoff, never in the way of closes.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// `POST` each outcome here (https; http only to loopback).
    pub url: Option<Url>,
    /// Append each outcome here as a JSON line.
    pub file: Option<PathBuf>,
    /// A bearer token for `url`, read from this file (or from the environment variable
    /// [`FEED_TOKEN_ENV`]).
    pub token_file: Option<PathBuf>,
    /// Per delivery attempt.
    pub timeout: Duration,
}

/// `[ha]`: two or three instances share a PostgreSQL database (the journal and a lease
/// row); the instance holding the lease acts, the others stand by.
#[derive(Debug, Clone, PartialEq)]
pub struct HaConfig {
    /// Where the connection string comes from (it may hold a password: never logged).
    pub database_url: DatabaseUrl,
    /// The schema holding the tables. Default `genesys_closer`.
    pub schema: String,
    /// The lease's name: instances with the same name form one group. Default
    /// `genesys-closer`.
    pub lease_name: String,
    /// This instance's name, in the lease, the journal and the User-Agent. Default: the
    /// host name.
    pub instance: String,
    /// How long a taken or renewed lease lasts. Default 10 s.
    pub lease_ttl: Duration,
    /// How often the holder renews it. Default 2 s.
    pub renew_every: Duration,
    /// How many instances the group runs on one OAuth client (their channels count
    /// against its 20). Default 2.
    pub instances: usize,
    /// `ca_file`: PEM certificates the coordination database's certificate is checked
    /// against besides the system's roots (`sslmode=verify-ca`, `verify-full`, or
    /// `require`, which it makes check the chain).
    pub ca_file: Option<PathBuf>,
}

/// Where `[ha]`'s connection string comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `database_url = "..."` in the file (without a password, or the file is private).
    Inline(String),
    /// `database_url_file = "/path"`.
    File(PathBuf),
    /// systemd `LoadCredential=database_url:...`, found in `$CREDENTIALS_DIRECTORY`.
    Credential(PathBuf),
    /// The environment variable [`DATABASE_URL_ENV`].
    Env,
}

/// Environment variable holding `[ha]`'s connection string.
pub const DATABASE_URL_ENV: &str = "GENESYS_CLOSER_DATABASE_URL";

/// The share of the lease's TTL a holder trusts it for: the rest covers clock-rate
/// drift between the host and the database.
pub const LEASE_TRUST_SHARE: f64 = 0.9;

/// Whether a lease's timing can work: a renew every `renew_every`, each allowed up to
/// `renew_every`, must leave room for two failed renews and a third inside the trust
/// window (`3 x renew_every < 90% of lease_ttl`); a TTL equal to the renew interval
/// loses a healthy lease (River #216).
pub fn lease_timing(ttl: Duration, renew_every: Duration) -> Result<(), String> {
    if !(Duration::from_secs(3)..=Duration::from_secs(600)).contains(&ttl) {
        return Err(format!(
            "lease_ttl = {} must be between 3s and 10m",
            humantime::format_duration(ttl)
        ));
    }
    if renew_every < Duration::from_millis(200) || renew_every * 3 >= ttl.mul_f64(LEASE_TRUST_SHARE)
    {
        return Err(format!(
            "renew_every = {} must be at least 200ms and below a third of 90% of lease_ttl \
             ({}): each renew may take up to renew_every, and two may fail before the lease \
             is lost",
            humantime::format_duration(renew_every),
            humantime::format_duration(ttl)
        ));
    }
    Ok(())
}

/// A schema name safe to write into SQL as an identifier: lower-case ASCII letters,
/// digits and `_`, not starting with a digit, at most 63 bytes (PostgreSQL's limit).
pub fn schema_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema {name:?} must be 1 to 63 lower-case letters, digits or '_', not starting \
             with a digit"
        ))
    }
}

/// Environment variable holding the feed endpoint's bearer token.
pub const FEED_TOKEN_ENV: &str = "GENESYS_CLOSER_FEED_TOKEN";

/// Longest farewell Genesys accepts on SMS (`AdditionalMessage.textBody`, facts D.5).
pub const FAREWELL_MAX_SMS: usize = 765;
/// Longest farewell Genesys accepts on other channels.
pub const FAREWELL_MAX: usize = 2000;

/// Where the OAuth client secret comes from. The secret itself never sits in [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `client_secret_file = "/path"` in the config.
    File(PathBuf),
    /// systemd `LoadCredential=client_secret:...`, found in `$CREDENTIALS_DIRECTORY`.
    Credential(PathBuf),
    /// The environment variable [`SECRET_ENV`].
    Env,
}

/// Where the intake credential comes from; like the client secret, never the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token_file = "/path"` in `[intake]`.
    File(PathBuf),
    /// systemd `LoadCredential=intake_token:...`, found in `$CREDENTIALS_DIRECTORY`.
    Credential(PathBuf),
    /// The environment variable [`INTAKE_TOKEN_ENV`].
    Env,
}

/// `[intake]`: the HTTP endpoint the bot flow's data action (or a Process Automation
/// workflow) calls with a conversation id and, optionally, its intent or attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct IntakeConfig {
    /// Where to listen; loopback unless TLS is configured.
    pub listen: SocketAddr,
    /// Where the shared credential is read from.
    pub token: TokenSource,
    /// Also accept HTTP Basic with this user name and the credential as password (for a
    /// data-action integration whose credential type is Basic Auth).
    pub basic_user: Option<String>,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Read the conversation once before acting on an intake intent and require that
    /// Genesys holds it in the rule's attribute.
    pub verify: bool,
    /// Most connections served at once; more are answered 503 at once.
    pub max_connections: usize,
    /// A request (headers and body) must arrive within this.
    pub request_timeout: Duration,
}

/// `[metrics]`: `GET /metrics` (Prometheus text), `/healthz` and `/readyz` over plain
/// HTTP.
///
/// Loopback (`127.0.0.1:9464`) by default, and a remote address only with
/// `allow_remote = true`: the endpoints are read-only but unauthenticated and
/// unencrypted, and what they tell (rule names, traffic and error rates, whether the
/// daemon is stalled) is for the operator's scraper, not for whoever can reach the
/// port. A scraper on the same host, or a reverse proxy with TLS and authentication,
/// reads it there.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Where to listen.
    pub listen: SocketAddr,
}

/// PEM files for the intake's TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// Certificate chain (leaf first).
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Notification stream settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Queue ids: `v2.routing.queues.{id}.conversations.messages`.
    pub queues: Vec<String>,
    /// User ids: `v2.users.{id}.conversations.messages`.
    pub users: Vec<String>,
    /// Flow ids: `v2.analytics.flow.{id}.metrics`, to discover bot-phase conversations.
    pub flows: Vec<String>,
    /// Check the topic families in use against `GET .../availabletopics` at start-up.
    pub check_topics: bool,
    /// Per-conversation topics to add are gathered this long into one request.
    pub subscribe_window: Duration,
    /// Per-conversation topics to remove are gathered this long into one request.
    pub unsubscribe_window: Duration,
    /// A watched conversation whose topics went live longer than this after we first
    /// heard of it (after its start, when an id-only intake call gave `eventTime`) is read
    /// once, in case its intent was set in between: no bot is assumed to set an intent
    /// sooner than this after the start.
    pub catchup_after: Duration,
    /// No frame at all for this long means the socket is dead, whatever TCP says.
    pub heartbeat_timeout: Duration,
    /// After this long without a frame we send `{"message":"ping"}` to provoke a pong.
    pub ping_after: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Reconnect delays never exceed this.
    pub backoff_max: Duration,
    /// A connection must stay live this long before the backoff resets.
    pub healthy_after: Duration,
    /// How often each channel's subscriptions are read back (`GET .../subscriptions`)
    /// to find topics the server dropped without notice.
    pub verify_every: Duration,
    /// The configured topics are held twice, on two channels with their own sockets,
    /// so that one socket or channel failing loses no event of them (Genesys has no
    /// replay, and a conversation whose only events fell in a gap cannot be read back
    /// without its id). Costs a second copy of those frames and channels.
    pub mirror: bool,
    /// After a gap that no mirror covered, list the conversations now in the watched
    /// flows (`POST /api/v2/analytics/flows/activity/query`, one request per gap) so
    /// that bot-phase conversations that started in the gap are found.
    pub discover_after_gap: bool,
    /// At every start and after every gap no mirror covered, list the conversations now
    /// in the watched queues (`POST /api/v2/analytics/queues/observations/query`) and
    /// read those the daemon does not know: a conversation that started and got its
    /// intent while the daemon was blind is still closed.
    pub recover_queues: bool,
    /// At most this many conversations are read per blind window (listed ones the
    /// daemon does not know); the rest are logged as left.
    pub recover_max_reads: usize,
    /// A channel whose configured topics carried events and then none for this long,
    /// while its socket still answers, is checked at once: a ping (a stalled socket is
    /// found within seconds rather than at `heartbeat_timeout`) and a read of its
    /// subscriptions (topics the server dropped without a word).
    pub silence_check: Duration,
}

impl StreamConfig {
    /// Every topic to subscribe, queues first, in config order.
    pub fn topics(&self) -> Vec<String> {
        let queues = self
            .queues
            .iter()
            .map(|q| format!("v2.routing.queues.{q}.conversations.messages"));
        let users = self
            .users
            .iter()
            .map(|u| format!("v2.users.{u}.conversations.messages"));
        let flows = self
            .flows
            .iter()
            .map(|f| format!("v2.analytics.flow.{f}.metrics"));
        queues.chain(users).chain(flows).collect()
    }

    /// Channels needed for all configured topics at [`TOPICS_PER_CHANNEL`] each (at
    /// least one: per-conversation topics need a channel even with none configured),
    /// twice over with [`StreamConfig::mirror`].
    pub fn channels_needed(&self) -> usize {
        let chunks =
            (self.queues.len() + self.users.len() + self.flows.len()).div_ceil(TOPICS_PER_CHANNEL);
        let copies = if self.mirror { 2 } else { 1 };
        (chunks * copies).max(1)
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `json` for journald and log shippers, `human` for a terminal.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `genesys_closer=debug`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line with stable field names.
    Json,
    /// Coloured, aligned text for people.
    Human,
}

/// How a matched conversation is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectMode {
    /// `PATCH /api/v2/conversations/messages/{id}` `{"state":"disconnected"}`.
    Conversation,
    /// `PATCH /api/v2/conversations/messages/{id}/participants/{customer}` `{"state":"disconnected"}`.
    Customer,
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Unique name, logged with every decision.
    pub name: String,
    /// Exact intent values that match.
    pub intents: Vec<String>,
    /// Participant attribute to read; `None` means the global `intent_attribute`.
    pub attribute: Option<String>,
    /// Only conversations routed to one of these queues (empty: any).
    pub queues: Vec<String>,
    /// Only these messaging types, e.g. `webmessaging` (empty: any).
    pub message_types: Vec<String>,
    /// Per-rule dry run (the global one wins when set).
    pub dry_run: bool,
    /// What the disconnect step ends.
    pub disconnect: DisconnectMode,
    /// How long to wait for the confirming event before reading and escalating.
    pub confirm_timeout: Duration,
    /// How long after its first attempt a disconnect that failed for a reason that
    /// passes (429, 5xx, transport) is still retried. A close that cannot be sent for
    /// want of a token is not bounded by it: it waits for the login, never failing.
    pub retry_for: Duration,
    /// A message sent to the guest before the disconnect, at most once per
    /// conversation (journalled), on the agent's or else the flow's communication.
    pub farewell: Option<String>,
    /// A wrap-up code id for agent participants that require one, sent after the
    /// disconnect.
    pub wrapup_code: Option<String>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// File it was found in.
    pub file: PathBuf,
    /// 1-based line, 0 when the problem has no position (e.g. a missing environment variable).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Rule the problem belongs to, if any.
    pub rule: Option<String>,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if let Some(rule) = &self.rule {
            write!(f, "rule \"{rule}\": ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for issue in &self.0 {
            writeln!(f, "  {issue}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let one = |line, column, message| {
            Err(ConfigErrors(vec![ConfigIssue {
                file: path.to_path_buf(),
                line,
                column,
                rule: None,
                message,
            }]))
        };
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Config::parse(&text, path),
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    let good = String::from_utf8_lossy(&e.as_bytes()[..at]);
                    let line = good.matches('\n').count() + 1;
                    let column = good.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    one(
                        line,
                        column,
                        format!("the file is not UTF-8 text (invalid byte at offset {at})"),
                    )
                }
            },
            Err(e) => Err(ConfigErrors(vec![ConfigIssue {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                rule: None,
                message: format!("cannot read the file: {e}"),
            }])),
        }
    }

    /// Validates config text; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
        check::check(text, file)
    }
}

/// Whether `host` is in one of the Genesys Cloud regions the SDKs list (facts sheet A).
pub fn known_genesys_host(host: &str) -> bool {
    check::known_domain(host)
}

/// Whether a URL points at this machine (where plain http is acceptable).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
