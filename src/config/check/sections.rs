//! The small sections: `[genesys]`, `[intake]`, `[feed]`, `[metrics]`, `[log]`, `[daemon]`.

use super::*;

impl Checker<'_> {
    pub(super) fn genesys(&mut self, root: &dyn TableLike) -> Option<GenesysConfig> {
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
        let client_id = self.client_id(t, here.clone());
        let region = self.region(t);
        let (api_url, login_url) = self.genesys_urls(t, here, region)?;
        let secret = self.client_secret(t);
        Some(GenesysConfig {
            requests_per_minute,
            api_url,
            login_url,
            client_id: client_id?,
            secret,
        })
    }

    /// `client_id`: required, and an OAuth client's UUID.
    fn client_id(&mut self, t: &dyn TableLike, here: Option<Range<usize>>) -> Option<String> {
        let client_id = self.nonempty_string(t, "client_id");
        if client_id.is_none() && t.get("client_id").is_none() {
            self.at(here, "[genesys] needs `client_id`".into());
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
        client_id
    }

    /// `region`, as the domain it names.
    fn region(&mut self, t: &dyn TableLike) -> Option<String> {
        self.nonempty_string(t, "region").and_then(|r| {
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
        })
    }

    /// The API and login URLs: `api_url` and `login_url`, or those of the region's
    /// domain for either not set; `None` when neither way gives both.
    fn genesys_urls(
        &mut self,
        t: &dyn TableLike,
        here: Option<Range<usize>>,
        region: Option<String>,
    ) -> Option<(Url, Url)> {
        let api_url = self.url(t, "api_url");
        let login_url = self.url(t, "login_url");
        match (api_url, login_url, region) {
            (Some(a), Some(l), _) => Some((a, l)),
            (a, l, Some(domain)) => {
                let a = a.or_else(|| Url::parse(&format!("https://api.{domain}")).ok());
                let l = l.or_else(|| Url::parse(&format!("https://login.{domain}")).ok());
                Some((a?, l?))
            }
            (_, _, None) => {
                // A bad URL or region was reported already; only report what is missing.
                let both_urls = t.contains_key("api_url") && t.contains_key("login_url");
                if t.get("region").is_none() && !both_urls {
                    self.at(
                        here,
                        "[genesys] needs `region` (or both `api_url` and `login_url`)".into(),
                    );
                }
                None
            }
        }
    }

    /// Where the client secret comes from: `client_secret_file`, else systemd's
    /// credential when there is one, else the environment.
    fn client_secret(&mut self, t: &dyn TableLike) -> SecretSource {
        match self.string(t, "client_secret_file") {
            Some(p) => SecretSource::File(PathBuf::from(p)),
            None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) if Path::new(&dir).join("client_secret").is_file() => {
                    SecretSource::Credential(Path::new(&dir).join("client_secret"))
                }
                _ => SecretSource::Env,
            },
        }
    }

    pub(super) fn intake(&mut self, root: &dyn TableLike) -> Option<IntakeConfig> {
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
        let listen = self.listen(t, SocketAddr::from(([127, 0, 0, 1], 8443)));
        let tls = self.tls_files(t);
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
        let token = self.intake_token(t);
        let basic_user = self.nonempty_string(t, "basic_user");
        if basic_user.as_deref().is_some_and(|u| u.contains(':')) {
            let span = t.get("basic_user").and_then(Item::span);
            self.at(span, "`basic_user` must not contain ':'".into());
        }
        let verify = self.bool(t, "verify").unwrap_or(false);
        let max_connections = self.max_connections(t);
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

    /// `listen`: an address such as `default`, which it is when not set.
    fn listen(&mut self, t: &dyn TableLike, default: SocketAddr) -> Option<SocketAddr> {
        let listen_span = t.get("listen").and_then(Item::span);
        match self.string(t, "listen") {
            None => Some(default),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.at(
                        listen_span,
                        format!("`listen` = \"{text}\" is not an address such as \"{default}\""),
                    );
                    None
                }
            },
        }
    }

    /// `tls_cert` and `tls_key`: both or neither.
    fn tls_files(&mut self, t: &dyn TableLike) -> Option<TlsFiles> {
        let cert = self.nonempty_string(t, "tls_cert").map(PathBuf::from);
        let key = self.nonempty_string(t, "tls_key").map(PathBuf::from);
        match (cert, key) {
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
        }
    }

    /// Where the intake's token comes from: `token_file`, else systemd's credential when
    /// there is one, else the environment.
    fn intake_token(&mut self, t: &dyn TableLike) -> TokenSource {
        match self.nonempty_string(t, "token_file") {
            Some(p) => TokenSource::File(PathBuf::from(p)),
            None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) if Path::new(&dir).join(INTAKE_TOKEN_CREDENTIAL).is_file() => {
                    TokenSource::Credential(Path::new(&dir).join(INTAKE_TOKEN_CREDENTIAL))
                }
                _ => TokenSource::Env,
            },
        }
    }

    /// `max_connections`: 1 to 65536, 256 when not set (or wrong).
    fn max_connections(&mut self, t: &dyn TableLike) -> usize {
        match t.get("max_connections").and_then(Item::as_integer) {
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
        }
    }

    /// `[metrics]`: off unless `enabled = true`; loopback unless `allow_remote = true`
    /// (see [`MetricsConfig`] for why).
    pub(super) fn feed(&mut self, root: &dyn TableLike) -> Option<FeedConfig> {
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

    pub(super) fn metrics(&mut self, root: &dyn TableLike) -> Option<MetricsConfig> {
        let (t, _) = self.section(root, "metrics")?;
        self.unknown_keys(t, "[metrics]", &["enabled", "listen", "allow_remote"]);
        let enabled = self.bool(t, "enabled").unwrap_or(false);
        let allow_remote = self.bool(t, "allow_remote").unwrap_or(false);
        let listen_span = t.get("listen").and_then(Item::span);
        let listen = self.listen(t, SocketAddr::from(([127, 0, 0, 1], 9464)));
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

    pub(super) fn log(&mut self, root: &dyn TableLike) -> LogConfig {
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

    pub(super) fn daemon(&mut self, root: &dyn TableLike) -> DaemonConfig {
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
}
