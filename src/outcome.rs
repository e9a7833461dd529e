//! How a close sequence ended: the one vocabulary the closer reports in, the journal
//! stores and `history --outcome` filters by.
//!
//! It sits below the closer and the journal so that both speak of outcomes without
//! the journal importing the closer; nothing here imports the rest of the crate.

use std::fmt;
use std::str::FromStr;

/// How a close sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The disconnect was confirmed (by the pushed event, or by the one read).
    Confirmed,
    /// Confirmed only after the full teardown.
    EscalatedConfirmed,
    /// Closed before anything was sent; nothing was sent.
    AlreadyClosed,
    /// Dry run: logged, nothing sent.
    DryRun,
    /// Not confirmed even after the teardown, or a request failed for good.
    Failed,
}

impl Outcome {
    /// Every outcome, in the order summaries list them.
    pub const ALL: [Outcome; 5] = [
        Outcome::Confirmed,
        Outcome::EscalatedConfirmed,
        Outcome::AlreadyClosed,
        Outcome::DryRun,
        Outcome::Failed,
    ];

    /// Stable name used in logs, the journal, metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::EscalatedConfirmed => "escalated_confirmed",
            Outcome::AlreadyClosed => "already_closed",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
        }
    }

    /// Whether the close was sent and then confirmed (directly or after the teardown):
    /// the outcomes that have a decision-to-close latency.
    pub fn is_confirmed(self) -> bool {
        matches!(self, Outcome::Confirmed | Outcome::EscalatedConfirmed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no outcome (a typo, a newer version's outcome).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an outcome this version knows")]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;

    /// The outcome [`Outcome::as_str`] names; anything else is an error, never a default.
    fn from_str(s: &str) -> Result<Outcome, UnknownOutcome> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_listed_once() {
        // Fails to compile when an outcome is added: add it to `Outcome::ALL`.
        let listed = |o: Outcome| match o {
            Outcome::Confirmed
            | Outcome::EscalatedConfirmed
            | Outcome::AlreadyClosed
            | Outcome::DryRun
            | Outcome::Failed => Outcome::ALL.contains(&o),
        };
        assert!(Outcome::ALL.into_iter().all(listed));
        let mut names: Vec<&str> = Outcome::ALL.map(Outcome::as_str).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Outcome::ALL.len());
    }

    #[test]
    fn every_outcome_round_trips_through_its_name() {
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(o));
            assert_eq!(o.to_string().parse::<Outcome>(), Ok(o));
        }
        for bad in ["", "Confirmed", "confirm", "escalated"] {
            assert_eq!(bad.parse::<Outcome>(), Err(UnknownOutcome(bad.into())));
        }
    }
}
