//! `history`: the journal's decisions, steps and outcomes, read-only (the daemon may be
//! running): the SQLite journal under the state directory, or, when the config has
//! `[ha]`, the group's journal on PostgreSQL, whose steps show the lease epoch and the
//! instance they were written under.

use std::path::{Path, PathBuf};

use genesys_closer::config::{Config, Exit};
use genesys_closer::ha::connect::Database;
use genesys_closer::journal::{self, JournalError, PostgresBackend, history};

use super::{load, print_out};

/// `history`'s options.
#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Path to the TOML config (for `[daemon] state_dir`, or `[ha]`'s database: a
    /// group's journal is on PostgreSQL).
    #[arg(long, default_value = "/etc/genesys-closer/config.toml")]
    config: PathBuf,
    /// Read the SQLite journal in this state directory instead of the config's journal.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Start of the period: a duration back from now (90m, 1h, 7d), today or
    /// yesterday (from midnight UTC), a date (2026-12-01, from midnight UTC) or an RFC
    /// 3339 time (2026-12-01T08:00:00Z). Default: 24h; with --unfinished, the whole
    /// journal.
    #[arg(long, value_name = "WHEN", value_parser = history::Since::parse)]
    since: Option<history::Since>,
    /// Only this conversation.
    #[arg(long)]
    conversation: Option<String>,
    /// Only conversations whose close ended with OUTCOME in the period.
    #[arg(
        long,
        value_name = "OUTCOME",
        value_parser = clap::builder::PossibleValuesParser::new(history::outcome_names()),
        conflicts_with = "unfinished"
    )]
    outcome: Option<String>,
    /// Only closes decided and not finished: what the next start carries on.
    #[arg(long)]
    unfinished: bool,
    /// JSON lines instead of the table: one `"type":"entry"` line per journal line,
    /// then a `"type":"summary"` line.
    #[arg(long)]
    json: bool,
}

/// The report for the period and filters asked, from the state directory given, or
/// the config's journal (`[ha]`: the group's, on PostgreSQL).
pub fn history(args: HistoryArgs) -> Exit {
    let options = history::Options {
        since: args.since,
        conversation: args.conversation,
        outcome: args.outcome,
        unfinished: args.unfinished,
        json: args.json,
    };
    let dir = match args.state_dir {
        Some(d) => d,
        None => match load(&args.config) {
            Ok(c) if c.ha.is_some() => return group(&c, &args.config, &options),
            Ok(c) => c.daemon.state_dir,
            Err(exit) => return exit,
        },
    };
    let report = journal::open_read(&dir)
        .and_then(|mut j| history::report(&mut j, &options, journal::now_ms()));
    finish(report, "")
}

/// `[ha]`: the report from the group's journal on PostgreSQL, read on a thread of its
/// own (the backend blocks on a runtime of its own, which must not run inside the
/// command's). Nothing is changed in the database: no migration is applied. A
/// connection string or `ca_file` that cannot be used is [`Exit::BadConfig`], as for
/// `run`.
fn group(config: &Config, path: &Path, options: &history::Options) -> Exit {
    let (Some(ha), Some(database)) = (&config.ha, Database::of(config)) else {
        return Exit::BadConfig;
    };
    let database = match database.and_then(|d| match d.connector() {
        Ok(_) => Ok(d),
        Err(e) => Err(e.to_string()),
    }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Exit::BadConfig;
        }
    };
    let at = format!(
        "the group's journal on {}, schema {}: ",
        database.describe(),
        ha.schema
    );
    let read = std::thread::scope(|s| {
        s.spawn(|| {
            let mut b = PostgresBackend::open_read(&database, &ha.schema)?;
            history::report(&mut b, options, journal::now_ms())
        })
        .join()
    });
    match read {
        Ok(report) => finish(report, &at),
        Err(_) => {
            eprintln!("error: {at}the reading thread stopped unexpectedly");
            Exit::Failure
        }
    }
}

/// Prints the report, or the error (after `at`, where it was read) and [`Exit::Failure`].
fn finish(report: Result<String, JournalError>, at: &str) -> Exit {
    match report {
        Ok(text) => {
            print_out(&text);
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {at}{e}");
            Exit::Failure
        }
    }
}
