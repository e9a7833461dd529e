use super::backend_suite::decision;
use super::*;
use crate::step::{Call, Step};

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
        j.step("c1", &Step::AboutToSend(Call::PatchConversation))
            .await
            .expect("step");
        j.note("c1", &Step::Sent(Call::PatchConversation));
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
    j.step("open", &Step::AboutToSend(Call::PatchConversation))
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

/// A burst queued faster than the writer commits is grouped; nothing is lost or
/// reordered, a durable step in the middle commits the group before it, and the
/// callers that wait are answered only once their records are stored.
#[tokio::test]
async fn grouped_writes_are_stored_whole_and_in_order() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let opened = open(dir.path(), 0).expect("the journal opens");
    let j = opened.journal.clone();
    for i in 0..2000 {
        j.intake(&format!("intake-{i}"), Some("TalkToAgent"), "no_rule");
    }
    for i in 0..300 {
        let id = format!("conv-{i}");
        j.decision(decision(&id, now_ms()));
        j.note(&id, &Step::AboutToSend(Call::PatchConversation));
        if i == 150 {
            j.step_durable(&id, &Step::AboutToSend(Call::Farewell))
                .await
                .expect("the durable step is stored");
        }
        j.note(&id, &Step::Sent(Call::PatchConversation));
    }
    // Awaited: answered after its group's commit, so a reader sees it at once.
    j.outcome(outcome("conv-7"))
        .await
        .expect("the outcome is stored");
    let mut reader = open_read(dir.path()).expect("a reader");
    let seen = reader.history(0, Some("conv-7")).expect("history");
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["decision", "step", "step", "outcome"], "{seen:?}");
    assert_eq!(seen[1].what, "about_to_send:patch_conversation");
    assert_eq!(seen[2].what, "sent:patch_conversation");

    drop(j);
    drop(opened.journal);
    opened.guard.finish();
    let all = reader.history(0, None).expect("history");
    let count = |kind: &str| all.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("intake"), 2000);
    assert_eq!(count("decision"), 300);
    assert_eq!(count("step"), 601);
    let mid = reader.history(0, Some("conv-150")).expect("history");
    let steps: Vec<&str> = mid.iter().skip(1).map(|e| e.what.as_str()).collect();
    assert_eq!(
        steps,
        [
            "about_to_send:patch_conversation",
            "about_to_send:farewell",
            "sent:patch_conversation"
        ]
    );
}
