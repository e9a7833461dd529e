//! The command line: the program and its subcommands. Each command's own options live
//! next to its code (`RunArgs` in run.rs, ...).

use clap::{Parser, Subcommand};

use super::check::CheckArgs;
use super::demo::{BurstArgs, DemoArgs, LatencyArgs};
use super::generate::Generate;
use super::history::HistoryArgs;
use super::replay::ReplayArgs;
use super::run::RunArgs;
use super::sim::SimArgs;

use super::VERSION;

/// Ends Genesys Cloud messaging conversations when a bot intent matches a rule.
#[derive(Parser)]
// Our own `help` subcommand (below) replaces clap's, which fails on `help --help`.
#[command(version = VERSION, about, disable_help_subcommand = true)]
pub struct Cli {
    // What to do (a subcommand field takes no help of its own).
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; each variant's doc comment is its help.
#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon against Genesys Cloud.
    Run(RunArgs),
    /// Replay frames recorded by `run --record` through a config's rules; nothing is sent.
    ///
    /// The frames go through the daemon's own parser, state map and rules, with no
    /// network. Use it to test rule edits on real traffic before a reload: record with the
    /// running config, edit a copy, replay the recording with the copy, compare the
    /// decisions. One line per decision (conversation id, rule, intent, source, time),
    /// then a summary (frames, conversations, decisions by rule, frames that failed to
    /// parse). Lines that are not recorded frames are reported with their line number
    /// and skipped. Intake calls and REST reads are not in a recording: decisions the
    /// daemon made on those do not appear.
    Replay(ReplayArgs),
    /// Validate a config and print what would run; no network I/O unless --online.
    Check(CheckArgs),
    /// Print decisions, steps and outcomes from the journal (works while the daemon runs).
    History(HistoryArgs),
    /// Run the built-in simulator and the daemon together on loopback.
    Demo(DemoArgs),
    /// Run the stream's fault matrix against the simulator and print a table (each
    /// scenario: matched, confirmed, lost, duplicate closes, REST requests, recovery).
    FaultMatrix,
    /// A burst of matching conversations against the simulator with the org's rate limit
    /// on; prints a table (bench/burst.sh).
    Burst(BurstArgs),
    /// Decision latency against the simulator with other events flowing: intent event
    /// -> disconnect request, and intake request -> disconnect request (bench/latency.sh).
    Latency(LatencyArgs),
    /// Run the Genesys simulator alone (for pointing a daemon at it by hand).
    Sim(SimArgs),
    /// Print shell completions or a man page on stdout, or write them all into a
    /// directory for a package (see README.md).
    #[command(hide = true)]
    Generate {
        // Which files.
        #[command(subcommand)]
        what: Generate,
    },
    /// Print this message or the help of the given subcommand(s).
    Help {
        /// The subcommand (and its subcommands) to describe.
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
}
