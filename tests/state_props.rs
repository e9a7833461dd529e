//! Property: whatever the order, duplication or mix of sources of one conversation's
//! events, the state map ends in the same state and decides at most once.
//!
//! Events are drawn from one consistent history of a conversation with a fixed set of
//! participants (customer, flow, queue, agent): full views (queue frames, REST reads)
//! taken at increasing moments, detail events (`.attributes`, `.customer.end`,
//! `.flow.end`), and intake calls. Then they are shuffled and duplicated at will.

use genesys_closer::genesys::frames::{ConversationEvent, ParticipantUpdate, Source};
use genesys_closer::state::Store;
use proptest::prelude::*;
use tokio::time::Instant;

const PARTICIPANTS: [(&str, &str); 4] = [
    ("a", "customer"),
    ("f", "workflow"),
    ("q", "acd"),
    ("u", "agent"),
];

/// One moment of the history: which participants have ended, and whether the intent is set.
#[derive(Clone, Debug)]
struct Moment {
    ended: [bool; 4],
    intent: bool,
}

#[derive(Clone, Debug)]
enum Kind {
    Queue,
    Read,
    Attributes,
    CustomerEnd,
    FlowEnd,
    Intake,
}

fn participant(i: usize, ended: bool, intent: bool) -> ParticipantUpdate {
    let (id, purpose) = PARTICIPANTS[i];
    ParticipantUpdate {
        id: id.into(),
        purpose: purpose.into(),
        ended,
        queue_id: (purpose == "acd").then(|| "q1".into()),
        message_type: Some("webmessaging".into()),
        attributes: if intent && purpose == "customer" {
            vec![("Bot.Intent".into(), "Goodbye".into())]
        } else {
            Vec::new()
        },
    }
}

/// The event a source would send at moment `m`, if that source says anything then.
fn event(kind: &Kind, m: &Moment) -> Option<ConversationEvent> {
    let mut ev;
    match kind {
        Kind::Queue | Kind::Read => {
            ev = ConversationEvent::empty(
                "c1".into(),
                if matches!(kind, Kind::Queue) {
                    Source::Queue
                } else {
                    Source::Read
                },
            );
            ev.participants = (0..4)
                .map(|i| participant(i, m.ended[i], m.intent))
                .collect();
        }
        Kind::Attributes if m.intent => {
            ev = ConversationEvent::empty("c1".into(), Source::Detail);
            ev.attributes = vec![("Bot.Intent".into(), "Goodbye".into())];
        }
        Kind::CustomerEnd if m.ended[0] => {
            ev = ConversationEvent::empty("c1".into(), Source::Detail);
            ev.participants = vec![participant(0, true, false)];
        }
        Kind::FlowEnd if m.ended[1] => {
            // The flow transferred to the queue: it ended, the conversation did not.
            ev = ConversationEvent::empty("c1".into(), Source::Detail);
            ev.participants = vec![participant(1, true, false)];
        }
        Kind::Intake if m.intent => {
            ev = ConversationEvent::empty("c1".into(), Source::Intake);
            ev.intent = Some("Goodbye".into());
        }
        _ => return None,
    }
    Some(ev)
}

/// A history: participants end at some moments (sticky), the intent appears at one.
fn history() -> impl Strategy<Value = Vec<Moment>> {
    (2usize..8, prop::array::uniform4(0usize..10), 0usize..10).prop_map(
        |(len, end_at, intent_at)| {
            (0..len)
                .map(|t| Moment {
                    ended: [
                        end_at[0] <= t,
                        end_at[1] <= t,
                        end_at[2] <= t,
                        end_at[3] <= t,
                    ],
                    intent: intent_at <= t,
                })
                .collect()
        },
    )
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Queue),
        Just(Kind::Read),
        Just(Kind::Attributes),
        Just(Kind::CustomerEnd),
        Just(Kind::FlowEnd),
        Just(Kind::Intake),
    ]
}

/// Applies `events` in order; returns (closed, decisions made, the intent seen).
fn run(events: &[ConversationEvent]) -> (bool, usize, Option<String>) {
    let store = Store::new();
    let now = Instant::now();
    let mut decisions = 0;
    for ev in events {
        let a = store.apply(ev, now, |c| {
            (c.intent("Bot.Intent") == Some("Goodbye")).then_some(())
        });
        decisions += usize::from(a.decision.is_some());
    }
    let c = store.get("c1").expect("tracked");
    (
        c.is_closed(),
        decisions,
        c.intent("Bot.Intent").map(str::to_string),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_order_duplication_or_mix_converges_and_decides_at_most_once(
        moments in history(),
        picks in prop::collection::vec((kind(), 0usize..8), 1..24),
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..48),
    ) {
        // What the sources said, in history order.
        let said: Vec<ConversationEvent> = picks
            .iter()
            .filter_map(|(k, t)| event(k, &moments[*t % moments.len()]))
            .collect();
        prop_assume!(!said.is_empty());
        // The same events shuffled, with duplicates.
        let mut shuffled = said.clone();
        for ix in &order {
            shuffled.push(said[ix.index(said.len())].clone());
        }
        let n = shuffled.len();
        for (i, ix) in order.iter().enumerate() {
            shuffled.swap(i % n, ix.index(n));
        }
        let (closed_a, decided_a, intent_a) = run(&said);
        let (closed_b, decided_b, intent_b) = run(&shuffled);
        prop_assert_eq!(closed_a, closed_b, "closed must not depend on order");
        prop_assert_eq!(&intent_a, &intent_b);
        prop_assert!(decided_a <= 1 && decided_b <= 1, "decided twice");
        prop_assert_eq!(decided_a, decided_b);
        prop_assert_eq!(decided_a == 1, intent_a.is_some());
    }
}
