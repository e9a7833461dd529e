//! `[ha]` at start-up: this instance in a group on PostgreSQL (the lease loop, the
//! connection string, the role every part follows), and the channels the other
//! instances leave it.

use tokio_util::sync::CancellationToken;

use super::DaemonError;
use crate::config::{Config, MAX_CHANNELS};

/// `[ha]`: this instance in a group on PostgreSQL. The lease loop starts at once (as a
/// standby: it acts once it holds the lease); the journal is the group's.
pub(super) struct Group {
    /// The connection string and `[ha] ca_file`.
    pub database: crate::ha::connect::Database,
    /// Connects with the TLS `sslmode` asks for (the lease loop's and the relay's).
    pub connector: crate::ha::connect::Connector,
    /// Where the database is, for logs (no password).
    pub at: String,
    pub settings: crate::ha::lease::LeaseSettings,
    pub role: tokio::sync::watch::Receiver<crate::ha::leader::Role>,
    /// Every acting request passes it; the lease loop drains it before resigning.
    pub gate: std::sync::Arc<crate::ha::gate::SendGate>,
    pub lease: super::running::LeaseTask,
}

impl Group {
    pub(super) fn start(
        config: &Config,
        ha: &crate::config::HaConfig,
    ) -> Result<Group, DaemonError> {
        let database = match crate::ha::connect::Database::of(config) {
            Some(d) => d.map_err(DaemonError::Setup)?,
            None => return Err(DaemonError::Setup("[ha] is not set".into())),
        };
        let connector = database
            .connector()
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
        let mut settings = crate::ha::connect::lease_settings(ha)
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
        settings.instances = ha.instances;
        let (tx, role) = tokio::sync::watch::channel(crate::ha::leader::Role::Standby);
        let stop = CancellationToken::new();
        let gate = std::sync::Arc::new(crate::ha::gate::SendGate::default());
        let task = tokio::spawn(crate::ha::leader::run(
            settings.clone(),
            connector.clone(),
            tx,
            std::sync::Arc::clone(&gate),
            stop.clone(),
        ));
        tracing::info!(instance = %settings.instance, lease = %settings.name,
            lease_ttl_ms = settings.ttl.as_millis() as u64,
            renew_every_ms = settings.renew_every.as_millis() as u64,
            "[ha]: standing by until this instance holds the lease");
        Ok(Group {
            at: database.describe(),
            database,
            connector,
            settings,
            role,
            gate,
            lease: super::running::LeaseTask { stop, task },
        })
    }
}

/// The channels this instance's subscription manager may use: the OAuth client's 20,
/// less this instance's mirrors and, in a group, the other instances' channels for the
/// configured topics (each holds as many as this one). Never fewer than the configured
/// topics' own.
pub(super) fn channels_left(config: &Config, slots: usize, mirrors: usize) -> usize {
    let others = config
        .ha
        .as_ref()
        .map_or(0, |ha| (ha.instances - 1) * (slots + mirrors));
    MAX_CHANNELS.saturating_sub(mirrors + others).max(slots)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn text(extra: &str) -> String {
        format!(
            "[genesys]\nregion = \"us-east-1\"\nclient_id = \"0c1e0c1e-0000-4000-8000-0000000000ab\"\n\
             [stream]\nqueues = [\"11111111-1111-4111-8111-111111111111\"]\n\
             [[rule]]\nname = \"bye\"\nintents = [\"Goodbye\"]\n{extra}"
        )
    }

    fn config(extra: &str) -> Config {
        Config::parse(&text(extra), Path::new("t.toml")).expect("valid")
    }

    #[test]
    fn the_channels_left_count_the_other_instances_of_a_group() {
        // One instance: 20 less its mirror.
        assert_eq!(channels_left(&config(""), 1, 1), 19);
        // Two instances, each with a channel and its mirror: 20 - 1 - 2.
        let two = config("[ha]\ninstance = \"a\"\n");
        assert_eq!(channels_left(&two, 1, 1), 17);
        let three = config("[ha]\ninstance = \"a\"\ninstances = 3\n");
        assert_eq!(channels_left(&three, 1, 1), 15);
        // Never fewer than the configured topics' own channels.
        assert_eq!(channels_left(&three, 10, 0), 10);
        let refused = Config::parse(
            &text("[ha]\ninstance = \"a\"\ninstances = 9\n"),
            Path::new("t.toml"),
        )
        .expect_err("2 to 5 instances")
        .to_string();
        assert!(refused.contains("`instances`"), "{refused}");
    }
}
