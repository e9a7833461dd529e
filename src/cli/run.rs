//! `run`: the daemon against Genesys Cloud, until SIGTERM or SIGINT (see [`super::signals`]).

use std::path::{Path, PathBuf};

use genesys_closer::config::{Config, Exit};
use genesys_closer::{daemon, genesys, intake, record, telemetry};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::load;
use super::signals::wait_for_signal;

/// `run`'s options.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Path to the TOML config.
    #[arg(long, default_value = "/etc/genesys-closer/config.toml")]
    config: PathBuf,
    /// Also append every text frame read from the notification sockets to FILE, one
    /// JSON line each, for `replay`. Never slows the sockets: when the disk cannot
    /// keep up, frames are left out of the recording (counted, logged).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Rotate the recording before it passes this size (FILE becomes FILE.1, one
    /// previous file is kept), e.g. 100MB, 1GiB.
    #[arg(long, value_name = "SIZE", default_value = "100MB", value_parser = record::parse_size)]
    record_max: u64,
}

/// Loads the config and its credentials (refusing before any network I/O), then runs
/// the daemon until it stops.
pub async fn run(args: RunArgs) -> Exit {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let (secret, intake_token) = match credentials(&config, &args.config) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    telemetry::init_logging(&config.log);
    let (recorder, recording) = match &args.record {
        None => (None, None),
        Some(file) => match record::start(file, args.record_max) {
            Ok((r, w)) => (Some(r), Some(w)),
            Err(e) => {
                eprintln!("error: cannot record frames to {}: {e}", file.display());
                return Exit::BadConfig;
            }
        },
    };
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(1);
    tokio::spawn(wait_for_signal(shutdown.clone(), reload_tx));
    let opts = daemon::RunOptions {
        record: recorder,
        reload: Some(reload_rx),
        shutdown,
        drain_timeout: config.daemon.stop_timeout,
        reports: None,
        notify_systemd: true,
        intake_token,
        intake_bound: None,
        metrics_bound: None,
    };
    let result = daemon::run(&config, secret, opts).await;
    // What is queued for the recording goes to disk before the process ends.
    if let Some(w) = recording {
        w.finish();
    }
    stopped(result)
}

/// The client secret and, when `[intake]` is on, its credential; either missing is a bad
/// config (the message names the file).
fn credentials(config: &Config, path: &Path) -> Result<(SecretString, Option<SecretString>), Exit> {
    let refuse = |e: &dyn std::fmt::Display| {
        eprintln!("{}: {e}", path.display());
        Exit::BadConfig
    };
    let secret = genesys::auth::load_secret(&config.genesys.secret).map_err(|e| refuse(&e))?;
    let intake_token = match &config.intake {
        None => None,
        Some(i) => Some(intake::load_token(&i.token).map_err(|e| refuse(&e))?),
    };
    Ok((secret, intake_token))
}

/// The exit status for how the daemon stopped, logged.
fn stopped(result: Result<daemon::Summary, daemon::DaemonError>) -> Exit {
    match result {
        Ok(_) => Exit::Ok,
        Err(e @ daemon::DaemonError::Credentials(_)) => {
            // Restarting cannot fix a refused secret: a status of its own, which the unit
            // lists in RestartPreventExitStatus.
            let exit = Exit::Credentials;
            tracing::error!(error = %e, exit_code = exit.code(), "daemon stopped");
            exit
        }
        Err(e) => {
            tracing::error!(error = %e, "daemon stopped");
            Exit::Failure
        }
    }
}
