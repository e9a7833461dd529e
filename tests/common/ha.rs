//! What the group tests (tests/ha_group.rs, tests/ha_chaos.rs) read off the simulator's
//! request log.

use genesys_sim::RecordedRequest;

/// Whether a recorded request acts on a conversation (a disconnect, a teardown, a
/// farewell or a wrap-up), as opposed to reads, channels and subscriptions.
pub fn acts(r: &RecordedRequest) -> bool {
    (r.method == "PATCH" && r.path.starts_with("/api/v2/conversations/"))
        || (r.method == "POST"
            && (r.path.ends_with("/disconnect") || r.path.contains("/communications/")))
}

/// (instance, epoch) from a group member's User-Agent, `genesys-closer/V (host-a;
/// epoch 3)`; epoch `None` for `(host-a; standby)`.
pub fn who(r: &RecordedRequest) -> Option<(String, Option<i64>)> {
    let ua = r.user_agent.as_deref()?;
    let (_, inside) = ua.split_once('(')?;
    let inside = inside.trim_end_matches(')');
    let (instance, role) = inside.split_once("; ")?;
    let epoch = role.strip_prefix("epoch ").and_then(|e| e.parse().ok());
    Some((instance.to_owned(), epoch))
}
