//! The `genesys-closer` command: parses the command line and hands it to one command in
//! [`cli`] (a file each); the library does the work.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use cli::args::{Cli, Command};
use genesys_closer::config::Exit;

fn main() -> ExitCode {
    let command = match Cli::parse().command {
        // The commands that need no async runtime.
        Command::Help { command } => return cli::help::help(&command).into(),
        Command::Generate { what } => {
            return cli::generate::generate(what, &Cli::command()).into();
        }
        Command::Replay(args) => return cli::replay::replay(&args).into(),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    runtime.block_on(dispatch(command)).into()
}

/// The commands that run inside the async runtime.
async fn dispatch(command: Command) -> Exit {
    match command {
        Command::Check(args) => cli::check::check(args).await,
        Command::Run(args) => cli::run::run(args).await,
        Command::History(args) => cli::history::history(args),
        Command::Demo(args) => cli::demo::demo(args).await,
        Command::FaultMatrix => cli::demo::fault_matrix().await,
        Command::Latency(args) => cli::demo::latency(args).await,
        Command::Burst(args) => cli::demo::burst(args).await,
        Command::Sim(args) => cli::sim::sim(args).await,
        Command::Help { .. } | Command::Generate { .. } | Command::Replay(_) => {
            unreachable!("handled before the runtime starts")
        }
    }
}
