use super::*;

fn decision(id: &str, at: i64) -> DecisionRecord {
    DecisionRecord {
        conversation_id: id.into(),
        rule: "goodbye".into(),
        intent: "Goodbye".into(),
        queue_id: Some("q1".into()),
        customer_id: Some("p-cust".into()),
        source: "queue".into(),
        watch: false,
        deferred: false,
        decided_ms: at,
    }
}

fn outcome(id: &str) -> OutcomeRecord {
    OutcomeRecord {
        conversation_id: id.into(),
        outcome: "confirmed".into(),
        reason: None,
        correlation_id: None,
        requests: 1,
        latency_ms: Some(20),
    }
}

#[tokio::test]
async fn unfinished_closes_and_their_steps_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let o = open(dir.path(), 0).expect("open");
        assert!(o.unfinished.is_empty());
        let j = o.journal.clone();
        j.decision(decision("c1", 1_000));
        j.step("c1", "about_to_send:patch_conversation")
            .await
            .expect("step");
        j.note("c1", "sent:patch_conversation");
        j.decision(decision("c2", 2_000));
        j.outcome(outcome("c2")).await.expect("outcome");
        j.intake("c3", Some("Goodbye"), "close");
        drop(j);
        drop(o.journal);
        o.guard.finish();
    }
    let o = open(dir.path(), 0).expect("reopen");
    assert_eq!(o.unfinished.len(), 1, "{:?}", o.unfinished);
    assert_eq!(o.unfinished[0].decision, decision("c1", 1_000));
    assert_eq!(
        o.unfinished[0].steps,
        vec![
            "about_to_send:patch_conversation",
            "sent:patch_conversation"
        ]
    );
    assert_eq!(o.recently_finished, vec!["c2".to_string()]);
    drop(o.journal);
    o.guard.finish();

    let mut r = open_read(dir.path()).expect("read-only");
    let h = r.history(0, None).expect("history");
    let kinds_of = |id: &str| -> Vec<&str> {
        h.iter()
            .filter(|e| e.conversation_id == id)
            .map(|e| e.kind.as_str())
            .collect()
    };
    assert_eq!(kinds_of("c1"), vec!["decision", "step", "step"]);
    assert_eq!(kinds_of("c2"), vec!["decision", "outcome"]);
    assert_eq!(kinds_of("c3"), vec!["intake"]);
    assert_eq!(h.len(), 6);
    let only_c1 = r.history(0, Some("c1")).expect("history c1");
    assert_eq!(only_c1.len(), 3);
    assert!(only_c1.iter().all(|e| e.conversation_id == "c1"));
}

#[test]
fn a_second_daemon_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path(), 0).expect("first");
    match open(dir.path(), 0) {
        Err(JournalError::Locked(p)) => assert_eq!(p, dir.path()),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second journal opened on a locked directory"),
    }
    drop(first.journal);
    first.guard.finish();
    // Released: it opens again.
    let again = open(dir.path(), 0).expect("after release");
    drop(again.journal);
    again.guard.finish();
}

#[test]
fn an_unwritable_state_directory_is_refused_with_the_reason() {
    // A file where the directory should be: cannot be created.
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, b"not a directory").expect("write");
    match open(&blocker, 0) {
        Err(e @ JournalError::StateDir { .. }) => {
            assert!(e.to_string().contains("state directory"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a journal inside a file"),
    }
}

#[tokio::test]
async fn prune_forgets_only_finished_closes_past_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = open(dir.path(), 0).expect("open");
    let j = o.journal.clone();
    j.decision(decision("old", 1));
    j.outcome(outcome("old")).await.expect("outcome");
    j.decision(decision("open", 2));
    j.step("open", "about_to_send:patch_conversation")
        .await
        .expect("step");
    // Everything finished so far is older than now (retention zero) once a few ms pass.
    tokio::time::sleep(Duration::from_millis(20)).await;
    j.prune(Duration::ZERO);
    j.decision_durable(decision("after", 3))
        .await
        .expect("sync point");
    drop(j);
    drop(o.journal);
    o.guard.finish();
    let o = open(dir.path(), 0).expect("reopen");
    let ids: Vec<&str> = o
        .unfinished
        .iter()
        .map(|u| u.decision.conversation_id.as_str())
        .collect();
    assert_eq!(ids, vec!["open", "after"]);
    assert!(
        o.recently_finished.is_empty(),
        "the finished one was pruned"
    );
    drop(o.journal);
    o.guard.finish();
}
