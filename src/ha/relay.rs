//! Intake calls on every instance of a group (issue 16): the data action's URL may
//! point at a load balancer over all instances, so a call may reach a standby. Every
//! call an instance's intake reads is first stored in the group's database
//! (`{schema}.relayed`) and the group told (`NOTIFY`); the acting instance takes it,
//! hands it to its own event loop, and writes the answer back; the instance the call
//! reached answers the caller with it. The acting instance stores its own calls too: a
//! call is accepted only once stored, so an acting instance cut off from the database
//! answers 503 instead of `close` for a decision no other instance would ever see. The answer keeps its meaning (`close`, `duplicate`, `no_rule`, ...), and a
//! duplicate across instances is still a duplicate: every call ends up in the one
//! acting event loop, which remembers what it decided.
//!
//! - A standby waits up to [`ANSWER_WITHIN`] for the answer (a notification, or its
//!   own poll of the row every [`POLL_ANSWERS`] where `LISTEN` does not work, as through
//!   a transaction-mode pooler). No answer by then (a takeover under way, the leader
//!   busy): it answers `queued`: the call is stored and the acting instance carries it
//!   out when it can, a new leader included.
//! - The acting instance takes calls when told, and polls every [`POLL_CALLS`] as a
//!   backstop (a lost notification, a pooler). A call its event loop refuses (it stopped
//!   acting, or it is stopping) stays unanswered for the next leader.
//! - The database out of reach: the standby answers 503 `standby` at once (the caller
//!   retries; nothing is lost because nothing was accepted).
//!
//! One connection of its own (never the journal's or the lease's), every statement
//! bounded by [`STATEMENT`] and sent with typed parameters as an unnamed statement (one
//! round trip; nothing prepared that a transaction-mode pooler could lose); a failure drops the connection, and the next need connects
//! again (at most every [`RECONNECT`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, Row};
use tokio_util::sync::CancellationToken;

use super::HaError;
use super::connect::Connector;
use super::leader::Role;
use crate::intake::{IntakeAnswer, IntakeCall};

/// The channel calls and answers are announced on; the payload names the schema, so
/// groups on other schemas of one database ignore each other.
pub const CHANNEL: &str = "genesys_closer_intake";
/// How long a standby waits for the acting instance's answer before answering `queued`
/// (the intake answers within 2 s).
pub const ANSWER_WITHIN: Duration = Duration::from_millis(1500);
/// A standby's poll of the answers it waits for.
pub const POLL_ANSWERS: Duration = Duration::from_millis(100);
/// The acting instance's poll of calls not taken yet.
pub const POLL_CALLS: Duration = Duration::from_millis(250);
/// The bound on every statement.
pub const STATEMENT: Duration = Duration::from_secs(1);
/// The least time between two connection attempts.
pub const RECONNECT: Duration = Duration::from_secs(1);
/// Calls relayed at once before new ones get 503.
pub const QUEUE: usize = 1024;
/// Most calls taken by one poll.
const BATCH: i64 = 200;
/// How long an answered call is kept (for `history`-style questions and a late
/// standby's poll); older ones are deleted by the acting instance.
const KEEP_ANSWERED: &str = "1 hour";

/// Where the relay works and who this instance is.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The group's schema (checked as an identifier).
    pub schema: String,
    /// The lease's name (the acting instance's epoch is checked against it).
    pub lease_name: String,
    /// This instance's name, written with what it relays and answers.
    pub instance: String,
}

/// The relay's task: started with [`spawn`]; the event loop of a standby hands it calls
/// through `forward`.
pub struct Relay {
    /// Calls a standby relays (full or closed: answer 503 `standby`).
    pub forward: mpsc::Sender<IntakeCall>,
    /// Stops the task.
    pub stop: CancellationToken,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the relay. `calls` is the event loop's intake queue: what the acting instance
/// takes from the database goes there, as the intake's own calls do.
pub fn spawn(
    settings: RelaySettings,
    db: Connector,
    role: watch::Receiver<Role>,
    calls: mpsc::Sender<IntakeCall>,
) -> Relay {
    let (forward, forwarded) = mpsc::channel(QUEUE);
    let stop = CancellationToken::new();
    let (done_tx, done) = mpsc::unbounded_channel();
    let worker = Worker {
        sql: Sql::new(&settings.schema),
        settings,
        db,
        link: None,
        last_attempt: None,
        outage_said: false,
        role,
        calls,
        pending: HashMap::new(),
        taken: HashSet::new(),
        done_tx,
        unwritten: Vec::new(),
        last_prune: None,
    };
    let task = tokio::spawn(worker.run(forwarded, done, stop.clone()));
    Relay {
        forward,
        stop,
        task,
    }
}

/// The statements, with the schema written in.
struct Sql {
    steps: String,
    insert: String,
    answers: String,
    take: String,
    answer: String,
    prune: String,
}

impl Sql {
    fn new(s: &str) -> Sql {
        Sql {
            insert: format!(
                "WITH i AS (INSERT INTO {s}.relayed \
                   (conversation_id, intent, attributes, event_ms, received_by) \
                   VALUES ($1, $2, $3, $4, $5) RETURNING id) \
                 SELECT i.id, pg_notify('{CHANNEL}', '{s} call ' || i.id) FROM i"
            ),
            answers: format!(
                "SELECT id, answer FROM {s}.relayed WHERE id = ANY($1) AND answer IS NOT NULL"
            ),
            // Only while this instance's epoch is the lease's current one: a leader that
            // lost the lease takes nothing more.
            // Claimed under this epoch, with the epoch that took it before (if any):
            // a call an earlier leader took may have been acted on.
            // Claimed under this epoch; the epoch that first took it comes back: a
            // call an earlier leader took may have been acted on.
            take: format!(
                "UPDATE {s}.relayed r SET first_taken_epoch = coalesce(r.first_taken_epoch, $3) \
                 FROM (SELECT id FROM {s}.relayed \
                       WHERE answer IS NULL AND id <> ALL($1) \
                         AND EXISTS (SELECT 1 FROM {s}.lease l \
                                     WHERE l.name = $2 AND l.epoch = $3 AND l.holder = $4) \
                       ORDER BY id LIMIT {BATCH} FOR UPDATE SKIP LOCKED) t \
                 WHERE r.id = t.id \
                 RETURNING r.id, r.conversation_id, r.intent, r.attributes, r.event_ms, \
                           r.received_by, r.first_taken_epoch"
            ),
            steps: format!("SELECT step FROM {s}.steps WHERE conversation_id = $1 ORDER BY id"),
            // Only once the journal holds what the answer promises: the event loop
            // journals each call with its answer (after the decision a `close` made, in
            // the same ordered writer), so that row stored means the decision is too.
            // Until then the answer is not written: an acting instance cut off now
            // leaves the call unanswered, and the next one decides it.
            answer: format!(
                "WITH u AS (UPDATE {s}.relayed \
                   SET answer = $2, answered_by = $3, answered_epoch = $4, answered_at = now() \
                   WHERE id = $1 AND answer IS NULL \
                     AND EXISTS (SELECT 1 FROM {s}.intake i WHERE i.conversation_id = $5 \
                                 AND i.answer = $2 AND i.at_ms >= $6) \
                   RETURNING id) \
                 SELECT pg_notify('{CHANNEL}', '{s} answer ' || u.id || ' ' || $2) FROM u"
            ),
            prune: format!(
                "DELETE FROM {s}.relayed WHERE answer IS NOT NULL \
                 AND answered_at < now() - interval '{KEEP_ANSWERED}'"
            ),
        }
    }
}

/// How long an answer waits for the journal to hold what it promises.
const UNWRITTEN_FOR: Duration = Duration::from_secs(10);
/// How far this host's wall clock may step back between taking a call and journalling
/// it (the journal's `at_ms` is compared with the time it was taken).
const CLOCK_SLACK_MS: i64 = 1000;

/// An answer of the acting instance's event loop to a call it was handed.
struct Answered {
    id: i64,
    answer: IntakeAnswer,
    conversation_id: String,
    taken_ms: i64,
}

/// Milliseconds since the Unix epoch on this host's clock (as the journal writes its
/// `at_ms`).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The relay's connection and what it hears.
struct Link {
    client: Client,
    heard: mpsc::UnboundedReceiver<String>,
}

async fn link(db: &Connector) -> Result<Link, HaError> {
    let (client, mut conn) = db.connect().await?;
    let (tx, heard) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Link { client, heard })
}

/// A call a standby relayed and waits to answer.
struct Pending {
    conversation_id: Box<str>,
    reply: oneshot::Sender<IntakeAnswer>,
    until: Instant,
    /// Stored while this instance acted (its own intake's call).
    own: bool,
}

/// What a notification says, for this schema.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    /// A standby stored a call.
    Call,
    /// The acting instance answered call `id`.
    Answer(i64, IntakeAnswer),
}

/// Reads a payload (`"{schema} call {id}"` or `"{schema} answer {id} {result}"`);
/// `None` for another schema's or anything unreadable.
fn heard(schema: &str, payload: &str) -> Option<Heard> {
    let mut words = payload.split(' ');
    if words.next()? != schema {
        return None;
    }
    match words.next()? {
        "call" => Some(Heard::Call),
        "answer" => {
            let id = words.next()?.parse().ok()?;
            let answer = IntakeAnswer::parse(words.next()?)?;
            Some(Heard::Answer(id, answer))
        }
        _ => None,
    }
}

struct Worker {
    settings: RelaySettings,
    sql: Sql,
    db: Connector,
    link: Option<Link>,
    last_attempt: Option<Instant>,
    /// Said once per outage.
    outage_said: bool,
    role: watch::Receiver<Role>,
    calls: mpsc::Sender<IntakeCall>,
    /// A standby's calls waiting for their answer, by row id.
    pending: HashMap<i64, Pending>,
    /// The acting instance's calls handed to its event loop, their answers not written
    /// yet (never taken again meanwhile).
    taken: HashSet<i64>,
    done_tx: mpsc::UnboundedSender<Answered>,
    /// Answers waiting for the journal to hold what they promise (tried again every
    /// [`POLL_CALLS`], for at most [`UNWRITTEN_FOR`]).
    unwritten: Vec<(Answered, Instant)>,
    last_prune: Option<Instant>,
}

impl Worker {
    async fn run(
        mut self,
        mut forwarded: mpsc::Receiver<IntakeCall>,
        mut done: mpsc::UnboundedReceiver<Answered>,
        stop: CancellationToken,
    ) {
        let mut answers_tick = tokio::time::interval(POLL_ANSWERS);
        answers_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut calls_tick = tokio::time::interval(POLL_CALLS);
        calls_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let heard_next = async {
                match self.link.as_mut() {
                    Some(l) => l.heard.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                Some(call) = forwarded.recv() => self.relay(call).await,
                Some(a) = done.recv() => self.answered(a, Instant::now()).await,
                note = heard_next => match note {
                    Some(p) => self.on_heard(&p).await,
                    // The connection ended: the next need connects again.
                    None => self.link = None,
                },
                _ = answers_tick.tick() => self.poll_answers().await,
                _ = calls_tick.tick() => {
                    self.write_unwritten().await;
                    self.take_calls().await;
                }
                Ok(()) = self.role.changed() => self.take_calls().await,
            }
        }
        // Stopping: whoever still waits is told the call is stored (it is; the acting
        // instance carries it out).
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(IntakeAnswer::Queued);
        }
    }

    /// The epoch this instance acts under now, if it does.
    fn acting(&self) -> Option<i64> {
        self.role.borrow().acting(Instant::now())
    }

    /// Runs one statement (`pick` chooses it) on the connection, connecting if none;
    /// `None` when the database cannot be asked: not connected, an error, or no answer
    /// within [`STATEMENT`] (the connection is dropped and the outage said once).
    async fn query(
        &mut self,
        pick: fn(&Sql) -> &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Option<Vec<Row>> {
        self.connect().await;
        let client = &self.link.as_ref()?.client;
        let done = tokio::time::timeout(STATEMENT, client.query_typed(pick(&self.sql), params));
        match done.await {
            Ok(Ok(rows)) => Some(rows),
            Ok(Err(e)) => {
                self.outage(&HaError::from(e).to_string());
                None
            }
            Err(_) => {
                self.outage("no answer in time");
                None
            }
        }
    }

    /// Connects if not connected (at most every [`RECONNECT`]).
    async fn connect(&mut self) {
        if self.link.is_none() {
            if self.last_attempt.is_some_and(|t| t.elapsed() < RECONNECT) {
                return;
            }
            self.last_attempt = Some(Instant::now());
            match tokio::time::timeout(STATEMENT * 2, link(&self.db)).await {
                Ok(Ok(l)) => {
                    if self.outage_said {
                        tracing::info!("intake relay: the coordination database answers again");
                    }
                    self.outage_said = false;
                    self.link = Some(l);
                }
                Ok(Err(e)) => self.outage(&e.to_string()),
                Err(_) => self.outage("connecting timed out"),
            }
        }
    }

    fn outage(&mut self, error: &str) {
        self.link = None;
        if !self.outage_said {
            tracing::warn!(
                error,
                "intake relay: the coordination database cannot be reached; \
                intake calls are answered 503 until it can (not stored, not accepted)"
            );
            self.outage_said = true;
        }
    }

    /// A standby's call: stored and announced, then waited for; 503 `standby` when it
    /// cannot be stored.
    async fn relay(&mut self, call: IntakeCall) {
        let attributes = serde_json::to_string(
            &call
                .attributes
                .iter()
                .map(|(k, v)| [&**k, &**v])
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        let event_ms: Option<i64> = call
            .started_ago
            .map(|ago| now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX));
        let id = &*call.conversation_id;
        let intent = call.intent.as_deref();
        let instance = self.settings.instance.clone();
        let stored = self
            .query(
                |s| &s.insert,
                &[
                    (&id, Type::TEXT),
                    (&intent, Type::TEXT),
                    (&attributes, Type::TEXT),
                    (&event_ms, Type::INT8),
                    (&instance, Type::TEXT),
                ],
            )
            .await
            .and_then(|rows| rows.first().map(|row| row.get::<_, i64>(0)));
        match stored {
            Some(row) => {
                let own = self.acting().is_some();
                if !own {
                    tracing::info!(
                        conversation_id = id,
                        relayed = row,
                        "intake call relayed to the acting instance"
                    );
                }
                self.pending.insert(
                    row,
                    Pending {
                        conversation_id: call.conversation_id,
                        reply: call.reply,
                        until: Instant::now() + ANSWER_WITHIN,
                        own,
                    },
                );
                // The acting instance's own call: taken at once, not at the notice.
                self.take_calls().await;
            }
            None => {
                tracing::warn!(
                    conversation_id = id,
                    "intake call not stored: the group's database is out of reach (see the \
                     relay's outage line); answered 503, the caller retries"
                );
                crate::metrics::intake_relayed(IntakeAnswer::Standby.as_str());
                let _ = call.reply.send(IntakeAnswer::Standby);
            }
        }
    }

    async fn on_heard(&mut self, payload: &str) {
        match heard(&self.settings.schema, payload) {
            Some(Heard::Call) => self.take_calls().await,
            Some(Heard::Answer(id, answer)) => self.reply(id, answer),
            None => {}
        }
    }

    /// Answers the caller waiting for `id`, if any still does.
    fn reply(&mut self, id: i64, answer: IntakeAnswer) {
        if let Some(p) = self.pending.remove(&id) {
            // The acting instance's own calls are logged by its event loop.
            if !p.own {
                tracing::info!(
                    conversation_id = &*p.conversation_id,
                    relayed = id,
                    result = answer.as_str(),
                    "intake call relayed: the acting instance answered"
                );
            }
            crate::metrics::intake_relayed(answer.as_str());
            let _ = p.reply.send(answer);
        }
    }

    /// A standby's backstop: the answers of the calls it waits for, from the table; a
    /// call past its wait is answered `queued`.
    async fn poll_answers(&mut self) {
        let now = Instant::now();
        let late: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(p) = self.pending.remove(&id) {
                tracing::info!(
                    conversation_id = &*p.conversation_id,
                    relayed = id,
                    "intake call relayed: no answer yet; answered `queued` (the acting \
                     instance carries it out)"
                );
                crate::metrics::intake_relayed(IntakeAnswer::Queued.as_str());
                let _ = p.reply.send(IntakeAnswer::Queued);
            }
        }
        if self.pending.is_empty() {
            return;
        }
        let ids: Vec<i64> = self.pending.keys().copied().collect();
        let rows = self
            .query(|s| &s.answers, &[(&ids, Type::INT8_ARRAY)])
            .await
            .unwrap_or_default();
        for row in rows {
            let id: i64 = row.get(0);
            let text: String = row.get(1);
            if let Some(a) = IntakeAnswer::parse(&text) {
                self.reply(id, a);
            }
        }
    }

    /// The acting instance: the calls standbys stored, handed to this event loop.
    async fn take_calls(&mut self) {
        let Some(epoch) = self.acting() else {
            return;
        };
        self.prune().await;
        let taken: Vec<i64> = self.taken.iter().copied().collect();
        let (name, instance) = (
            self.settings.lease_name.clone(),
            self.settings.instance.clone(),
        );
        let Some(mut rows) = self
            .query(
                |s| &s.take,
                &[
                    (&taken, Type::INT8_ARRAY),
                    (&name, Type::TEXT),
                    (&epoch, Type::INT8),
                    (&instance, Type::TEXT),
                ],
            )
            .await
        else {
            return;
        };
        rows.sort_by_key(|r| r.get::<_, i64>(0));
        for row in rows {
            let first: Option<i64> = row.get(6);
            let conversation: String = row.get(1);
            let earlier_steps = match first {
                Some(e) if e < epoch => match self.earlier_steps(&conversation).await {
                    Some(steps) => Some(steps),
                    // Not knowing what an earlier leader did, nothing is decided now.
                    None => return,
                },
                _ => None,
            };
            let id: i64 = row.get(0);
            let conversation_id: String = row.get(1);
            let intent: Option<String> = row.get(2);
            let attributes: String = row.get(3);
            let event_ms: Option<i64> = row.get(4);
            let from: String = row.get(5);
            let attributes: Vec<(Box<str>, Box<str>)> =
                serde_json::from_str::<Vec<[String; 2]>>(&attributes)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|[k, v]| (k.into(), v.into()))
                    .collect();
            let started_ago = event_ms.map(|ms| {
                Duration::from_millis(u64::try_from(now_ms().saturating_sub(ms)).unwrap_or(0))
            });
            let (reply, answer) = oneshot::channel();
            let call = IntakeCall {
                conversation_id: conversation_id.clone().into(),
                intent: intent.map(Into::into),
                attributes,
                received: Instant::now(),
                started_ago,
                reply,
                stored: true,
                earlier_steps,
            };
            if self.calls.try_send(call).is_err() {
                // The event loop's queue is full: the next poll tries again.
                break;
            }
            tracing::debug!(
                conversation_id,
                relayed = id,
                from,
                "intake call taken from a standby"
            );
            self.taken.insert(id);
            let done = self.done_tx.clone();
            let taken_ms = now_ms() - CLOCK_SLACK_MS;
            tokio::spawn(async move {
                // No answer (the loop stopped): the call stays for the next leader.
                let answer = answer.await.unwrap_or(IntakeAnswer::ShuttingDown);
                let _ = done.send(Answered {
                    id,
                    answer,
                    conversation_id,
                    taken_ms,
                });
            });
        }
    }

    /// The steps the journal holds for `conversation_id` (a call an earlier leader
    /// took); `None` when they cannot be read.
    async fn earlier_steps(&mut self, conversation_id: &str) -> Option<Vec<String>> {
        let rows = self
            .query(|s| &s.steps, &[(&conversation_id, Type::TEXT)])
            .await?;
        Some(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// The event loop answered a taken call: written back (and announced) once the
    /// journal holds it, unless the loop refused it, which leaves the call to whoever
    /// acts next.
    async fn answered(&mut self, a: Answered, since: Instant) {
        if matches!(a.answer, IntakeAnswer::ShuttingDown | IntakeAnswer::Standby) {
            self.taken.remove(&a.id);
            return;
        }
        match self.write_answer(&a).await {
            Some(true) => {
                self.taken.remove(&a.id);
            }
            // The journal's row not there yet (or the database out of reach): again at
            // the next tick.
            Some(false) | None if since.elapsed() < UNWRITTEN_FOR => {
                self.unwritten.push((a, since));
            }
            // Given up: taken again, the loop answers from what it decided
            // (`duplicate`), which it journals; or the next leader decides it.
            _ => {
                tracing::debug!(relayed = a.id, "intake relay: answer not written in time");
                self.taken.remove(&a.id);
            }
        }
    }

    /// The answers the journal could not vouch for yet, tried again.
    async fn write_unwritten(&mut self) {
        for (a, since) in std::mem::take(&mut self.unwritten) {
            self.answered(a, since).await;
        }
    }

    /// Writes an answer: `Some(true)` written, `Some(false)` not written (the journal's
    /// row not stored yet, or the call answered already), `None` when the database
    /// could not be asked.
    async fn write_answer(&mut self, a: &Answered) -> Option<bool> {
        let epoch = self.acting().unwrap_or(0);
        let instance = self.settings.instance.clone();
        let text = a.answer.as_str();
        let rows = self
            .query(
                |s| &s.answer,
                &[
                    (&a.id, Type::INT8),
                    (&text, Type::TEXT),
                    (&instance, Type::TEXT),
                    (&epoch, Type::INT8),
                    (&a.conversation_id, Type::TEXT),
                    (&a.taken_ms, Type::INT8),
                ],
            )
            .await?;
        Some(!rows.is_empty())
    }

    /// Deletes calls answered long ago, at most once a minute.
    async fn prune(&mut self) {
        if self
            .last_prune
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        // A failure is the outage's (said once); the next minute tries again.
        self.query(|s| &s.prune, &[]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_for_this_schema_only() {
        assert_eq!(heard("g", "g call 7"), Some(Heard::Call));
        assert_eq!(
            heard("g", "g answer 7 duplicate"),
            Some(Heard::Answer(7, IntakeAnswer::Duplicate))
        );
        assert_eq!(heard("g", "other answer 7 close"), None);
        assert_eq!(heard("g", "g answer x close"), None);
        assert_eq!(heard("g", "g answer 7 nonsense"), None);
        assert_eq!(heard("g", ""), None);
    }
}
