//! The monitoring that ships with the daemon, checked against a real scrape of the
//! daemon run against the simulator (loopback only):
//! - every metric name the Grafana dashboard (`contrib/grafana/genesys-closer.json`)
//!   and the alert rules (`contrib/prometheus/alerts.yml`) use is exported;
//! - every exported family has a HELP line and a row in README.md's metrics table,
//!   and every row names an exported family;
//! - `promtool check metrics` accepts the scrape and `promtool check rules` the
//!   dashboard's queries (when promtool is on PATH; under `CI=true` it must be);
//! - a failed reload shows in the last-reload gauges, a good one restores them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{FLOW, QUEUE, conversation, http, start_sim};
use genesys_closer::closer::{CloseReport, Outcome};
use genesys_closer::config::Config;
use genesys_closer::daemon::{self, RunOptions};
use genesys_sim::SimConfig;
use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// A file of this repository.
fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The queue and the flow watched, the intake and the outcome feed (to a file) on, and
/// metrics on a free loopback port.
fn config_text(api: &str, state_dir: &Path, feed_file: &Path) -> String {
    format!(
        r#"
[genesys]
api_url = "{api}"
login_url = "{api}"
client_id = "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7"

[stream]
queues = ["{QUEUE}"]
flows = ["{FLOW}"]
mirror = false
subscribe_window = "100ms"
unsubscribe_window = "200ms"
heartbeat_timeout = "5s"
ping_after = "2s"
backoff_min = "50ms"
backoff_max = "500ms"

[intake]
enabled = true
listen = "127.0.0.1:0"

[metrics]
enabled = true
listen = "127.0.0.1:0"

[feed]
file = "{}"

[daemon]
state_dir = "{}"

[log]
format = "human"
level = "genesys_closer=info,warn"

[[rule]]
name = "goodbye"
intents = ["Goodbye", "CancelSubscription"]
confirm_timeout = "3s"
"#,
        feed_file.display(),
        state_dir.display()
    )
}

struct Daemon {
    stop: CancellationToken,
    reload: mpsc::Sender<()>,
    reports: mpsc::UnboundedReceiver<CloseReport>,
    metrics: SocketAddr,
    intake: SocketAddr,
    task: tokio::task::JoinHandle<Result<daemon::Summary, daemon::DaemonError>>,
}

async fn start(path: &Path) -> Daemon {
    let config = Config::load(path).expect("config loads");
    genesys_closer::telemetry::init_logging(&config.log);
    let stop = CancellationToken::new();
    let (reload, reload_rx) = mpsc::channel(1);
    let (tx, reports) = mpsc::unbounded_channel();
    let (intake_tx, intake_rx) = oneshot::channel();
    let (metrics_tx, metrics_rx) = oneshot::channel();
    let opts = RunOptions {
        shutdown: stop.clone(),
        drain_timeout: Duration::from_secs(10),
        reports: Some(tx),
        notify_systemd: false,
        reload: Some(reload_rx),
        intake_token: Some(SecretString::from(common::INTAKE_TOKEN.to_string())),
        intake_bound: Some(intake_tx),
        metrics_bound: Some(metrics_tx),
        record: None,
    };
    let secret = SecretString::from("sim-secret".to_string());
    let task = tokio::spawn(async move { daemon::run(&config, secret, opts).await });
    let bound = async {
        let metrics = metrics_rx.await.ok()?;
        Some((metrics, intake_rx.await.ok()?))
    };
    let Some((metrics, intake)) = tokio::time::timeout(WAIT, bound)
        .await
        .expect("metrics and intake bound in time")
    else {
        // The daemon stopped before it listened: say why.
        panic!("the daemon did not start: {:?}", task.await);
    };
    Daemon {
        stop,
        reload,
        reports,
        metrics,
        intake,
        task,
    }
}

/// Polls `/metrics` until `cond` holds on it.
async fn scrape_until(addr: SocketAddr, what: &str, cond: impl Fn(&Scrape) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, text) = http(addr, "GET", "/metrics", "").await;
        assert_eq!(status, 200, "{text}");
        if cond(&Scrape::parse(&text)) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a scrape holds.
#[derive(Debug, Default)]
struct Scrape {
    /// Family name to its `# TYPE`.
    types: BTreeMap<String, String>,
    /// Families with a `# HELP` line.
    help: BTreeSet<String>,
    /// Every sample's name (`_bucket`, `_sum`, `_count` of histograms included) and
    /// the value of its first unlabelled sample, if any.
    samples: BTreeMap<String, Option<f64>>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                s.help.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap_or_default().to_string();
                s.types
                    .insert(name, it.next().unwrap_or_default().to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let name_end = line.find(['{', ' ']).unwrap_or(line.len());
                let name = &line[..name_end];
                let value = (line.as_bytes().get(name_end) == Some(&b' '))
                    .then(|| line[name_end + 1..].trim().parse().ok())
                    .flatten();
                let entry = s.samples.entry(name.to_string()).or_insert(None);
                if entry.is_none() {
                    *entry = value;
                }
            }
        }
        s
    }

    /// Whether a query may name `metric`: a sample name, or a family's.
    fn exports(&self, metric: &str) -> bool {
        self.samples.contains_key(metric) || self.types.contains_key(metric)
    }

    fn value(&self, metric: &str) -> Option<f64> {
        self.samples.get(metric).copied().flatten()
    }

    /// The family a sample belongs to.
    fn family_of<'a>(&self, sample: &'a str) -> Option<&'a str> {
        if self.types.contains_key(sample) {
            return Some(sample);
        }
        ["_bucket", "_sum", "_count"]
            .into_iter()
            .find_map(|suffix| {
                let base = sample.strip_suffix(suffix)?;
                matches!(
                    self.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
                .then_some(base)
            })
    }
}

// ---- metric names in PromQL ----

/// Aggregations, functions and keywords: identifiers that are never metric names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
];

/// Keywords whose parenthesised list that follows holds label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Index just past the bracket closing the one at `open` (strings inside skipped).
fn skip_group(chars: &[char], open: usize, close: char) -> usize {
    let mut i = open + 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_string(chars, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

/// Index just past the string literal starting at `at`.
fn skip_string(chars: &[char], at: usize) -> usize {
    let quote = chars[at];
    let mut i = at + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The metric names a PromQL expression reads: every identifier that is not an
/// aggregation, function (followed by `(`) or keyword, and not inside a label matcher
/// (`{...}`), a range or Grafana variable (`[...]`, `$...`), a string, or a label list
/// (`by (...)`, `on (...)`, ...).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '}');
        } else if c == '[' {
            i = skip_group(&chars, i, ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable, a number, or a duration (`offset 5m`).
            i += 1;
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = skip_group(&chars, next, ')');
                }
            } else if !call && !PROMQL_WORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr:` of a rules file (one line, or a `|`/`>` block).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join("\n"));
        } else {
            exprs.push(rest.trim_matches(|c| c == '"' || c == '\'').to_string());
        }
    }
    exprs
}

/// Every query of a Grafana dashboard: each `expr`, and the metric of each templating
/// `label_values(metric, label)`.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = match &var["query"] {
            serde_json::Value::String(q) => q.clone(),
            q => q["query"].as_str().unwrap_or_default().to_string(),
        };
        if let Some(args) = query.trim().strip_prefix("label_values(") {
            let metric = args.split([',', ')']).next().unwrap_or_default();
            out.push(metric.trim().to_string());
        }
    }
    out
}

/// The families README.md's "Metrics and health" table lists (first column).
fn readme_families() -> BTreeSet<String> {
    let readme = repo_file("README.md");
    let section = readme
        .split_once("### Metrics and health")
        .map(|(_, s)| s)
        .expect("README has a Metrics and health section");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name))
        .filter(|name| name.starts_with(|c: char| c.is_ascii_alphabetic()))
        .map(str::to_string)
        .collect()
}

// ---- promtool ----

/// `promtool`, when installed; under `CI=true` it must be.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        found || !ci,
        "CI=true but promtool is not on PATH (Debian: apt-get install prometheus)"
    );
    if !found {
        eprintln!("promtool not on PATH: its checks are skipped (CI=true makes them required)");
    }
    found.then_some("promtool")
}

/// Runs promtool with `args`, `input` on stdin; panics with its output unless it
/// succeeds and prints no problem.
fn run_promtool(bin: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

// ---- tests ----

#[test]
fn promql_names_are_found_and_nothing_else() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.9, sum by (le, priority) (rate(a_bucket{instance=~"$instance", x="b_c"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("max_over_time(a[5m]) > (clamp_max(b / 2, 5) > 0 or b * 0 + 5)"),
        ["a", "b"]
    );
    assert_eq!(
        names("sum without (x) (c) / on (job) group_left (v) d offset 1h and bool e"),
        ["c", "d", "e"]
    );
    assert_eq!(
        names("time() - process_start_time_seconds"),
        ["process_start_time_seconds"]
    );
    assert_eq!(
        names("1e3 + 0.5 + 'quoted' + \"also\""),
        Vec::<String>::new()
    );
    // A misspelled metric is a name like any other: the scrape check catches it.
    assert_eq!(
        names(r#"rate(genesys_closer_outcomes_totl{outcome="failed"}[5m])"#),
        ["genesys_closer_outcomes_totl"]
    );
    let yaml = "groups:\n  - rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: |\n          sum(x)\n            > 1\n        labels: {}\n";
    assert_eq!(rule_exprs(yaml), ["up == 0", "sum(x)\n> 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_alerts_readme_and_promtool_agree_with_a_real_scrape() {
    let sim = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("config.toml");
    let good = config_text(
        &sim.base_url(),
        &dir.path().join("state"),
        &dir.path().join("outcomes.jsonl"),
    );
    std::fs::write(&path, &good).expect("write config");
    let mut d = start(&path).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while http(d.metrics, "GET", "/readyz", "").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Events that bring the event-driven families: a close (decisions, outcomes,
    // latency, budget wait, feed deliveries) and an intake answer.
    let bye = sim.create_conversation(conversation(Some("Goodbye")));
    let r = tokio::time::timeout(WAIT, d.reports.recv())
        .await
        .expect("a close in time")
        .expect("reports open");
    assert_eq!(
        (&*r.conversation_id, r.outcome),
        (bye.as_str(), Outcome::Confirmed)
    );
    let (status, _) = http(
        d.intake,
        "POST",
        "/v1/intents",
        "Content-Length: 2\r\n\r\n{}",
    )
    .await;
    assert_eq!(status, 401);
    let text = scrape_until(d.metrics, "the close delivered to the feed", |s| {
        s.value("genesys_closer_feed_pending") == Some(0.0)
            && s.exports("genesys_closer_feed_deliveries_total")
            && s.exports("genesys_closer_close_latency_seconds_bucket")
            && s.exports("genesys_closer_intake_requests_total")
    })
    .await;
    let scrape = Scrape::parse(&text);

    // Every family has HELP, every sample a family, and every family a README row.
    let readme = readme_families();
    for family in scrape.types.keys() {
        assert!(
            scrape.help.contains(family),
            "{family} has no HELP:\n{text}"
        );
        assert!(
            readme.contains(family),
            "{family} has no row in README.md's metrics table"
        );
    }
    for sample in scrape.samples.keys() {
        assert!(scrape.family_of(sample).is_some(), "{sample} has no # TYPE");
    }
    for family in &readme {
        assert!(
            scrape.types.contains_key(family),
            "README.md lists {family}, which the daemon does not export"
        );
    }
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("genesys_closer_build_info{") && l.contains(&version)),
        "{text}"
    );

    // Every name a dashboard query or an alert reads is exported.
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("contrib/grafana/genesys-closer.json"))
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["schemaVersion"].as_u64(), Some(39));
    let alerts = repo_file("contrib/prometheus/alerts.yml");
    for (file, exprs, at_least) in [
        ("the dashboard", dashboard_exprs(&dashboard), 30),
        ("alerts.yml", rule_exprs(&alerts), 7),
    ] {
        assert!(exprs.len() >= at_least, "{file}: {exprs:?}");
        let mut used = BTreeSet::new();
        for expr in &exprs {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{file}: no metric in {expr}");
            for name in names {
                assert!(
                    scrape.exports(&name),
                    "{file} reads {name}, which the daemon does not export (in {expr})"
                );
                used.insert(name);
            }
        }
        eprintln!(
            "{file}: {} queries over {} metrics",
            exprs.len(),
            used.len()
        );
    }

    if let Some(promtool) = promtool() {
        let said = run_promtool(promtool, &["check", "metrics"], &text);
        assert!(said.trim().is_empty(), "promtool check metrics: {said}");
        // The dashboard's queries parse (as recording rules, Grafana's variables filled in).
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (n, expr) in dashboard_exprs(&dashboard).iter().enumerate() {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            let quoted = serde_json::to_string(&expr).expect("a JSON string is YAML");
            rules.push_str(&format!(
                "      - record: dashboard:query_{n}\n        expr: {quoted}\n"
            ));
        }
        let file = dir.path().join("dashboard_rules.yml");
        std::fs::write(&file, rules).expect("write rules");
        run_promtool(
            promtool,
            &["check", "rules", file.to_str().expect("utf-8 path")],
            "",
        );
    }

    // A reload of a broken file: the previous configuration stays, and the gauges say so.
    let ok = "genesys_closer_config_last_reload_successful";
    let at = "genesys_closer_config_last_reload_success_timestamp_seconds";
    assert_eq!(scrape.value(ok), Some(1.0), "the start counts as a success");
    let started = scrape.value(at).expect("a success time");
    assert!(started > 1.6e9, "{started}");
    std::fs::write(&path, "[genesys\nthis is not toml").expect("break config");
    d.reload.send(()).await.expect("reload");
    scrape_until(d.metrics, "the failed reload", |s| {
        s.value(ok) == Some(0.0) && s.value(at) == Some(started)
    })
    .await;
    std::fs::write(&path, &good).expect("restore config");
    d.reload.send(()).await.expect("reload");
    scrape_until(d.metrics, "the good reload", |s| {
        s.value(ok) == Some(1.0) && s.value(at).is_some_and(|t| t > started)
    })
    .await;

    d.stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), d.task)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("clean stop");
    sim.shutdown().await;
}
