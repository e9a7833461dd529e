//! Every example frame in ../shared/genesys/events parses into what it shows.

#[path = "common/ids.rs"]
mod ids;

use std::path::PathBuf;

use genesys_closer::genesys::frames::{Frame, parse_frame};
use ids::QUEUE;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/genesys/events")
}

fn parse(name: &str) -> Frame {
    let text = std::fs::read_to_string(events_dir().join(name)).expect("fixture readable");
    parse_frame(&text, &["Bot.Intent".into()]).expect("fixture parses")
}

#[test]
fn every_fixture_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(events_dir()).expect("events dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("readable");
            let frame = parse_frame(&text, &["Bot.Intent".into()]);
            assert!(frame.is_ok(), "{}: {:?}", path.display(), frame.err());
            assert!(
                !matches!(frame, Ok(Frame::Unknown { .. })),
                "{} parsed as an unknown topic",
                path.display()
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 4, "all four example frames were read");
}

#[test]
fn fixtures_say_what_they_show() {
    assert_eq!(parse("heartbeat.json"), Frame::Heartbeat);

    let Frame::Conversation(open) = parse("01-queue-bot-handled-intent-attributes.json") else {
        panic!("01 is a conversation");
    };
    assert_eq!(
        &*open.conversation_id,
        "3a6f2b9e-7c41-4d8a-b5e2-91f0c7d3a864"
    );
    assert_eq!(
        open.correlation_id.as_deref(),
        Some("0d4b7f2e-8c19-4a63-b5e0-3f9a1c6d2e87")
    );
    assert_eq!(open.participants.len(), 3);
    let customer = &open.participants[0];
    assert_eq!(&*customer.purpose, "customer");
    assert_eq!(
        customer.attributes,
        vec![("Bot.Intent".into(), "CancelSubscription".into())]
    );
    assert!(!customer.ended);
    assert!(open.participants[1].ended, "the workflow has left");
    assert_eq!(open.participants[2].queue_id.as_deref(), Some(QUEUE));

    let Frame::Conversation(closed) = parse("03-queue-fully-disconnected.json") else {
        panic!("03 is a conversation");
    };
    assert!(closed.participants.iter().all(|p| p.ended));

    let Frame::Conversation(agent) = parse("02-user-agent-connected.json") else {
        panic!("02 is a conversation");
    };
    assert_eq!(agent.participants.len(), 4);
    assert!(
        agent
            .participants
            .iter()
            .any(|p| &*p.purpose == "agent" && !p.ended)
    );
}

/// Truncated, corrupted and retyped frames give an error or a frame, never a panic.
#[test]
fn damaged_frames_never_panic() {
    let text = std::fs::read_to_string(events_dir().join("02-user-agent-connected.json"))
        .expect("fixture readable");
    let wanted = ["Bot.Intent".into()];
    let mut errors = 0;
    for cut in 0..text.len() {
        if let Some(prefix) = text.get(..cut) {
            errors += usize::from(parse_frame(prefix, &wanted).is_err());
        }
    }
    assert!(errors > text.len() / 2, "truncated frames are refused");
    // Every value of one kind swapped for another.
    for (from, to) in [
        ("\"connected\"", "7"),
        ("\"attributes\": {", "\"attributes\": [{"),
        ("\"participants\": [", "\"participants\": {\"x\":["),
        ("\"id\":", "\"id\": null, \"_\":"),
        ("true", "\"true\""),
    ] {
        let _ = parse_frame(&text.replace(from, to), &wanted);
    }
}
