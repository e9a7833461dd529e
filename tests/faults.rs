//! The fault matrix, one test per fault: matching conversations keep arriving on the
//! queue path and the bot-phase path while the simulator misbehaves. Every fault must
//! lose nothing and close nothing twice: those that strike one channel or socket (as
//! Genesys's own do: `no_longer_subscribed`, a vanished channel, a dropped or stalled
//! socket, topics dropped), every REST or frame fault, and every blind window, in which
//! no socket of the daemon sees anything (an outage of every socket and the API, a kill
//! and restart on the same state directory, every socket refused, every channel gone
//! while channel creation fails, every socket stalled, every channel's topics dropped
//! silently, every channel gone): what started in a blind window is found by listing the
//! watched queues and flows after it. Planned transitions (socket_closing, channel
//! expiry) and frame faults must also leave no event unreceived (the simulator's
//! per-conversation sequence numbers). Loopback only; `bench/fault-matrix.sh` prints the
//! same rows.

use genesys_closer::lab::matrix::{self, Fault};

async fn check(fault: Fault) {
    let row = matrix::run(fault).await.expect("scenario runs");
    println!("{}", matrix::table(std::slice::from_ref(&row)));
    assert!(row.matched > 0, "{row:?}");
    assert_eq!(row.lost, 0, "{row:?}");
    assert_eq!(row.duplicate_closes, 0, "{row:?}");
    if fault.planned() {
        assert_eq!(row.unreceived_events, 0, "{row:?}");
    }
    assert!(fault.bar(&row), "{row:?}");
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
    killed_and_restarted_on_the_same_state => Fault::Restart,
    every_socket_refused_api_up => Fault::SocketsDown,
    every_channel_gone_and_creation_503 => Fault::ChannelsGoneNoCreate,
    every_socket_stalled => Fault::StallEvery,
    every_channels_topics_dropped_silently => Fault::TopicsDroppedEvery,
    every_channel_gone_404 => Fault::ChannelGoneEvery,
}
