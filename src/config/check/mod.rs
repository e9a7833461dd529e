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

mod ha;
mod rules;
mod sections;
mod stream;
mod values;

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
        "lease_ttl" => (s(3), s(600)),
        "renew_every" => (ms(200), s(200)),
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
    pub(super) fn at(&mut self, span: Option<Range<usize>>, message: String) {
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
    pub(super) fn unknown_keys(&mut self, table: &dyn TableLike, section: &str, allowed: &[&str]) {
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
                "ha",
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
        let ha = self.ha(root);
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
            ha,
            rules,
        })
    }

    /// A `[name]` table and the span of its header, for "missing key" messages.
    pub(super) fn section<'t>(
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
