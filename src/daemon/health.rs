//! Which streams are up, and whether a stream's gap was covered by its mirror.
//!
//! With `[stream] mirror` the configured topics (queues, users, flows) are held on
//! two channels, each with its own socket: stream `i` and its twin
//! `MIRROR_BASE + i`. Events on those topics reach the daemon twice (the state map
//! applies them once), and a gap on one of the two loses nothing of them if the other
//! was up for the whole gap. Per-conversation topics are held once, on the primary
//! streams and those the subscription manager adds.
//!
//! A twin that was itself silently dead (a stall not yet noticed) looks up here; its
//! own gap, when noticed, is resynced in turn, so nothing rests on this being exact.

use std::collections::HashMap;

use tokio::time::Instant;

pub(crate) use crate::genesys::MIRROR_BASE;

/// Up/down state per stream.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Streams `0..statics` carry configured topics (one per chunk of 1,000).
    statics: usize,
    /// Whether those streams have mirrors.
    mirrored: bool,
    /// Since when each stream has been up (`None`: down).
    up: HashMap<usize, Option<Instant>>,
}

impl Health {
    pub(crate) fn new(statics: usize, mirrored: bool) -> Self {
        Health {
            statics,
            mirrored: mirrored && statics > 0,
            up: HashMap::new(),
        }
    }

    /// The mirror streams to start, by index.
    pub(crate) fn mirrors(&self) -> Vec<usize> {
        if self.mirrored {
            (0..self.statics).map(|i| MIRROR_BASE + i).collect()
        } else {
            Vec::new()
        }
    }

    /// Whether the stream is a mirror (configured topics only).
    pub(crate) fn is_mirror(stream: usize) -> bool {
        stream >= MIRROR_BASE
    }

    /// Whether the stream holds configured topics.
    pub(crate) fn carries_configured(&self, stream: usize) -> bool {
        Self::is_mirror(stream) || stream < self.statics
    }

    fn twin(&self, stream: usize) -> Option<usize> {
        if !self.mirrored {
            None
        } else if Self::is_mirror(stream) {
            Some(stream - MIRROR_BASE)
        } else if stream < self.statics {
            Some(stream + MIRROR_BASE)
        } else {
            None
        }
    }

    /// The stream's socket is live (first time, after a reconnect, or after a rotation,
    /// which does not reset the time).
    pub(crate) fn up(&mut self, stream: usize, at: Instant) {
        let e = self.up.entry(stream).or_insert(None);
        if e.is_none() {
            *e = Some(at);
        }
        self.publish();
    }

    /// Sets the live-streams gauge.
    fn publish(&self) {
        crate::metrics::set_streams_live(self.up.values().filter(|u| u.is_some()).count());
    }

    /// The stream lost its socket.
    pub(crate) fn down(&mut self, stream: usize) {
        self.up.insert(stream, None);
        self.publish();
    }

    /// The twin that was up for the whole of a gap that began at `since`, if any.
    pub(crate) fn covered_by(&self, stream: usize, since: Instant) -> Option<usize> {
        let twin = self.twin(stream)?;
        match self.up.get(&twin) {
            Some(Some(up_at)) if *up_at <= since => Some(twin),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_gap_is_covered_only_by_a_twin_up_for_all_of_it() {
        let t0 = Instant::now();
        let mut h = Health::new(1, true);
        assert_eq!(h.mirrors(), vec![MIRROR_BASE]);
        h.up(0, t0);
        h.up(MIRROR_BASE, t0 + Duration::from_secs(5));
        // The primary's gap from t0+10 s: the mirror was up since t0+5 s.
        assert_eq!(
            h.covered_by(0, t0 + Duration::from_secs(10)),
            Some(MIRROR_BASE)
        );
        // A gap that began before the mirror came up is not covered.
        assert_eq!(h.covered_by(0, t0 + Duration::from_secs(1)), None);
        // A rotation's Live does not reset the time.
        h.up(MIRROR_BASE, t0 + Duration::from_secs(20));
        assert_eq!(
            h.covered_by(0, t0 + Duration::from_secs(10)),
            Some(MIRROR_BASE)
        );
        // The mirror's gap is covered by the primary, up since t0.
        assert_eq!(h.covered_by(MIRROR_BASE, t0), Some(0));
        // Both down: nothing covers anything.
        h.down(MIRROR_BASE);
        h.down(0);
        assert_eq!(h.covered_by(0, t0 + Duration::from_secs(10)), None);
        assert_eq!(h.covered_by(MIRROR_BASE, t0), None);
        // Streams the manager added carry no configured topics and have no twin.
        assert!(!h.carries_configured(1));
        assert_eq!(h.covered_by(1, t0), None);
        assert!(h.carries_configured(0) && h.carries_configured(MIRROR_BASE));
    }

    #[test]
    fn without_mirror_or_topics_nothing_is_mirrored() {
        assert!(Health::new(1, false).mirrors().is_empty());
        assert!(Health::new(0, true).mirrors().is_empty());
        assert_eq!(Health::new(1, false).covered_by(0, Instant::now()), None);
    }
}
