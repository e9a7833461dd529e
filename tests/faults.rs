//! The fault matrix, one test per fault: matching conversations keep arriving on the
//! queue path and the bot-phase path while the simulator misbehaves. No conversation the
//! daemon has heard of may be lost, none may be closed twice; planned transitions
//! (socket_closing, channel expiry), frame faults and REST faults may lose nothing at
//! all and leave no event unreceived (the simulator's per-conversation sequence numbers).
//! After an unplanned gap (a dropped or vanished socket, lost topics), a conversation
//! whose only events so far fell in the gap is unknown to the daemon, and no listed
//! endpoint can find it: those are counted apart (`lost_unseen`), and the rows say so.
//! Loopback only; `bench/fault-matrix.sh` prints the same rows.

use genesys_closer::matrix::{self, Fault};

async fn check(fault: Fault) {
    let row = matrix::run(fault).await.expect("scenario runs");
    println!("{}", matrix::table(std::slice::from_ref(&row)));
    assert!(row.matched > 0, "{row:?}");
    assert!(
        row.ok_for_seen(),
        "a conversation the daemon knew was lost or closed twice: {row:?}"
    );
    if !fault.unplanned_gap() {
        assert_eq!(row.lost, 0, "{row:?}");
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
}
