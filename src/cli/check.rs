//! `check`: validate a config and print what would run ([`findings`] in the library);
//! with `--online`, also log in and ask Genesys which topic families it offers, and, with
//! `[ha]`, connect to the coordination database (changing nothing).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use genesys_closer::config::{Config, Exit};
use genesys_closer::findings;
use genesys_closer::genesys;
use genesys_closer::ha::HaError;
use genesys_closer::ha::connect::{Database, probe};

use super::{load, print_out};

/// `check`'s options.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Path to the TOML config.
    #[arg(long, default_value = "/etc/genesys-closer/config.toml")]
    config: PathBuf,
    /// Also log in and check every topic family the config uses against
    /// GET /api/v2/notifications/availabletopics, and with [ha] connect to the
    /// coordination database (its version and the schema's migration; nothing is
    /// changed); exit 1 if one cannot work.
    #[arg(long)]
    online: bool,
}

/// The config's findings on stdout, what `run` would refuse on stderr; then, if asked and
/// nothing is refused, the online check.
pub async fn check(args: CheckArgs) -> Exit {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let findings = findings::inspect(&config, &args.config);
    print_out(&findings.to_string());
    if let Some(line) = findings.refusal_line() {
        eprintln!("{line}");
    }
    match findings.exit() {
        Exit::Ok if args.online => online(&config, &args.config).await,
        exit => exit,
    }
}

/// `check --online`: log in, ask `availabletopics`, print one line per topic family;
/// with `[ha]`, the coordination database's lines. The exit status is Genesys's when it
/// is not OK, else the database's.
async fn online(config: &Config, path: &Path) -> Exit {
    let genesys = genesys_online(config, path).await;
    match database_online(config).await {
        Some(database) if genesys == Exit::Ok => database,
        _ => genesys,
    }
}

/// How long `check --online` gives the coordination database, connecting included.
const DATABASE_WITHIN: Duration = Duration::from_secs(5);

/// `[ha]`: connect to the coordination database (bounded by [`DATABASE_WITHIN`]), say
/// its server version, how TLS checks it, and whether the schema exists and at which
/// migration against this binary's; nothing is changed. `None` without `[ha]`.
async fn database_online(config: &Config) -> Option<Exit> {
    let ha = config.ha.as_ref()?;
    let database = match Database::of(config)? {
        Ok(d) => d,
        Err(e) => {
            // `check` refused it already; said again for completeness.
            print_out(&format!(
                "coordination database:
  error: {e}
database: NOT USABLE
"
            ));
            return Some(Exit::BadConfig);
        }
    };
    let latest = genesys_closer::ha::schema::latest();
    let mut out = format!(
        "coordination database ({}, schema {}):
",
        database.describe(),
        ha.schema
    );
    let exit = match probe(&database, &ha.schema, DATABASE_WITHIN).await {
        Err(e @ HaError::Settings(_)) => {
            let _ = writeln!(out, "  error: {e}");
            let _ = writeln!(out, "database: NOT USABLE");
            Exit::BadConfig
        }
        Err(e) => {
            let _ = writeln!(out, "  error: {e}");
            let _ = writeln!(out, "database: CANNOT CONNECT");
            Exit::Failure
        }
        Ok(p) => {
            let _ = writeln!(
                out,
                "  server: PostgreSQL {}; {}",
                p.server_version,
                p.check.describe()
            );
            let schema = &ha.schema;
            let newer = match p.schema_version {
                None => {
                    let _ = writeln!(
                        out,
                        "  schema {schema}: absent; the first instance to start creates it \
                         (migration {latest})"
                    );
                    false
                }
                Some(v) if v == latest => {
                    let _ = writeln!(out, "  schema {schema}: at migration {v}, as this binary");
                    false
                }
                Some(v) if v < latest => {
                    let _ = writeln!(
                        out,
                        "  schema {schema}: at migration {v}; this binary applies up to \
                         {latest} at start"
                    );
                    false
                }
                Some(v) => {
                    let _ = writeln!(
                        out,
                        "  error: schema {schema} is at migration {v}, newer than this \
                         binary's {latest}: `run` refuses to start; upgrade this instance"
                    );
                    true
                }
            };
            if newer {
                let _ = writeln!(out, "database: PROBLEMS (see the error line)");
                Exit::Failure
            } else {
                let _ = writeln!(out, "database: OK");
                Exit::Ok
            }
        }
    };
    print_out(&out);
    Some(exit)
}

/// The Genesys half of `check --online`.
async fn genesys_online(config: &Config, path: &Path) -> Exit {
    let secret = match genesys::auth::load_secret(&config.genesys.secret) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Exit::BadConfig;
        }
    };
    let http = match genesys::api::ApiClient::http_client() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failure;
        }
    };
    let tokens = genesys::auth::TokenSource::new(
        http.clone(),
        &config.genesys.login_url,
        config.genesys.client_id.clone(),
        secret,
    );
    let api = genesys::api::ApiClient::new(http, config.genesys.api_url.clone(), tokens);
    let mut out = String::from("online check (GET /api/v2/notifications/availabletopics):\n");
    let exit = match genesys::topics::check(&api, config).await {
        // The same status as `run` on a refused credential: restarting cannot fix it.
        Err(e @ genesys::api::ApiError::Auth(_)) if !e.is_retryable() => {
            let _ = writeln!(out, "  error: {e}");
            let _ = writeln!(out, "online: the credentials were refused");
            Exit::Credentials
        }
        Err(e) => {
            let _ = writeln!(out, "  error: {e}");
            Exit::Failure
        }
        Ok(reports) => {
            for r in &reports {
                let _ = writeln!(out, "  {r}");
            }
            if reports.iter().all(|r| r.usable()) {
                let _ = writeln!(out, "online: OK");
                Exit::Ok
            } else {
                let _ = writeln!(out, "online: PROBLEMS (see the error lines)");
                Exit::Failure
            }
        }
    };
    print_out(&out);
    exit
}
