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
    b: Box<dyn Backend>,
    rx: std_mpsc::Receiver<Cmd>,
    ok: &crate::metrics::JournalHealth,
    sinks: Sinks,
    outbox_ready: &tokio::sync::Notify,
) {
    let mut w = Writer {
        b,
        ok,
        sinks,
        outbox_ready,
        done: Vec::new(),
        open: false,
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            let grouped = match w.record(cmd) {
                None => true,
                Some(cmd) => {
                    w.finish();
                    w.alone(cmd);
                    false
                }
            };
            if grouped && w.done.len() < GROUP_MAX {
                next = rx.try_recv().ok();
            }
        }
        w.finish();
    }
}

/// The writer thread's state between commands.
struct Writer<'a> {
    b: Box<dyn Backend>,
    ok: &'a crate::metrics::JournalHealth,
    sinks: Sinks,
    outbox_ready: &'a tokio::sync::Notify,
    /// The open group's writes, answered once it is committed.
    done: Vec<Done>,
    /// Whether a group is open.
    open: bool,
}

impl Writer<'_> {
    /// Writes a record that groups (a decision, a step, an outcome, an intake call)
    /// into the open group, opening one; any other command is handed back unwritten.
    fn record(&mut self, cmd: Cmd) -> Option<Cmd> {
        let grouped = matches!(
            cmd,
            Cmd::Decision(..) | Cmd::Step(..) | Cmd::Outcome(..) | Cmd::Intake(..)
        );
        if grouped && !self.open {
            // Without a group each write commits alone; nothing is lost.
            self.open = self.b.begin_group().is_ok();
        }
        let b = &mut self.b;
        let done = match cmd {
            Cmd::Decision(d, reply) => Done {
                result: b.decision(&d),
                reply,
                what: "decision",
                id: d.conversation_id,
                fed: false,
            },
            Cmd::Step(id, step, at, reply) => Done {
                result: b.step(&id, &step, at),
                reply,
                what: "step",
                id,
                fed: false,
            },
            Cmd::Outcome(o, at, reply) => Done {
                result: b.outcome(&o, at, self.sinks),
                reply,
                what: "outcome",
                id: o.conversation_id,
                fed: self.sinks.http || self.sinks.file,
            },
            Cmd::Intake(id, intent, ans, at) => Done {
                result: b.intake(&id, intent.as_deref(), &ans, at),
                reply: None,
                what: "intake",
                id,
                fed: false,
            },
            other => return Some(other),
        };
        self.done.push(done);
        None
    }

    /// Does a command that is never grouped (the farewell's durable step, a flush, the
    /// outbox's reads and marks, a prune); the open group must be committed first.
    fn alone(&mut self, cmd: Cmd) {
        let b = &mut self.b;
        match cmd {
            Cmd::StepDurable(id, step, at, reply) => {
                let r = b.step_durable(&id, &step, at);
                answer(self.ok, Some(reply), r, "step", &id);
            }
            // Alone: SQLite's durable write cannot sit in a group, and PostgreSQL's
            // fenced insert holds the lease row only until its own commit.
            Cmd::StepFenced(id, step, at, epoch, reply) => {
                let r = b.step_fenced(&id, &step, at, epoch);
                if matches!(r, Err(JournalError::Fenced { .. })) {
                    // Refused by the lease, not a failing journal: not an error of /readyz.
                    let _ = reply.send(r);
                } else {
                    answer(self.ok, Some(reply), r, "step", &id);
                }
            }
            Cmd::Reread(since, reply) => {
                let r = b
                    .unfinished()
                    .and_then(|u| Ok((u, b.finished_since(since)?)));
                let _ = reply.send(r);
            }
            Cmd::Watched(since, reply) => {
                let _ = reply.send(b.watched_since(since));
            }
            Cmd::Flush(reply) => {
                let _ = reply.send(Ok(()));
            }
            Cmd::OutboxDue(now, limit, reply) => {
                let r = b
                    .outbox_due(now, limit)
                    .and_then(|due| Ok((due, b.outbox_pending()?)));
                let _ = reply.send(r);
            }
            Cmd::OutboxDone(id, http, file) => {
                if let Err(e) = b.outbox_done(id, http, file) {
                    tracing::error!(error = %e, "journal: cannot mark an outcome delivered (it may be delivered again)");
                }
            }
            Cmd::OutboxRetry(id, next, err) => {
                if let Err(e) = b.outbox_retry(id, next, &err) {
                    tracing::error!(error = %e, "journal: cannot record a failed delivery");
                }
            }
            Cmd::Prune(before) => self.prune(before),
            Cmd::Decision(..) | Cmd::Step(..) | Cmd::Outcome(..) | Cmd::Intake(..) => {
                unreachable!("records are written into the group by Writer::record")
            }
        }
    }

    /// Prunes finished closes recorded before `before`.
    fn prune(&mut self, before: i64) {
        match self.b.prune(before) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(pruned = n, "journal: pruned finished closes past retention")
            }
            Err(e) => {
                crate::metrics::journal_error();
                self.ok.failure();
                tracing::error!(error = %e, "journal prune failed")
            }
        }
    }

    /// Commits the open group, then answers its callers in order.
    fn finish(&mut self) {
        let committed = if std::mem::take(&mut self.open) {
            self.b.end_group()
        } else {
            Ok(())
        };
        let mut fed = false;
        for d in self.done.drain(..) {
            let result = match (&committed, d.result) {
                (Err(e), Ok(())) => Err(JournalError::Storage(format!("commit failed: {e}"))),
                (_, r) => r,
            };
            fed |= d.fed && result.is_ok();
            answer(self.ok, d.reply, result, d.what, &d.id);
        }
        if fed {
            self.outbox_ready.notify_one();
        }
    }
}

/// Records a write's result (for `/readyz`), logs a failure, and answers the caller
/// that waits for it, if one does.
fn answer(
    ok: &crate::metrics::JournalHealth,
    reply: Option<Reply>,
    r: Result<(), JournalError>,
    what: &str,
    id: &str,
) {
    ok.record(r.is_ok());
    if let Err(e) = &r {
        crate::metrics::journal_error();
        tracing::error!(conversation_id = id, error = %e, what,
            "journal write failed; the close goes on, but a crash now could not resume it");
    }
    if let Some(reply) = reply {
        let _ = reply.send(r);
    }
}
