//! What `check` finds beyond the file itself: whether the secret, the tokens and the state
//! directory a valid [`Config`] names can be used, and what is valid but probably not meant.
//!
//! [`inspect`] sits above `config` and the credential loaders; it touches the file system: it reads the
//! credentials through the loaders `run` uses ([`load_secret`], [`intake::load_token`],
//! [`feed::load_token`]), so `check` refuses exactly what `run` would, and probes the state
//! directory. Nothing here talks to the network (`check --online` does, in the binary).
//! [`Findings`] renders as the text `check` prints; [`Findings::refusals`] decides its
//! exit status.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{Config, DisconnectMode, RuleConfig, SecretSource};
use crate::config::{Exit, SECRET_ENV, is_loopback, known_genesys_host};
use crate::feed;
use crate::genesys::auth::load_secret;
use crate::intake;

/// A valid config's findings, and the text `check` prints for them.
#[derive(Debug)]
pub struct Findings<'a> {
    /// The config inspected (rendered into the summary lines).
    config: &'a Config,
    /// The file it came from (the first line and the refusal line name it).
    path: &'a Path,
    /// The client secret: `Err` with why it cannot be used.
    pub secret: Result<(), String>,
    /// What the state directory is.
    pub state_dir: StateDir,
    /// The intake credential, `None` when `[intake]` is off: `Err` with why it cannot be used.
    pub intake: Option<Result<(), String>>,
    /// The outcome feed's bearer token, `None` when there is no feed URL: whether there is
    /// one, or why it cannot be used.
    pub feed_token: Option<Result<bool, String>>,
    /// `[ha]`'s connection string and `ca_file`, `None` when off: where it points (no
    /// password), the schema and how TLS checks the server, or why it cannot be used.
    pub database: Option<Result<String, String>>,
    /// What would run but is probably not meant; `check` still exits 0 on these.
    pub warnings: Vec<Warning>,
}

/// What the configured state directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDir {
    /// A directory a file could be created in.
    Writable,
    /// A directory no file could be created in.
    NotWritable,
    /// Something else than a directory.
    NotADirectory,
    /// Nothing yet: `run` creates it.
    Absent,
}

/// Something `run` would refuse to start on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client secret cannot be used (why).
    Secret(String),
    /// `[intake]` is on and its credential cannot be used (why).
    IntakeCredential(String),
    /// The feed's `token_file` cannot be used (why).
    FeedToken(String),
    /// `[ha]`'s connection string cannot be used (why).
    DatabaseUrl(String),
    /// The state directory cannot be used.
    StateDir {
        /// The configured directory.
        path: PathBuf,
        /// What it is instead of a writable directory (or absent).
        found: StateDir,
    },
}

/// Something valid that is probably not what the operator meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The secret file can be read by other users.
    SecretReadableByOthers {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An API or login host outside the Genesys Cloud regions (and not loopback).
    UnknownHost(String),
    /// A rule names only queues that no `[stream]` queue watches.
    QueuesNotWatched {
        /// The rule.
        rule: String,
        /// The queues it names.
        queues: Vec<String>,
    },
    /// An earlier rule takes every intent this rule lists.
    Shadowed {
        /// The rule that can never match.
        rule: String,
        /// The rule that matches first.
        earlier: String,
    },
}

/// Inspects what `config` (read from `path`) names on this machine: the credentials, the
/// state directory (by creating and removing a probe file in it), and the warnings.
pub fn inspect<'a>(config: &'a Config, path: &'a Path) -> Findings<'a> {
    let intake = config.intake.as_ref().map(|i| {
        intake::load_token(&i.token)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let feed_token = config
        .feed
        .as_ref()
        .filter(|f| f.url.is_some())
        .map(|f| feed::load_token(f).map(|token| token.is_some()));
    // Read as `run` reads them: the connection string, its sslmode, the CA file and,
    // when the certificate is checked, the system's roots.
    let database = crate::ha::connect::Database::of(config).map(|d| {
        let d = d?;
        let schema = config.ha.as_ref().map_or("", |ha| ha.schema.as_str());
        d.connector()
            .map(|c| {
                format!(
                    "{}, schema {schema}; {}",
                    d.describe(),
                    c.check().describe()
                )
            })
            .map_err(|e| e.to_string())
    });
    let mut warnings = secret_mode_warning(&config.genesys.secret);
    warnings.extend(host_warnings(config));
    warnings.extend(rule_warnings(config));
    Findings {
        config,
        path,
        secret: load_secret(&config.genesys.secret)
            .map(drop)
            .map_err(|e| e.to_string()),
        state_dir: StateDir::probe(&config.daemon.state_dir),
        intake,
        feed_token,
        database,
        warnings,
    }
}

impl Findings<'_> {
    /// What `run` would refuse to start on, in the order `check` names them; empty: OK.
    pub fn refusals(&self) -> Vec<Refusal> {
        let mut refusals = Vec::new();
        if let Err(e) = &self.secret {
            refusals.push(Refusal::Secret(e.clone()));
        }
        if let Some(Err(e)) = &self.intake {
            refusals.push(Refusal::IntakeCredential(e.clone()));
        }
        if let Some(Err(e)) = &self.feed_token {
            refusals.push(Refusal::FeedToken(e.clone()));
        }
        if let Some(Err(e)) = &self.database {
            refusals.push(Refusal::DatabaseUrl(e.clone()));
        }
        // In a group the journal is the database's: the state directory is not used.
        if self.config.ha.is_none() && !self.state_dir.usable() {
            refusals.push(Refusal::StateDir {
                path: self.config.daemon.state_dir.clone(),
                found: self.state_dir,
            });
        }
        refusals
    }

    /// `check`'s exit status: 64 when `run` would refuse to start.
    pub fn exit(&self) -> Exit {
        if self.refusals().is_empty() {
            Exit::Ok
        } else {
            Exit::BadConfig
        }
    }

    /// The line `check` writes on stderr when `run` would refuse to start.
    pub fn refusal_line(&self) -> Option<String> {
        let refusals = self.refusals();
        if refusals.is_empty() {
            return None;
        }
        let reasons: Vec<String> = refusals.iter().map(Refusal::to_string).collect();
        Some(format!(
            "{}: `run` would refuse to start: {}",
            self.path.display(),
            reasons.join("; ")
        ))
    }

    /// `client secret: ...`: where it comes from and whether it can be used.
    fn secret_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match &self.config.genesys.secret {
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Credential(p) => format!("systemd credential {}", p.display()),
            SecretSource::Env => format!("environment variable {SECRET_ENV}"),
        };
        match &self.secret {
            Ok(()) => writeln!(f, "client secret: from {from} (present)"),
            Err(e) => writeln!(f, "client secret: from {from} (NOT USABLE: {e})"),
        }
    }

    /// `channels needed: ...` and one line per topic.
    fn topic_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = &self.config.stream;
        let topics = stream.topics();
        let mirror = if stream.mirror && !topics.is_empty() {
            ", held twice (mirror = true)"
        } else {
            ""
        };
        writeln!(
            f,
            "channels needed: {} for {} topic(s){mirror}:",
            stream.channels_needed(),
            topics.len()
        )?;
        topics.iter().try_for_each(|t| writeln!(f, "  {t}"))
    }

    /// `journal: ...`: the state directory and the bounds of the close work.
    fn journal_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let daemon = &self.config.daemon;
        if self.config.ha.is_some() {
            return writeln!(
                f,
                "journal: the group's, on PostgreSQL (see group:); retention {}, at most {} \
                 closes at once, {} REST requests/min",
                humantime::format_duration(daemon.retention),
                daemon.max_concurrent_closes,
                self.config.genesys.requests_per_minute
            );
        }
        writeln!(
            f,
            "journal: {} ({}); retention {}, at most {} closes at once, {} REST requests/min",
            daemon.state_dir.display(),
            self.state_dir.describe(),
            humantime::format_duration(daemon.retention),
            daemon.max_concurrent_closes,
            self.config.genesys.requests_per_minute
        )
    }

    /// `group:`: one instance, or `[ha]`'s lease and database.
    fn group_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(ha), Some(db)) = (&self.config.ha, &self.database) else {
            return writeln!(
                f,
                "group: off (one instance, the journal under the state directory)"
            );
        };
        let db = match db {
            Ok(at) => at.clone(),
            Err(e) => format!("NOT USABLE ({e}): `run` would refuse to start"),
        };
        writeln!(
            f,
            "group: lease {:?} as instance {:?}, TTL {} renewed every {}; journal and lease on {db}",
            ha.lease_name,
            ha.instance,
            humantime::format_duration(ha.lease_ttl),
            humantime::format_duration(ha.renew_every)
        )
    }

    /// `intake:`, `metrics:` and `outcome feed:`: the optional endpoints.
    fn endpoint_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.config.intake, &self.intake) {
            (Some(i), Some(token)) => {
                let token = match token {
                    Ok(()) => "present".to_string(),
                    Err(e) => format!("NOT USABLE ({e}): `run` would refuse to start"),
                };
                writeln!(
                    f,
                    "intake: POST {}://{}/v1/intents, credential {token}, verify {}",
                    if i.tls.is_some() { "https" } else { "http" },
                    i.listen,
                    i.verify
                )?;
            }
            _ => writeln!(f, "intake: off")?,
        }
        match &self.config.metrics {
            None => writeln!(f, "metrics: off")?,
            Some(m) => writeln!(f, "metrics: http://{}/metrics, /healthz, /readyz", m.listen)?,
        }
        let Some(feed) = &self.config.feed else {
            return writeln!(f, "outcome feed: off");
        };
        let mut to = Vec::new();
        if let (Some(url), Some(token)) = (&feed.url, &self.feed_token) {
            let token = match token {
                Ok(true) => "with a bearer token".to_string(),
                Ok(false) => "without a token".to_string(),
                Err(e) => format!("token NOT USABLE: {e}"),
            };
            let timeout = humantime::format_duration(feed.timeout);
            to.push(format!("POST {url} ({token}, timeout {timeout})"));
        }
        if let Some(p) = &feed.file {
            to.push(format!("append to {}", p.display()));
        }
        writeln!(f, "outcome feed: {}", to.join("; "))
    }

    /// `rules (N), first match wins:` and one line per rule.
    fn rule_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.config;
        writeln!(f, "rules ({}), first match wins:", config.rules.len())?;
        for r in &config.rules {
            let attribute = r.attribute.as_deref().unwrap_or(&config.intent_attribute);
            write!(f, "  {}: {} in {:?}", r.name, attribute, r.intents)?;
            if !r.queues.is_empty() {
                write!(f, ", queues {:?}", r.queues)?;
            }
            if !r.message_types.is_empty() {
                write!(f, ", types {:?}", r.message_types)?;
            }
            let disconnect = match r.disconnect {
                DisconnectMode::Conversation => "conversation",
                DisconnectMode::Customer => "customer",
            };
            write!(
                f,
                ", disconnect {disconnect}, confirm within {}",
                humantime::format_duration(r.confirm_timeout)
            )?;
            if r.dry_run || config.dry_run {
                write!(f, " (dry run)")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// What `check` prints on stdout: `FILE: OK` or `FILE: NOT OK: ...` first, then what would
/// run, then one `WARNING:` line per warning.
impl fmt::Display for Findings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.config;
        if self.refusals().is_empty() {
            writeln!(f, "{}: OK", self.path.display())?;
        } else {
            writeln!(
                f,
                "{}: NOT OK: `run` would refuse to start",
                self.path.display()
            )?;
        }
        let genesys = &config.genesys;
        writeln!(f, "api: {}  login: {}", genesys.api_url, genesys.login_url)?;
        writeln!(f, "client id: {}", genesys.client_id)?;
        self.secret_line(f)?;
        self.topic_lines(f)?;
        self.journal_line(f)?;
        self.group_line(f)?;
        self.endpoint_lines(f)?;
        let stop = humantime::format_duration(config.daemon.stop_timeout);
        writeln!(f, "stop: within {stop} of SIGTERM")?;
        writeln!(f, "global dry run: {}", config.dry_run)?;
        self.rule_lines(f)?;
        self.warnings
            .iter()
            .try_for_each(|w| writeln!(f, "WARNING: {w}"))
    }
}

impl StateDir {
    /// Looks at `dir`; a directory is probed by creating and removing a file in it.
    pub fn probe(dir: &Path) -> StateDir {
        if dir.is_dir() {
            let probe = dir.join(".genesys-closer-check");
            let writable = std::fs::write(&probe, b"").is_ok();
            let _ = std::fs::remove_file(&probe);
            if writable {
                StateDir::Writable
            } else {
                StateDir::NotWritable
            }
        } else if dir.exists() {
            StateDir::NotADirectory
        } else {
            StateDir::Absent
        }
    }

    /// Whether `run` can start with it (an absent directory is created at start).
    pub fn usable(self) -> bool {
        matches!(self, StateDir::Writable | StateDir::Absent)
    }

    /// How the `journal:` line describes it.
    fn describe(self) -> &'static str {
        match self {
            StateDir::Writable => "writable",
            StateDir::NotWritable => "NOT WRITABLE: `run` would refuse to start",
            StateDir::NotADirectory => "NOT A DIRECTORY: `run` would refuse to start",
            StateDir::Absent => {
                "absent (created at start; with systemd, StateDirectory= creates it)"
            }
        }
    }
}

/// As the refusal line on stderr names it.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Secret(why) | Refusal::FeedToken(why) | Refusal::DatabaseUrl(why) => {
                f.write_str(why)
            }
            // The intake line on stdout says why.
            Refusal::IntakeCredential(_) => f.write_str("the intake credential is not usable"),
            Refusal::StateDir { path, .. } => {
                write!(f, "the state directory {} cannot be used", path.display())
            }
        }
    }
}

/// As a `WARNING:` line says it.
impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::SecretReadableByOthers { path, mode } => write!(
                f,
                "{} is readable by other users (mode {mode:o}): chmod 600 it",
                path.display()
            ),
            Warning::UnknownHost(host) => write!(
                f,
                "{host} is not in a Genesys Cloud region the SDKs list: check `region` / the URLs"
            ),
            Warning::QueuesNotWatched { rule, queues } => write!(
                f,
                "rule \"{rule}\" only matches queues no [stream] queue watches ({}): no queue \
                 event can reach it",
                queues.join(", ")
            ),
            Warning::Shadowed { rule, earlier } => write!(
                f,
                "rule \"{rule}\" can never match: the earlier rule \"{earlier}\" takes every \
                 intent it lists"
            ),
        }
    }
}

/// A secret file other users can read (Unix only).
fn secret_mode_warning(source: &SecretSource) -> Vec<Warning> {
    #[cfg(unix)]
    if let SecretSource::File(p) = source {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(m) = std::fs::metadata(p)
            && m.permissions().mode() & 0o077 != 0
        {
            return vec![Warning::SecretReadableByOthers {
                path: p.clone(),
                mode: m.permissions().mode() & 0o777,
            }];
        }
    }
    #[cfg(not(unix))]
    let _ = source;
    Vec::new()
}

/// API and login hosts outside the known regions (loopback is the simulator's).
fn host_warnings(config: &Config) -> Vec<Warning> {
    [&config.genesys.api_url, &config.genesys.login_url]
        .into_iter()
        .filter(|url| !is_loopback(url))
        .filter_map(|url| url.host_str())
        .filter(|host| !known_genesys_host(host))
        .map(|host| Warning::UnknownHost(host.to_string()))
        .collect()
}

/// Rules no queue event reaches and rules an earlier one shadows, rule by rule.
fn rule_warnings(config: &Config) -> Vec<Warning> {
    let attribute = |r: &RuleConfig| {
        r.attribute
            .clone()
            .unwrap_or_else(|| config.intent_attribute.clone())
    };
    let mut warnings = Vec::new();
    for (i, r) in config.rules.iter().enumerate() {
        if !r.queues.is_empty() && !r.queues.iter().any(|q| config.stream.queues.contains(q)) {
            warnings.push(Warning::QueuesNotWatched {
                rule: r.name.clone(),
                queues: r.queues.clone(),
            });
        }
        let shadowing = config.rules[..i].iter().find(|e| {
            e.queues.is_empty()
                && e.message_types.is_empty()
                && attribute(e) == attribute(r)
                && r.intents.iter().all(|x| e.intents.contains(x))
        });
        if let Some(earlier) = shadowing {
            warnings.push(Warning::Shadowed {
                rule: r.name.clone(),
                earlier: earlier.name.clone(),
            });
        }
    }
    warnings
}

#[cfg(test)]
mod tests;
