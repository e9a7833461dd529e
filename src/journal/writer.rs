//! The one writer thread: records in submission order, grouped into one commit while
//! it was busy; a caller that must know a record is stored is answered after its
//! group's commit.

use super::*;

/// Most records one group commits (see [`writer`]).
const GROUP_MAX: usize = 512;

/// A grouped write's result, answered once its group is committed.
struct Done {
    reply: Option<Reply>,
    result: Result<(), JournalError>,
    what: &'static str,
    id: String,
    /// An outcome that entered the outbox.
    fed: bool,
}

/// The writer thread. Records queued while it was busy are written in one group (one
/// commit, not one each: under a burst of intake calls the commits, not the inserts,
/// were most of its time); their callers are answered once the group is committed.
/// The farewell's durable step, prunes and reads are never grouped: the group before
/// them is committed first.
pub(super) fn writer(
    mut b: SqliteBackend,
    rx: std_mpsc::Receiver<Cmd>,
    ok: &crate::metrics::JournalHealth,
    sinks: Sinks,
    outbox_ready: &tokio::sync::Notify,
) {
    let answer = |reply: Option<Reply>, r: Result<(), JournalError>, what: &str, id: &str| {
        ok.record(r.is_ok());
        if let Err(e) = &r {
            crate::metrics::journal_error();
            tracing::error!(conversation_id = id, error = %e, what,
                "journal write failed; the close goes on, but a crash now could not resume it");
        }
        if let Some(reply) = reply {
            let _ = reply.send(r);
        }
    };
    // Commits the open group, then answers its callers in order.
    let finish = |b: &mut SqliteBackend, open: &mut bool, done: &mut Vec<Done>| {
        let committed = if std::mem::take(open) {
            b.end_group()
        } else {
            Ok(())
        };
        let mut fed = false;
        for d in done.drain(..) {
            let result = match (&committed, d.result) {
                (Err(e), Ok(())) => Err(JournalError::Storage(format!("commit failed: {e}"))),
                (_, r) => r,
            };
            fed |= d.fed && result.is_ok();
            answer(d.reply, result, d.what, &d.id);
        }
        if fed {
            outbox_ready.notify_one();
        }
    };
    let mut done: Vec<Done> = Vec::new();
    let mut open = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            let grouped = matches!(
                cmd,
                Cmd::Decision(..) | Cmd::Step(..) | Cmd::Outcome(..) | Cmd::Intake(..)
            );
            if grouped && !open {
                // Without a group each write commits alone; nothing is lost.
                open = b.begin_group().is_ok();
            }
            match cmd {
                Cmd::Decision(d, reply) => done.push(Done {
                    result: b.decision(&d),
                    reply,
                    what: "decision",
                    id: d.conversation_id,
                    fed: false,
                }),
                Cmd::Step(id, step, at, reply) => done.push(Done {
                    result: b.step(&id, &step, at),
                    reply,
                    what: "step",
                    id,
                    fed: false,
                }),
                Cmd::Outcome(o, at, reply) => done.push(Done {
                    result: b.outcome(&o, at, sinks),
                    reply,
                    what: "outcome",
                    id: o.conversation_id,
                    fed: sinks.http || sinks.file,
                }),
                Cmd::Intake(id, intent, ans, at) => done.push(Done {
                    result: b.intake(&id, intent.as_deref(), &ans, at),
                    reply: None,
                    what: "intake",
                    id,
                    fed: false,
                }),
                Cmd::StepDurable(id, step, at, reply) => {
                    finish(&mut b, &mut open, &mut done);
                    let r = b.step_durable(&id, &step, at);
                    answer(Some(reply), r, "step", &id);
                }
                Cmd::Flush(reply) => {
                    finish(&mut b, &mut open, &mut done);
                    let _ = reply.send(Ok(()));
                }
                Cmd::OutboxDue(now, limit, reply) => {
                    finish(&mut b, &mut open, &mut done);
                    let r = b
                        .outbox_due(now, limit)
                        .and_then(|due| Ok((due, b.outbox_pending()?)));
                    let _ = reply.send(r);
                }
                Cmd::OutboxDone(id, http, file) => {
                    finish(&mut b, &mut open, &mut done);
                    if let Err(e) = b.outbox_done(id, http, file) {
                        tracing::error!(error = %e, "journal: cannot mark an outcome delivered (it may be delivered again)");
                    }
                }
                Cmd::OutboxRetry(id, next, err) => {
                    finish(&mut b, &mut open, &mut done);
                    if let Err(e) = b.outbox_retry(id, next, &err) {
                        tracing::error!(error = %e, "journal: cannot record a failed delivery");
                    }
                }
                Cmd::Prune(before) => {
                    finish(&mut b, &mut open, &mut done);
                    match b.prune(before) {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(
                                pruned = n,
                                "journal: pruned finished closes past retention"
                            )
                        }
                        Err(e) => {
                            crate::metrics::journal_error();
                            ok.failure();
                            tracing::error!(error = %e, "journal prune failed")
                        }
                    }
                }
            }
            if grouped && done.len() < GROUP_MAX {
                next = rx.try_recv().ok();
            }
        }
        finish(&mut b, &mut open, &mut done);
    }
}
