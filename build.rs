//! Embeds the git commit for `--version` (`genesys-closer 0.1.0 (abc1234)`).
//!
//! `GENESYS_CLOSER_COMMIT` in the environment wins (a build from a source tarball);
//! otherwise `git rev-parse --short HEAD`, or "unknown" without git or a repository.
//! Reruns only when HEAD or the branch it points at moves, not on every build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=GENESYS_CLOSER_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = match std::env::var("GENESYS_CLOSER_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Watch the files that move with a commit; paths from git itself, so a
            // worktree (where .git is a file) works too.
            for name in ["HEAD", "packed-refs"] {
                if let Some(p) = git(&["rev-parse", "--git-path", name])
                    && std::path::Path::new(&p).exists()
                {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(p) = git(&["rev-parse", "--git-path", &branch])
                && std::path::Path::new(&p).exists()
            {
                println!("cargo:rerun-if-changed={p}");
            }
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=GIT_COMMIT={commit}");
}
