//! `replay`: frames recorded by `run --record` through the parser, the state map and the
//! rules ([`genesys_closer::replay`]), offline.

use std::io::Write as _;
use std::path::PathBuf;

use genesys_closer::config::Exit;
use genesys_closer::replay::{Item, JsonLine, Replay};

use super::load;

/// Bad lines named on stderr, at most (the summary counts them all).
const BAD_LINES_SHOWN: u64 = 20;

/// `replay`'s options.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Path to the TOML config whose rules are tried.
    #[arg(long, default_value = "/etc/genesys-closer/config.toml")]
    config: PathBuf,
    /// JSON lines: one per decision, then the summary (`"type"` tells which).
    #[arg(long)]
    json: bool,
    /// Recording files, oldest first (FILE.1 before FILE to span a rotation).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

/// One line per decision and the summary on stdout; [`Exit::NotARecording`] when a file
/// held no recorded frame, so a wrong file is not mistaken for "no rule matched".
pub fn replay(args: &ReplayArgs) -> Exit {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let mut replay = Replay::new(&config);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut bad_shown = 0u64;
    // Files that held no recorded frame: the replay tested no rule on them.
    let mut not_recordings: Vec<(String, u64)> = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                return Exit::Failure;
            }
        };
        let fed = replay.feed(&name, std::io::BufReader::new(file), |item| match item {
            Item::Decision(d) => {
                let _ = if args.json {
                    writeln!(out, "{}", JsonLine::Decision(&d).to_json())
                } else {
                    writeln!(out, "{}", d.text_line())
                };
            }
            Item::Bad(b) => {
                bad_shown += 1;
                if bad_shown <= BAD_LINES_SHOWN {
                    eprintln!("warning: {}:{}: skipped: {}", b.file, b.line, b.error);
                }
            }
        });
        match fed {
            Ok(totals) if totals.no_frames() => not_recordings.push((name, totals.lines)),
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                return Exit::Failure;
            }
        }
    }
    let summary = replay.summary();
    let _ = if args.json {
        writeln!(out, "{}", JsonLine::Summary(summary).to_json())
    } else {
        write!(out, "{}", summary.text())
    };
    let _ = out.flush();
    not_a_recording(&not_recordings)
}

/// Names each file (name, lines) that held no recorded frame; [`Exit::NotARecording`]
/// if there is one.
fn not_a_recording(files: &[(String, u64)]) -> Exit {
    if files.is_empty() {
        return Exit::Ok;
    }
    for (name, lines) in files {
        if *lines == 0 {
            eprintln!("error: {name} is empty: no recorded frame to replay");
        } else {
            eprintln!(
                "error: {name} holds no recorded frame ({lines} line(s), none written by \
                 `run --record`): it is not a recording"
            );
        }
    }
    Exit::NotARecording
}
