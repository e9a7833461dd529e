//! `help [COMMAND]...`: clap's own `help` subcommand fails on `help --help`.

use clap::CommandFactory as _;
use genesys_closer::config::Exit;

use super::args::Cli;

/// The long help of the command named (of the program without one).
pub fn help(path: &[String]) -> Exit {
    let mut cmd = Cli::command();
    // Built first, so a subcommand's usage line names the program.
    cmd.build();
    let mut current = &mut cmd;
    for name in path {
        match current.find_subcommand_mut(name) {
            Some(sub) => current = sub,
            None => {
                eprintln!(
                    "error: unrecognized subcommand '{name}'\n\nFor a list of subcommands, \
                     try 'genesys-closer help'."
                );
                return Exit::Usage;
            }
        }
    }
    match current.print_long_help() {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Failure,
    }
}
