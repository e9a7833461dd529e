//! One updating status line on stderr for a person at a terminal (`demo`), which log
//! lines pass above instead of garbling: every log line goes through [`stderr`], which
//! erases the status line, writes the log line, and draws the status line again.
//!
//! Nothing here writes anything unless a [`StatusLine`] exists, and one exists only
//! while stderr is a terminal: into a pipe, a file or journald the output is unchanged.

use std::io::{self, IsTerminal, Write};
use std::sync::{Mutex, MutexGuard};

/// The status line on screen now (empty: none).
static SHOWN: Mutex<String> = Mutex::new(String::new());

fn shown() -> MutexGuard<'static, String> {
    SHOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blanks `line` out (spaces, not escape codes: works on any terminal).
fn erase(out: &mut impl Write, line: &str) -> io::Result<()> {
    if !line.is_empty() {
        write!(out, "\r{:width$}\r", "", width = line.chars().count())?;
    }
    Ok(())
}

/// The status line; erased when dropped.
#[derive(Debug)]
pub struct StatusLine(());

impl StatusLine {
    /// A status line when stderr is a terminal, else `None` (print nothing extra).
    pub fn for_terminal() -> Option<StatusLine> {
        io::stderr().is_terminal().then_some(StatusLine(()))
    }

    /// Replaces the text shown (keep it shorter than a terminal line).
    pub fn set(&self, text: &str) {
        let mut shown = shown();
        let mut err = io::stderr().lock();
        let _ = erase(&mut err, &shown);
        let _ = write!(err, "\r{text}");
        let _ = err.flush();
        shown.clear();
        shown.push_str(text);
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        let mut shown = shown();
        let mut err = io::stderr().lock();
        let _ = erase(&mut err, &shown);
        let _ = err.flush();
        shown.clear();
    }
}

/// The log writer: stderr, keeping a status line below the log lines.
pub fn stderr() -> Stderr {
    Stderr
}

/// See [`stderr`].
#[derive(Debug)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shown = shown();
        let mut err = io::stderr().lock();
        if shown.is_empty() {
            return err.write(buf);
        }
        erase(&mut err, &shown)?;
        err.write_all(buf)?;
        if buf.ends_with(b"\n") {
            write!(err, "{shown}")?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
