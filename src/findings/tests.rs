//! The findings' tests: refusals (secret, state directory, intake and feed credentials),
//! warnings, and the text `check` prints.

use super::*;

/// A valid config whose secret is `secret_file` and whose state directory is `state_dir`.
fn config(secret_file: &Path, state_dir: &Path, extra: &str) -> Config {
    let text = format!(
        r#"
[genesys]
region = "eu-west-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"
client_secret_file = "{}"

[stream]
queues = ["8f14e45f-ceea-467a-9575-3b9d1c2e4a77"]

[daemon]
state_dir = "{}"

[[rule]]
name = "goodbye"
intents = ["Goodbye", "CancelSubscription"]
{extra}"#,
        secret_file.display(),
        state_dir.display()
    );
    Config::parse(&text, Path::new("t.toml")).expect("valid config")
}

/// A directory with a secret file only its owner reads, and a state directory.
fn dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").expect("write secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    (dir, secret, state)
}

#[test]
fn a_usable_config_is_ok_and_says_so_first() {
    let (_dir, secret, state) = dir();
    let config = config(&secret, &state, "");
    let findings = inspect(&config, Path::new("t.toml"));
    assert_eq!(findings.refusals(), []);
    assert_eq!(findings.warnings, []);
    assert_eq!(findings.state_dir, StateDir::Writable);
    assert_eq!(findings.exit(), Exit::Ok);
    assert_eq!(findings.refusal_line(), None);
    let text = findings.to_string();
    assert!(text.starts_with("t.toml: OK\n"), "{text}");
    assert!(
        text.contains(&format!(
            "client secret: from file {} (present)\n",
            secret.display()
        )),
        "{text}"
    );
    assert!(text.contains("(writable); retention 30days"), "{text}");
    assert!(
        text.contains("\nintake: off\nmetrics: off\noutcome feed: off\n"),
        "{text}"
    );
    assert!(!text.contains("WARNING"), "{text}");
    // The probe file is gone.
    assert_eq!(std::fs::read_dir(&state).expect("read").count(), 0);
}

#[test]
fn a_missing_secret_is_refused_and_named() {
    let (dir, _, state) = dir();
    let missing = dir.path().join("no-such-secret");
    let config = config(&missing, &state, "");
    let findings = inspect(&config, Path::new("t.toml"));
    let refusals = findings.refusals();
    assert!(
        matches!(refusals.as_slice(), [Refusal::Secret(why)] if why.contains("no-such-secret")),
        "{refusals:?}"
    );
    assert_eq!(findings.exit(), Exit::BadConfig);
    let text = findings.to_string();
    assert!(
        text.starts_with("t.toml: NOT OK: `run` would refuse to start\n"),
        "{text}"
    );
    assert!(text.contains("(NOT USABLE: "), "{text}");
    let line = findings.refusal_line().expect("refused");
    assert!(
        line.starts_with("t.toml: `run` would refuse to start: "),
        "{line}"
    );
}

#[test]
fn a_state_dir_that_is_a_file_is_refused() {
    let (dir, secret, _) = dir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let config = config(&secret, &file, "");
    let findings = inspect(&config, Path::new("t.toml"));
    assert_eq!(findings.state_dir, StateDir::NotADirectory);
    assert_eq!(
        findings.refusals(),
        [Refusal::StateDir {
            path: file.clone(),
            found: StateDir::NotADirectory
        }]
    );
    let text = findings.to_string();
    assert!(
        text.contains("(NOT A DIRECTORY: `run` would refuse to start)"),
        "{text}"
    );
    assert_eq!(
        findings.refusal_line().as_deref(),
        Some(
            format!(
                "t.toml: `run` would refuse to start: the state directory {} cannot be used",
                file.display()
            )
            .as_str()
        )
    );
}

#[cfg(unix)]
#[test]
fn a_secret_file_others_can_read_is_warned_of() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_dir, secret, state) = dir();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = config(&secret, &state, "");
    let findings = inspect(&config, Path::new("t.toml"));
    assert_eq!(
        findings.warnings,
        [Warning::SecretReadableByOthers {
            path: secret.clone(),
            mode: 0o644
        }]
    );
    assert_eq!(findings.exit(), Exit::Ok);
    assert!(
        findings.to_string().ends_with(&format!(
            "WARNING: {} is readable by other users (mode 644): chmod 600 it\n",
            secret.display()
        )),
        "{findings}"
    );
}

#[test]
fn an_absent_state_dir_is_fine() {
    let (dir, secret, _) = dir();
    let config = config(&secret, &dir.path().join("later"), "");
    let findings = inspect(&config, Path::new("t.toml"));
    assert_eq!(findings.state_dir, StateDir::Absent);
    assert_eq!(findings.exit(), Exit::Ok);
}

#[test]
fn rules_nothing_can_reach_are_warned_of_but_not_refused() {
    let (_dir, secret, state) = dir();
    let extra = r#"
[[rule]]
name = "shadowed"
intents = ["Goodbye"]

[[rule]]
name = "elsewhere"
intents = ["X"]
queues = ["2b7e1516-28ae-4d2a-a6d2-abf7158809cf"]
"#;
    let config = config(&secret, &state, extra);
    let findings = inspect(&config, Path::new("t.toml"));
    assert_eq!(
        findings.warnings,
        [
            Warning::Shadowed {
                rule: "shadowed".into(),
                earlier: "goodbye".into()
            },
            Warning::QueuesNotWatched {
                rule: "elsewhere".into(),
                queues: vec!["2b7e1516-28ae-4d2a-a6d2-abf7158809cf".into()]
            },
        ]
    );
    assert_eq!(findings.exit(), Exit::Ok);
    let text = findings.to_string();
    assert!(
        text.ends_with(
            "WARNING: rule \"elsewhere\" only matches queues no [stream] queue watches \
             (2b7e1516-28ae-4d2a-a6d2-abf7158809cf): no queue event can reach it\n"
        ),
        "{text}"
    );
}

#[test]
fn an_intake_without_a_credential_and_an_unreadable_feed_token_are_refused() {
    let (dir, secret, state) = dir();
    let token = dir.path().join("intake-token");
    let extra = format!(
        "[intake]\nenabled = true\ntoken_file = \"{}\"\n[feed]\nurl = \"https://a.example.com/x\"\ntoken_file = \"{}\"\n",
        token.display(),
        dir.path().join("no-feed-token").display()
    );
    let config = config(&secret, &state, &extra);
    let findings = inspect(&config, Path::new("t.toml"));
    let refusals = findings.refusals();
    assert!(
        matches!(
            refusals.as_slice(),
            [Refusal::IntakeCredential(_), Refusal::FeedToken(why)] if why.contains("no-feed-token")
        ),
        "{refusals:?}"
    );
    let line = findings.refusal_line().expect("refused");
    assert!(
        line.contains(": the intake credential is not usable; [feed] token_file "),
        "{line}"
    );
    let text = findings.to_string();
    assert!(text.contains("credential NOT USABLE ("), "{text}");
    assert!(
        text.contains("outcome feed: POST https://a.example.com/x (token NOT USABLE: "),
        "{text}"
    );
}

#[test]
fn a_group_names_its_lease_and_database_and_refuses_an_unusable_connection_string() {
    let (dir, secret, _state) = dir();
    // In a group the state directory is not used: a missing one refuses nothing.
    let nowhere = dir.path().join("no-such-dir/at-all");
    let url_file = dir.path().join("database_url");
    std::fs::write(&url_file, "postgres://closer:pw@db.example.com:6432/gc\n").unwrap();
    let group = |file: &Path| {
        config(
            &secret,
            &nowhere,
            &format!(
                "[ha]\ninstance = \"host-a\"\ndatabase_url_file = \"{}\"\n",
                file.display()
            ),
        )
    };
    let config = group(&url_file);
    let findings = inspect(&config, Path::new("t.toml"));
    assert_eq!(findings.refusals(), []);
    let text = findings.to_string();
    assert!(
        text.contains(
            "group: lease \"genesys-closer\" as instance \"host-a\", TTL 10s renewed every 2s; \
             journal and lease on db.example.com port 6432 database gc, schema genesys_closer; \
             TLS when the server offers it, certificate not checked (sslmode=prefer)\n"
        ),
        "{text}"
    );
    assert!(!text.contains("pw"), "the password is never shown: {text}");

    std::fs::write(&url_file, "not a connection string = =").unwrap();
    let config = group(&url_file);
    let findings = inspect(&config, Path::new("t.toml"));
    assert!(
        matches!(&findings.refusals()[..], [Refusal::DatabaseUrl(why)] if why.contains("not a PostgreSQL connection string")),
        "{:?}",
        findings.refusals()
    );
    assert_eq!(findings.exit(), Exit::BadConfig);
    let config = group(&dir.path().join("missing"));
    let findings = inspect(&config, Path::new("t.toml"));
    assert!(
        matches!(&findings.refusals()[..], [Refusal::DatabaseUrl(why)] if why.contains("database_url_file")),
        "{:?}",
        findings.refusals()
    );
}

/// `[ha] ca_file` is read as `run` reads it: a file that cannot be used is refused, a
/// usable one is named with how TLS checks the server.
#[test]
fn a_group_reads_its_ca_file_as_run_does() {
    let (dir, secret, state) = dir();
    let group = |url: &str, ca: &Path| {
        config(
            &secret,
            &state,
            &format!(
                "[ha]\ninstance = \"host-a\"\ndatabase_url = \"{url}\"\nca_file = \"{}\"\n",
                ca.display()
            ),
        )
    };
    let missing = dir.path().join("no-ca.pem");
    let config = group("host=db.example.com sslmode=verify-full", &missing);
    assert_eq!(
        config.ha.as_ref().and_then(|h| h.ca_file.as_deref()),
        Some(missing.as_path())
    );
    let findings = inspect(&config, Path::new("t.toml"));
    assert!(
        matches!(&findings.refusals()[..], [Refusal::DatabaseUrl(why)]
            if why.contains("ca_file") && why.contains("no-ca.pem")),
        "{:?}",
        findings.refusals()
    );
    assert_eq!(findings.exit(), Exit::BadConfig);
    assert!(findings.to_string().contains("NOT USABLE ([ha] ca_file"));

    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["db.example.com".into()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let config = group("host=db.example.com sslmode=verify-full", &ca);
    let findings = inspect(&config, Path::new("t.toml"));
    assert_eq!(findings.refusals(), []);
    assert!(
        findings.to_string().contains(
            "schema genesys_closer; TLS required, certificate chain and host name checked \
             (verify-full)\n"
        ),
        "{findings}"
    );
    let config = group("host=db.example.com sslmode=require", &ca);
    let findings = inspect(&config, Path::new("t.toml"));
    assert!(
        findings
            .to_string()
            .contains("certificate chain checked (verify-ca)"),
        "{findings}"
    );
}
