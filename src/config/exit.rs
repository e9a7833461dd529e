//! The process's exit statuses, in one list: the binary returns them, the man page's EXIT
//! STATUS section is written from them, and the systemd unit's `RestartPreventExitStatus`
//! names two of them. Imports nothing of the crate.

/// How a command ends, as the operator sees it in `$?`.
///
/// Two meanings share 65, on purpose: `run` and `check --online` use it for refused
/// credentials, `replay` for a file that is not a recording (sysexits' `EX_DATAERR`: the
/// input is not what the command reads). No caller runs both commands and could confuse
/// them, and the man page tells of both on one line. So the status is [`Exit::code`], not
/// the enum's discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what it was asked.
    Ok,
    /// 1: any other failure.
    Failure,
    /// 2: the command line cannot be parsed (what clap itself exits with).
    Usage,
    /// 64 (`EX_USAGE`): the configuration, or a file or credential it names, cannot be
    /// used; restarting cannot fix it.
    BadConfig,
    /// 65: Genesys refused the OAuth client credentials; restarting cannot fix it.
    Credentials,
    /// 65 (`EX_DATAERR`): `replay` was given a file with no recorded frame.
    NotARecording,
    /// 130: a second SIGTERM or SIGINT while draining.
    Interrupted,
}

impl Exit {
    /// Every status, lowest code first, as the man page lists them.
    pub const ALL: [Exit; 7] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::BadConfig,
        Exit::Credentials,
        Exit::NotARecording,
        Exit::Interrupted,
    ];

    /// The process's exit status.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::BadConfig => 64,
            Exit::Credentials | Exit::NotARecording => 65,
            Exit::Interrupted => 130,
        }
    }

    /// When a command ends with this status, for the man page (statuses that share a
    /// code are printed one after the other, in one entry).
    pub const fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "Success; for run, stopped by SIGTERM or SIGINT after draining.",
            Exit::Failure => {
                "Any other failure: run stopped on an error; a file or the journal cannot be \
                 read; check --online found a topic family that cannot work; a demo, \
                 fault-matrix, burst or latency run missed its bar."
            }
            Exit::Usage => {
                "The command line cannot be parsed (an unknown option or command, a bad value)."
            }
            Exit::BadConfig => {
                "The configuration cannot be used (EX_USAGE): the file is invalid, a secret or \
                 token it needs is missing or unreadable (check says which), or run cannot use \
                 the state directory; run --record cannot open its file; sim --listen names an \
                 address that is not loopback without --allow-remote. The systemd unit does not \
                 restart on it."
            }
            Exit::Credentials => {
                "run and check --online: Genesys refused the OAuth client credentials (the unit \
                 does not restart on it)."
            }
            Exit::NotARecording => "replay: a file holds no recorded frame (EX_DATAERR).",
            Exit::Interrupted => {
                "run: a second SIGTERM or SIGINT while draining; it exits at once, and the \
                 closes in flight stay in the journal for the next start."
            }
        }
    }

    /// The statuses grouped by code, lowest first: (code, the meanings joined by a space).
    pub fn by_code() -> Vec<(u8, String)> {
        let mut list: Vec<(u8, String)> = Vec::new();
        for exit in Exit::ALL {
            match list.last_mut() {
                Some((code, text)) if *code == exit.code() => {
                    text.push(' ');
                    text.push_str(exit.meaning());
                }
                _ => list.push((exit.code(), exit.meaning().to_string())),
            }
        }
        list
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones_and_only_65_is_shared() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 64, 65, 65, 130]);
        let grouped: Vec<u8> = Exit::by_code().iter().map(|(c, _)| *c).collect();
        assert_eq!(grouped, [0, 1, 2, 64, 65, 130]);
        let (_, both) = &Exit::by_code()[4];
        assert!(both.starts_with("run and check --online") && both.ends_with("(EX_DATAERR)."));
    }
}
