//! Faults on a timetable, for people driving the simulator by hand:
//! `genesys-closer sim --fault socket-closing@30:60 --fault 429@90:10`.
//!
//! Each `NAME@SECONDS[:ARG]` fires once, SECONDS after the simulator starts.

use std::str::FromStr;
use std::time::Duration;

use super::{Faults, Scope, SimHandle};

/// One fault and when it fires.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptedFault {
    /// Seconds after start.
    pub at: Duration,
    /// What happens.
    pub action: FaultAction,
}

/// The faults the timetable knows (`NAME[:ARG]`).
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// `drop`: every socket closed abruptly.
    Drop(Scope),
    /// `stall:SECS`: the sockets attached now send nothing (no events, heartbeats or
    /// pongs) for SECS; new connections work.
    Stall(Scope, Duration),
    /// `socket-closing:SECS`: `socket_closing`, those sockets closed SECS later (60).
    SocketClosing(Duration),
    /// `expire`: every channel removed; sockets get `{"result":"404"}`.
    Expire(Scope),
    /// `no-longer-subscribed`: topics cleared with the system message.
    NoLongerSubscribed(Scope),
    /// `drop-topics`: topics cleared without a word.
    DropTopics(Scope),
    /// `outage:SECS`: every socket dropped; for SECS no socket connects and every API
    /// call gets 503.
    Outage(Duration),
    /// `revoke`: every token revoked.
    Revoke,
    /// `429:SECS` / `503:SECS` (any status): every API call answered so for SECS.
    Status(u16, Duration),
    /// `bad-frames`: a malformed, a binary and a 2 MiB frame on every socket.
    BadFrames,
    /// `duplicate` / `reorder`: from then on every event twice / out of order.
    Duplicate,
    /// See `Duplicate`.
    Reorder,
}

/// The names `--fault` accepts, for the help text and errors.
pub const FAULT_NAMES: &str = "drop, stall:SECS, socket-closing[:SECS], expire, \
    no-longer-subscribed, drop-topics (each of these five on every channel, or with `-one` \
    on the busiest channel only, e.g. drop-one), outage:SECS, revoke, STATUS:SECS \
    (e.g. 429:10, 503:5), bad-frames, duplicate, reorder";

impl FromStr for ScriptedFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not NAME@SECONDS[:ARG]; names: {FAULT_NAMES}");
        let (name, when) = s.split_once('@').ok_or_else(bad)?;
        let (at, arg) = match when.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (when, None),
        };
        let secs = |t: &str| t.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
        let at = Duration::from_secs_f64(secs(at).ok_or_else(bad)?);
        let arg = match arg {
            Some(a) => Some(Duration::from_secs_f64(secs(a).ok_or_else(bad)?)),
            None => None,
        };
        let need = |d: Option<Duration>| d.ok_or_else(bad);
        let (name, scope) = match name.strip_suffix("-one") {
            Some(n) => (n, Scope::Busiest),
            None => (name, Scope::Every),
        };
        let scoped = matches!(
            name,
            "drop" | "stall" | "expire" | "no-longer-subscribed" | "drop-topics"
        );
        if scope == Scope::Busiest && !scoped {
            return Err(bad());
        }
        let action = match name {
            "drop" => FaultAction::Drop(scope),
            "stall" => FaultAction::Stall(scope, need(arg)?),
            "socket-closing" => FaultAction::SocketClosing(arg.unwrap_or(Duration::from_secs(60))),
            "expire" => FaultAction::Expire(scope),
            "no-longer-subscribed" => FaultAction::NoLongerSubscribed(scope),
            "drop-topics" => FaultAction::DropTopics(scope),
            "outage" => FaultAction::Outage(need(arg)?),
            "revoke" => FaultAction::Revoke,
            "bad-frames" => FaultAction::BadFrames,
            "duplicate" => FaultAction::Duplicate,
            "reorder" => FaultAction::Reorder,
            status => match status.parse::<u16>() {
                Ok(code) if (400..600).contains(&code) => FaultAction::Status(code, need(arg)?),
                _ => return Err(bad()),
            },
        };
        Ok(ScriptedFault { at, action })
    }
}

impl FaultAction {
    /// Applies the fault now.
    pub fn apply(&self, sim: &SimHandle) {
        tracing::warn!(fault = ?self, "sim: injecting a fault");
        match self {
            FaultAction::Drop(scope) => sim.drop_sockets_on(*scope),
            FaultAction::Stall(scope, d) => sim.stall_sockets_on(*scope, *d),
            FaultAction::SocketClosing(d) => sim.socket_closing_then_close(*d),
            FaultAction::Expire(scope) => sim.expire_channels_on(*scope),
            FaultAction::NoLongerSubscribed(scope) => sim.no_longer_subscribed_on(*scope),
            FaultAction::DropTopics(scope) => sim.drop_topics_silently_on(*scope),
            FaultAction::Outage(d) => sim.outage(*d),
            FaultAction::Revoke => sim.revoke_tokens(),
            FaultAction::Status(code, d) => {
                let retry = (*code == 429 || *code == 503).then_some(1);
                sim.fail_requests_for("/api/", *code, retry, *d);
            }
            FaultAction::BadFrames => {
                sim.push_raw_text("{not json");
                sim.push_binary(vec![0, 1, 2, 3]);
                sim.push_oversized(2 << 20);
            }
            FaultAction::Duplicate => sim.set_faults(Faults {
                duplicate_events: true,
                ..sim.faults()
            }),
            FaultAction::Reorder => sim.set_faults(Faults {
                reorder_events: true,
                ..sim.faults()
            }),
        }
    }
}

/// Runs the timetable against `sim` (each fault in its own task).
pub fn schedule(sim: &SimHandle, script: Vec<ScriptedFault>) {
    for f in script {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(f.at).await;
            f.action.apply(&sim);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timetable_entries_parse_or_say_why() {
        let f: ScriptedFault = "socket-closing@30:60".parse().expect("valid");
        assert_eq!(f.at, Duration::from_secs(30));
        assert_eq!(
            f.action,
            FaultAction::SocketClosing(Duration::from_secs(60))
        );
        let f: ScriptedFault = "429@1.5:10".parse().expect("valid");
        assert_eq!(f.action, FaultAction::Status(429, Duration::from_secs(10)));
        assert!(
            "stall@3".parse::<ScriptedFault>().is_err(),
            "stall needs its length"
        );
        assert!(
            "melt@3"
                .parse::<ScriptedFault>()
                .unwrap_err()
                .contains("names:")
        );
        assert!("drop".parse::<ScriptedFault>().is_err());
        let f: ScriptedFault = "drop-one@2".parse().expect("valid");
        assert_eq!(f.action, FaultAction::Drop(Scope::Busiest));
        let f: ScriptedFault = "outage@2:3".parse().expect("valid");
        assert_eq!(f.action, FaultAction::Outage(Duration::from_secs(3)));
        assert!("revoke-one@1".parse::<ScriptedFault>().is_err());
        assert!("200@1:1".parse::<ScriptedFault>().is_err());
    }
}
