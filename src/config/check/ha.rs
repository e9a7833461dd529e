//! `[ha]`: several instances on one PostgreSQL. Its settings are refused here exactly
//! when `run` would refuse them: the lease's timing and the schema name are judged by
//! the same functions the lease uses ([`lease_timing`], [`schema_name`]).

use super::*;

/// The keys `[ha]` takes.
const KEYS: &[&str] = &[
    "database_url",
    "database_url_file",
    "schema",
    "lease_name",
    "instance",
    "lease_ttl",
    "renew_every",
    "instances",
    "ca_file",
];

/// The systemd credential name holding the connection string.
pub const DATABASE_URL_CREDENTIAL: &str = "database_url";

impl Checker<'_> {
    pub(super) fn ha(&mut self, root: &dyn TableLike) -> Option<HaConfig> {
        let (t, here) = self.section(root, "ha")?;
        self.unknown_keys(t, "[ha]", KEYS);
        let database_url = self.database_url(t, here.clone())?;
        let schema = self
            .nonempty_string(t, "schema")
            .unwrap_or_else(|| "genesys_closer".into());
        if let Err(e) = schema_name(&schema) {
            self.at(t.get("schema").and_then(Item::span), format!("[ha] {e}"));
        }
        let lease_name = self
            .nonempty_string(t, "lease_name")
            .unwrap_or_else(|| "genesys-closer".into());
        let instance = match self.nonempty_string(t, "instance") {
            Some(i) => i,
            None => match host_name() {
                Some(h) => h,
                None => {
                    self.at(
                        here.clone(),
                        "[ha] needs `instance`: this machine's host name cannot be read".into(),
                    );
                    return None;
                }
            },
        };
        if instance.len() > 200 || lease_name.len() > 200 {
            self.at(
                here.clone(),
                "[ha] `instance` and `lease_name` are 200 characters at most".into(),
            );
        }
        let lease_ttl = self
            .duration(t, "lease_ttl")
            .unwrap_or(Duration::from_secs(10));
        let renew_every = self
            .duration(t, "renew_every")
            .unwrap_or(Duration::from_secs(2));
        if let Err(e) = lease_timing(lease_ttl, renew_every) {
            let span = t
                .get("renew_every")
                .or_else(|| t.get("lease_ttl"))
                .and_then(Item::span)
                .or(here);
            self.at(span, format!("[ha] {e}"));
            return None;
        }
        let instances = match t.get("instances").and_then(Item::as_integer) {
            None if !t.contains_key("instances") => 2,
            Some(n) if (2..=5).contains(&n) => n as usize,
            _ => {
                self.at(
                    t.get("instances").and_then(Item::span),
                    "[ha] `instances` is how many instances share the OAuth client: 2 to 5".into(),
                );
                return None;
            }
        };
        let ca_file = self.nonempty_string(t, "ca_file").map(PathBuf::from);
        Some(HaConfig {
            instances,
            ca_file,
            database_url,
            schema,
            lease_name,
            instance,
            lease_ttl,
            renew_every,
        })
    }

    /// `database_url`, `database_url_file`, the credential, or the environment (at most
    /// one of the first two).
    fn database_url(
        &mut self,
        t: &dyn TableLike,
        here: Option<Range<usize>>,
    ) -> Option<DatabaseUrl> {
        let inline = self.nonempty_string(t, "database_url");
        let file = self.nonempty_string(t, "database_url_file");
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.at(
                    here,
                    "[ha] takes `database_url` or `database_url_file`, not both".into(),
                );
                None
            }
            (Some(u), None) => Some(DatabaseUrl::Inline(u)),
            (None, Some(f)) => Some(DatabaseUrl::File(PathBuf::from(f))),
            (None, None) => Some(match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) if Path::new(&dir).join(DATABASE_URL_CREDENTIAL).is_file() => {
                    DatabaseUrl::Credential(Path::new(&dir).join(DATABASE_URL_CREDENTIAL))
                }
                _ => DatabaseUrl::Env,
            }),
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
