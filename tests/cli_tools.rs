//! The binary's tools for a person at a terminal and for testing rules: `help`,
//! `--version`, `generate` (man pages and completions, and what the .deb ships of them),
//! `replay`, `history`, and `sim`'s listen-address guard.

#[path = "common/ids.rs"]
mod ids;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use genesys_closer::step::{Call, Step};
use ids::QUEUE;

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
        format!(
            "[genesys]\nregion = \"us-east-1\"\nclient_id = \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"\n[stream]\n\
             queues = [\"{QUEUE}\"]\n\
             [[rule]]\nname = \"cancel\"\nintents = [\"CancelSubscription\"]\n"
        ),
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
        format!(
            "[genesys]\nregion = \"us-east-1\"\nclient_id = \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"\n[stream]\nqueues = [\"{QUEUE}\"]\n\
             [[rule]]\nname = \"r\"\nintents = [\"I\"]\n"
        ),
    )
    .unwrap();
    let o = bin(&["replay", "--config", cfg, missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
}

/// The page names a roff page refers to, `genesys-closer-run` for `genesys\-closer\-run(1)`.
fn page_refs(roff: &str) -> BTreeSet<String> {
    let text = roff
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
        .replace("\\%", "")
        .replace("\\-", "-");
    text.match_indices("(1)")
        .filter_map(|(end, _)| {
            let start = text[..end]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .map_or(0, |i| i + 1);
            let name = &text[start..end];
            name.starts_with("genesys-closer").then(|| name.to_string())
        })
        .collect()
}

/// The text of one `.SH` section of a roff page.
fn section<'a>(roff: &'a str, heading: &str) -> &'a str {
    let start = roff
        .find(&format!(".SH {heading}\n"))
        .unwrap_or_else(|| panic!("no {heading} section in:\n{roff}"));
    let rest = &roff[start + 4..];
    &rest[..rest.find("\n.SH ").unwrap_or(rest.len())]
}

#[test]
fn generate_all_writes_every_page_the_top_page_names_and_what_the_deb_ships() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin(&["generate", "all", "--dir", dir.path().to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let man_dir = dir.path().join("man");
    let pages: BTreeSet<String> = std::fs::read_dir(&man_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for must in [
        "genesys-closer.1",
        "genesys-closer-run.1",
        "genesys-closer-history.1",
    ] {
        assert!(pages.contains(must), "{must} not in {pages:?}");
    }
    // `help` is a command line convenience, not a page; `generate` is hidden.
    assert!(!pages.contains("genesys-closer-help.1"), "{pages:?}");
    assert!(!pages.contains("genesys-closer-generate.1"), "{pages:?}");
    assert_eq!(
        out.lines().count(),
        pages.len() + 3,
        "every path printed: {out}"
    );

    // Every page the top page names exists, and SEE ALSO names exactly the other pages.
    let top = std::fs::read_to_string(man_dir.join("genesys-closer.1")).unwrap();
    let sub_pages: BTreeSet<String> = pages
        .iter()
        .filter(|p| *p != "genesys-closer.1")
        .map(|p| p.trim_end_matches(".1").to_string())
        .collect();
    for name in page_refs(&top) {
        assert!(
            pages.contains(&format!("{name}.1")),
            "the top page names {name}(1), not generated"
        );
    }
    assert_eq!(page_refs(section(&top, "\"SEE ALSO\"")), sub_pages);
    assert_eq!(page_refs(section(&top, "SUBCOMMANDS")), sub_pages);
    let exit = section(&top, "\"EXIT STATUS\"");
    for code in ["0", "1", "2", "64", "65", "130"] {
        assert!(
            exit.contains(&format!("\\fB{code}\\fR")),
            "exit {code} in:\n{exit}"
        );
    }
    let env = section(&top, "ENVIRONMENT");
    for var in [
        "GENESYSCLOUD_OAUTHCLIENT_SECRET",
        "GENESYS_CLOSER_INTAKE_TOKEN",
        "GENESYS_CLOSER_FEED_TOKEN",
        "CREDENTIALS_DIRECTORY",
        "RUST_LOG",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
    ] {
        assert!(env.contains(var), "{var} in:\n{env}");
    }
    for page in &sub_pages {
        let text = std::fs::read_to_string(man_dir.join(format!("{page}.1"))).unwrap();
        assert!(text.contains(&format!(".TH {page} 1")), "{page}");
        assert_eq!(
            page_refs(section(&text, "\"SEE ALSO\"")),
            BTreeSet::from(["genesys-closer".to_string()]),
            "{page}"
        );
    }

    let completions = dir.path().join("completions");
    let written: BTreeSet<String> = std::fs::read_dir(&completions)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for file in &written {
        let script = std::fs::read_to_string(completions.join(file)).unwrap();
        assert!(
            script.contains("replay") && script.contains("unfinished"),
            "{file}"
        );
    }

    // The .deb's assets under target/assets/ are what `generate all` writes (man pages
    // gzipped by pkg/build-deb.sh), and every file it writes is shipped.
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let doc: toml_edit::DocumentMut = manifest.parse().expect("Cargo.toml parses");
    let assets = doc["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("deb assets");
    let generated: Vec<String> = pages
        .iter()
        .map(|p| format!("man/{p}"))
        .chain(written.iter().map(|c| format!("completions/{c}")))
        .collect();
    let mut shipped: BTreeSet<&str> = BTreeSet::new();
    let mut destinations = Vec::new();
    for asset in assets.iter() {
        let parts: Vec<&str> = asset
            .as_array()
            .expect("an asset is an array")
            .iter()
            .map(|v| v.as_str().expect("strings"))
            .collect();
        let Some(source) = parts[0].strip_prefix("target/assets/") else {
            continue;
        };
        destinations.push(parts[1].to_string());
        let source = source.strip_suffix(".gz").unwrap_or(source);
        let matching: Vec<&str> = generated
            .iter()
            .map(String::as_str)
            .filter(|g| match source.split_once('*') {
                Some((before, after)) => g.starts_with(before) && g.ends_with(after),
                None => *g == source,
            })
            .collect();
        assert!(!matching.is_empty(), "asset {} is not generated", parts[0]);
        shipped.extend(matching);
    }
    let unshipped: Vec<&String> = generated
        .iter()
        .filter(|g| !shipped.contains(g.as_str()))
        .collect();
    assert!(
        unshipped.is_empty(),
        "generated but not in the .deb: {unshipped:?}"
    );
    for dest in [
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/genesys-closer",
        "usr/share/zsh/vendor-completions/_genesys-closer",
        "usr/share/fish/vendor_completions.d/genesys-closer.fish",
    ] {
        assert!(
            destinations.iter().any(|d| d == dest),
            "{dest} in {destinations:?}"
        );
    }
}

#[test]
fn replay_of_a_file_without_a_recorded_frame_exits_65() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[genesys]\nregion = \"us-east-1\"\nclient_id = \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"\n[stream]\n\
             queues = [\"{QUEUE}\"]\n\
             [[rule]]\nname = \"r\"\nintents = [\"I\"]\n"
        ),
    )
    .unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let heartbeat = serde_json::json!({
        "at_ms": 1_795_511_700_000_i64,
        "stream": 0,
        "frame": {"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}}
    });
    let recording = dir.path().join("frames.jsonl");
    std::fs::write(&recording, format!("{heartbeat}\n{{truncated\n")).unwrap();
    let cfg = config.to_str().unwrap();

    // The config itself passed as the recording: not one line is a recorded frame.
    let o = bin(&["replay", "--config", cfg, cfg]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(65), "{out}{err}");
    assert!(
        err.contains(&format!("error: {cfg} holds no recorded frame (8 line(s), none written by `run --record`): it is not a recording")),
        "{err}"
    );
    assert!(
        out.contains("replay: 0 frame(s)"),
        "the summary still comes: {out}"
    );

    let o = bin(&["replay", "--config", cfg, empty.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(65), "{err}");
    assert!(
        err.contains("empty.jsonl is empty: no recorded frame to replay"),
        "{err}"
    );

    // A recording with a bad line replays as before; beside a file that is not one, the
    // replay still fails.
    let rec = recording.to_str().unwrap();
    let o = bin(&["replay", "--config", cfg, rec]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = bin(&["replay", "--json", "--config", cfg, rec, cfg]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(65), "{out}{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["frames"], 1);
    assert!(!err.contains("frames.jsonl holds"), "{err}");
}

/// `history` over a journal the library wrote: typed JSON lines, the filters, the counts,
/// and the human `--since` forms.
#[tokio::test]
async fn history_filters_counts_and_takes_human_times() {
    use genesys_closer::journal::{self, DecisionRecord, OutcomeRecord};
    let dir = tempfile::tempdir().unwrap();
    let now = journal::now_ms();
    {
        let opened = journal::open(dir.path(), 0).expect("journal opens");
        let j = opened.journal.clone();
        let decision = |id: &str, at: i64| DecisionRecord {
            conversation_id: id.into(),
            rule: "goodbye".into(),
            intent: "Goodbye".into(),
            queue_id: Some("q1".into()),
            customer_id: None,
            source: "queue".into(),
            watch: false,
            deferred: false,
            decided_ms: at,
        };
        let outcome = |id: &str, outcome: &str| OutcomeRecord {
            conversation_id: id.into(),
            outcome: outcome.into(),
            reason: None,
            correlation_id: None,
            requests: 1,
            latency_ms: Some(30),
        };
        j.decision(decision("c-old", now - 3 * 86_400_000));
        j.decision(decision("c-ok", now - 3_000));
        j.outcome(outcome("c-ok", "confirmed")).await.unwrap();
        j.decision(decision("c-bad", now - 2_000));
        j.outcome(outcome("c-bad", "failed")).await.unwrap();
        j.decision(decision("c-open", now - 1_000));
        let about = Step::AboutToSend(Call::PatchConversation);
        j.note("c-open", &about);
        j.flush().await.unwrap();
        drop(j);
        drop(opened.journal);
        opened.guard.finish();
    }
    let history = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
            .arg("history")
            .arg("--state-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("binary runs");
        let (out, err) = text(&o);
        (o.status.code(), out, err)
    };
    let json = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };

    let (code, out, err) = history(&["--since", "yesterday", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let lines = json(&out);
    assert!(lines.iter().all(|l| l["type"].is_string()), "{out}");
    let decision = &lines[0];
    assert_eq!(decision["type"], "entry");
    assert_eq!(decision["kind"], "decision");
    assert_eq!(decision["rule"], "goodbye");
    assert_eq!(decision["intent"], "Goodbye");
    assert_eq!(decision["source"], "queue");
    let time = decision["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
        "{time}"
    );
    assert!(decision.get("outcome").is_none() && decision.get("at_ms").is_none());
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(
        summary["decisions"], 3,
        "c-old is older than yesterday: {out}"
    );
    assert_eq!(summary["outcomes"]["confirmed"], 1);
    assert_eq!(summary["outcomes"]["failed"], 1);
    assert_eq!(summary["unfinished"], 1);

    let (code, out, _) = history(&["--outcome", "failed", "--json"]);
    assert_eq!(code, Some(0));
    let ids: BTreeSet<String> = json(&out)
        .iter()
        .filter_map(|l| l["conversation_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, BTreeSet::from(["c-bad".to_string()]));

    let (code, out, _) = history(&["--unfinished"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("conversation c-old") && out.contains("conversation c-open"),
        "{out}"
    );
    assert!(!out.contains("c-ok") && !out.contains("c-bad"), "{out}");
    assert!(
        out.ends_with("2 decisions, 2 unfinished (whole journal)\n"),
        "{out}"
    );

    let (code, out, _) = history(&["--since", "2000-01-01"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(
            "4 decisions, 1 confirmed, 1 failed, 2 unfinished (since 2000-01-01T00:00:00.000Z)"
        ),
        "{out}"
    );
    let (code, out, _) = history(&["--since", "90m"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("3 decisions"), "{out}");

    let (code, _, err) = history(&["--since", "last week"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("yesterday") && err.contains("2026-12-01"),
        "{err}"
    );
    let (code, _, err) = history(&["--outcome", "closed"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("confirmed") && err.contains("failed"), "{err}");
}

/// The simulator's printed config (`genesys-closer sim`) is valid, closes only the
/// leaving intents, and keeps its journal out of the service's directory.
#[test]
fn the_simulators_printed_config_is_one_to_paste() {
    let g = genesys_sim::GeneratorConfig {
        total: None,
        rate_per_sec: 1.0,
        queue_ids: vec![QUEUE.into()],
        intent_attribute: "Bot.Intent".into(),
        intents: vec![Some("Goodbye".into()), Some("TalkToAgent".into()), None],
        customer_leaves_after: std::time::Duration::from_secs(30),
    };
    let text = genesys_sim::instructions(
        "http://127.0.0.1:8900",
        "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7",
        "sim-secret",
        Some(&g),
    );
    let toml = &text[text.find("[genesys]").expect("config printed")..];
    let toml = &toml[..toml.find("\nCtrl-C").expect("end")];
    let config = genesys_closer::config::Config::parse(toml, std::path::Path::new("banner"))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.rules.len(), 1);
    assert_eq!(config.rules[0].intents, vec!["Goodbye".to_string()]);
    assert_ne!(
        config.daemon.state_dir,
        genesys_closer::config::DaemonConfig::default().state_dir
    );
}

/// `history` with `[ha]` reads the group's journal on PostgreSQL (127.0.0.1:5432, or
/// GENESYS_CLOSER_TEST_PG), each step with the epoch and instance it was written under
/// (`-` for one written without a lease); a schema without a journal and an unreachable database are clear errors (exit
/// 1) that never show the password.
#[test]
fn history_reads_the_groups_journal_with_epochs_and_instances() {
    use genesys_closer::ha::lease::{Lease, LeaseSettings};
    use genesys_closer::journal::{Backend, DecisionRecord, PostgresBackend};
    use std::time::Duration;
    let url = std::env::var("GENESYS_CLOSER_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    let schema = format!("t_cli_history_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("the test PostgreSQL on 127.0.0.1:5432 (bash .ci/run starts one)");
        tokio::spawn(conn);
        c
    });
    let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    rt.block_on(admin.batch_execute(&drop_schema)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let history = |database_url: &str, schema: &str, args: &[&str]| {
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[genesys]
region = "us-east-1"
client_id = "0c1e0c1e-0000-4000-8000-0000000000ab"

[stream]
queues = ["{QUEUE}"]

[daemon]
state_dir = "{state}"

[ha]
database_url = "{database_url}"
schema = "{schema}"
instance = "cli"

[[rule]]
name = "goodbye"
intents = ["Goodbye"]
"#,
                state = dir.path().join("state").display()
            ),
        )
        .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_genesys-closer"))
            .arg("history")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("binary runs");
        let (out, err) = text(&o);
        (o.status.code(), out, err)
    };

    // No instance has started on the schema yet: said, and nothing is created.
    let (code, _, err) = history(&url, &schema, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no journal in schema") && err.contains(&schema),
        "{err}"
    );

    let now = genesys_closer::journal::now_ms();
    let settings = LeaseSettings::new(
        &schema,
        "closer",
        "host-a",
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .unwrap();
    let mut journal = PostgresBackend::connect(&url, &schema, Some(settings.clone()))
        .expect("the journal connects");
    let epoch = rt
        .block_on(Lease::new(settings).try_take(&admin))
        .unwrap()
        .expect("nobody held the lease")
        .epoch;
    journal
        .decision(&DecisionRecord {
            conversation_id: "c1".into(),
            rule: "goodbye".into(),
            intent: "Goodbye".into(),
            queue_id: None,
            customer_id: None,
            source: "queue".into(),
            watch: false,
            deferred: false,
            decided_ms: now - 2_000,
        })
        .unwrap();
    journal
        .step_fenced("c1", "about_to_send:patch_conversation", now - 1_900, epoch)
        .unwrap();
    journal
        .step("c1", "sent:patch_conversation", now - 1_800)
        .unwrap();
    drop(journal);
    // One instance on PostgreSQL (no lease) writes neither epoch nor instance.
    let mut alone = PostgresBackend::connect(&url, &schema, None).expect("the journal connects");
    alone.step("c1", "read:closed", now - 1_700).unwrap();
    drop(alone);

    let (code, out, err) = history(&url, &schema, &["--json"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let fences: Vec<(&str, Option<i64>, Option<&str>)> = lines
        .iter()
        .filter(|l| l["type"] == "entry")
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or("?"),
                l["epoch"].as_i64(),
                l["instance"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        fences,
        [
            ("decision", None, None),
            ("step", Some(epoch), Some("host-a")),
            ("step", Some(epoch), Some("host-a")),
            ("step", None, None),
        ],
        "{out}"
    );
    let (code, out, err) = history(&url, &schema, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!(
            "step      {epoch}/host-a  about_to_send:patch_conversation\n"
        )) && out.contains("step      -         read:closed\n"),
        "{out}"
    );
    assert!(out.contains("1 decision, 1 unfinished"), "{out}");

    // Nothing listens on port 1: a clear error naming where, never the password.
    let (code, out, err) = history(
        "host=127.0.0.1 port=1 user=postgres password=s3cret-pw dbname=nowhere",
        &schema,
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("127.0.0.1 port 1 database nowhere") && err.contains("cannot connect"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");

    rt.block_on(admin.batch_execute(&drop_schema)).unwrap();
}
