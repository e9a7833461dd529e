//! Everything that speaks Genesys Cloud's protocols: OAuth, REST, notification frames
//! and the notification socket.

pub mod api;
pub mod auth;
pub mod budget;
pub mod frames;
mod live;
pub mod stream;
pub mod subscriptions;
pub mod topics;
pub mod transport;

/// Stream index of the mirror of primary stream `i` is `MIRROR_BASE + i`; the
/// subscription manager's own streams stay below it (at most 20 channels in all).
pub const MIRROR_BASE: usize = 100;

/// A stream as log lines name it: `0`, `1`, ... for the channels, `mirror-0` for the
/// twin of channel 0 (the index behind it is an internal number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamName(pub usize);

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 >= MIRROR_BASE {
            write!(f, "mirror-{}", self.0 - MIRROR_BASE)
        } else {
            write!(f, "{}", self.0)
        }
    }
}
