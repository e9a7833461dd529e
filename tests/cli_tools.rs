//! The binary's tools for a person at a terminal and for testing rules: `help`,
//! `--version`, `generate`, `replay`, and `sim`'s listen-address guard.

use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn help_subcommand_takes_help_and_names() {
    let o = bin(&["help", "--help"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("Usage: genesys-closer help"), "{out}");

    let o = bin(&["help", "replay"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.contains("Usage: genesys-closer replay"), "{out}");
    assert!(out.contains("before a reload"), "{out}");

    let o = bin(&["help", "no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn version_names_the_commit() {
    let o = bin(&["--version"]);
    let (out, _) = text(&o);
    let line = out.trim();
    let rest = line
        .strip_prefix(concat!("genesys-closer ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected version line: {line}"));
    assert!(!rest.is_empty() && !rest.contains(' '), "{line}");
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let o = bin(&["generate", "completions", shell]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{shell}: {err}");
        assert!(
            out.contains("replay") && out.contains("record-max"),
            "{shell}"
        );
    }
    let o = bin(&["generate", "man"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.contains(".TH genesys-closer 1"), "{out}");
    let o = bin(&["generate", "man", "replay"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.contains(".TH genesys-closer-replay 1"), "{out}");
    // Hidden from the command list, as tooling for packagers.
    let (out, _) = text(&bin(&["--help"]));
    assert!(!out.contains("generate"), "{out}");
}

#[test]
fn sim_refuses_a_remote_address_without_allow_remote() {
    let o = bin(&["sim", "--listen", "0.0.0.0:0", "--rate", "0"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains("--allow-remote"), "{err}");
}

#[test]
fn sim_names_the_address_it_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    let o = bin(&["sim", "--listen", &addr, "--rate", "0"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn replay_prints_decisions_and_a_summary() {
    let events = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/genesys/events/01-queue-bot-handled-intent-attributes.json");
    let frame: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(events).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("frames.jsonl");
    let lines = [
        serde_json::json!({"at_ms": 1_795_511_700_000_i64, "stream": 0, "frame": frame})
            .to_string(),
        "{truncated".to_string(),
    ];
    std::fs::write(&rec, lines.join("\n") + "\n").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[genesys]\nregion = \"us-east-1\"\nclient_id = \"x\"\n[stream]\n\
         queues = [\"8f14e45f-ceea-467a-9575-3b9d1c2e4a77\"]\n\
         [[rule]]\nname = \"cancel\"\nintents = [\"CancelSubscription\"]\n",
    )
    .unwrap();
    let (cfg, file) = (config.to_str().unwrap(), rec.to_str().unwrap());

    let o = bin(&["replay", "--config", cfg, file]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let mut out_lines = out.lines();
    assert_eq!(
        out_lines.next(),
        Some(
            "3a6f2b9e-7c41-4d8a-b5e2-91f0c7d3a864  cancel  CancelSubscription  queue  \
             2026-11-24T09:15:00.000Z"
        ),
        "{out}"
    );
    assert!(out.contains("decisions by rule: cancel 1"), "{out}");
    assert!(err.contains("frames.jsonl:2: skipped"), "{err}");

    let o = bin(&["replay", "--json", "--config", cfg, file]);
    let (out, _) = text(&o);
    let parsed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(parsed.len(), 2, "{out}");
    assert_eq!(parsed[0]["type"], "decision");
    assert_eq!(parsed[0]["rule"], "cancel");
    assert_eq!(parsed[1]["type"], "summary");
    assert_eq!(parsed[1]["frames"], 1);
    assert_eq!(parsed[1]["bad_lines"], 1);

    // A config error is the usual exit 64; a missing recording is 1.
    std::fs::write(&config, "[genesys\n").unwrap();
    assert_eq!(
        bin(&["replay", "--config", cfg, file]).status.code(),
        Some(64)
    );
    let missing = dir.path().join("nope.jsonl");
    std::fs::write(
        &config,
        "[genesys]\nregion = \"us-east-1\"\nclient_id = \"x\"\n[stream]\nqueues = [\"8f14e45f-ceea-467a-9575-3b9d1c2e4a77\"]\n\
         [[rule]]\nname = \"r\"\nintents = [\"I\"]\n",
    )
    .unwrap();
    let o = bin(&["replay", "--config", cfg, missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
}
