//! One test suite for every [`Backend`]: each case is written once, over a [`Fixture`],
//! and runs for SQLite (a temporary directory) and for PostgreSQL (a schema of its own,
//! dropped at the end) on the database at 127.0.0.1:5432 (trust authentication,
//! database `test`) or `GENESYS_CLOSER_TEST_PG`; `.ci/run` starts one where none runs.
//! The cases after the suite are PostgreSQL's own (the lease, the savepoints, errors).
//!
//! Plain `#[test]`s: the PostgreSQL backend blocks on a runtime of its own, which must
//! not run inside another.

use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use super::*;
use crate::ha::lease::{Lease, LeaseSettings};

/// Where the backends under test keep their records.
trait Fixture {
    /// A writing instance; each call opens another on the same records.
    fn open(&self) -> Box<dyn Backend>;
    /// A second instance that reads what the writer committed.
    fn reader(&self) -> Box<dyn Backend>;
    /// An instance holding the lease as `instance`, and the lease's epoch (SQLite has
    /// no lease: any epoch).
    fn leased(&self, instance: &str) -> (Box<dyn Backend>, i64);
    /// Whether a fenced step keeps its epoch and instance (PostgreSQL; SQLite has no
    /// lease and stores none).
    fn fences(&self) -> bool;
}

struct SqliteFx {
    dir: tempfile::TempDir,
}

impl SqliteFx {
    fn new() -> SqliteFx {
        let fx = SqliteFx {
            dir: tempfile::tempdir().expect("a temp dir"),
        };
        // Created before any reader opens it.
        drop(fx.open());
        fx
    }
}

impl Fixture for SqliteFx {
    fn open(&self) -> Box<dyn Backend> {
        Box::new(SqliteBackend::open(&db_path(self.dir.path())).expect("the journal opens"))
    }

    fn reader(&self) -> Box<dyn Backend> {
        Box::new(SqliteBackend::open_read_only(&db_path(self.dir.path())).expect("a reader"))
    }

    fn leased(&self, _instance: &str) -> (Box<dyn Backend>, i64) {
        (self.open(), 1)
    }

    fn fences(&self) -> bool {
        false
    }
}

fn pg_url() -> String {
    std::env::var("GENESYS_CLOSER_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A schema of its own for one test (dropped at the end), and a session to set up the
/// lease and look at the tables directly.
struct PgFx {
    schema: String,
    rt: Runtime,
    admin: Client,
}

impl PgFx {
    fn new(test: &str) -> PgFx {
        // Identifiers stop at 63 bytes: a long name is cut and told apart by its hash.
        let name = if test.len() <= 40 {
            test.to_owned()
        } else {
            let hash = test.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("{}_{:08x}", &test[..30], hash as u32)
        };
        let schema = format!("t_{name}_{}", std::process::id());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let admin = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&pg_url(), NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot reach the test PostgreSQL ({e}): start one on 127.0.0.1:5432 \
                         with a database `test` and trust authentication (`bash .ci/run` \
                         does), or set GENESYS_CLOSER_TEST_PG"
                    )
                });
            tokio::spawn(conn);
            client
        });
        let fx = PgFx { schema, rt, admin };
        fx.sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", fx.schema));
        fx
    }

    fn sql(&self, sql: &str) {
        self.rt
            .block_on(self.admin.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.rt
            .block_on(self.admin.query(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn backend(&self, lease: Option<LeaseSettings>) -> PostgresBackend {
        PostgresBackend::connect(&pg_url(), &self.schema, lease).expect("the journal connects")
    }

    fn settings(&self, instance: &str) -> LeaseSettings {
        LeaseSettings::new(
            &self.schema,
            "closer",
            instance,
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .expect("settings")
    }

    /// Takes the lease as `instance` (the tables exist: a backend migrated them).
    fn take(&self, instance: &str) -> Option<i64> {
        let mut lease = Lease::new(self.settings(instance));
        let held = self
            .rt
            .block_on(lease.try_take(&self.admin))
            .expect("the lease statement");
        held.map(|h| h.epoch)
    }

    /// The lease expires now, as if its holder stopped renewing a TTL ago.
    fn expire(&self) {
        self.sql(&format!(
            "UPDATE {}.lease SET expires_at = now() - interval '1 millisecond'",
            self.schema
        ));
    }
}

impl Drop for PgFx {
    fn drop(&mut self) {
        let _ = self.rt.block_on(
            self.admin
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)),
        );
    }
}

impl Fixture for PgFx {
    fn open(&self) -> Box<dyn Backend> {
        Box::new(self.backend(None))
    }

    fn reader(&self) -> Box<dyn Backend> {
        self.open()
    }

    fn leased(&self, instance: &str) -> (Box<dyn Backend>, i64) {
        let b = self.backend(Some(self.settings(instance)));
        let epoch = self.take(instance).expect("nobody held the lease");
        (Box::new(b), epoch)
    }

    fn fences(&self) -> bool {
        true
    }
}

/// A decision record for `id` at `at` (also used by the journal handle's tests).
pub(super) fn decision(id: &str, at: i64) -> DecisionRecord {
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

fn outcome(id: &str, outcome: &str) -> OutcomeRecord {
    OutcomeRecord {
        conversation_id: id.into(),
        outcome: outcome.into(),
        reason: (outcome != "confirmed").then(|| "gave up".into()),
        correlation_id: (outcome != "confirmed").then(|| "corr-1".into()),
        requests: 3,
        latency_ms: Some(20),
    }
}

const BOTH: Sinks = Sinks {
    http: true,
    file: true,
};

fn ids(u: &[Unfinished]) -> Vec<&str> {
    u.iter()
        .map(|u| u.decision.conversation_id.as_str())
        .collect()
}

/// `(conversation, kind)` of each line, in order.
fn lines(h: &[HistoryEntry]) -> Vec<(String, &'static str)> {
    h.iter()
        .map(|e| (e.conversation_id.clone(), e.kind.as_str()))
        .collect()
}

fn line(id: &str, kind: &'static str) -> (String, &'static str) {
    (id.to_owned(), kind)
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::SqliteFx::new());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::PgFx::new(stringify!($case)));
                }
            )*
        }
    };
}

suite!(
    decisions_and_steps_make_unfinished_closes,
    a_second_decision_for_an_open_close_is_ignored,
    a_finished_close_decided_again_starts_afresh,
    an_outcome_finishes_a_close,
    the_outbox_keeps_an_outcome_until_every_sink_has_it,
    intake_calls_are_recorded_and_shown,
    history_selects_by_conversation_time_outcome_and_unfinished,
    prune_forgets_only_finished_closes_older_than_the_cut,
    a_group_is_stored_whole_at_its_end_and_not_before,
    a_fenced_step_under_the_current_epoch_is_stored,
    history_shows_a_fenced_steps_epoch_and_instance,
    the_conversations_intake_calls_left_watched_and_undecided_are_listed,
);

fn decisions_and_steps_make_unfinished_closes(fx: &dyn Fixture) {
    let mut b = fx.open();
    let plain = DecisionRecord {
        queue_id: None,
        customer_id: None,
        watch: true,
        deferred: true,
        source: "intake".into(),
        ..decision("c2", 2_000)
    };
    b.decision(&decision("c1", 1_000)).unwrap();
    b.step("c1", "about_to_send:patch_conversation", 1_001)
        .unwrap();
    b.decision(&plain).unwrap();
    b.step("c1", "sent:patch_conversation", 1_002).unwrap();
    b.step_durable("c1", "about_to_send:farewell", 1_003)
        .unwrap();
    b.step("c2", "about_to_send:patch_conversation", 2_001)
        .unwrap();

    let u = fx.reader().unfinished().unwrap();
    assert_eq!(ids(&u), ["c1", "c2"], "oldest decision first");
    assert_eq!(u[0].decision, decision("c1", 1_000));
    assert_eq!(
        u[0].steps,
        [
            "about_to_send:patch_conversation",
            "sent:patch_conversation",
            "about_to_send:farewell"
        ],
        "steps in the order written"
    );
    assert_eq!(
        u[1].decision, plain,
        "empty fields and flags come back as written"
    );
    assert_eq!(u[1].steps, ["about_to_send:patch_conversation"]);
    assert!(b.finished_since(0).unwrap().is_empty());
}

fn a_second_decision_for_an_open_close_is_ignored(fx: &dyn Fixture) {
    let mut b = fx.open();
    b.decision(&decision("c1", 1_000)).unwrap();
    b.step("c1", "about_to_send:patch_conversation", 1_001)
        .unwrap();
    let again = DecisionRecord {
        rule: "other".into(),
        ..decision("c1", 5_000)
    };
    b.decision(&again).unwrap();
    let u = b.unfinished().unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(
        u[0].decision,
        decision("c1", 1_000),
        "the first decision stays"
    );
    assert_eq!(u[0].steps, ["about_to_send:patch_conversation"]);
    let h = b.history(0, None).unwrap();
    assert_eq!(lines(&h), [line("c1", "decision"), line("c1", "step")]);
}

fn a_finished_close_decided_again_starts_afresh(fx: &dyn Fixture) {
    let mut b = fx.open();
    b.decision(&decision("c1", 1_000)).unwrap();
    b.step("c1", "about_to_send:patch_conversation", 1_001)
        .unwrap();
    b.outcome(&outcome("c1", "confirmed"), 1_500, Sinks::default())
        .unwrap();
    // Its tombstone went; the conversation is decided again.
    b.decision(&decision("c1", 9_000)).unwrap();
    let u = b.unfinished().unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].decision, decision("c1", 9_000));
    assert!(u[0].steps.is_empty(), "the old close's steps went with it");
    assert!(
        b.finished_since(0).unwrap().is_empty(),
        "no outcome any more"
    );
}

fn an_outcome_finishes_a_close(fx: &dyn Fixture) {
    let mut b = fx.open();
    b.decision(&decision("c1", 1_000)).unwrap();
    b.decision(&decision("c2", 1_100)).unwrap();
    b.step("c1", "about_to_send:patch_conversation", 1_001)
        .unwrap();
    b.outcome(&outcome("c1", "failed"), 5_000, Sinks::default())
        .unwrap();
    assert_eq!(b.finished_since(5_000).unwrap(), ["c1"]);
    assert!(b.finished_since(5_001).unwrap().is_empty());
    assert_eq!(ids(&b.unfinished().unwrap()), ["c2"]);
    // An outcome without a decision changes nothing.
    b.outcome(&outcome("nobody", "confirmed"), 5_000, BOTH)
        .unwrap();
    assert_eq!(b.outbox_pending().unwrap(), 0);

    let h = fx.reader().history(0, Some("c1")).unwrap();
    assert_eq!(
        lines(&h),
        [
            line("c1", "decision"),
            line("c1", "step"),
            line("c1", "outcome")
        ]
    );
    let o = &h[2];
    assert_eq!(o.at_ms, 5_000);
    assert_eq!(o.outcome.as_deref(), Some("failed"));
    assert_eq!(o.rule.as_deref(), Some("goodbye"));
    assert_eq!(o.requests, Some(3));
    assert_eq!(o.latency_ms, Some(20));
    assert_eq!(o.reason.as_deref(), Some("gave up"));
    assert_eq!(o.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(h[0].queue_id.as_deref(), Some("q1"));
    assert_eq!(h[0].source.as_deref(), Some("queue"));
    assert_eq!(h[0].deferred, Some(false));
    assert_eq!(
        h[1].step.as_deref(),
        Some("about_to_send:patch_conversation")
    );
}

fn the_outbox_keeps_an_outcome_until_every_sink_has_it(fx: &dyn Fixture) {
    let mut b = fx.open();
    for (id, at) in [("c1", 1_000), ("c2", 1_100), ("c3", 1_200), ("c4", 1_300)] {
        b.decision(&decision(id, at)).unwrap();
    }
    b.outcome(&outcome("c1", "confirmed"), 2_000, BOTH).unwrap();
    b.outcome(&outcome("c2", "failed"), 2_100, BOTH).unwrap();
    b.outcome(&outcome("c3", "confirmed"), 2_200, Sinks::default())
        .unwrap();
    let http_only = Sinks {
        http: true,
        file: false,
    };
    b.outcome(&outcome("c4", "confirmed"), 2_300, http_only)
        .unwrap();
    assert_eq!(b.outbox_pending().unwrap(), 3, "no entry without a sink");

    assert!(b.outbox_due(1_999, 10).unwrap().is_empty(), "not due yet");
    let due = b.outbox_due(5_000, 10).unwrap();
    let keys: Vec<&str> = due.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["c1:1000", "c2:1100", "c4:1300"], "oldest first");
    assert!(due[0].http_pending && due[0].file_pending);
    assert!(due[2].http_pending && !due[2].file_pending);
    assert_eq!(due[0].attempts, 0);
    let payload: serde_json::Value = serde_json::from_str(&due[1].payload).unwrap();
    assert_eq!(payload["idempotency_key"], "c2:1100");
    assert_eq!(payload["conversation_id"], "c2");
    assert_eq!(payload["outcome"], "failed");
    assert_eq!(payload["queue_id"], "q1");
    assert_eq!(payload["requests"], 3);
    assert_eq!(b.outbox_due(5_000, 1).unwrap().len(), 1, "the limit");

    // c1 reached the HTTP sink only: still pending for the file.
    b.outbox_done(due[0].id, true, false).unwrap();
    // c2 failed: counted, and due again later.
    b.outbox_retry(due[1].id, 9_000, "503 from the sink")
        .unwrap();
    assert_eq!(b.outbox_pending().unwrap(), 3);
    let due = b.outbox_due(5_000, 10).unwrap();
    let keys: Vec<&str> = due.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["c1:1000", "c4:1300"]);
    assert!(!due[0].http_pending && due[0].file_pending);
    let later = b.outbox_due(9_000, 10).unwrap();
    let c2 = later
        .iter()
        .find(|i| i.key == "c2:1100")
        .expect("due again");
    assert_eq!(c2.attempts, 1);

    b.outbox_done(due[0].id, false, true).unwrap();
    b.outbox_done(due[1].id, true, false).unwrap();
    assert_eq!(b.outbox_pending().unwrap(), 1, "only c2 still to deliver");
    // An outcome journalled again keeps its one entry.
    b.outcome(&outcome("c1", "confirmed"), 2_000, BOTH).unwrap();
    assert_eq!(b.outbox_pending().unwrap(), 1);
}

fn intake_calls_are_recorded_and_shown(fx: &dyn Fixture) {
    let mut b = fx.open();
    b.intake("c1", Some("Goodbye"), "close", 10).unwrap();
    b.intake("c2", None, "no_rule", 20).unwrap();
    let h = fx.reader().history(0, None).unwrap();
    assert_eq!(lines(&h), [line("c1", "intake"), line("c2", "intake")]);
    assert_eq!(h[0].at_ms, 10);
    assert_eq!(h[0].intent.as_deref(), Some("Goodbye"));
    assert_eq!(h[0].answer.as_deref(), Some("close"));
    assert_eq!(h[1].intent, None);
    assert_eq!(h[1].answer.as_deref(), Some("no_rule"));
    assert!(
        b.unfinished().unwrap().is_empty(),
        "an intake call is no close"
    );
}

fn the_conversations_intake_calls_left_watched_and_undecided_are_listed(fx: &dyn Fixture) {
    let mut b = fx.open();
    b.intake("old", None, "watching", 5).unwrap();
    b.intake("w1", None, "watching", 10).unwrap();
    b.intake("w1", None, "watching", 11).unwrap();
    b.intake("decided", None, "watching", 12).unwrap();
    b.decision(&decision("decided", 13)).unwrap();
    b.intake("n", Some("Hello"), "no_rule", 14).unwrap();
    b.intake("w2", None, "watching", 15).unwrap();
    // `verify`: waiting for Genesys's own attribute, watched too.
    b.intake("v", Some("Goodbye"), "verifying", 16).unwrap();
    // Listed once each, oldest first; not the decided one, not before the cut.
    assert_eq!(b.watched_since(10).unwrap(), ["w1", "w2", "v"]);
    assert_eq!(b.watched_since(17).unwrap(), Vec::<String>::new());
}

fn history_selects_by_conversation_time_outcome_and_unfinished(fx: &dyn Fixture) {
    let mut b = fx.open();
    b.decision(&decision("a", 1_000)).unwrap();
    b.step("a", "about_to_send:patch_conversation", 1_100)
        .unwrap();
    b.decision(&decision("b", 2_000)).unwrap();
    b.step("b", "failed:patch_conversation: 503 busy", 2_100)
        .unwrap();
    b.decision(&decision("c", 2_500)).unwrap();
    b.outcome(&outcome("a", "confirmed"), 3_000, Sinks::default())
        .unwrap();
    b.outcome(&outcome("b", "failed"), 4_000, Sinks::default())
        .unwrap();
    b.intake("d", Some("Goodbye"), "close", 3_500).unwrap();
    b.step("c", "about_to_send:patch_conversation", 5_000)
        .unwrap();

    let mut r = fx.reader();
    let all = r.history(0, None).unwrap();
    assert_eq!(
        lines(&all),
        [
            line("a", "decision"),
            line("a", "step"),
            line("b", "decision"),
            line("b", "step"),
            line("c", "decision"),
            line("a", "outcome"),
            line("d", "intake"),
            line("b", "outcome"),
            line("c", "step"),
        ],
        "oldest first"
    );
    let failed_step = &all[3];
    assert_eq!(
        failed_step.step.as_deref(),
        Some("failed:patch_conversation")
    );
    assert_eq!(failed_step.reason.as_deref(), Some("503 busy"));

    let q = |since_ms, conversation_id, outcome, unfinished| HistoryQuery {
        since_ms,
        conversation_id,
        outcome,
        unfinished,
    };
    let since = r.history_query(&q(2_500, None, None, false)).unwrap();
    assert_eq!(
        lines(&since),
        [
            line("c", "decision"),
            line("a", "outcome"),
            line("d", "intake"),
            line("b", "outcome"),
            line("c", "step"),
        ]
    );
    let one = r.history_query(&q(0, Some("b"), None, false)).unwrap();
    assert_eq!(
        lines(&one),
        [
            line("b", "decision"),
            line("b", "step"),
            line("b", "outcome")
        ]
    );
    let confirmed = r
        .history_query(&q(0, None, Some("confirmed"), false))
        .unwrap();
    assert_eq!(
        lines(&confirmed),
        [
            line("a", "decision"),
            line("a", "step"),
            line("a", "outcome")
        ]
    );
    // The outcome must fall at or after `since`.
    assert!(
        r.history_query(&q(3_001, None, Some("confirmed"), false))
            .unwrap()
            .is_empty()
    );
    let unfinished = r.history_query(&q(0, None, None, true)).unwrap();
    assert_eq!(
        lines(&unfinished),
        [line("c", "decision"), line("c", "step")]
    );
    assert!(
        r.history_query(&q(0, Some("a"), None, true))
            .unwrap()
            .is_empty(),
        "every condition holds"
    );
}

fn prune_forgets_only_finished_closes_older_than_the_cut(fx: &dyn Fixture) {
    let mut b = fx.open();
    b.decision(&decision("old", 100)).unwrap();
    b.step("old", "about_to_send:patch_conversation", 110)
        .unwrap();
    b.outcome(&outcome("old", "confirmed"), 1_000, BOTH)
        .unwrap();
    b.decision(&decision("old-undelivered", 200)).unwrap();
    b.outcome(&outcome("old-undelivered", "confirmed"), 1_100, BOTH)
        .unwrap();
    b.decision(&decision("open", 300)).unwrap();
    b.step("open", "about_to_send:patch_conversation", 310)
        .unwrap();
    b.decision(&decision("recent", 400)).unwrap();
    b.outcome(&outcome("recent", "confirmed"), 5_000, Sinks::default())
        .unwrap();
    b.intake("i-old", None, "no_rule", 150).unwrap();
    b.intake("i-new", None, "no_rule", 6_000).unwrap();
    let old_entry = b.outbox_due(10_000, 10).unwrap()[0].id;
    b.outbox_done(old_entry, true, true).unwrap();

    assert_eq!(
        b.prune(3_000).unwrap(),
        2,
        "two finished closes before the cut"
    );
    assert_eq!(ids(&b.unfinished().unwrap()), ["open"], "open closes stay");
    assert_eq!(b.unfinished().unwrap()[0].steps.len(), 1);
    assert_eq!(b.finished_since(0).unwrap(), ["recent"]);
    let h = fx.reader().history(0, None).unwrap();
    assert_eq!(
        lines(&h),
        [
            line("open", "decision"),
            line("open", "step"),
            line("recent", "decision"),
            line("recent", "outcome"),
            line("i-new", "intake"),
        ],
        "the old closes went with their steps, the old intake call too"
    );
    let due = b.outbox_due(10_000, 10).unwrap();
    let keys: Vec<&str> = due.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        ["old-undelivered:200"],
        "undelivered entries are kept"
    );
    assert_eq!(b.prune(3_000).unwrap(), 0);
}

fn a_group_is_stored_whole_at_its_end_and_not_before(fx: &dyn Fixture) {
    let mut w = fx.open();
    let mut r = fx.reader();
    w.begin_group().unwrap();
    w.decision(&decision("g1", 1_000)).unwrap();
    w.step("g1", "about_to_send:patch_conversation", 1_001)
        .unwrap();
    w.decision(&decision("g2", 1_002)).unwrap();
    w.outcome(&outcome("g2", "confirmed"), 1_003, BOTH).unwrap();
    w.intake("g3", None, "no_rule", 1_004).unwrap();
    assert!(
        r.history(0, None).unwrap().is_empty(),
        "nothing is seen before the group ends"
    );
    assert!(r.unfinished().unwrap().is_empty());
    assert_eq!(r.outbox_pending().unwrap(), 0);
    w.end_group().unwrap();
    assert_eq!(
        lines(&r.history(0, None).unwrap()),
        [
            line("g1", "decision"),
            line("g1", "step"),
            line("g2", "decision"),
            line("g2", "outcome"),
            line("g3", "intake"),
        ]
    );
    assert_eq!(r.outbox_pending().unwrap(), 1);

    // A group never ended (the process died) leaves nothing.
    w.begin_group().unwrap();
    w.decision(&decision("lost", 2_000)).unwrap();
    w.step("g1", "sent:patch_conversation", 2_001).unwrap();
    drop(w);
    assert_eq!(ids(&r.unfinished().unwrap()), ["g1"]);
    assert_eq!(r.unfinished().unwrap()[0].steps.len(), 1);

    // Writes outside a group are seen at once.
    let mut w = fx.open();
    w.step("g1", "sent:patch_conversation", 3_000).unwrap();
    assert_eq!(r.unfinished().unwrap()[0].steps.len(), 2);
}

fn a_fenced_step_under_the_current_epoch_is_stored(fx: &dyn Fixture) {
    let (mut b, epoch) = fx.leased("host-a");
    b.decision(&decision("c1", 1_000)).unwrap();
    b.step_fenced("c1", "about_to_send:patch_conversation", 1_001, epoch)
        .unwrap();
    // Never in a group: SQLite's durable write cannot be made inside a transaction
    // (the writer makes it alone, the group before it committed).
    b.step_fenced("c1", "about_to_send:farewell", 1_002, epoch)
        .unwrap();
    let u = fx.reader().unfinished().unwrap();
    assert_eq!(
        u[0].steps,
        ["about_to_send:patch_conversation", "about_to_send:farewell"]
    );
}

fn history_shows_a_fenced_steps_epoch_and_instance(fx: &dyn Fixture) {
    let (mut b, epoch) = fx.leased("host-a");
    b.decision(&decision("c1", 1_000)).unwrap();
    b.step_fenced("c1", "about_to_send:patch_conversation", 1_001, epoch)
        .unwrap();
    b.step("c1", "sent:patch_conversation", 1_002).unwrap();
    b.outcome(&outcome("c1", "confirmed"), 1_003, Sinks::default())
        .unwrap();
    b.intake("c1", None, "close", 1_004).unwrap();
    let h = fx.reader().history(0, None).unwrap();
    let fences: Vec<(&str, Option<i64>, Option<&str>)> = h
        .iter()
        .map(|e| (e.kind.as_str(), e.epoch, e.instance.as_deref()))
        .collect();
    let fenced = if fx.fences() {
        (Some(epoch), Some("host-a"))
    } else {
        (None, None)
    };
    assert_eq!(
        fences,
        [
            ("decision", None, None),
            ("step", fenced.0, fenced.1),
            ("step", fenced.0, fenced.1),
            ("outcome", None, None),
            ("intake", None, None),
        ],
        "every step carries the epoch and instance that wrote it, where there is a lease"
    );
    let json = serde_json::to_value(&h[1]).unwrap();
    assert_eq!(json.get("epoch").and_then(|v| v.as_i64()), fenced.0);
    assert_eq!(json.get("instance").and_then(|v| v.as_str()), fenced.1);
    let decision = serde_json::to_value(&h[0]).unwrap();
    assert!(decision.get("epoch").is_none() && decision.get("instance").is_none());
}

/// `(conversation, step, epoch, instance)` of every step row.
fn step_rows(fx: &PgFx) -> Vec<(String, String, Option<i64>, Option<String>)> {
    fx.query(&format!(
        "SELECT conversation_id, step, epoch, instance FROM {}.steps ORDER BY id",
        fx.schema
    ))
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[test]
fn postgres_refuses_a_fenced_step_under_a_stale_epoch() {
    let fx = PgFx::new("stale_epoch");
    let mut a = fx.backend(Some(fx.settings("host-a")));
    let mut b = fx.backend(Some(fx.settings("host-b")));
    let first = fx.take("host-a").expect("nobody held it");
    assert_eq!(fx.take("host-b"), None, "A holds it");
    a.step_fenced("c1", "about_to_send:patch_conversation", 1_000, first)
        .unwrap();
    // B cannot write under A's epoch: the holder is checked with the epoch.
    assert!(matches!(
        b.step_fenced("c1", "about_to_send:patch_conversation", 1_001, first),
        Err(JournalError::Fenced { epoch }) if epoch == first
    ));

    // A stops renewing; B takes over with the next epoch.
    fx.expire();
    let second = fx.take("host-b").expect("expired: B takes it");
    assert_eq!(second, first + 1);
    match a.step_fenced("c2", "about_to_send:patch_conversation", 2_000, first) {
        Err(e @ JournalError::Fenced { .. }) => {
            assert!(e.to_string().contains("must not send"), "{e}");
        }
        other => panic!("a stale epoch's step was not refused: {other:?}"),
    }
    // Refused inside a group too, and the group's other writes are kept; the holder's
    // fenced step in a group is stored with it.
    a.begin_group().unwrap();
    a.step("c2", "noted", 2_001).unwrap();
    assert!(matches!(
        a.step_fenced("c2", "about_to_send:farewell", 2_002, first),
        Err(JournalError::Fenced { .. })
    ));
    a.end_group().unwrap();
    b.begin_group().unwrap();
    b.step_fenced("c2", "about_to_send:patch_conversation", 3_000, second)
        .unwrap();
    b.end_group().unwrap();
    assert_eq!(
        step_rows(&fx),
        [
            (
                "c1".to_owned(),
                "about_to_send:patch_conversation".to_owned(),
                Some(first),
                Some("host-a".to_owned())
            ),
            // Written by A after it lost the lease: its instance, no epoch.
            (
                "c2".to_owned(),
                "noted".to_owned(),
                None,
                Some("host-a".to_owned())
            ),
            (
                "c2".to_owned(),
                "about_to_send:patch_conversation".to_owned(),
                Some(second),
                Some("host-b".to_owned())
            ),
        ],
        "one row per step allowed, under its epoch and instance; none refused"
    );
}

#[test]
fn postgres_without_a_lease_stores_a_fenced_step_unfenced() {
    let fx = PgFx::new("no_lease");
    let mut b = fx.backend(None);
    b.step_fenced("c1", "about_to_send:patch_conversation", 1_000, 7)
        .unwrap();
    assert_eq!(
        step_rows(&fx),
        [(
            "c1".to_owned(),
            "about_to_send:patch_conversation".to_owned(),
            None,
            None
        )]
    );
}

#[test]
fn postgres_a_failed_write_in_a_group_fails_alone() {
    // A failed statement aborts a PostgreSQL transaction; the savepoint around each
    // write keeps the group's other writes, as SQLite does.
    let fx = PgFx::new("failed_in_group");
    let mut w = fx.backend(None);
    w.begin_group().unwrap();
    w.decision(&decision("c1", 1_000)).unwrap();
    // PostgreSQL's text cannot hold a NUL.
    let bad = w.step("c1", "about_to_send:\0", 1_001);
    assert!(
        matches!(&bad, Err(JournalError::Storage(s)) if s.contains("22021")),
        "{bad:?}"
    );
    w.step("c1", "about_to_send:patch_conversation", 1_002)
        .unwrap();
    let bad_outcome = OutcomeRecord {
        reason: Some("\0".into()),
        ..outcome("c1", "failed")
    };
    assert!(w.outcome(&bad_outcome, 1_003, BOTH).is_err());
    w.intake("c2", None, "no_rule", 1_004).unwrap();
    w.end_group().unwrap();
    let mut r = fx.backend(None);
    let u = r.unfinished().unwrap();
    assert_eq!(ids(&u), ["c1"], "the failed outcome left the close open");
    assert_eq!(u[0].steps, ["about_to_send:patch_conversation"]);
    assert_eq!(r.outbox_pending().unwrap(), 0, "nor an outbox entry");
    assert_eq!(r.history(0, Some("c2")).unwrap().len(), 1);
}

#[test]
fn postgres_errors_never_show_the_connection_string() {
    let secret = "s3cret-pw";
    // Nothing listens on port 1.
    let refused = PostgresBackend::connect(
        &format!("host=127.0.0.1 port=1 user=postgres password={secret} dbname=jdb"),
        "x",
        None,
    )
    .err()
    .expect("nothing listens there");
    let words = refused.to_string();
    assert!(!words.contains(secret), "{words}");
    assert!(
        words.contains("127.0.0.1") && words.contains("jdb"),
        "names the host and database: {words}"
    );
    for broken in [
        format!("host=127.0.0.1 password='{secret}"),
        format!("postgresql://u:{secret}@127.0.0.1:5432/test?x=%zz"),
        format!("host=127.0.0.1 password={secret} nosuch=1"),
    ] {
        let e = PostgresBackend::connect(&broken, "x", None)
            .err()
            .expect("does not parse");
        assert!(!e.to_string().contains(secret), "{e}");
    }
    let bad_schema = PostgresBackend::connect(&pg_url(), "x;drop", None)
        .err()
        .expect("not an identifier");
    assert!(bad_schema.to_string().contains("schema"), "{bad_schema}");
}

#[test]
fn postgres_open_read_changes_nothing_and_says_when_there_is_no_journal() {
    let fx = PgFx::new("open_read");
    let absent = PostgresBackend::open_read(&pg_url().as_str().into(), &fx.schema)
        .err()
        .expect("no tables yet");
    assert!(
        absent.to_string().contains("no journal in schema"),
        "{absent}"
    );
    assert!(
        fx.query(&format!(
            "SELECT 1 FROM pg_namespace WHERE nspname = '{}'",
            fx.schema
        ))
        .is_empty(),
        "reading created nothing"
    );
    let (mut w, epoch) = fx.leased("host-a");
    w.step_fenced("c1", "about_to_send:farewell", 1_000, epoch)
        .unwrap();
    let mut r =
        PostgresBackend::open_read(&pg_url().as_str().into(), &fx.schema).expect("the journal");
    let h = r.history(0, None).unwrap();
    assert_eq!(
        (h[0].epoch, h[0].instance.as_deref()),
        (Some(epoch), Some("host-a"))
    );
}

#[test]
fn postgres_inside_an_async_runtime_errs_instead_of_panicking() {
    let fx = PgFx::new("in_runtime");
    let mut b = fx.backend(None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let e = b.step("c1", "sent:farewell", 1).expect_err("refused");
        assert!(e.to_string().contains("async runtime"), "{e}");
        assert!(PostgresBackend::connect(&pg_url(), "x", None).is_err());
        // Dropped here: no panic either.
        drop(b);
    });
}
