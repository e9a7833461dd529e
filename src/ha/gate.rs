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

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::leader::Role;

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

    /// Lets one acting request go, if the gate is open and `role` acts now (inside its
    /// trust window); `None`: send nothing.
    pub fn enter(self: &Arc<Self>, role: &watch::Receiver<Role>) -> Option<InFlight> {
        let mut s = self.lock();
        if s.closed || role.borrow().acting(Instant::now()).is_none() {
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

    fn leader() -> Role {
        Role::Leader {
            epoch: 1,
            trusted_until: Instant::now() + Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_closed_gate_lets_nothing_new_go_and_drains_what_went() {
        let gate = Arc::new(SendGate::default());
        let (tx, role) = watch::channel(leader());
        let first = gate.enter(&role).expect("acting: it goes");
        let second = gate.enter(&role).expect("acting: it goes");
        assert_eq!(gate.in_flight(), 2);
        gate.close();
        assert!(gate.enter(&role).is_none(), "closed: nothing new");
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
        // Not acting (a standby, or past the trust window): nothing goes either.
        let open = Arc::new(SendGate::default());
        tx.send_replace(Role::Standby);
        assert!(open.enter(&role).is_none());
        tx.send_replace(Role::Leader {
            epoch: 1,
            trusted_until: Instant::now(),
        });
        assert!(open.enter(&role).is_none(), "the trust window ended");
    }
}
