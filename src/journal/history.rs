//! `genesys-closer history`: the journal as an on-call engineer reads it.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::HistoryEntry;

/// One entry as a JSON line (stable field names, for scripts).
pub fn json_line(e: &HistoryEntry) -> String {
    // HistoryEntry holds only strings and integers: serializing cannot fail.
    serde_json::to_string(e).unwrap_or_default()
}

/// The entries as a table grouped by conversation: when, what, detail; each
/// conversation's lines in time order, conversations in order of their first line.
pub fn table(entries: &[HistoryEntry]) -> String {
    let mut order: Vec<&str> = Vec::new();
    for e in entries {
        if !order.contains(&e.conversation_id.as_str()) {
            order.push(&e.conversation_id);
        }
    }
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no journal entries in this period\n");
        return out;
    }
    for id in order {
        let _ = writeln!(out, "conversation {id}");
        for e in entries.iter().filter(|e| e.conversation_id == id) {
            let when = humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_millis(e.at_ms.max(0) as u64),
            );
            let _ = write!(out, "  {when}  {:<8}  {}", e.kind, e.what);
            if let Some(d) = &e.detail {
                let _ = write!(out, "  ({d})");
            }
            out.push('\n');
        }
    }
    let finished = entries.iter().filter(|e| e.kind == "outcome").count();
    let decisions = entries.iter().filter(|e| e.kind == "decision").count();
    let _ = writeln!(
        out,
        "{decisions} decision(s), {finished} outcome(s) in this period"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(at: i64, id: &str, kind: &str, what: &str, detail: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            at_ms: at,
            conversation_id: id.into(),
            kind: kind.into(),
            what: what.into(),
            detail: detail.map(Into::into),
        }
    }

    #[test]
    fn the_table_groups_by_conversation_and_the_json_keeps_every_field() {
        let es = vec![
            e(
                1_000,
                "c1",
                "decision",
                "rule goodbye, intent Goodbye",
                Some("source queue"),
            ),
            e(1_001, "c2", "intake", "close", Some("intent Goodbye")),
            e(
                1_002,
                "c1",
                "step",
                "about_to_send:patch_conversation",
                None,
            ),
            e(1_050, "c1", "outcome", "confirmed", Some("requests 1")),
        ];
        let t = table(&es);
        let c1 = t.find("conversation c1").expect("c1 header");
        let c2 = t.find("conversation c2").expect("c2 header");
        assert!(c1 < c2, "{t}");
        assert!(
            t.contains("1970-01-01T00:00:01.050Z  outcome   confirmed  (requests 1)"),
            "{t}"
        );
        assert!(
            t.contains("1 decision(s), 1 outcome(s) in this period"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&json_line(&es[3])).expect("json");
        assert_eq!(j["conversation_id"], "c1");
        assert_eq!(j["kind"], "outcome");
        assert_eq!(j["what"], "confirmed");
        assert_eq!(j["at_ms"], 1_050);
        assert!(table(&[]).contains("no journal entries"));
    }
}
