//! The binary's config handling: `check` on good and bad files, exit statuses, messages.

#[path = "common/ids.rs"]
mod ids;

use std::path::Path;
use std::process::{Command, Output};

use ids::QUEUE;

/// A valid config watching [`QUEUE`] and one agent, with one rule.
fn good() -> String {
    format!(
        r#"
[genesys]
region = "eu-west-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"

[stream]
queues = ["{QUEUE}"]
users = ["1d7c4e92-8a5b-4c3f-b6e0-f93a2d5c7e18"]

[[rule]]
name = "goodbye"
intents = ["Goodbye", "CancelSubscription"]
"#
    )
}

fn run(args: &[&str], config_text: &str) -> (Output, String) {
    run_env(args, config_text, &[])
}

fn run_env(args: &[&str], config_text: &str, env: &[(&str, &str)]) -> (Output, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_genesys-closer"));
    cmd.args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
        .env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text.replace(&*path.to_string_lossy(), "CONFIG"))
}

#[test]
fn check_prints_what_would_run() {
    let (out, text) = run_env(
        &["check"],
        &good(),
        &[("GENESYSCLOUD_OAUTHCLIENT_SECRET", "s")],
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("NOT USABLE"), "{text}");
    assert!(text.starts_with("CONFIG: OK\n"), "{text}");
    assert!(text.contains("metrics: off"), "{text}");
    assert!(text.contains("outcome feed: off"), "{text}");
    // Without the secret `run` would refuse, and so does `check`.
    let (out, text) = run(&["check"], &good());
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains(
            "`run` would refuse to start: no client secret: GENESYSCLOUD_OAUTHCLIENT_SECRET is not set"
        ),
        "{text}"
    );
    assert!(text.contains("https://api.mypurecloud.ie/"), "{text}");
    assert!(text.contains(&format!("v2.routing.queues.{QUEUE}.conversations.messages")));
    assert!(text.contains("v2.users.1d7c4e92-8a5b-4c3f-b6e0-f93a2d5c7e18.conversations.messages"));
    assert!(
        text.contains("channels needed: 2 for 2 topic(s), held twice (mirror = true)"),
        "{text}"
    );
    assert!(
        text.contains("goodbye: Bot.Intent in [\"Goodbye\", \"CancelSubscription\"]"),
        "{text}"
    );
    assert!(
        text.starts_with("CONFIG: NOT OK: `run` would refuse to start\n"),
        "missing secret is flagged on the first line: {text}"
    );
    assert!(text.contains("(NOT USABLE: no client secret"), "{text}");
}

/// Each bad file: (what to change, expected line:column, expected message part).
#[test]
fn bad_configs_exit_64_with_file_line_column_and_message() {
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "syntax error",
            good().replace("[stream]", "[stream"),
            "CONFIG:6:",
            "TOML syntax error",
        ),
        (
            "unknown key",
            good().replace("client_id = \"0c1e0c1e-0000-4000-8000-0000000000ab\"", "client_id = \"0c1e0c1e-0000-4000-8000-0000000000ab\"\nclientid = \"typo\""),
            "CONFIG:5:1: unknown key `clientid` in [genesys]",
            "did you mean `client_id`?",
        ),
        (
            "empty intents",
            good().replace("intents = [\"Goodbye\", \"CancelSubscription\"]", "intents = []"),
            "CONFIG:12:11: rule \"goodbye\": `intents` must list at least one intent",
            "intents = [",
        ),
        (
            "a client id that is not one",
            good().replace(
                "client_id = \"0c1e0c1e-0000-4000-8000-0000000000ab\"",
                "client_id = \"my-client\"",
            ),
            "CONFIG:4:13: `client_id` = \"my-client\" is not an OAuth client id",
            "UUID (8-4-4-4-12 hex digits)",
        ),
        (
            "http to a remote host",
            good().replace(
                "region = \"eu-west-1\"",
                "api_url = \"http://api.mypurecloud.ie\"\nlogin_url = \"https://login.mypurecloud.ie\"",
            ),
            "CONFIG:3:11: `api_url` uses plain http to a remote host (api.mypurecloud.ie)",
            "only https is allowed",
        ),
    ];
    for (what, text, location, message) in cases {
        for sub in ["check", "run"] {
            let (out, output) = run(&[sub], text);
            assert_eq!(out.status.code(), Some(64), "{what} ({sub}): {output}");
            assert!(
                output.contains(location),
                "{what} ({sub}): want {location:?} in:\n{output}"
            );
            assert!(
                output.contains(message),
                "{what} ({sub}): want {message:?} in:\n{output}"
            );
        }
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = good()
        .replace(
            "client_id = \"0c1e0c1e-0000-4000-8000-0000000000ab\"",
            "client_id = \"0c1e0c1e-0000-4000-8000-0000000000ab\"\ncolour = 1",
        )
        .replace(
            "intents = [\"Goodbye\", \"CancelSubscription\"]",
            "intents = []\ndisconnect = \"guest\"",
        );
    let (out, output) = run(&["check"], &text);
    assert_eq!(out.status.code(), Some(64));
    assert!(output.starts_with("3 configuration errors:"), "{output}");
    assert!(output.contains("unknown key `colour`"));
    assert!(output.contains("`intents` must list"));
    assert!(output.contains("disconnect `guest` is not `conversation` or `customer`"));
}

#[test]
fn run_without_a_secret_refuses_before_any_network_io() {
    // The config points at a port nothing listens on; the refusal must come first.
    let text = good().replace(
        "region = \"eu-west-1\"",
        "api_url = \"http://127.0.0.1:9\"\nlogin_url = \"http://127.0.0.1:9\"",
    );
    let (out, output) = run(&["run"], &text);
    assert_eq!(out.status.code(), Some(64), "{output}");
    assert!(
        output.contains("GENESYSCLOUD_OAUTHCLIENT_SECRET"),
        "{output}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let text = std::fs::read_to_string(example).expect("config.example.toml exists");
    let (out, output) = run_env(
        &["check"],
        &text,
        &[("GENESYSCLOUD_OAUTHCLIENT_SECRET", "s")],
    );
    assert_eq!(out.status.code(), Some(0), "{output}");
}

#[test]
fn check_warns_of_rules_nothing_can_reach() {
    let text = format!(
        "{}\n[[rule]]\nname = \"shadowed\"\nintents = [\"Goodbye\"]\n\n[[rule]]\nname = \"elsewhere\"\nintents = [\"X\"]\nqueues = [\"2b7e1516-28ae-4d2a-a6d2-abf7158809cf\"]\n",
        good()
    );
    let (out, output) = run_env(
        &["check"],
        &text,
        &[("GENESYSCLOUD_OAUTHCLIENT_SECRET", "s")],
    );
    assert_eq!(out.status.code(), Some(0), "warnings do not fail: {output}");
    assert!(
        output.contains("WARNING: rule \"shadowed\" can never match: the earlier rule \"goodbye\""),
        "{output}"
    );
    assert!(
        output
            .contains("WARNING: rule \"elsewhere\" only matches queues no [stream] queue watches"),
        "{output}"
    );
}

#[test]
fn a_file_that_is_not_utf8_names_the_line_and_byte_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    let mut bytes = b"[genesys]\nregion = \"eu-west-1\"\nclient_id = \"ab".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(b"c\"\n");
    std::fs::write(&path, &bytes).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stderr).replace(&*path.to_string_lossy(), "CONFIG");
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("CONFIG:3:16: the file is not UTF-8 text (invalid byte at offset 46)"),
        "{text}"
    );
}
