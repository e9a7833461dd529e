//! The fault matrix, one test per fault: matching conversations keep arriving on the
//! queue path and the bot-phase path while the simulator misbehaves. Every fault that
//! strikes one channel or socket (as Genesys's own do: `no_longer_subscribed`, a vanished
//! channel, a dropped or stalled socket, topics dropped) and every REST or frame fault
//! must lose nothing and close nothing twice; planned transitions (socket_closing,
//! channel expiry) and frame faults must also leave no event unreceived (the simulator's
//! per-conversation sequence numbers). An outage of every socket at once is the one
//! case where a conversation can be lost: a queue conversation whose only events fell
//! in the outage, which no listed endpoint can list. The test holds it to exactly that.
//! Loopback only; `bench/fault-matrix.sh` prints the same rows.

use genesys_closer::matrix::{self, Fault};

async fn check(fault: Fault) {
    let row = matrix::run(fault).await.expect("scenario runs");
    println!("{}", matrix::table(std::slice::from_ref(&row)));
    assert!(row.matched > 0, "{row:?}");
    if fault == Fault::Outage {
        assert!(
            row.ok_for_seen(),
            "a conversation the daemon knew was lost or closed twice: {row:?}"
        );
        assert!(
            row.lost_paths.iter().all(|p| p.starts_with("queue")),
            "only queue conversations never seen may be lost in an outage: {row:?}"
        );
    } else {
        assert_eq!(row.lost, 0, "{row:?}");
        assert_eq!(row.duplicate_closes, 0, "{row:?}");
    }
    if fault.planned() {
        assert_eq!(row.unreceived_events, 0, "{row:?}");
    }
}

macro_rules! scenarios {
    ($($name:ident => $fault:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            check($fault).await;
        }
    )*};
}

scenarios! {
    abrupt_socket_drop => Fault::Drop,
    stalled_socket => Fault::Stall,
    socket_closing_then_close => Fault::SocketClosing,
    channel_expiry => Fault::ChannelExpiry,
    no_longer_subscribed => Fault::NoLongerSubscribed,
    channel_gone_404 => Fault::ChannelGone,
    token_revoked => Fault::TokenRevoked,
    rate_limited_429 => Fault::RateLimited,
    server_errors_503 => Fault::ServerErrors,
    bad_frames => Fault::BadFrames,
    duplicated_and_reordered_events => Fault::DuplicatedReordered,
    topics_dropped_silently => Fault::TopicsDroppedSilently,
    outage_of_every_socket => Fault::Outage,
}
