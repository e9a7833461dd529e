//! Config validation: good files, every error at once, positions and rules.

use super::check::region_domain;
use super::*;

const GOOD: &str = r#"
[genesys]
region = "eu-west-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"

[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]

[[rule]]
name = "goodbye"
intents = ["Goodbye", "CancelSubscription"]
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("t.toml"))
}

#[test]
fn good_config_gets_defaults() {
    let c = parse(GOOD).expect("valid");
    assert_eq!(c.genesys.api_url.as_str(), "https://api.mypurecloud.ie/");
    assert_eq!(
        c.genesys.login_url.as_str(),
        "https://login.mypurecloud.ie/"
    );
    assert_eq!(c.intent_attribute, "Bot.Intent");
    assert_eq!(c.rules[0].confirm_timeout, Duration::from_secs(10));
    assert_eq!(c.rules[0].disconnect, DisconnectMode::Conversation);
    assert_eq!(
        c.stream.topics(),
        vec!["v2.routing.queues.8f14e45f-ceea-467a-9575-3b9d1c2e4a77.conversations.messages"]
    );
    // The configured topics and their mirror.
    assert!(c.stream.mirror && c.stream.discover_after_gap);
    assert_eq!(c.stream.channels_needed(), 2);
}

#[test]
fn region_forms() {
    assert_eq!(
        region_domain("us_east_1").as_deref(),
        Some("mypurecloud.com")
    );
    assert_eq!(
        region_domain("mypurecloud.de").as_deref(),
        Some("mypurecloud.de")
    );
    assert_eq!(region_domain("mars-1"), None);
}

#[test]
fn every_error_is_reported_with_position_and_rule() {
    let text = r#"
[genesys]
region = "eu-west-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"
colour = "blue"

[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]

[[rule]]
name = "empty"
intents = []

[[rule]]
name = "typed"
intents = ["A"]
confirm_timeout = "soon"
"#;
    let errs = parse(text).unwrap_err().0;
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (5, 1));
    assert!(errs[0].message.contains("unknown key `colour`"));
    assert_eq!(errs[1].rule.as_deref(), Some("empty"));
    assert_eq!(errs[1].line, 12);
    assert!(errs[1].message.contains("at least one intent"));
    assert_eq!(errs[2].rule.as_deref(), Some("typed"));
    assert!(errs[2].message.contains("confirm_timeout"));
    assert!(
        errs[2].message.contains("\"soon\""),
        "the bad value is echoed"
    );
}

#[test]
fn ids_typos_and_absurd_values_are_caught_once_each_in_file_order() {
    let text = r#"
[genesys]
region = "eu-west-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"

[stream]
queues = ["q1", "8f14e45f-ceea-467a-9575-3b9d1c2e4a77", "8F14E45F-CEEA-467A-9575-3B9D1C2E4A77"]

[[rule]]
name = "r"
intents = "Goodbye"
dry_rnu = true
confirm_timeout = "1ms"
retry_for = "1000years"
"#;
    let errs = parse(text).unwrap_err().0;
    let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(errs.len(), 6, "{msgs:#?}");
    assert!(msgs[0].contains("\"q1\" is not a Genesys id"), "{msgs:#?}");
    assert!(
        msgs[1].contains("lists 8F14E45F") && msgs[1].contains("twice"),
        "{msgs:#?}"
    );
    assert!(msgs[2].contains("must be an array of strings"), "{msgs:#?}");
    assert!(msgs[3].contains("did you mean `dry_run`?"), "{msgs:#?}");
    assert!(
        msgs[4].contains("`confirm_timeout` = \"1ms\" is out of range"),
        "{msgs:#?}"
    );
    assert!(
        msgs[5].contains("`retry_for` = \"1000years\" is out of range"),
        "{msgs:#?}"
    );
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "in file order");
}

#[test]
fn plain_http_only_to_loopback() {
    let remote = GOOD.replace(
        "region = \"eu-west-1\"",
        "api_url = \"http://api.example.com\"\nlogin_url = \"http://127.0.0.1:9\"",
    );
    let errs = parse(&remote).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("plain http to a remote host"));
    let local = GOOD.replace(
        "region = \"eu-west-1\"",
        "api_url = \"http://localhost:8080\"\nlogin_url = \"http://[::1]:9\"",
    );
    assert!(parse(&local).is_ok());
}

#[test]
fn syntax_error_has_position() {
    let errs = parse("[genesys\nregion = 1").unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 1);
    assert!(errs[0].message.starts_with("TOML syntax error"));
}

#[test]
fn secret_in_file_is_refused_with_advice() {
    let text = GOOD.replace(
        "client_id = \"0c1e0c1e-0000-4000-8000-0000000000ab\"",
        "client_id = \"0c1e0c1e-0000-4000-8000-0000000000ab\"\nclient_secret = \"x\"",
    );
    let errs = parse(&text).unwrap_err().0;
    assert!(errs[0].message.contains(SECRET_ENV));
}

#[test]
fn metrics_are_off_by_default_and_loopback_unless_allowed() {
    assert!(parse(GOOD).expect("valid").metrics.is_none());
    let with = |section: &str| format!("{GOOD}\n[metrics]\n{section}\n");
    let off = parse(&with("listen = \"127.0.0.1:9\"")).expect("valid");
    assert!(off.metrics.is_none());
    let on = parse(&with("enabled = true")).expect("valid");
    assert_eq!(
        on.metrics.expect("on").listen,
        SocketAddr::from(([127, 0, 0, 1], 9464))
    );
    let errs = parse(&with("enabled = true\nlisten = \"0.0.0.0:9464\""))
        .unwrap_err()
        .0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("allow_remote"), "{errs:?}");
    let remote = parse(&with(
        "enabled = true\nlisten = \"0.0.0.0:9464\"\nallow_remote = true",
    ))
    .expect("allowed");
    assert!(!remote.metrics.expect("on").listen.ip().is_loopback());
    let errs = parse(&with("enabled = true\nlisten = \"nowhere\"\nport = 1"))
        .unwrap_err()
        .0;
    assert_eq!(errs.len(), 2, "{errs:?}");
}

#[test]
fn ha_is_off_by_default_and_its_settings_are_judged_together() {
    assert_eq!(
        parse(GOOD).expect("valid").ha,
        None,
        "one instance by default"
    );
    let c = parse(&format!("{GOOD}\n[ha]\ninstance = \"host-a\"\n")).expect("valid");
    let ha = c.ha.expect("[ha] read");
    assert_eq!(ha.schema, "genesys_closer");
    assert_eq!(ha.lease_name, "genesys-closer");
    assert_eq!(ha.instance, "host-a");
    assert_eq!(
        (ha.lease_ttl, ha.renew_every),
        (Duration::from_secs(10), Duration::from_secs(2))
    );
    assert!(matches!(
        ha.database_url,
        DatabaseUrl::Env | DatabaseUrl::Credential(_)
    ));
    let c = parse(&format!(
        "{GOOD}\n[ha]\ninstance = \"a\"\ndatabase_url_file = \"/etc/genesys-closer/db\"\n"
    ))
    .expect("valid");
    assert_eq!(
        c.ha.unwrap().database_url,
        DatabaseUrl::File("/etc/genesys-closer/db".into())
    );

    let refused = |extra: &str, says: &str| {
        let e = parse(&format!("{GOOD}\n[ha]\ninstance = \"a\"\n{extra}\n"))
            .expect_err(extra)
            .to_string();
        assert!(e.contains(says), "{extra}: {e}");
    };
    // A TTL equal to the renew interval loses a healthy lease (River #216).
    refused(
        "lease_ttl = \"2s\"\nrenew_every = \"2s\"",
        "between 3s and 10m",
    );
    refused(
        "lease_ttl = \"10s\"\nrenew_every = \"10s\"",
        "renew_every = 10s must be",
    );
    refused(
        "lease_ttl = \"10s\"\nrenew_every = \"3s\"",
        "below a third of 90% of lease_ttl",
    );
    refused("schema = \"Genesys\"", "schema \"Genesys\" must be");
    refused(
        "database_url = \"host=db\"\ndatabase_url_file = \"/x\"",
        "not both",
    );
    refused("lease = \"x\"", "lease");
}

#[test]
fn lease_timing_is_one_rule() {
    let s = Duration::from_secs;
    assert!(lease_timing(s(10), s(2)).is_ok());
    assert!(lease_timing(s(10), Duration::from_millis(2999)).is_ok());
    assert!(lease_timing(s(10), s(3)).is_err());
    assert!(lease_timing(s(10), Duration::from_millis(100)).is_err());
    assert!(lease_timing(s(601), s(2)).is_err());
    for good in ["genesys_closer", "_x", "a1"] {
        assert!(schema_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "1a",
        "Genesys",
        "a-b",
        "a;drop",
        "a\"b",
        &"a".repeat(64),
    ] {
        assert!(schema_name(bad).is_err(), "{bad}");
    }
}
