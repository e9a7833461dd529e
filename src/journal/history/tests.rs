//! The history's tests: `--since` parsing, the JSON lines, the step split, the SQLite
//! journal's answers and the table.

use super::*;

/// 2026-12-03T16:40:00.123Z.
const NOW: i64 = 1_796_316_000_123;

fn ms(text: &str) -> i64 {
    Since::parse(text).expect(text).start_ms(NOW)
}

#[test]
fn since_takes_durations_days_dates_and_times() {
    assert_eq!(rfc3339_ms(NOW), "2026-12-03T16:40:00.123Z");
    assert_eq!(ms("90m"), NOW - 90 * 60_000);
    assert_eq!(ms("1h"), NOW - 3_600_000);
    assert_eq!(ms("7d"), NOW - 7 * DAY_MS);
    assert_eq!(rfc3339_ms(ms("today")), "2026-12-03T00:00:00.000Z");
    assert_eq!(rfc3339_ms(ms("Yesterday")), "2026-12-02T00:00:00.000Z");
    assert_eq!(rfc3339_ms(ms("2026-12-01")), "2026-12-01T00:00:00.000Z");
    assert_eq!(
        rfc3339_ms(ms("2026-12-01T08:30:00Z")),
        "2026-12-01T08:30:00.000Z"
    );
    assert_eq!(
        rfc3339_ms(ms("2026-12-01T08:30:00.250Z")),
        "2026-12-01T08:30:00.250Z"
    );
    assert_eq!(
        rfc3339_ms(ms("2026-12-01 08:30:00")),
        "2026-12-01T08:30:00.000Z"
    );
    assert_eq!(
        rfc3339_ms(ms("2026-12-01T09:30:00+01:00")),
        "2026-12-01T08:30:00.000Z"
    );
    assert_eq!(
        rfc3339_ms(ms("2026-12-01T03:30:00.5-05:00")),
        "2026-12-01T08:30:00.500Z"
    );
    // A duration longer than the epoch is the whole journal, not an overflow.
    assert!(ms("1000000years") < 0);
    for bad in [
        "",
        "soon",
        "2026-13-01",
        "2026-12-01T25:00:00Z",
        "12",
        "1h ago",
    ] {
        let e = Since::parse(bad).expect_err(bad);
        assert!(e.contains("yesterday") && e.contains("2026-12-01"), "{e}");
    }
    assert!(Since::parse("2026-12-01T09:30:00+25:00").is_err());
}

#[test]
fn every_outcome_is_offered() {
    // The `--outcome` values, in the order summaries list them.
    assert_eq!(
        outcome_names(),
        [
            "confirmed",
            "escalated_confirmed",
            "already_closed",
            "dry_run",
            "failed"
        ]
    );
}

fn e(at: i64, id: &str, kind: EntryKind, f: Fields) -> HistoryEntry {
    entry(kind, at, id.into(), f)
}

fn decided(at: i64, id: &str) -> HistoryEntry {
    e(
        at,
        id,
        EntryKind::Decision,
        Fields {
            rule: Some("goodbye".into()),
            intent: Some("Goodbye".into()),
            source: Some("queue".into()),
            queue_id: Some("q1".into()),
            deferred: Some(false),
            ..Fields::default()
        },
    )
}

fn ended(at: i64, id: &str, outcome: &str) -> HistoryEntry {
    e(
        at,
        id,
        EntryKind::Outcome,
        Fields {
            rule: Some("goodbye".into()),
            intent: Some("Goodbye".into()),
            outcome: Some(outcome.into()),
            requests: Some(1),
            latency_ms: Some(20),
            ..Fields::default()
        },
    )
}

fn stepped(at: i64, id: &str, step: &str) -> HistoryEntry {
    e(
        at,
        id,
        EntryKind::Step,
        Fields {
            step: Some(step.into()),
            ..Fields::default()
        },
    )
}

#[test]
fn json_lines_have_typed_fields_and_no_empty_ones() {
    let d = serde_json::to_value(JsonLine::Entry(&decided(NOW, "c1"))).unwrap();
    assert_eq!(d["type"], "entry");
    assert_eq!(d["time"], "2026-12-03T16:40:00.123Z");
    assert_eq!(d["kind"], "decision");
    assert_eq!(d["rule"], "goodbye");
    assert_eq!(d["intent"], "Goodbye");
    assert_eq!(d["source"], "queue");
    assert_eq!(d["deferred"], false);
    for absent in ["at_ms", "outcome", "step", "requests", "reason", "answer"] {
        assert!(d.get(absent).is_none(), "{absent} in {d}");
    }
    let s = serde_json::to_value(JsonLine::Entry(&stepped(
        NOW,
        "c1",
        "failed:patch_conversation: 503 Service Unavailable",
    )))
    .unwrap();
    assert_eq!(s["step"], "failed:patch_conversation");
    assert_eq!(s["reason"], "503 Service Unavailable");
    assert_eq!(
        s["what"],
        "failed:patch_conversation: 503 Service Unavailable"
    );
    assert!(
        s.get("rule").is_none() && s.get("deferred").is_none(),
        "{s}"
    );
    let o = serde_json::to_value(JsonLine::Entry(&ended(NOW, "c1", "failed"))).unwrap();
    assert_eq!(o["outcome"], "failed");
    assert_eq!(o["requests"], 1);
    assert_eq!(o["latency_ms"], 20);
    assert!(o.get("correlation_id").is_none(), "{o}");
}

/// `step` and `reason` come from the same reading the restart makes; a step this
/// version does not know is still shown, split at its first `": "`.
#[test]
fn steps_split_into_step_and_reason_as_the_restart_reads_them() {
    let p = "7f3c2a1e-5b4d-4c3b-9a2f-1e0d9c8b7a6f";
    let cases = [
        (
            format!("failed:wrapup:{p}: 400 bad code"),
            format!("failed:wrapup:{p}"),
            Some("400 bad code"),
        ),
        (
            "failed:wrapup: cannot read participants: 500".into(),
            "failed:wrapup".into(),
            Some("cannot read participants: 500"),
        ),
        (
            "waiting:login: teardown not sent: 401".into(),
            "waiting:login".into(),
            Some("teardown not sent: 401"),
        ),
        ("read:closed".into(), "read:closed".into(), None),
        (format!("sent:wrapup:{p}"), format!("sent:wrapup:{p}"), None),
        (
            "postponed:farewell: a newer step".into(),
            "postponed:farewell".into(),
            Some("a newer step"),
        ),
        ("paused".into(), "paused".into(), None),
    ];
    for (text, step, reason) in cases {
        let l = stepped(NOW, "c1", &text);
        assert_eq!(
            (l.step.as_deref(), l.reason.as_deref(), l.what.as_str()),
            (Some(step.as_str()), reason, text.as_str()),
            "{text}"
        );
    }
}

fn record(id: &str, at: i64) -> crate::journal::DecisionRecord {
    crate::journal::DecisionRecord {
        conversation_id: id.into(),
        rule: "goodbye".into(),
        intent: "Goodbye".into(),
        queue_id: None,
        customer_id: None,
        source: "intake".into(),
        watch: false,
        deferred: false,
        decided_ms: at,
    }
}

fn outcome(id: &str, outcome: &str) -> crate::journal::OutcomeRecord {
    crate::journal::OutcomeRecord {
        conversation_id: id.into(),
        outcome: outcome.into(),
        reason: (outcome == "failed").then(|| "disconnect refused".into()),
        correlation_id: None,
        requests: 2,
        latency_ms: Some(40),
    }
}

/// Through the SQLite journal: the period, `--outcome`, `--unfinished` and the counts.
#[tokio::test]
async fn the_journal_answers_by_outcome_and_unfinished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = crate::journal::now_ms();
    {
        let o = crate::journal::open(dir.path(), 0).expect("open");
        let j = o.journal.clone();
        j.decision(record("old-open", now - 3 * DAY_MS));
        j.decision(record("c-ok", now - 3_000));
        j.outcome(outcome("c-ok", "confirmed"))
            .await
            .expect("outcome");
        j.decision(record("c-bad", now - 2_000));
        j.note(
            "c-bad",
            &Step::Failed(
                crate::step::Call::PatchConversation,
                "503 Service Unavailable".into(),
            ),
        );
        j.outcome(outcome("c-bad", "failed"))
            .await
            .expect("outcome");
        j.decision(record("c-open", now - 1_000));
        j.note(
            "c-open",
            &Step::AboutToSend(crate::step::Call::PatchConversation),
        );
        j.intake("c-intake", Some("Goodbye"), "no_rule");
        j.flush().await.expect("flush");
        drop(j);
        drop(o.journal);
        o.guard.finish();
    }
    let mut r = crate::journal::open_read(dir.path()).expect("read-only");
    let mut run = |o: Options| report(&mut r, &o, now).expect("report");

    let t = run(Options::default());
    assert!(!t.contains("old-open"), "{t}");
    assert!(
        t.contains("3 decisions, 1 confirmed, 1 failed, 1 unfinished; 1 intake call (since "),
        "{t}"
    );

    let t = run(Options {
        unfinished: true,
        ..Options::default()
    });
    assert!(
        t.contains("conversation old-open") && t.contains("conversation c-open"),
        "{t}"
    );
    assert!(!t.contains("c-ok") && !t.contains("c-bad"), "{t}");
    assert!(
        t.ends_with("2 decisions, 2 unfinished (whole journal)\n"),
        "{t}"
    );

    let t = run(Options {
        unfinished: true,
        since: Some(Since::Ago(Duration::from_secs(3600))),
        ..Options::default()
    });
    assert!(t.contains("c-open") && !t.contains("old-open"), "{t}");

    let lines: Vec<serde_json::Value> = run(Options {
        outcome: Some("failed".into()),
        json: true,
        ..Options::default()
    })
    .lines()
    .map(|l| serde_json::from_str(l).expect("a JSON line"))
    .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["kind"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(kinds, ["decision", "step", "outcome", "-"], "{lines:?}");
    assert!(
        lines[..3]
            .iter()
            .all(|l| l["type"] == "entry" && l["conversation_id"] == "c-bad")
    );
    assert_eq!(lines[1]["step"], "failed:patch_conversation");
    assert_eq!(lines[1]["reason"], "503 Service Unavailable");
    assert_eq!(lines[2]["outcome"], "failed");
    assert_eq!(lines[2]["reason"], "disconnect refused");
    assert_eq!(lines[2]["requests"], 2);
    assert_eq!(lines[3]["type"], "summary");
    assert_eq!(lines[3]["outcomes"]["failed"], 1);
    assert_eq!(lines[3]["unfinished"], 0);
}

#[test]
fn the_table_groups_by_conversation_and_ends_with_the_counts() {
    let es = vec![
        decided(1_000, "c1"),
        e(
            1_001,
            "c2",
            EntryKind::Intake,
            Fields {
                intent: Some("Goodbye".into()),
                answer: Some("close".into()),
                ..Fields::default()
            },
        ),
        decided(1_001, "c2"),
        stepped(1_002, "c1", "about_to_send:patch_conversation"),
        ended(1_050, "c1", "confirmed"),
        decided(1_060, "c3"),
        ended(1_070, "c3", "failed"),
    ];
    let open: HashSet<String> = ["c2".to_string()].into();
    let summary = Summary::of(&es, &open, Some(0));
    let t = table(&es, &summary);
    let c1 = t.find("conversation c1").expect("c1 header");
    let c2 = t.find("conversation c2").expect("c2 header");
    assert!(c1 < c2, "{t}");
    assert!(
        t.contains("1970-01-01T00:00:01.000Z  decision  rule goodbye, intent Goodbye  (source queue; queue q1)"),
        "{t}"
    );
    assert!(
        t.contains("1970-01-01T00:00:01.050Z  outcome   confirmed  (requests 1; 20 ms)"),
        "{t}"
    );
    assert!(t.contains("intake    close  (intent Goodbye)"), "{t}");
    assert!(
        t.ends_with(
            "3 decisions, 1 confirmed, 1 failed, 1 unfinished; 1 intake call \
             (since 1970-01-01T00:00:00.000Z)\n"
        ),
        "{t}"
    );
    let j = serde_json::to_value(JsonLine::Summary(&summary)).unwrap();
    assert_eq!(j["type"], "summary");
    assert_eq!(j["decisions"], 3);
    assert_eq!(j["outcomes"]["confirmed"], 1);
    assert_eq!(j["outcomes"]["failed"], 1);
    assert_eq!(j["unfinished"], 1);
    assert_eq!(j["intake_calls"], 1);
    assert_eq!(j["conversations"], 3);
    let none = Summary::of(&[], &open, None);
    assert!(table(&[], &none).contains("no journal entries in the whole journal"));
}

/// A group's journal: a column `epoch/instance` after the kind, `-` on the lines
/// without; a journal with none (SQLite) keeps the table as it was.
#[test]
fn the_table_shows_the_epoch_and_instance_of_fenced_steps() {
    let fenced = |at, step: &str, epoch, instance: &str| {
        e(
            at,
            "c1",
            EntryKind::Step,
            Fields {
                step: Some(step.into()),
                epoch: Some(epoch),
                instance: Some(instance.into()),
                ..Fields::default()
            },
        )
    };
    let es = vec![
        decided(1_000, "c1"),
        fenced(1_001, "about_to_send:patch_conversation", 7, "host-a"),
        stepped(1_002, "c1", "sent:patch_conversation"),
        fenced(1_003, "about_to_send:farewell", 12, "host-b"),
        ended(1_050, "c1", "confirmed"),
    ];
    let summary = Summary::of(&es, &HashSet::new(), Some(0));
    let t = table(&es, &summary);
    for line in [
        "  1970-01-01T00:00:01.000Z  decision  -          rule goodbye, intent Goodbye",
        "  1970-01-01T00:00:01.001Z  step      7/host-a   about_to_send:patch_conversation\n",
        "  1970-01-01T00:00:01.002Z  step      -          sent:patch_conversation\n",
        "  1970-01-01T00:00:01.003Z  step      12/host-b  about_to_send:farewell\n",
        "  1970-01-01T00:00:01.050Z  outcome   -          confirmed  (requests 1; 20 ms)\n",
    ] {
        assert!(t.contains(line), "want {line:?} in\n{t}");
    }
    let j = serde_json::to_value(JsonLine::Entry(&es[1])).unwrap();
    assert_eq!(j["epoch"], 7);
    assert_eq!(j["instance"], "host-a");
    let plain = table(&es[2..3], &summary);
    assert!(
        plain.contains("  1970-01-01T00:00:01.002Z  step      sent:patch_conversation\n"),
        "no column without a fenced line: {plain}"
    );
}
