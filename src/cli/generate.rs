//! `generate` (hidden): shell completions and man pages, on stdout or into a directory for
//! a package (pkg/build-deb.sh).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use genesys_closer::config::{
    Exit, FEED_TOKEN_ENV, INTAKE_TOKEN_CREDENTIAL, INTAKE_TOKEN_ENV, SECRET_ENV,
};

/// What `generate` writes.
#[derive(Subcommand)]
pub enum Generate {
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

/// The completion files a package installs: (file name, shell).
const COMPLETIONS: [(&str, clap_complete::Shell); 3] = [
    ("genesys-closer.bash", clap_complete::Shell::Bash),
    ("_genesys-closer", clap_complete::Shell::Zsh),
    ("genesys-closer.fish", clap_complete::Shell::Fish),
];

/// `generate completions SHELL` / `generate man [COMMAND]` on stdout; `generate all`
/// into a directory. `cli` is the whole command line's definition (handed down, so
/// this file does not import the one that lists it).
pub fn generate(what: Generate, cli: &clap::Command) -> Exit {
    let mut out = std::io::stdout().lock();
    let written = match what {
        Generate::Completions { shell } => {
            // Into memory first: the generator panics on a write error (a closed pipe).
            out.write_all(&completion(cli, shell))
        }
        Generate::Man { command } => match man_page(cli, command.as_deref()) {
            Some(page) => out.write_all(&page),
            None => {
                eprintln!("error: no subcommand '{}'", command.unwrap_or_default());
                return Exit::Usage;
            }
        },
        Generate::All { dir } => match generate_all(cli, &dir) {
            Ok(paths) => paths
                .iter()
                .try_for_each(|p| writeln!(out, "{}", p.display())),
            Err(e) => {
                eprintln!("error: cannot write into {}: {e}", dir.display());
                return Exit::Failure;
            }
        },
    };
    // `generate man | head` closing the pipe early is not worth an error.
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write to stdout: {e}");
            Exit::Failure
        }
        _ => Exit::Ok,
    }
}

/// The completion script for `shell`.
fn completion(cli: &clap::Command, shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli.clone(), "genesys-closer", &mut script);
    script
}

/// The command as the man pages describe it: built (so subcommands know their full
/// names) and without `help`, which gets no page of its own.
fn man_command(cli: &clap::Command) -> clap::Command {
    let mut cmd = cli.clone().mut_subcommand("help", |h| h.hide(true));
    cmd.build();
    cmd
}

/// The commands that get a page (and a line in the top page): the visible ones.
fn man_subcommands(cmd: &clap::Command) -> Vec<&clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect()
}

/// The top page (`None`) or a subcommand's; `None` if there is no such subcommand.
fn man_page(cli: &clap::Command, command: Option<&str>) -> Option<Vec<u8>> {
    let cmd = man_command(cli);
    let (page, extra) = match command {
        None => {
            let names: Vec<String> = man_subcommands(&cmd)
                .iter()
                .map(|s| format!("genesys-closer-{}", s.get_name()))
                .collect();
            (cmd.clone(), top_page_sections(&names))
        }
        Some(name) => (
            cmd.find_subcommand(name)?.clone().version(super::VERSION),
            ".SH \"SEE ALSO\"\n\\fBgenesys\\-closer\\fR(1): the exit statuses, the \
             environment and the files of every command\n"
                .to_string(),
        ),
    };
    let man =
        clap_mangen::Man::new(page.clone()).source(format!("genesys-closer {}", super::VERSION));
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
    // The statuses as the library lists them; both meanings of 65 in one entry.
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for (code, text) in Exit::by_code() {
        let _ = writeln!(s, ".TP\n\\fB{code}\\fR\n{}", roff(&text));
    }
    s.push_str(".SH ENVIRONMENT\n");
    for (name, text) in environment() {
        let _ = writeln!(s, ".TP\n\\fB{}\\fR\n{}", roff(name), roff(&text));
    }
    s.push_str(".SH FILES\n");
    for (path, text) in FILES {
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

/// The top page's FILES: (path, what it is).
const FILES: [(&str, &str); 2] = [
    (
        "/etc/genesys-closer/config.toml",
        "The configuration (--config).",
    ),
    (
        "/var/lib/genesys-closer/journal.sqlite3",
        "The journal of decisions, steps and outcomes ([daemon] state_dir), read by history.",
    ),
];

/// The top page's ENVIRONMENT: (variable, what it does).
fn environment() -> [(&'static str, String); 8] {
    [
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
    ]
}

/// `generate all --dir DIR`: every man page and completion file; returns their paths.
fn generate_all(cli: &clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (man_dir, completion_dir) = (dir.join("man"), dir.join("completions"));
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completion_dir)?;
    let cmd = man_command(cli);
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
        let page = man_page(cli, command)
            .ok_or_else(|| std::io::Error::other(format!("no page {name}")))?;
        std::fs::write(&path, page)?;
        written.push(path);
    }
    for (file, shell) in COMPLETIONS {
        let path = completion_dir.join(file);
        std::fs::write(&path, completion(cli, shell))?;
        written.push(path);
    }
    Ok(written)
}
