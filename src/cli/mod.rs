//! The commands, one file each; `main` parses the command line ([`args`]) and calls one.
//!
//! Each command returns an [`Exit`]; what it does lives in the library, what is here is
//! reading options, printing and choosing the status.

pub mod args;
pub mod check;
pub mod demo;
pub mod generate;
pub mod help;
pub mod history;
pub mod replay;
pub mod run;
pub mod signals;
pub mod sim;

use std::io::Write as _;
use std::path::Path;

use genesys_closer::config::{Config, Exit};

/// `--version`: the package version and the git commit it was built from (build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GIT_COMMIT"), ")");

/// The config at `path`, or its errors printed and [`Exit::BadConfig`].
pub fn load(path: &Path) -> Result<Config, Exit> {
    Config::load(path).map_err(|e| {
        eprint!("{e}");
        Exit::BadConfig
    })
}

/// Prints to stdout; a closed pipe (`check | head`) is not an error worth a panic.
pub fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// [`Exit::Ok`] if `passed`, else [`Exit::Failure`] (a lab run that missed its bar).
pub fn passed(passed: bool) -> Exit {
    if passed { Exit::Ok } else { Exit::Failure }
}
