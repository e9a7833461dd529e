//! The `genesys-closer` command: parses the command line and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::fmt::Write as _;
use std::io::Write as _;

use clap::{CommandFactory, Parser, Subcommand};
use genesys_closer::config::{Config, EXIT_BAD_CONFIG, EXIT_CREDENTIALS, SecretSource};
use genesys_closer::lab::demo;
use genesys_closer::{daemon, genesys, telemetry};
use genesys_sim as sim;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `--version`: the package version and the git commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GIT_COMMIT"), ")");

/// Ends Genesys Cloud messaging conversations when a bot intent matches a rule.
#[derive(Parser)]
// Our own `help` subcommand (below) replaces clap's, which fails on `help --help`.
#[command(version = VERSION, about, disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon against Genesys Cloud.
    Run {
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
        #[arg(long, value_name = "SIZE", default_value = "100MB", value_parser = genesys_closer::record::parse_size)]
        record_max: u64,
    },
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
    Replay {
        /// Path to the TOML config whose rules are tried.
        #[arg(long, default_value = "/etc/genesys-closer/config.toml")]
        config: PathBuf,
        /// JSON lines: one per decision, then the summary (`"type"` tells which).
        #[arg(long)]
        json: bool,
        /// Recording files, oldest first (FILE.1 before FILE to span a rotation).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate a config and print what would run; no network I/O unless --online.
    Check {
        /// Path to the TOML config.
        #[arg(long, default_value = "/etc/genesys-closer/config.toml")]
        config: PathBuf,
        /// Also log in and check every topic family the config uses against
        /// GET /api/v2/notifications/availabletopics; exit 1 if one cannot work.
        #[arg(long)]
        online: bool,
    },
    /// Print decisions, steps and outcomes from the journal (works while the daemon runs).
    History {
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
        #[arg(long, value_name = "WHEN", value_parser = genesys_closer::journal::history::Since::parse)]
        since: Option<genesys_closer::journal::history::Since>,
        /// Only this conversation.
        #[arg(long)]
        conversation: Option<String>,
        /// Only conversations whose close ended with OUTCOME in the period.
        #[arg(
            long,
            value_name = "OUTCOME",
            value_parser = clap::builder::PossibleValuesParser::new(
                genesys_closer::journal::history::outcome_names()
            ),
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
    },
    /// Run the built-in simulator and the daemon together on loopback.
    Demo {
        /// Stop after this many conversations and print a JSON summary as the last line.
        #[arg(long)]
        conversations: Option<u64>,
        /// New conversations per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Which paths to create conversations on, in rotation, comma-separated: queue,
        /// flow (flow discovery, intent on .attributes), flow+intake (flow discovery,
        /// intent posted by the data action), trigger (.customer.start trigger posts the
        /// id and eventTime, intent on .attributes), intake (the data action alone).
        /// Default: those five. Also: trigger-late (the trigger calls after the bot set
        /// its intent), trigger-no-time (the trigger passes no eventTime).
        #[arg(long, value_delimiter = ',', value_parser = parse_path)]
        paths: Vec<demo::Shape>,
    },
    /// Run the stream's fault matrix against the simulator and print a table (each
    /// scenario: matched, confirmed, lost, duplicate closes, REST requests, recovery).
    FaultMatrix,
    /// A burst of matching conversations against the simulator with the org's rate limit
    /// on; prints a table (bench/burst.sh).
    Burst {
        /// Conversations created at once.
        #[arg(long, default_value_t = 1000)]
        conversations: usize,
        /// The simulated org's limit, requests per 60 s (0: none).
        #[arg(long, default_value_t = 300)]
        sim_limit: u32,
        /// The daemon's budget, requests per minute.
        #[arg(long, default_value_t = 240)]
        requests_per_minute: u32,
    },
    /// Decision latency against the simulator with other events flowing: intent event
    /// -> disconnect request, and intake request -> disconnect request (bench/latency.sh).
    Latency {
        /// Measurements of each path.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Other conversation frames per second meanwhile.
        #[arg(long, default_value_t = 10000)]
        background: u32,
    },
    /// Run the Genesys simulator alone (for pointing a daemon at it by hand).
    Sim {
        /// Address to listen on: loopback unless --allow-remote.
        #[arg(long, default_value = "127.0.0.1:8900")]
        listen: std::net::SocketAddr,
        /// Allow a --listen address other machines can reach (the simulator's
        /// credentials are fixed and printed: anyone who reaches it can use it).
        #[arg(long)]
        allow_remote: bool,
        /// New conversations per second from the built-in generator (0: none).
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Heartbeat interval, e.g. "30s".
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// A fault on a timetable, NAME@SECONDS[:ARG], repeatable; e.g.
        /// `--fault socket-closing@30:60 --fault 429@90:10`. Names: drop, stall:SECS,
        /// socket-closing[:SECS], expire, no-longer-subscribed, drop-topics, revoke,
        /// STATUS:SECS (429:10, 503:5), bad-frames, duplicate, reorder.
        #[arg(long = "fault", value_parser = parse_fault)]
        faults: Vec<sim::ScriptedFault>,
    },
    /// Print shell completions or a man page on stdout, or write them all into a
    /// directory for a package (see README.md).
    #[command(hide = true)]
    Generate {
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

#[derive(Subcommand)]
enum Generate {
    /// Completions for a shell, e.g.
    /// `genesys-closer generate completions bash | sudo tee /usr/share/bash-completion/completions/genesys-closer`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff), e.g. `genesys-closer generate man | sudo tee
    /// /usr/share/man/man1/genesys-closer.1`; with COMMAND, that subcommand's page.
    Man {
        /// A subcommand (`run`, `check`, ...).
        command: Option<String>,
    },
    /// Every man page and the bash, zsh and fish completions, written into DIR (what
    /// pkg/build-deb.sh packages): DIR/man/genesys-closer.1, one
    /// DIR/man/genesys-closer-COMMAND.1 per command, and DIR/completions/ with
    /// genesys-closer.bash, _genesys-closer and genesys-closer.fish. Prints each path.
    All {
        /// Where to write (created if needed).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that need no async runtime.
    let command = match cli.command {
        Command::Help { command } => return help(&command),
        Command::Generate { what } => return generate(what),
        Command::Replay {
            config,
            json,
            files,
        } => return replay(&config, &files, json),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match command {
            Command::Check { config, online } => {
                let code = check(&config);
                if online && code == ExitCode::SUCCESS {
                    check_online(&config).await
                } else {
                    code
                }
            }
            Command::Run {
                config,
                record,
                record_max,
            } => run(&config, record.as_deref(), record_max).await,
            Command::History {
                config,
                state_dir,
                since,
                conversation,
                outcome,
                unfinished,
                json,
            } => history(
                &config,
                state_dir,
                &genesys_closer::journal::history::Options {
                    since,
                    conversation,
                    outcome,
                    unfinished,
                    json,
                },
            ),
            Command::Demo {
                conversations,
                rate,
                paths,
            } => run_demo(conversations, rate, paths).await,
            Command::FaultMatrix => run_matrix().await,
            Command::Latency {
                samples,
                background,
            } => match genesys_closer::lab::latency::run(samples, background).await {
                Ok(r) => {
                    println!("{r}");
                    if r.missing == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: latency could not run: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Command::Burst {
                conversations,
                sim_limit,
                requests_per_minute,
            } => run_burst(conversations, sim_limit, requests_per_minute).await,
            Command::Sim {
                listen,
                allow_remote,
                rate,
                heartbeat,
                faults,
            } => {
                if !allow_remote && !listen.ip().is_loopback() {
                    eprintln!(
                        "error: --listen {listen} is not a loopback address: other machines \
                         could reach the simulator, whose credentials are fixed and printed; \
                         add --allow-remote to listen there anyway"
                    );
                    return ExitCode::from(EXIT_BAD_CONFIG as u8);
                }
                run_sim(listen, rate, heartbeat, faults).await
            }
            Command::Help { .. } | Command::Generate { .. } | Command::Replay { .. } => {
                unreachable!("handled before the runtime starts")
            }
        }
    })
}

/// `help [COMMAND]...`: the long help of the command named (of the program without one).
fn help(path: &[String]) -> ExitCode {
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
                return ExitCode::from(2);
            }
        }
    }
    match current.print_long_help() {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// `generate completions SHELL` / `generate man [COMMAND]` on stdout; `generate all`
/// into a directory.
fn generate(what: Generate) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let written = match what {
        Generate::Completions { shell } => {
            // Into memory first: the generator panics on a write error (a closed pipe).
            out.write_all(&completion(shell))
        }
        Generate::Man { command } => match man_page(command.as_deref()) {
            Some(page) => out.write_all(&page),
            None => {
                eprintln!("error: no subcommand '{}'", command.unwrap_or_default());
                return ExitCode::from(2);
            }
        },
        Generate::All { dir } => match generate_all(&dir) {
            Ok(paths) => paths
                .iter()
                .try_for_each(|p| writeln!(out, "{}", p.display())),
            Err(e) => {
                eprintln!("error: cannot write into {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    };
    // `generate man | head` closing the pipe early is not worth an error.
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// The completion files a package installs: (file name, shell).
const COMPLETIONS: [(&str, clap_complete::Shell); 3] = [
    ("genesys-closer.bash", clap_complete::Shell::Bash),
    ("_genesys-closer", clap_complete::Shell::Zsh),
    ("genesys-closer.fish", clap_complete::Shell::Fish),
];

fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "genesys-closer", &mut script);
    script
}

/// The command as the man pages describe it: built (so subcommands know their full
/// names) and without `help`, which gets no page of its own.
fn man_command() -> clap::Command {
    let mut cmd = Cli::command().mut_subcommand("help", |h| h.hide(true));
    cmd.build();
    cmd
}

/// The commands that get a page (and a line in the top page): the visible ones.
fn man_subcommands(cmd: &clap::Command) -> Vec<&clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect()
}

/// The top page (`None`) or a subcommand's; `None` if there is no such subcommand.
fn man_page(command: Option<&str>) -> Option<Vec<u8>> {
    let cmd = man_command();
    let (page, extra) = match command {
        None => {
            let names: Vec<String> = man_subcommands(&cmd)
                .iter()
                .map(|s| format!("genesys-closer-{}", s.get_name()))
                .collect();
            (cmd.clone(), top_page_sections(&names))
        }
        Some(name) => (
            cmd.find_subcommand(name)?.clone().version(VERSION),
            ".SH \"SEE ALSO\"\n\\fBgenesys\\-closer\\fR(1): the exit statuses, the \
             environment and the files of every command\n"
                .to_string(),
        ),
    };
    let man = clap_mangen::Man::new(page.clone()).source(format!("genesys-closer {VERSION}"));
    // clap_mangen's own sections, with ours before VERSION (writing to memory cannot fail).
    let mut out = Vec::new();
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    if page.get_arguments().any(|a| !a.is_hide_set()) {
        let _ = man.render_options_section(&mut out);
    }
    if !man_subcommands(&page).is_empty() {
        let _ = man.render_subcommands_section(&mut out);
    }
    out.extend_from_slice(extra.as_bytes());
    let _ = man.render_version_section(&mut out);
    // Each render call starts with the same two-line preamble (it defines the `Aq`
    // apostrophe); the first is enough.
    let text = String::from_utf8_lossy(&out);
    let preamble = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let body = text.replace(preamble, "");
    Some(format!("{preamble}{body}").into_bytes())
}

/// Text for roff: backslashes, hyphens and apostrophes escaped as clap_mangen does (a
/// bare `-` may print as a hyphen, which cannot be copied into a shell).
fn roff(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('\'', "\\*(Aq")
}

/// EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO of the top page; SEE ALSO names
/// `pages`, exactly the subcommand pages written.
fn top_page_sections(pages: &[String]) -> String {
    use genesys_closer::config::{
        FEED_TOKEN_ENV, INTAKE_TOKEN_CREDENTIAL, INTAKE_TOKEN_ENV, SECRET_ENV,
    };
    // One line tells of both uses of 65.
    const _: () = assert!(genesys_closer::replay::EXIT_NOT_A_RECORDING as i32 == EXIT_CREDENTIALS);
    let exit = [
        (
            0,
            "Success; for run, stopped by SIGTERM or SIGINT after draining.",
        ),
        (
            1,
            "Any other failure: run stopped on an error; a file or the journal cannot be \
             read; check --online found a topic family that cannot work; a demo, \
             fault-matrix, burst or latency run missed its bar.",
        ),
        (
            2,
            "The command line cannot be parsed (an unknown option or command, a bad value).",
        ),
        (
            EXIT_BAD_CONFIG,
            "The configuration cannot be used (EX_USAGE): the file is invalid, a secret or \
             token it needs is missing or unreadable (check says which), or run cannot use \
             the state directory; run --record cannot open its file; sim --listen names an \
             address that is not loopback without --allow-remote. The systemd unit does not \
             restart on it.",
        ),
        (
            EXIT_CREDENTIALS,
            "run and check --online: Genesys refused the OAuth client credentials (the unit \
             does not restart on it). replay: a file holds no recorded frame (EX_DATAERR).",
        ),
        (
            130,
            "run: a second SIGTERM or SIGINT while draining; it exits at once, and the \
             closes in flight stay in the journal for the next start.",
        ),
    ];
    let env = [
        (
            SECRET_ENV,
            "The OAuth client secret, when the config sets no client_secret_file and \
             CREDENTIALS_DIRECTORY holds no client_secret."
                .to_string(),
        ),
        (
            "CREDENTIALS_DIRECTORY",
            format!(
                "Set by systemd for LoadCredential=: the files client_secret and \
                 {INTAKE_TOKEN_CREDENTIAL} are read from it."
            ),
        ),
        (
            INTAKE_TOKEN_ENV,
            format!(
                "The intake endpoint's credential, when [intake] sets no token_file and \
                 CREDENTIALS_DIRECTORY holds no {INTAKE_TOKEN_CREDENTIAL}."
            ),
        ),
        (
            FEED_TOKEN_ENV,
            "The bearer token of the outcome feed's POSTs, when [feed] sets no token_file.".into(),
        ),
        (
            "RUST_LOG",
            "A log filter (e.g. genesys_closer=debug) that overrides [log] level.".into(),
        ),
        (
            "NO_COLOR",
            "When set and not empty, log lines on a terminal are not coloured.".into(),
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd when stderr goes to the journal: each log line then starts with \
             its syslog priority, so journalctl -p works."
                .into(),
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "Set by systemd (Type=notify, WatchdogSec=): run reports READY=1, STATUS=, \
             RELOADING=1 and STOPPING=1 there, and keeps the watchdog fed from its event \
             loop."
                .into(),
        ),
    ];
    let files = [
        (
            "/etc/genesys-closer/config.toml",
            "The configuration (--config).",
        ),
        (
            "/var/lib/genesys-closer/journal.sqlite3",
            "The journal of decisions, steps and outcomes ([daemon] state_dir), read by history.",
        ),
    ];
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for (code, text) in &exit {
        let _ = writeln!(s, ".TP\n\\fB{code}\\fR\n{}", roff(text));
    }
    s.push_str(".SH ENVIRONMENT\n");
    for (name, text) in &env {
        let _ = writeln!(s, ".TP\n\\fB{}\\fR\n{}", roff(name), roff(text));
    }
    s.push_str(".SH FILES\n");
    for (path, text) in &files {
        let _ = writeln!(s, ".TP\n\\fI{}\\fR\n{}", roff(path), roff(text));
    }
    // Left-aligned: justifying a list of long names leaves wide gaps.
    s.push_str(".SH \"SEE ALSO\"\n.ad l\n");
    let refs: Vec<String> = pages
        .iter()
        .map(|p| format!("\\fB\\%{}\\fR(1)", roff(p)))
        .collect();
    let _ = writeln!(s, "{}", refs.join(",\n"));
    s.push_str(".PP\nREADME.md in /usr/share/doc/genesys\\-closer/ (set\\-up, rules, the journal, metrics)\n");
    s
}

/// `generate all --dir DIR`: every man page and completion file; returns their paths.
fn generate_all(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let (man_dir, completion_dir) = (dir.join("man"), dir.join("completions"));
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completion_dir)?;
    let cmd = man_command();
    let mut pages: Vec<(String, Option<&str>)> = vec![("genesys-closer".into(), None)];
    pages.extend(man_subcommands(&cmd).into_iter().map(|s| {
        (
            format!("genesys-closer-{}", s.get_name()),
            Some(s.get_name()),
        )
    }));
    let mut written = Vec::new();
    for (name, command) in pages {
        let path = man_dir.join(format!("{name}.1"));
        let page =
            man_page(command).ok_or_else(|| std::io::Error::other(format!("no page {name}")))?;
        std::fs::write(&path, page)?;
        written.push(path);
    }
    for (file, shell) in COMPLETIONS {
        let path = completion_dir.join(file);
        std::fs::write(&path, completion(shell))?;
        written.push(path);
    }
    Ok(written)
}

/// `replay`: recorded frames through the parser, the state map and the rules.
fn replay(config: &std::path::Path, files: &[PathBuf], json: bool) -> ExitCode {
    use genesys_closer::replay::{Item, JsonLine, Replay};
    const BAD_LINES_SHOWN: u64 = 20;
    let config = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut replay = Replay::new(&config);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut bad_shown = 0u64;
    // Files that held no recorded frame: the replay tested no rule on them.
    let mut not_recordings: Vec<(String, u64)> = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let fed = replay.feed(&name, std::io::BufReader::new(file), |item| match item {
            Item::Decision(d) => {
                let _ = if json {
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
                return ExitCode::FAILURE;
            }
        }
    }
    let summary = replay.summary();
    let _ = if json {
        writeln!(out, "{}", JsonLine::Summary(summary).to_json())
    } else {
        write!(out, "{}", summary.text())
    };
    let _ = out.flush();
    if not_recordings.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (name, lines) in &not_recordings {
        if *lines == 0 {
            eprintln!("error: {name} is empty: no recorded frame to replay");
        } else {
            eprintln!(
                "error: {name} holds no recorded frame ({lines} line(s), none written by \
                 `run --record`): it is not a recording"
            );
        }
    }
    ExitCode::from(genesys_closer::replay::EXIT_NOT_A_RECORDING)
}

/// `history`: the journal, read-only (the daemon may be running).
fn history(
    config: &std::path::Path,
    state_dir: Option<PathBuf>,
    options: &genesys_closer::journal::history::Options,
) -> ExitCode {
    use genesys_closer::journal::{self, history};
    let dir = match state_dir {
        Some(d) => d,
        None => match load(config) {
            Ok(c) => c.daemon.state_dir,
            Err(code) => return code,
        },
    };
    let report = journal::open_read(&dir)
        .and_then(|mut j| history::report(&mut j, options, journal::now_ms()));
    match report {
        Ok(text) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(EXIT_BAD_CONFIG as u8)
    })
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let topics = config.stream.topics();
    // The first line (OK, or what `run` would refuse) is written last, once known.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "api: {}  login: {}",
        config.genesys.api_url, config.genesys.login_url
    );
    let _ = writeln!(out, "client id: {}", config.genesys.client_id);
    let secret = match &config.genesys.secret {
        SecretSource::File(p) => format!("file {}", p.display()),
        SecretSource::Credential(p) => format!("systemd credential {}", p.display()),
        SecretSource::Env => format!(
            "environment variable {}",
            genesys_closer::config::SECRET_ENV
        ),
    };
    let loaded = genesys::auth::load_secret(&config.genesys.secret);
    // What `run` would refuse to start on; `check` then exits 64 too.
    let mut refuse: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    if let Err(e) = &loaded {
        refuse.push(e.to_string());
    }
    #[cfg(unix)]
    if let genesys_closer::config::SecretSource::File(p) = &config.genesys.secret {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(m) = std::fs::metadata(p)
            && m.permissions().mode() & 0o077 != 0
        {
            warnings.push(format!(
                "{} is readable by other users (mode {:o}): chmod 600 it",
                p.display(),
                m.permissions().mode() & 0o777
            ));
        }
    }
    for url in [&config.genesys.api_url, &config.genesys.login_url] {
        if let Some(host) = url.host_str()
            && !genesys_closer::config::known_genesys_host(host)
            && !genesys_closer::config::is_loopback(url)
        {
            warnings.push(format!(
                "{host} is not in a Genesys Cloud region the SDKs list: check `region` / the URLs"
            ));
        }
    }
    for (i, r) in config.rules.iter().enumerate() {
        if !r.queues.is_empty() && !r.queues.iter().any(|q| config.stream.queues.contains(q)) {
            warnings.push(format!(
                "rule \"{}\" only matches queues no [stream] queue watches ({}): no queue \
                 event can reach it",
                r.name,
                r.queues.join(", ")
            ));
        }
        let attr = |x: &genesys_closer::config::RuleConfig| {
            x.attribute
                .clone()
                .unwrap_or_else(|| config.intent_attribute.clone())
        };
        if let Some(earlier) = config.rules[..i].iter().find(|e| {
            e.queues.is_empty()
                && e.message_types.is_empty()
                && attr(e) == attr(r)
                && r.intents.iter().all(|x| e.intents.contains(x))
        }) {
            warnings.push(format!(
                "rule \"{}\" can never match: the earlier rule \"{}\" takes every intent it lists",
                r.name, earlier.name
            ));
        }
    }
    let _ = writeln!(
        out,
        "client secret: from {secret} ({})",
        match &loaded {
            Ok(_) => "present".to_string(),
            Err(e) => format!("NOT USABLE: {e}"),
        }
    );
    let _ = writeln!(
        out,
        "channels needed: {} for {} topic(s){}:",
        config.stream.channels_needed(),
        topics.len(),
        if config.stream.mirror && !topics.is_empty() {
            ", held twice (mirror = true)"
        } else {
            ""
        }
    );
    for t in &topics {
        let _ = writeln!(out, "  {t}");
    }
    let dir = &config.daemon.state_dir;
    let state = if dir.is_dir() {
        let probe = dir.join(".genesys-closer-check");
        let writable = std::fs::write(&probe, b"").is_ok();
        let _ = std::fs::remove_file(&probe);
        if writable {
            "writable"
        } else {
            "NOT WRITABLE: `run` would refuse to start"
        }
    } else if dir.exists() {
        "NOT A DIRECTORY: `run` would refuse to start"
    } else {
        "absent (created at start; with systemd, StateDirectory= creates it)"
    };
    let _ = writeln!(
        out,
        "journal: {} ({state}); retention {}, at most {} closes at once, {} REST requests/min",
        dir.display(),
        humantime::format_duration(config.daemon.retention),
        config.daemon.max_concurrent_closes,
        config.genesys.requests_per_minute
    );
    match &config.intake {
        None => {
            let _ = writeln!(out, "intake: off");
        }
        Some(i) => {
            let token = match genesys_closer::intake::load_token(&i.token) {
                Ok(_) => "present".to_string(),
                Err(e) => {
                    refuse.push("the intake credential is not usable".into());
                    format!("NOT USABLE ({e}): `run` would refuse to start")
                }
            };
            let _ = writeln!(
                out,
                "intake: POST {}://{}/v1/intents, credential {token}, verify {}",
                if i.tls.is_some() { "https" } else { "http" },
                i.listen,
                i.verify
            );
        }
    }
    match &config.metrics {
        None => {
            let _ = writeln!(out, "metrics: off");
        }
        Some(m) => {
            let _ = writeln!(
                out,
                "metrics: http://{}/metrics, /healthz, /readyz",
                m.listen
            );
        }
    }
    match &config.feed {
        None => {
            let _ = writeln!(out, "outcome feed: off");
        }
        Some(f) => {
            let mut to = Vec::new();
            if let Some(u) = &f.url {
                let token = match genesys_closer::feed::load_token(f) {
                    Ok(Some(_)) => "with a bearer token".to_string(),
                    Ok(None) => "without a token".to_string(),
                    Err(e) => {
                        refuse.push(e.clone());
                        format!("token NOT USABLE: {e}")
                    }
                };
                to.push(format!(
                    "POST {u} ({token}, timeout {})",
                    humantime::format_duration(f.timeout)
                ));
            }
            if let Some(p) = &f.file {
                to.push(format!("append to {}", p.display()));
            }
            let _ = writeln!(out, "outcome feed: {}", to.join("; "));
        }
    }
    let _ = writeln!(
        out,
        "stop: within {} of SIGTERM",
        humantime::format_duration(config.daemon.stop_timeout)
    );
    let _ = writeln!(out, "global dry run: {}", config.dry_run);
    let _ = writeln!(out, "rules ({}), first match wins:", config.rules.len());
    for r in &config.rules {
        let attribute = r.attribute.as_deref().unwrap_or(&config.intent_attribute);
        let mut line = format!("  {}: {} in {:?}", r.name, attribute, r.intents);
        if !r.queues.is_empty() {
            line += &format!(", queues {:?}", r.queues);
        }
        if !r.message_types.is_empty() {
            line += &format!(", types {:?}", r.message_types);
        }
        line += &format!(
            ", disconnect {}, confirm within {}",
            match r.disconnect {
                genesys_closer::config::DisconnectMode::Conversation => "conversation",
                genesys_closer::config::DisconnectMode::Customer => "customer",
            },
            humantime::format_duration(r.confirm_timeout)
        );
        if r.dry_run || config.dry_run {
            line += " (dry run)";
        }
        let _ = writeln!(out, "{line}");
    }
    for w in &warnings {
        let _ = writeln!(out, "WARNING: {w}");
    }
    if state.starts_with("NOT") {
        refuse.push(format!(
            "the state directory {} cannot be used",
            dir.display()
        ));
    }
    let head = if refuse.is_empty() {
        format!("{}: OK\n", path.display())
    } else {
        format!("{}: NOT OK: `run` would refuse to start\n", path.display())
    };
    print_out(&(head + &out));
    if !refuse.is_empty() {
        eprintln!(
            "{}: `run` would refuse to start: {}",
            path.display(),
            refuse.join("; ")
        );
        return ExitCode::from(EXIT_BAD_CONFIG as u8);
    }
    ExitCode::SUCCESS
}

/// Prints to stdout; a closed pipe (`check | head`) is not an error worth a panic.
fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// `check --online`: log in, ask `availabletopics`, print one line per topic family.
async fn check_online(path: &std::path::Path) -> ExitCode {
    let Ok(config) = Config::load(path) else {
        return ExitCode::from(EXIT_BAD_CONFIG as u8);
    };
    let secret = match genesys::auth::load_secret(&config.genesys.secret) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    let http = match genesys::api::ApiClient::http_client() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
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
    let code = match genesys::topics::check(&api, &config).await {
        // The same code as `run` on a refused credential: restarting cannot fix it.
        Err(e @ genesys::api::ApiError::Auth(_)) if !e.is_retryable() => {
            let _ = writeln!(out, "  error: {e}");
            let _ = writeln!(out, "online: the credentials were refused");
            ExitCode::from(EXIT_CREDENTIALS as u8)
        }
        Err(e) => {
            let _ = writeln!(out, "  error: {e}");
            ExitCode::FAILURE
        }
        Ok(reports) => {
            for r in &reports {
                let _ = writeln!(out, "  {r}");
            }
            if reports.iter().all(|r| r.usable()) {
                let _ = writeln!(out, "online: OK");
                ExitCode::SUCCESS
            } else {
                let _ = writeln!(out, "online: PROBLEMS (see the error lines)");
                ExitCode::FAILURE
            }
        }
    };
    print_out(&out);
    code
}

async fn run(
    path: &std::path::Path,
    record: Option<&std::path::Path>,
    record_max: u64,
) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let secret = match genesys::auth::load_secret(&config.genesys.secret) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    let intake_token = match &config.intake {
        None => None,
        Some(i) => match genesys_closer::intake::load_token(&i.token) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(EXIT_BAD_CONFIG as u8);
            }
        },
    };
    telemetry::init_logging(&config.log);
    let (recorder, recording) = match record {
        None => (None, None),
        Some(file) => match genesys_closer::record::start(file, record_max) {
            Ok((r, w)) => (Some(r), Some(w)),
            Err(e) => {
                eprintln!("error: cannot record frames to {}: {e}", file.display());
                return ExitCode::from(EXIT_BAD_CONFIG as u8);
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
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e @ daemon::DaemonError::Credentials(_)) => {
            // Restarting cannot fix a refused secret: a code of its own, which the unit
            // lists in RestartPreventExitStatus.
            tracing::error!(error = %e, exit_code = EXIT_CREDENTIALS, "daemon stopped");
            ExitCode::from(EXIT_CREDENTIALS as u8)
        }
        Err(e) => {
            tracing::error!(error = %e, "daemon stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run_burst(conversations: usize, sim_limit: u32, requests_per_minute: u32) -> ExitCode {
    let rate = (sim_limit > 0).then_some((sim_limit, Duration::from_secs(60)));
    match genesys_closer::lab::burst::run(conversations, rate, requests_per_minute).await {
        Ok(r) => {
            println!("{r}");
            if r.passes() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: burst could not run: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_matrix() -> ExitCode {
    let mut rows = Vec::new();
    for fault in genesys_closer::lab::matrix::Fault::ALL {
        eprintln!("fault matrix: {}", fault.name());
        match genesys_closer::lab::matrix::run(fault).await {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("error: scenario {:?} could not run: {e:#}", fault.name());
                return ExitCode::FAILURE;
            }
        }
    }
    print_out(&genesys_closer::lab::matrix::table(&rows));
    if rows.iter().all(|r| r.passes) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_path(name: &str) -> Result<demo::Shape, String> {
    demo::Shape::parse(name).ok_or_else(|| {
        let names: Vec<&str> = demo::Shape::NAMED.iter().map(|s| s.name()).collect();
        format!(
            "unknown path `{name}` (expected one of: {})",
            names.join(", ")
        )
    })
}

async fn run_demo(conversations: Option<u64>, rate: f64, paths: Vec<demo::Shape>) -> ExitCode {
    if !(rate.is_finite() && rate > 0.0) {
        eprintln!("error: --rate must be a positive number");
        return ExitCode::from(EXIT_BAD_CONFIG as u8);
    }
    let shutdown = CancellationToken::new();
    // The demo has nothing to reload: a SIGHUP is dropped with its channel.
    let (reload_tx, _) = mpsc::channel(1);
    tokio::spawn(wait_for_signal(shutdown.clone(), reload_tx));
    match demo::run(
        demo::DemoOptions {
            conversations,
            rate,
            paths,
        },
        shutdown,
    )
    .await
    {
        Ok(summary) => {
            match serde_json::to_string(&summary) {
                Ok(line) => print_out(&format!("{line}\n")),
                Err(e) => eprintln!("error: cannot print the summary: {e}"),
            }
            if summary.failed == 0 && summary.missing == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_fault(text: &str) -> Result<sim::ScriptedFault, String> {
    text.parse()
}

async fn run_sim(
    listen: std::net::SocketAddr,
    rate: f64,
    heartbeat: Duration,
    faults: Vec<sim::ScriptedFault>,
) -> ExitCode {
    telemetry::init_logging(&genesys_closer::config::LogConfig {
        format: genesys_closer::config::LogFormat::Human,
        level: "info".into(),
    });
    let cfg = sim::SimConfig {
        listen,
        heartbeat_interval: heartbeat,
        ..sim::SimConfig::default()
    };
    let generator = (rate > 0.0).then(|| sim::GeneratorConfig {
        total: None,
        rate_per_sec: rate,
        queue_ids: demo::DEMO_QUEUES.iter().map(|q| q.to_string()).collect(),
        intent_attribute: "Bot.Intent".into(),
        intents: vec![
            Some("Goodbye".into()),
            Some("CancelSubscription".into()),
            Some("TalkToAgent".into()),
            None,
        ],
        customer_leaves_after: Duration::from_secs(30),
    });
    match sim::serve_forever(cfg, generator, faults).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: simulator failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The next such signal, or never if it cannot be listened for.
#[cfg(unix)]
async fn next_signal(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(h) => {
            h.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// SIGTERM or SIGINT: drain (stop deciding, finish closes in flight). A second one: exit
/// now; what was in flight stays in the journal for the next start. SIGHUP: reload.
async fn wait_for_signal(shutdown: CancellationToken, reload: mpsc::Sender<()>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        let mut stops = 0;
        loop {
            tokio::select! {
                _ = next_signal(&mut term) => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = next_signal(&mut hup) => {
                    // Full queue: a reload is already pending, which reads the newest file.
                    let _ = reload.try_send(());
                    continue;
                }
            }
            stops += 1;
            if stops == 1 {
                shutdown.cancel();
            } else {
                tracing::warn!(
                    "second stop signal: exiting now; closes still in flight stay in the \
                     journal and the next start carries them on"
                );
                std::process::exit(130);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reload;
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    }
}
