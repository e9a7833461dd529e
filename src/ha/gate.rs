//! The last check before a request that acts on a conversation leaves (`[ha]`).
//!
//! The fence stores a step's "about to send" row under the lease's epoch, but time
//! passes between that row and the request: a wait for the rate budget, a retry's
//! pause, a process paused (SIGSTOP) in between. Every acting request (a disconnect, a
//! teardown, a farewell, a wrap-up) therefore passes this gate right before it is
//! written to the socket: it goes only while this instance acts inside its trust
//! window, and it is counted while in flight. At the stop, the lease loop closes the
//! gate (nothing new leaves), waits for the requests in flight to be answered (bounded
//! by the HTTP timeout), and only then resigns: the next leader, reading the journal, never
//! finds a disconnect still on its way and sends a second one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Counts acting requests in flight and refuses new ones once closed or not acting.
#[derive(Debug, Default)]
pub struct SendGate {
    state: Mutex<State>,
    idle: Notify,
}

#[derive(Debug, Default)]
struct State {
    closed: bool,
    in_flight: usize,
}

/// One acting request in flight; dropping it (answered, failed or abandoned) lets the
/// gate drain.
#[derive(Debug)]
pub struct InFlight(Arc<SendGate>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

impl SendGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets one acting request go if the gate is open; `None`: send nothing. The caller
    /// has checked that this instance acts now (inside its trust window): the lease loop
    /// ends that before it closes the gate, so a request either sees it ended or is
    /// counted before the gate closes and waited for.
    pub fn enter(self: &Arc<Self>) -> Option<InFlight> {
        let mut s = self.lock();
        if s.closed {
            return None;
        }
        s.in_flight += 1;
        Some(InFlight(Arc::clone(self)))
    }

    /// Nothing new leaves from now on.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Waits until no acting request is in flight, at most `within`; whether none is.
    pub async fn drained(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read: a drop in between still wakes us.
            idle.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_gate_lets_nothing_new_go_and_drains_what_went() {
        let gate = Arc::new(SendGate::default());
        let first = gate.enter().expect("open: it goes");
        let second = gate.enter().expect("open: it goes");
        assert_eq!(gate.in_flight(), 2);
        gate.close();
        assert!(gate.enter().is_none(), "closed: nothing new");
        assert!(
            !gate.drained(Duration::from_millis(20)).await,
            "two in flight"
        );
        drop(first);
        let waiting = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.drained(Duration::from_secs(10)).await }
        });
        drop(second);
        assert!(waiting.await.unwrap(), "the last answer drains it");
    }
}
