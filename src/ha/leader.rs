//! The lease loop: one task per instance that takes the lease when it is free, renews
//! it while held, and resigns it at the stop, publishing this instance's [`Role`].
//!
//! A standby asks for the lease every `renew_every`, and at once when the holder
//! resigns (`LISTEN`; through a transaction-mode pooler, where `LISTEN` does not work,
//! the polling alone takes over within `renew_every` of the expiry). A leader renews
//! every `renew_every`. A renew that fails (the database unreachable, a statement
//! timeout) changes nothing at once: the trust window ends on its own, and [`Role`]
//! carries its end, so whoever acts checks it just before acting (safety before
//! liveness: a leader that cannot reach the database stops sending at the end of its
//! window, and carries on if a later renew finds the lease still its own). A renew that
//! finds a newer epoch means the lease is lost: the instance becomes a standby (it never
//! exits for that).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::sync::CancellationToken;

use super::HaError;
use super::connect::Connector;
use super::lease::{Held, Lease, LeaseSettings, NOTIFY_CHANNEL, Renewed};

/// What this instance is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds no lease: keeps its state warm, decides nothing, sends no close request.
    Standby,
    /// Holds the lease under `epoch`; may act until `trusted_until`.
    Leader {
        /// The lease's epoch.
        epoch: i64,
        /// The end of the trust window (monotonic).
        trusted_until: Instant,
    },
}

impl Role {
    /// The epoch to act under at `now`: a leader inside its trust window.
    pub fn acting(&self, now: Instant) -> Option<i64> {
        match *self {
            Role::Leader {
                epoch,
                trusted_until,
            } if now < trusted_until => Some(epoch),
            _ => None,
        }
    }

    fn of(held: Option<Held>) -> Role {
        match held {
            Some(h) => Role::Leader {
                epoch: h.epoch,
                trusted_until: h.trusted_until,
            },
            None => Role::Standby,
        }
    }
}

/// A connection to the coordination database for the lease alone (never shared with
/// the journal, so a busy journal cannot starve renewals: River #695), and the
/// resignations it hears.
struct Link {
    client: Client,
    resigned: mpsc::UnboundedReceiver<()>,
}

async fn link(db: &Connector) -> Result<Link, HaError> {
    let (client, mut conn) = db.connect().await?;
    let (tx, resigned) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(_) = m {
                let _ = tx.send(());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await?;
    Ok(Link { client, resigned })
}

/// Runs the lease loop until `stop` is cancelled, then resigns (bounded by
/// `renew_every`). Every change of role is sent on `role`.
pub async fn run(
    settings: LeaseSettings,
    db: Connector,
    role: watch::Sender<Role>,
    gate: std::sync::Arc<super::gate::SendGate>,
    stop: CancellationToken,
) {
    let every = settings.renew_every;
    let schema = settings.schema.clone();
    let mut lease = Lease::new(settings);
    let mut link: Option<Link> = None;
    let mut trust = TrustEnd::default();
    let mut migrated = false;
    let mut seen_said = 0;
    loop {
        let Some(l) = connected(&mut link, &db, every, &stop, (&lease, &mut trust)).await else {
            break;
        };
        // The lease's table first (on a fresh database the journal, opening meanwhile,
        // may not have created it yet); applied once, under the migrations' lock.
        let step = if !migrated {
            let r = tokio::time::timeout(every, super::schema::migrate(&mut l.client, &schema))
                .await
                .unwrap_or(Err(HaError::Timeout(every.as_millis())));
            migrated = r.is_ok();
            match r {
                // Asked at once, not a renew later.
                Ok(_) => take(&mut lease, &l.client, &role).await,
                Err(e) => Err(e),
            }
        } else if lease.held().is_some() {
            renew(&mut lease, &l.client, &role).await
        } else {
            take(&mut lease, &l.client, &role).await
        };
        match step {
            Ok(()) => seen_said = members(&lease, &l.client, seen_said).await,
            Err(e) => {
                tracing::warn!(error = %e, held = lease.held().is_some(),
                    "lease: the coordination database did not answer; trying again");
                link = None;
            }
        }
        trust.check(&lease);
        let wake = tokio::time::sleep(every);
        tokio::pin!(wake);
        let resigned = async {
            match link.as_mut() {
                Some(l) if lease.held().is_none() => l.resigned.recv().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = &mut wake => {}
            _ = resigned => tracing::info!("lease: the holder resigned; asking for it now"),
        }
    }
    resign(&mut lease, link.as_ref(), &role, &gate, every).await;
    if let Some(l) = link.as_ref() {
        let _ = lease.leave(&l.client).await;
    }
}

/// Says this instance is alive and checks the group's size against `[ha] instances`:
/// more instances seen than told means the channels each instance leaves the others
/// are counted short (20 per OAuth client), said once per size (`said`, returned).
async fn members(lease: &Lease, db: &Client, said: i64) -> i64 {
    let told = lease.settings().instances;
    match lease.heartbeat(db).await {
        Ok(seen) => {
            crate::metrics::group_seen(seen);
            if seen > told as i64 && seen != said {
                tracing::warn!(
                    seen,
                    instances = told,
                    "[ha]: more instances of the group are alive than `instances` says; the \
                     channels left for per-conversation topics are counted short: set \
                     `instances` to the group's size on every instance"
                );
                return seen;
            }
            said
        }
        Err(e) => {
            tracing::debug!(error = %e, "lease: the members heartbeat failed");
            said
        }
    }
}

/// Says, once per window, that the trust window ended without a renew: from then on
/// this instance acts on nothing until the lease is renewed or lost.
#[derive(Default)]
struct TrustEnd {
    said: bool,
}

impl TrustEnd {
    fn check(&mut self, lease: &Lease) {
        let Some(h) = lease.held() else {
            return;
        };
        if Instant::now() < h.trusted_until {
            self.said = false;
        } else if !self.said {
            tracing::error!(
                epoch = h.epoch,
                "lease: trust window ended without a renew; sending nothing until the lease \
                 is renewed or lost"
            );
            self.said = true;
        }
    }
}

/// The link, (re)connecting while the lease loop runs; `None` once stopped. While it
/// cannot connect, the end of the trust window is said as it comes.
async fn connected<'l>(
    link: &'l mut Option<Link>,
    db: &Connector,
    every: Duration,
    stop: &CancellationToken,
    (lease, trust): (&Lease, &mut TrustEnd),
) -> Option<&'l mut Link> {
    while link.is_none() {
        let attempt = tokio::time::timeout(every, self::link(db));
        tokio::select! {
            () = stop.cancelled() => return None,
            r = attempt => match r {
                Ok(Ok(l)) => *link = Some(l),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "lease: cannot connect to the coordination database");
                }
                Err(_) => tracing::warn!(timeout_ms = every.as_millis() as u64,
                    "lease: connecting to the coordination database timed out"),
            },
        }
        if link.is_none() {
            trust.check(lease);
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
    link.as_mut()
}

async fn take(lease: &mut Lease, db: &Client, role: &watch::Sender<Role>) -> Result<(), HaError> {
    if let Some(h) = lease.try_take(db).await? {
        tracing::info!(epoch = h.epoch, instance = %lease.settings().instance,
            "lease acquired: this instance acts");
        crate::metrics::lease(true, h.epoch);
        role.send_replace(Role::of(Some(h)));
    }
    Ok(())
}

async fn renew(lease: &mut Lease, db: &Client, role: &watch::Sender<Role>) -> Result<(), HaError> {
    let epoch = lease.held().map_or(0, |h| h.epoch);
    let sent = Instant::now();
    match lease.renew(db).await? {
        Renewed::Kept(h) => {
            crate::metrics::lease_renewed(sent.elapsed());
            role.send_replace(Role::of(Some(h)));
        }
        Renewed::Lost => {
            tracing::warn!(epoch, instance = %lease.settings().instance,
                "lease lost: another instance holds a newer epoch; this one is a standby now");
            crate::metrics::lease(false, epoch);
            role.send_replace(Role::Standby);
        }
    }
    Ok(())
}

/// At the stop: trust ends first and the gate closes (nothing is sent from now on),
/// the acting requests already on their way are waited for (at most what is left of
/// the trust window: past it another instance may take over anyway), then the lease is
/// expired and the standbys told, within `every`. Resigning with a disconnect still on
/// its way would let the next leader, finding the conversation open, send a second.
async fn resign(
    lease: &mut Lease,
    link: Option<&Link>,
    role: &watch::Sender<Role>,
    gate: &super::gate::SendGate,
    every: Duration,
) {
    let Some(h) = lease.held() else {
        return;
    };
    role.send_replace(Role::Standby);
    gate.close();
    let left = h.trusted_until.saturating_duration_since(Instant::now());
    let in_flight = gate.in_flight();
    if !gate.drained(left).await {
        tracing::warn!(
            epoch = h.epoch,
            in_flight = gate.in_flight(),
            "lease: requests still on their way at the end of the trust window; resigning"
        );
    } else if in_flight > 0 {
        tracing::info!(
            epoch = h.epoch,
            in_flight,
            "lease: waited for the requests on their way before resigning"
        );
    }
    let outcome = match link {
        Some(l) => tokio::time::timeout(every, lease.resign(&l.client)).await,
        None => Ok(Err(HaError::Db("not connected".into()))),
    };
    match outcome {
        Ok(Ok(_)) => tracing::info!(epoch = h.epoch, "lease resigned: a standby takes over now"),
        Ok(Err(e)) => tracing::warn!(epoch = h.epoch, error = %e,
            "lease: resigning failed; a standby takes over when it expires"),
        Err(_) => tracing::warn!(
            epoch = h.epoch,
            "lease: resigning timed out; a standby takes over when it expires"
        ),
    }
    crate::metrics::lease(false, h.epoch);
}
