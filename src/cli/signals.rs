//! SIGTERM, SIGINT and SIGHUP for `run` and `demo`: the first stop drains, a second exits
//! at once, a hangup asks for a reload.

use genesys_closer::config::Exit;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
pub async fn wait_for_signal(shutdown: CancellationToken, reload: mpsc::Sender<()>) {
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
                std::process::exit(Exit::Interrupted.code().into());
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reload;
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(Exit::Interrupted.code().into());
    }
}
