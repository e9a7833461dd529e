//! The lease: one row per name (holder, epoch, expires_at), and the trust window.
//!
//! Every statement is a single autocommit statement that uses the database's `now()`:
//! - take: insert the row, or take it over once it has expired, bumping the epoch;
//! - renew: extend it, only where holder **and** epoch are still ours (a renew that
//!   matched on the holder alone would let a follower extend another's lease and
//!   believe itself leader: River #197);
//! - resign: expire it at once and notify the standbys.
//!
//! A holder trusts its lease only until `sent + trust` on this process's monotonic
//! clock, where `sent` is when the statement that took or renewed it was sent (before
//! the database ran it, so before its `now()`), and `trust` is below the TTL by a drift
//! margin. The database lets another instance take over only after `now() + ttl` of
//! that statement, so the old holder's window ends first. Renewing must happen well
//! inside the TTL (a TTL equal to the renew interval made a healthy leader lose its
//! lease: River #216); [`LeaseSettings::new`] refuses settings without that margin.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};

use super::HaError;

/// The channel resignations are announced on (`LISTEN genesys_closer_lease`).
pub const NOTIFY_CHANNEL: &str = "genesys_closer_lease";

/// The share of the TTL a holder trusts its lease for: the rest covers clock-rate
/// drift between this host and the database (far below 10 % on any sane host).
const TRUST_SHARE: f64 = crate::config::LEASE_TRUST_SHARE;

/// A lease's settings, validated together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The schema holding the tables.
    pub schema: String,
    /// The lease's name (one per group of instances).
    pub name: String,
    /// This instance (host name by default).
    pub instance: String,
    /// How long a taken or renewed lease lasts in the database.
    pub ttl: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How many instances the group was told it has (`[ha] instances`); checked
    /// against the instances seen (see [`Lease::heartbeat`]).
    pub instances: usize,
}

impl LeaseSettings {
    /// Checks the settings work together: a renew every `renew_every`, each bounded by
    /// a statement timeout of `renew_every`, must leave room for two failed renews and
    /// a third within the trust window (`renew_every * 3 < ttl * 0.9`).
    pub fn new(
        schema: &str,
        name: &str,
        instance: &str,
        ttl: Duration,
        renew_every: Duration,
    ) -> Result<LeaseSettings, HaError> {
        super::valid_schema(schema)?;
        if instance.trim().is_empty() || instance.len() > 200 {
            return Err(HaError::Settings(
                "instance must be 1 to 200 characters".into(),
            ));
        }
        if name.trim().is_empty() || name.len() > 200 {
            return Err(HaError::Settings(
                "lease name must be 1 to 200 characters".into(),
            ));
        }
        crate::config::lease_timing(ttl, renew_every).map_err(HaError::Settings)?;
        Ok(LeaseSettings {
            schema: schema.to_owned(),
            name: name.to_owned(),
            instance: instance.to_owned(),
            ttl,
            renew_every,
            instances: 2,
        })
    }

    /// How long a lease is trusted after the statement that took or renewed it was sent.
    pub fn trust(&self) -> Duration {
        self.ttl.mul_f64(TRUST_SHARE)
    }
}

/// A lease this instance holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The epoch issued by the database when it was taken.
    pub epoch: i64,
    /// The end of the local trust window.
    pub trusted_until: Instant,
}

/// One instance's view of the lease.
#[derive(Debug)]
pub struct Lease {
    settings: LeaseSettings,
    held: Option<Held>,
}

/// What a renew found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// Still ours, trusted for longer.
    Kept(Held),
    /// Another instance holds a newer epoch (or the row is gone): this one is lost.
    Lost,
}

impl Lease {
    /// A lease not held yet.
    pub fn new(settings: LeaseSettings) -> Lease {
        Lease {
            settings,
            held: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// The epoch, while the trust window is open at `now`; `None` otherwise. Every
    /// request that acts must ask this just before it is sent.
    pub fn trusted(&self, now: Instant) -> Option<i64> {
        self.held.filter(|h| now < h.trusted_until).map(|h| h.epoch)
    }

    /// What is held (trusted or not).
    pub fn held(&self) -> Option<Held> {
        self.held
    }

    /// Runs one statement within `renew_every`.
    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, HaError> {
        match tokio::time::timeout(self.settings.renew_every, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(HaError::Timeout(self.settings.renew_every.as_millis())),
        }
    }

    /// Takes the lease if nobody holds it or its holder let it expire; the database
    /// issues the next epoch. `Ok(None)`: another instance holds it.
    pub async fn try_take(&mut self, db: &Client) -> Result<Option<Held>, HaError> {
        let s = &self.settings;
        let sql = format!(
            "INSERT INTO {schema}.lease AS l (name, holder, epoch, expires_at)
             VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE
                SET holder = EXCLUDED.holder, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at
                WHERE l.expires_at < now()
             RETURNING epoch",
            schema = s.schema
        );
        let ttl_ms = s.ttl.as_millis() as f64;
        let sent = Instant::now();
        let row = self
            .bounded(db.query_typed(
                &sql,
                &[
                    (&s.name, Type::TEXT),
                    (&s.instance, Type::TEXT),
                    (&ttl_ms, Type::FLOAT8),
                ],
            ))
            .await?
            .into_iter()
            .next();
        let held = row.map(|r| Held {
            epoch: r.get(0),
            trusted_until: sent + s.trust(),
        });
        if held.is_some() {
            self.held = held;
        }
        Ok(held)
    }

    /// Extends the lease where holder and epoch are still ours. A failed statement is
    /// an error and leaves the trust window as it was: it ends on its own.
    pub async fn renew(&mut self, db: &Client) -> Result<Renewed, HaError> {
        let Some(h) = self.held else {
            return Ok(Renewed::Lost);
        };
        let s = &self.settings;
        let sql = format!(
            "UPDATE {schema}.lease SET expires_at = now() + $4 * interval '1 millisecond'
             WHERE name = $1 AND holder = $2 AND epoch = $3",
            schema = s.schema
        );
        let ttl_ms = s.ttl.as_millis() as f64;
        let sent = Instant::now();
        let n = self
            .bounded(db.execute_typed(
                &sql,
                &[
                    (&s.name, Type::TEXT),
                    (&s.instance, Type::TEXT),
                    (&h.epoch, Type::INT8),
                    (&ttl_ms, Type::FLOAT8),
                ],
            ))
            .await?;
        if n == 0 {
            self.held = None;
            return Ok(Renewed::Lost);
        }
        let kept = Held {
            epoch: h.epoch,
            trusted_until: sent + s.trust(),
        };
        self.held = Some(kept);
        Ok(Renewed::Kept(kept))
    }

    /// Gives the lease up: expires it now and notifies the standbys, in one statement.
    /// Trust ends before the statement is sent, whatever it answers.
    pub async fn resign(&mut self, db: &Client) -> Result<bool, HaError> {
        let Some(h) = self.held.take() else {
            return Ok(false);
        };
        let s = &self.settings;
        let sql = format!(
            "WITH r AS (
                UPDATE {schema}.lease SET expires_at = now() - interval '1 millisecond'
                WHERE name = $1 AND holder = $2 AND epoch = $3 RETURNING name
             )
             SELECT pg_notify('{NOTIFY_CHANNEL}', name) FROM r",
            schema = s.schema
        );
        let rows = self
            .bounded(db.query_typed(
                &sql,
                &[
                    (&s.name, Type::TEXT),
                    (&s.instance, Type::TEXT),
                    (&h.epoch, Type::INT8),
                ],
            ))
            .await?;
        Ok(!rows.is_empty())
    }

    /// Says this instance is alive (`{schema}.members`, one row per instance of the
    /// lease) and returns how many instances of the group were seen within one TTL,
    /// this one included, in one statement.
    pub async fn heartbeat(&self, db: &Client) -> Result<i64, HaError> {
        let s = &self.settings;
        let sql = format!(
            "WITH up AS (
                INSERT INTO {schema}.members AS m (lease_name, instance, seen_at)
                VALUES ($1, $2, now())
                ON CONFLICT (lease_name, instance) DO UPDATE SET seen_at = now()
             )
             SELECT 1 + count(*) FROM {schema}.members
             WHERE lease_name = $1 AND instance <> $2
               AND seen_at > now() - $3 * interval '1 millisecond'",
            schema = s.schema
        );
        let ttl_ms = s.ttl.as_millis() as f64;
        let rows = self
            .bounded(db.query_typed(
                &sql,
                &[
                    (&s.name, Type::TEXT),
                    (&s.instance, Type::TEXT),
                    (&ttl_ms, Type::FLOAT8),
                ],
            ))
            .await?;
        Ok(rows.first().map_or(1, |r| r.get(0)))
    }

    /// Takes this instance out of the members at the stop, so a stopped instance is
    /// not counted.
    pub async fn leave(&self, db: &Client) -> Result<(), HaError> {
        let s = &self.settings;
        let sql = format!(
            "DELETE FROM {schema}.members WHERE lease_name = $1 AND instance = $2",
            schema = s.schema
        );
        self.bounded(db.execute_typed(&sql, &[(&s.name, Type::TEXT), (&s.instance, Type::TEXT)]))
            .await?;
        Ok(())
    }
}

/// The fence: stores a step's "about to send" row in the journal's steps table under
/// `epoch` only while `epoch` is the lease's current one and `settings.instance` its
/// holder, in one statement. The lease row is read `FOR SHARE`: a takeover (which
/// updates the row) waits for this insert's transaction to end, so the new holder's
/// read of earlier epochs' steps sees it; a takeover that committed first makes this
/// find no row. `Ok(false)`: fenced off, do not send.
///
/// `db` is a client (the row commits at once) or a transaction (the row, and the lease
/// row's share lock, last until it ends). The PostgreSQL journal's
/// [`step_fenced`](crate::journal::Backend::step_fenced) runs this statement.
pub async fn fenced_step<C: GenericClient + Sync>(
    db: &C,
    settings: &LeaseSettings,
    epoch: i64,
    conversation_id: &str,
    step: &str,
    at_ms: i64,
) -> Result<bool, HaError> {
    let sql = format!(
        "INSERT INTO {schema}.steps (conversation_id, at_ms, step, epoch, instance)
         SELECT $1, $2, $3, l.epoch, l.holder FROM {schema}.lease l
         WHERE l.name = $4 AND l.epoch = $5 AND l.holder = $6
         FOR SHARE",
        schema = settings.schema
    );
    // Typed parameters: one round trip, and an unnamed statement (a pooler keeps it).
    let n = db
        .execute_typed(
            &sql,
            &[
                (&conversation_id, Type::TEXT),
                (&at_ms, Type::INT8),
                (&step, Type::TEXT),
                (&settings.name, Type::TEXT),
                (&epoch, Type::INT8),
                (&settings.instance, Type::TEXT),
            ],
        )
        .await?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ttl: u64, renew_ms: u64) -> Result<LeaseSettings, HaError> {
        LeaseSettings::new(
            "genesys_closer",
            "closer",
            "host-a",
            Duration::from_secs(ttl),
            Duration::from_millis(renew_ms),
        )
    }

    #[test]
    fn settings_keep_renewing_well_inside_the_ttl() {
        assert!(s(10, 2000).is_ok(), "the defaults");
        // A TTL equal to the renew interval loses a healthy lease (River #216).
        assert!(s(10, 10_000).is_err());
        // Three renews must fit in the trust window (90 % of the TTL).
        assert!(s(10, 3000).is_err());
        assert!(s(10, 2999).is_ok());
        assert!(s(2, 500).is_err(), "a TTL under 3 s");
        assert!(s(10, 100).is_err(), "renewing more often than every 200 ms");
        assert!(
            LeaseSettings::new(
                "x",
                "closer",
                " ",
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
            .is_err()
        );
        assert!(
            LeaseSettings::new(
                "X",
                "closer",
                "a",
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
            .is_err()
        );
    }

    #[test]
    fn a_lease_is_trusted_only_inside_its_window() {
        let settings = s(10, 2000).unwrap();
        assert_eq!(settings.trust(), Duration::from_secs(9));
        let mut lease = Lease::new(settings);
        let now = Instant::now();
        assert_eq!(lease.trusted(now), None, "not held");
        lease.held = Some(Held {
            epoch: 7,
            trusted_until: now + Duration::from_secs(9),
        });
        assert_eq!(lease.trusted(now), Some(7));
        assert_eq!(lease.trusted(now + Duration::from_millis(8999)), Some(7));
        assert_eq!(
            lease.trusted(now + Duration::from_secs(9)),
            None,
            "the window's end"
        );
    }
}
