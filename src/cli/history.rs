//! `history`: the journal's decisions, steps and outcomes, read-only (the daemon may be
//! running).

use std::path::PathBuf;

use genesys_closer::config::Exit;
use genesys_closer::journal::{self, history};

use super::{load, print_out};

/// `history`'s options.
#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Path to the TOML config (for `[daemon] state_dir`).
    #[arg(long, default_value = "/etc/genesys-closer/config.toml")]
    config: PathBuf,
    /// Read this state directory instead of the config's.
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

/// The report for the period and filters asked, from the state directory given or the
/// config's.
pub fn history(args: HistoryArgs) -> Exit {
    let dir = match args.state_dir {
        Some(d) => d,
        None => match load(&args.config) {
            Ok(c) => c.daemon.state_dir,
            Err(exit) => return exit,
        },
    };
    let options = history::Options {
        since: args.since,
        conversation: args.conversation,
        outcome: args.outcome,
        unfinished: args.unfinished,
        json: args.json,
    };
    let report = journal::open_read(&dir)
        .and_then(|mut j| history::report(&mut j, &options, journal::now_ms()));
    match report {
        Ok(text) => {
            print_out(&text);
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failure
        }
    }
}
