//! The one-pass walker that turns the TOML tree into a [`Config`], collecting every
//! problem with its position instead of stopping at the first.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};
use url::Url;

use super::*;
use crate::ids::is_uuid;

/// Region keys (SDK `PureCloudRegionHosts`, with `-` or `_`) and their domains.
const REGIONS: &[(&str, &str)] = &[
    ("us-east-1", "mypurecloud.com"),
    ("eu-west-1", "mypurecloud.ie"),
    ("ap-southeast-2", "mypurecloud.com.au"),
    ("ap-northeast-1", "mypurecloud.jp"),
    ("eu-central-1", "mypurecloud.de"),
    ("us-west-2", "usw2.pure.cloud"),
    ("ca-central-1", "cac1.pure.cloud"),
    ("ap-northeast-2", "apne2.pure.cloud"),
    ("eu-west-2", "euw2.pure.cloud"),
    ("ap-south-1", "aps1.pure.cloud"),
    ("us-east-2", "use2.us-gov-pure.cloud"),
    ("sa-east-1", "sae1.pure.cloud"),
    ("me-central-1", "mec1.pure.cloud"),
    ("ap-northeast-3", "apne3.pure.cloud"),
    ("eu-central-2", "euc2.pure.cloud"),
    ("mx-central-1", "mxc1.pure.cloud"),
    ("ap-southeast-1", "apse1.pure.cloud"),
    ("eusc-de-east-1", "edee1.eusc-pure.cloud"),
];

/// The sensible range of each duration key; a value outside it is a mistake (a
/// `1ms` confirm timeout, `1000years`), not a choice.
fn duration_bounds(key: &str) -> (Duration, Duration) {
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    match key {
        // Genesys pushes the closing event some hundreds of ms after the disconnect.
        "confirm_timeout" => (ms(250), s(3600)),
        "retry_for" => (s(1), s(86_400)),
        "heartbeat_timeout" | "ping_after" => (ms(500), s(600)),
        "backoff_min" | "backoff_max" => (ms(1), s(600)),
        "healthy_after" => (ms(100), s(3600)),
        "subscribe_window" | "unsubscribe_window" | "catchup_after" => (ms(1), s(600)),
        "verify_every" => (ms(100), s(86_400)),
        "silence_check" => (ms(100), s(3600)),
        "retention" => (s(3600), s(3650 * 86_400)),
        // At least a few seconds for the last steps (streams, journal, feed) after the drain.
        "stop_timeout" => (s(2), s(3600)),
        "request_timeout" | "timeout" => (ms(100), s(300)),
        _ => (ms(1), s(365 * 86_400)),
    }
}

/// Edit distance between two short keys (for "did you mean").
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Validates config text; `file` is only used in messages.
pub(super) fn check(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Checker {
        src: text,
        file,
        issues: Vec::new(),
        rule: None,
    };
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            cx.at(
                e.span(),
                format!("TOML syntax error: {}", e.message().trim()),
            );
            return Err(ConfigErrors(cx.issues));
        }
    };
    let config = cx.document(doc.as_item());
    // In file order, whatever order the sections were checked in.
    cx.issues.sort_by_key(|i| (i.line, i.column));
    match config {
        Some(c) if cx.issues.is_empty() => Ok(c),
        _ => Err(ConfigErrors(cx.issues)),
    }
}

/// Accumulates issues while walking the TOML tree.
struct Checker<'a> {
    src: &'a str,
    file: &'a Path,
    issues: Vec<ConfigIssue>,
    /// Rule being checked, so that its issues carry its name.
    rule: Option<String>,
}

impl Checker<'_> {
    fn at(&mut self, span: Option<Range<usize>>, message: String) {
        let (line, column) = match span {
            Some(s) => line_col(self.src, s.start),
            None => (0, 0),
        };
        self.issues.push(ConfigIssue {
            file: self.file.to_path_buf(),
            line,
            column,
            rule: self.rule.clone(),
            message,
        });
    }

    /// Reports keys of `table` that are not in `allowed`.
    fn unknown_keys(&mut self, table: &dyn TableLike, section: &str, allowed: &[&str]) {
        for (key, _) in table.iter() {
            if !allowed.contains(&key) {
                let span = table.key(key).and_then(|k| k.span());
                let hint = if key == "client_secret" {
                    format!(
                        "`client_secret` is not accepted in a config file; set {SECRET_ENV}, \
                         `client_secret_file`, or systemd LoadCredential=client_secret"
                    )
                } else if let Some(near) = allowed
                    .iter()
                    .filter(|a| distance(key, a) <= 2.max(key.len() / 4))
                    .min_by_key(|a| distance(key, a))
                {
                    format!("unknown key `{key}` in {section}; did you mean `{near}`?")
                } else {
                    format!(
                        "unknown key `{key}` in {section} (expected one of: {})",
                        allowed.join(", ")
                    )
                };
                self.at(span, hint);
            }
        }
    }

    fn document(&mut self, root: &Item) -> Option<Config> {
        let root = root.as_table_like()?;
        self.unknown_keys(
            root,
            "the top level",
            &[
                "dry_run",
                "intent_attribute",
                "genesys",
                "stream",
                "log",
                "intake",
                "daemon",
                "metrics",
                "feed",
                "rule",
            ],
        );
        let dry_run = self.bool(root, "dry_run").unwrap_or(false);
        let intent_attribute = self
            .nonempty_string(root, "intent_attribute")
            .unwrap_or_else(|| DEFAULT_INTENT_ATTRIBUTE.to_string());
        let genesys = self.genesys(root);
        let intake = self.intake(root);
        let stream = self.stream(root, intake.is_some());
        let log = self.log(root);
        let rules = self.rules(root);
        let daemon = self.daemon(root);
        let metrics = self.metrics(root);
        let feed = self.feed(root);
        Some(Config {
            daemon,
            source: self.file.to_path_buf(),
            genesys: genesys?,
            stream: stream?,
            dry_run,
            intent_attribute,
            log,
            intake,
            metrics,
            feed,
            rules,
        })
    }

    /// A `[name]` table and the span of its header, for "missing key" messages.
    fn section<'t>(
        &mut self,
        root: &'t dyn TableLike,
        name: &str,
    ) -> Option<(&'t dyn TableLike, Option<Range<usize>>)> {
        let item = root.get(name)?;
        let span = root.key(name).and_then(|k| k.span()).or(item.span());
        match item.as_table_like() {
            Some(t) => Some((t, span)),
            None => {
                self.at(item.span(), format!("`{name}` must be a table ([{name}])"));
                None
            }
        }
    }

    fn genesys(&mut self, root: &dyn TableLike) -> Option<GenesysConfig> {
        let Some((t, here)) = self.section(root, "genesys") else {
            self.at(
                None,
                "missing section [genesys] (region and client_id)".into(),
            );
            return None;
        };
        self.unknown_keys(
            t,
            "[genesys]",
            &[
                "region",
                "api_url",
                "login_url",
                "client_id",
                "client_secret_file",
                "requests_per_minute",
            ],
        );
        let requests_per_minute = self
            .int_in(t, "requests_per_minute", 1..=100_000)
            .unwrap_or(240) as u32;
        let client_id = self.nonempty_string(t, "client_id");
        if client_id.is_none() && t.get("client_id").is_none() {
            self.at(here.clone(), "[genesys] needs `client_id`".into());
        }
        // Genesys names an OAuth client by a UUID (Admin > OAuth > Client ID); anything
        // else is a paste of the client's name or of its secret.
        if let Some(id) = &client_id
            && !is_uuid(id)
        {
            let span = t.get("client_id").and_then(Item::span);
            let shown: String = id.chars().take(40).collect();
            self.at(
                span,
                format!(
                    "`client_id` = \"{shown}\" is not an OAuth client id: Genesys shows it as a \
                     UUID (8-4-4-4-12 hex digits) under Admin > Integrations > OAuth"
                ),
            );
        }
        let region = self.nonempty_string(t, "region").and_then(|r| {
            let domain = region_domain(&r);
            if domain.is_none() {
                let span = t.get("region").and_then(Item::span);
                self.at(
                    span,
                    format!(
                        "unknown region `{r}`: use a region key such as us-east-1 or eu-west-1, \
                         or a domain such as mypurecloud.ie"
                    ),
                );
            }
            domain
        });
        let api_url = self.url(t, "api_url");
        let login_url = self.url(t, "login_url");
        let (api_url, login_url) = match (api_url, login_url, region) {
            (Some(a), Some(l), _) => (a, l),
            (a, l, Some(domain)) => {
                let a = a.or_else(|| Url::parse(&format!("https://api.{domain}")).ok());
                let l = l.or_else(|| Url::parse(&format!("https://login.{domain}")).ok());
                (a?, l?)
            }
            (_, _, None) => {
                // A bad URL or region was reported already; only report what is missing.
                let both_urls = t.contains_key("api_url") && t.contains_key("login_url");
                if t.get("region").is_none() && !both_urls {
                    self.at(
                        here.clone(),
                        "[genesys] needs `region` (or both `api_url` and `login_url`)".into(),
                    );
                }
                return None;
            }
        };
        let secret = match self.string(t, "client_secret_file") {
            Some(p) => SecretSource::File(PathBuf::from(p)),
            None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) if Path::new(&dir).join("client_secret").is_file() => {
                    SecretSource::Credential(Path::new(&dir).join("client_secret"))
                }
                _ => SecretSource::Env,
            },
        };
        Some(GenesysConfig {
            requests_per_minute,
            api_url,
            login_url,
            client_id: client_id?,
            secret,
        })
    }

    fn intake(&mut self, root: &dyn TableLike) -> Option<IntakeConfig> {
        let (t, _) = self.section(root, "intake")?;
        self.unknown_keys(
            t,
            "[intake]",
            &[
                "enabled",
                "listen",
                "token_file",
                "basic_user",
                "tls_cert",
                "tls_key",
                "verify",
                "max_connections",
                "request_timeout",
            ],
        );
        let enabled = self.bool(t, "enabled").unwrap_or(false);
        let listen_span = t.get("listen").and_then(Item::span);
        let listen = match self.string(t, "listen") {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8443))),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.at(
                        listen_span.clone(),
                        format!(
                            "`listen` = \"{text}\" is not an address such as \"127.0.0.1:8443\""
                        ),
                    );
                    None
                }
            },
        };
        let cert = self.nonempty_string(t, "tls_cert").map(PathBuf::from);
        let key = self.nonempty_string(t, "tls_key").map(PathBuf::from);
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                let span = t.get("tls_cert").or(t.get("tls_key")).and_then(Item::span);
                self.at(
                    span,
                    "`tls_cert` and `tls_key` go together: set both or neither".into(),
                );
                None
            }
        };
        if let Some(a) = listen
            && !a.ip().is_loopback()
            && tls.is_none()
            && enabled
        {
            self.at(
                listen_span,
                format!(
                    "the intake would listen on {a} without TLS: set `tls_cert` and `tls_key`, \
                         or listen on loopback behind a reverse proxy that terminates TLS"
                ),
            );
        }
        let token = match self.nonempty_string(t, "token_file") {
            Some(p) => TokenSource::File(PathBuf::from(p)),
            None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) if Path::new(&dir).join(INTAKE_TOKEN_CREDENTIAL).is_file() => {
                    TokenSource::Credential(Path::new(&dir).join(INTAKE_TOKEN_CREDENTIAL))
                }
                _ => TokenSource::Env,
            },
        };
        let basic_user = self.nonempty_string(t, "basic_user");
        if basic_user.as_deref().is_some_and(|u| u.contains(':')) {
            let span = t.get("basic_user").and_then(Item::span);
            self.at(span, "`basic_user` must not contain ':'".into());
        }
        let verify = self.bool(t, "verify").unwrap_or(false);
        let max_connections = match t.get("max_connections").and_then(Item::as_integer) {
            Some(n) if (1..=65_536).contains(&n) => n as usize,
            Some(_) => {
                let span = t.get("max_connections").and_then(Item::span);
                self.at(span, "`max_connections` must be between 1 and 65536".into());
                256
            }
            None => {
                if let Some(item) = t.get("max_connections") {
                    self.at(item.span(), "`max_connections` must be an integer".into());
                }
                256
            }
        };
        let request_timeout = self
            .duration(t, "request_timeout")
            .unwrap_or(Duration::from_secs(5));
        if !enabled {
            return None;
        }
        Some(IntakeConfig {
            listen: listen?,
            token,
            basic_user,
            tls,
            verify,
            max_connections,
            request_timeout,
        })
    }

    /// `[metrics]`: off unless `enabled = true`; loopback unless `allow_remote = true`
    /// (see [`MetricsConfig`] for why).
    fn feed(&mut self, root: &dyn TableLike) -> Option<FeedConfig> {
        let (t, here) = self.section(root, "feed")?;
        self.unknown_keys(t, "[feed]", &["url", "file", "token_file", "timeout"]);
        let url = self.url(t, "url");
        let file = self.nonempty_string(t, "file").map(PathBuf::from);
        let token_file = self.nonempty_string(t, "token_file").map(PathBuf::from);
        let timeout = self
            .duration(t, "timeout")
            .unwrap_or(Duration::from_secs(10));
        if url.is_none() && file.is_none() && !t.contains_key("url") {
            self.at(
                here,
                "[feed] delivers nowhere: set `url` (an https endpoint) and/or `file` (JSON lines)"
                    .into(),
            );
            return None;
        }
        Some(FeedConfig {
            url,
            file,
            token_file,
            timeout,
        })
    }

    fn metrics(&mut self, root: &dyn TableLike) -> Option<MetricsConfig> {
        let (t, _) = self.section(root, "metrics")?;
        self.unknown_keys(t, "[metrics]", &["enabled", "listen", "allow_remote"]);
        let enabled = self.bool(t, "enabled").unwrap_or(false);
        let allow_remote = self.bool(t, "allow_remote").unwrap_or(false);
        let listen_span = t.get("listen").and_then(Item::span);
        let listen = match self.string(t, "listen") {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.at(
                        listen_span.clone(),
                        format!(
                            "`listen` = \"{text}\" is not an address such as \"127.0.0.1:9464\""
                        ),
                    );
                    None
                }
            },
        };
        if let Some(a) = listen
            && enabled
            && !allow_remote
            && !a.ip().is_loopback()
        {
            self.at(
                listen_span,
                format!(
                    "metrics would listen on {a}, beyond this machine, without authentication: \
                     listen on loopback (a local scraper or a reverse proxy reads it there), \
                     or set `allow_remote = true`"
                ),
            );
        }
        if !enabled {
            return None;
        }
        Some(MetricsConfig { listen: listen? })
    }

    fn stream(&mut self, root: &dyn TableLike, intake: bool) -> Option<StreamConfig> {
        let Some((t, here)) = self.section(root, "stream") else {
            self.at(
                None,
                "missing section [stream] (queues and/or users to watch)".into(),
            );
            return None;
        };
        self.unknown_keys(
            t,
            "[stream]",
            &[
                "queues",
                "users",
                "flows",
                "check_topics",
                "subscribe_window",
                "unsubscribe_window",
                "catchup_after",
                "heartbeat_timeout",
                "ping_after",
                "backoff_min",
                "backoff_max",
                "healthy_after",
                "verify_every",
                "mirror",
                "discover_after_gap",
                "recover_queues",
                "recover_max_reads",
                "silence_check",
            ],
        );
        let queues = self.id_list(t, "queues");
        let users = self.id_list(t, "users");
        let flows = self.id_list(t, "flows");
        if queues.is_empty() && users.is_empty() && flows.is_empty() && !intake {
            self.at(
                here.clone(),
                "[stream] watches nothing: list at least one queue id in `queues`, user id in \
                 `users` or flow id in `flows`, or enable [intake]"
                    .into(),
            );
        }
        let topics = queues.len() + users.len() + flows.len();
        let mirror = self.bool(t, "mirror").unwrap_or(true);
        let copies = if mirror { 2 } else { 1 };
        // Each copy needs its channels, and per-conversation topics need at least one more.
        if topics.div_ceil(TOPICS_PER_CHANNEL) * copies >= MAX_CHANNELS {
            self.at(
                here.clone(),
                format!(
                    "{topics} topics{} need {} channels of {TOPICS_PER_CHANNEL} topics, leaving none \
                     of the {MAX_CHANNELS} one OAuth client may hold for per-conversation topics{}",
                    if mirror { " on two mirrored sets of channels" } else { "" },
                    topics.div_ceil(TOPICS_PER_CHANNEL) * copies,
                    if mirror { "; set `mirror = false` or watch fewer" } else { "" }
                ),
            );
        }
        let discover_after_gap = self.bool(t, "discover_after_gap").unwrap_or(true);
        let recover_queues = self.bool(t, "recover_queues").unwrap_or(true);
        let recover_max_reads = self
            .int_in(t, "recover_max_reads", 1..=100_000)
            .map_or(500, |n| n as usize);
        let silence_check = self
            .duration(t, "silence_check")
            .unwrap_or(Duration::from_secs(10));
        // Genesys sends a heartbeat every 30 s: ping after 35 s of silence and give the
        // socket up after 45 s, so a dead socket is replaced within about 45 s.
        let heartbeat_timeout = self
            .duration(t, "heartbeat_timeout")
            .unwrap_or(Duration::from_secs(45));
        let ping_after = self.duration(t, "ping_after").unwrap_or(
            heartbeat_timeout
                .saturating_sub(Duration::from_secs(10))
                .max(heartbeat_timeout / 2),
        );
        if ping_after >= heartbeat_timeout {
            let span = t.get("ping_after").and_then(Item::span);
            self.at(
                span,
                "`ping_after` must be shorter than `heartbeat_timeout`".into(),
            );
        }
        let backoff_min = self
            .duration(t, "backoff_min")
            .unwrap_or(Duration::from_secs(1));
        let backoff_max = self
            .duration(t, "backoff_max")
            .unwrap_or(Duration::from_secs(60));
        if backoff_min > backoff_max {
            let span = t.get("backoff_min").and_then(Item::span);
            self.at(span, "`backoff_min` must not exceed `backoff_max`".into());
        }
        let healthy_after = self
            .duration(t, "healthy_after")
            .unwrap_or(Duration::from_secs(60));
        let check_topics = self.bool(t, "check_topics").unwrap_or(true);
        let subscribe_window = self
            .duration(t, "subscribe_window")
            .unwrap_or(Duration::from_secs(1));
        let unsubscribe_window = self
            .duration(t, "unsubscribe_window")
            .unwrap_or(Duration::from_secs(10));
        // "0s" is allowed here: read every watched conversation once. By default a
        // conversation whose topics took half as long again as the batch window (a failed
        // or slow subscribe) is read.
        let catchup_after = if t.get("catchup_after").and_then(Item::as_str) == Some("0s") {
            Duration::ZERO
        } else {
            self.duration(t, "catchup_after")
                .unwrap_or(subscribe_window * 3 / 2)
        };
        let verify_every = self
            .duration(t, "verify_every")
            .unwrap_or(Duration::from_secs(60));
        Some(StreamConfig {
            recover_queues,
            recover_max_reads,
            silence_check,
            verify_every,
            mirror,
            discover_after_gap,
            queues,
            users,
            flows,
            check_topics,
            subscribe_window,
            unsubscribe_window,
            catchup_after,
            heartbeat_timeout,
            ping_after,
            backoff_min,
            backoff_max,
            healthy_after,
        })
    }

    fn log(&mut self, root: &dyn TableLike) -> LogConfig {
        // JSON lines for journald and shippers; text for a person at a terminal.
        let default_format = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            LogFormat::Human
        } else {
            LogFormat::Json
        };
        let mut log = LogConfig {
            format: default_format,
            level: "info".into(),
        };
        let Some((t, _)) = self.section(root, "log") else {
            return log;
        };
        self.unknown_keys(t, "[log]", &["format", "level"]);
        if let Some(f) = self.string(t, "format") {
            match f.as_str() {
                "json" => log.format = LogFormat::Json,
                "human" => log.format = LogFormat::Human,
                other => {
                    let span = t.get("format").and_then(Item::span);
                    self.at(
                        span,
                        format!("log format `{other}` is not `json` or `human`"),
                    );
                }
            }
        }
        if let Some(level) = self.nonempty_string(t, "level") {
            match parse_level(&level) {
                Ok(filter) => log.level = filter,
                Err(e) => {
                    let span = t.get("level").and_then(Item::span);
                    self.at(span, format!("log level {e}"));
                }
            }
        }
        log
    }

    fn rules(&mut self, root: &dyn TableLike) -> Vec<RuleConfig> {
        let Some(item) = root.get("rule") else {
            self.at(None, "no [[rule]]: nothing would ever be closed".into());
            return Vec::new();
        };
        let Some(array) = item.as_array_of_tables() else {
            self.at(
                item.span(),
                "`rule` must be an array of tables ([[rule]])".into(),
            );
            return Vec::new();
        };
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (i, table) in array.iter().enumerate() {
            self.rule = Some(format!("#{}", i + 1));
            let name = self.nonempty_string(table, "name");
            if let Some(n) = &name {
                self.rule = Some(n.clone());
                if !names.insert(n.clone()) {
                    let span = table.get("name").and_then(Item::span);
                    self.at(span, "another rule already has this name".into());
                }
            } else if table.get("name").is_none() {
                self.at(table.span(), "a rule needs a `name`".into());
            }
            if let Some(rule) = self.rule_body(table, name) {
                rules.push(rule);
            }
        }
        self.rule = None;
        rules
    }

    fn rule_body(&mut self, t: &toml_edit::Table, name: Option<String>) -> Option<RuleConfig> {
        self.unknown_keys(
            t,
            "[[rule]]",
            &[
                "name",
                "intents",
                "attribute",
                "queues",
                "message_types",
                "dry_run",
                "disconnect",
                "confirm_timeout",
                "retry_for",
                "farewell",
                "wrapup_code",
            ],
        );
        let intents = self.string_list(t, "intents");
        // A wrong type or a bad element was reported already: one mistake, one message.
        let absent_or_empty = t
            .get("intents")
            .is_none_or(|i| i.as_array().is_some_and(|a| a.is_empty()));
        if intents.is_empty() && absent_or_empty {
            let span = t.get("intents").and_then(Item::span).or(t.span());
            self.at(
                span,
                "`intents` must list at least one intent value, e.g. intents = [\"Goodbye\"]"
                    .into(),
            );
        }
        let attribute = self.nonempty_string(t, "attribute");
        let queues = self.id_list(t, "queues");
        let message_types = self.string_list(t, "message_types");
        for mt in &message_types {
            if !MESSAGE_TYPES.contains(&mt.as_str()) {
                let span = t.get("message_types").and_then(Item::span);
                self.at(
                    span,
                    format!(
                        "unknown message type `{mt}` (expected one of: {})",
                        MESSAGE_TYPES.join(", ")
                    ),
                );
            }
        }
        let dry_run = self.bool(t, "dry_run").unwrap_or(false);
        let disconnect = match self.string(t, "disconnect").as_deref() {
            None | Some("conversation") => DisconnectMode::Conversation,
            Some("customer") => DisconnectMode::Customer,
            Some(other) => {
                let span = t.get("disconnect").and_then(Item::span);
                self.at(
                    span,
                    format!("disconnect `{other}` is not `conversation` or `customer`"),
                );
                DisconnectMode::Conversation
            }
        };
        let confirm_timeout = self
            .duration(t, "confirm_timeout")
            .unwrap_or(Duration::from_secs(10));
        let retry_for = self
            .duration(t, "retry_for")
            .unwrap_or(Duration::from_secs(180));
        // AdditionalMessage.textBody: "SMS - 765 characters, other channels - 2000"
        // (facts sheet D.5). A rule that may close SMS conversations gets the SMS limit.
        let farewell = self.nonempty_string(t, "farewell");
        if let Some(text) = &farewell {
            let sms = message_types.is_empty() || message_types.iter().any(|m| m == "sms");
            let limit = if sms { FAREWELL_MAX_SMS } else { FAREWELL_MAX };
            let len = text.chars().count();
            if len > limit {
                let span = t.get("farewell").and_then(Item::span);
                self.at(
                    span,
                    format!(
                        "`farewell` is {len} characters; Genesys accepts at most {limit}{}",
                        if sms {
                            " for SMS (2000 on other channels: limit the rule with \
                             message_types to lift it)"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
        let wrapup_code = self.nonempty_string(t, "wrapup_code");
        Some(RuleConfig {
            farewell,
            wrapup_code,
            retry_for,
            name: name?,
            intents,
            attribute,
            queues,
            message_types,
            dry_run,
            disconnect,
            confirm_timeout,
        })
    }

    // ---- typed value readers: each reports a wrong type at the value's position ----

    fn value<'t>(&mut self, t: &'t dyn TableLike, key: &str) -> Option<&'t Value> {
        let item = t.get(key)?;
        match item.as_value() {
            Some(v) => Some(v),
            None => {
                self.at(item.span(), format!("`{key}` must be a value, not a table"));
                None
            }
        }
    }

    fn string(&mut self, t: &dyn TableLike, key: &str) -> Option<String> {
        let v = self.value(t, key)?;
        match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.at(v.span(), format!("`{key}` must be a string"));
                None
            }
        }
    }

    fn nonempty_string(&mut self, t: &dyn TableLike, key: &str) -> Option<String> {
        let s = self.string(t, key)?;
        if s.trim().is_empty() {
            let span = t.get(key).and_then(Item::span);
            self.at(span, format!("`{key}` must not be empty"));
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, t: &dyn TableLike, key: &str) -> Option<bool> {
        let v = self.value(t, key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.at(v.span(), format!("`{key}` must be true or false"));
                None
            }
        }
    }

    /// An integer within `range`, or a message at its position.
    fn int_in(
        &mut self,
        t: &dyn TableLike,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let item = t.get(key)?;
        match item.as_integer() {
            Some(n) if range.contains(&n) => Some(n),
            Some(_) => {
                self.at(
                    item.span(),
                    format!(
                        "`{key}` must be between {} and {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            None => {
                self.at(item.span(), format!("`{key}` must be an integer"));
                None
            }
        }
    }

    fn daemon(&mut self, root: &dyn TableLike) -> DaemonConfig {
        let mut d = DaemonConfig::default();
        let Some((t, _)) = self.section(root, "daemon") else {
            return d;
        };
        self.unknown_keys(
            t,
            "[daemon]",
            &[
                "state_dir",
                "retention",
                "max_concurrent_closes",
                "stop_timeout",
            ],
        );
        if let Some(dir) = self.nonempty_string(t, "state_dir") {
            d.state_dir = PathBuf::from(dir);
        }
        if let Some(r) = self.duration(t, "retention") {
            d.retention = r;
        }
        if let Some(n) = self.int_in(t, "max_concurrent_closes", 1..=10_000) {
            d.max_concurrent_closes = n as usize;
        }
        if let Some(s) = self.duration(t, "stop_timeout") {
            d.stop_timeout = s;
        }
        d
    }

    fn duration(&mut self, t: &dyn TableLike, key: &str) -> Option<Duration> {
        let v = self.value(t, key)?;
        let parsed = v.as_str().map(humantime::parse_duration);
        // The value as written (bounded: it goes into a message).
        let shown: String = v
            .span()
            .and_then(|r| self.src.get(r))
            .unwrap_or("?")
            .chars()
            .take(60)
            .collect();
        let (min, max) = duration_bounds(key);
        match parsed {
            Some(Ok(d)) if d.is_zero() || d < min || d > max => {
                self.at(
                    v.span(),
                    format!(
                        "`{key}` = {} is out of range: between {} and {}",
                        shown.trim(),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                None
            }
            Some(Ok(d)) => Some(d),
            _ => {
                self.at(
                    v.span(),
                    format!(
                        "`{key}` = {} is not a duration such as \"10s\" or \"500ms\"",
                        shown.trim()
                    ),
                );
                None
            }
        }
    }

    fn string_list(&mut self, t: &dyn TableLike, key: &str) -> Vec<String> {
        let Some(v) = self.value(t, key) else {
            return Vec::new();
        };
        let Some(array) = v.as_array() else {
            self.at(v.span(), format!("`{key}` must be an array of strings"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for elem in array.iter() {
            match elem.as_str() {
                Some(s) if !s.trim().is_empty() => out.push(s.to_string()),
                Some(_) => self.at(elem.span(), format!("`{key}` has an empty string")),
                None => self.at(elem.span(), format!("`{key}` must contain only strings")),
            }
        }
        out
    }

    /// A list of Genesys ids; they become parts of topic names and URL paths, so only
    /// characters that ids use are accepted.
    fn id_list(&mut self, t: &dyn TableLike, key: &str) -> Vec<String> {
        let ids = self.string_list(t, key);
        let span = t.get(key).and_then(Item::span);
        let mut seen = HashSet::new();
        for id in &ids {
            if !is_uuid(id) {
                self.at(
                    span.clone(),
                    format!(
                        "`{key}` entry \"{}\" is not a Genesys id (a UUID such as \
                         8f14e45f-ceea-467a-9575-3b9d1c2e4a77)",
                        id.chars().take(80).collect::<String>()
                    ),
                );
            } else if !seen.insert(id.to_ascii_lowercase()) {
                self.at(span.clone(), format!("`{key}` lists {id} twice"));
            }
        }
        ids
    }

    fn url(&mut self, t: &dyn TableLike, key: &str) -> Option<Url> {
        let raw = self.nonempty_string(t, key)?;
        let span = t.get(key).and_then(Item::span);
        let url = match Url::parse(&raw) {
            Ok(u) => u,
            Err(e) => {
                self.at(span, format!("`{key}` is not a URL: {e}"));
                return None;
            }
        };
        match url.scheme() {
            "https" => Some(url),
            "http" if is_loopback(&url) => Some(url),
            "http" => {
                self.at(
                    span,
                    format!(
                        "`{key}` uses plain http to a remote host ({}); only https is allowed \
                         except for loopback addresses",
                        url.host_str().unwrap_or("?")
                    ),
                );
                None
            }
            other => {
                self.at(span, format!("`{key}` has scheme `{other}`; use https"));
                None
            }
        }
    }
}

/// Region key (`us-east-1` or `us_east_1`) or bare domain -> domain.
/// Whether `host` is a known region's domain or a host under one.
pub(super) fn known_domain(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    REGIONS
        .iter()
        .any(|(_, d)| host == *d || host.ends_with(&format!(".{d}")))
}

pub(super) fn region_domain(region: &str) -> Option<String> {
    let key = region.trim().to_ascii_lowercase().replace('_', "-");
    if let Some((_, domain)) = REGIONS.iter().find(|(k, _)| *k == key) {
        return Some((*domain).to_string());
    }
    let looks_like_domain = key.contains('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    looks_like_domain.then_some(key)
}

/// 1-based line and column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
