//! `check`: validate a config and print what would run ([`findings`] in the library);
//! with `--online`, also log in and ask Genesys which topic families it offers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use genesys_closer::config::{Config, Exit};
use genesys_closer::findings;
use genesys_closer::genesys;

use super::{load, print_out};

/// `check`'s options.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Path to the TOML config.
    #[arg(long, default_value = "/etc/genesys-closer/config.toml")]
    config: PathBuf,
    /// Also log in and check every topic family the config uses against
    /// GET /api/v2/notifications/availabletopics; exit 1 if one cannot work.
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

/// `check --online`: log in, ask `availabletopics`, print one line per topic family.
async fn online(config: &Config, path: &Path) -> Exit {
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
