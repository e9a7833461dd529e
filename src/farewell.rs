//! Where the farewell goes and who needs a wrap-up: pure choices over the
//! participants of `GET /api/v2/conversations/{id}` ([`ApiClient::get_communications`]),
//! so the close sequence only has to act on the answer.
//!
//! The farewell is posted as the owner of a communication (facts sheet D.5), so it
//! goes on a connected agent's communication, else on the connected flow's
//! (`workflow` or `botflow`: real orgs may show either), and never on the
//! customer's: that would put words in the guest's mouth. A participant or
//! communication that has ended is passed over: a message on it cannot reach the
//! guest.
//!
//! [`ApiClient::get_communications`]: crate::genesys::api::ApiClient::get_communications

use std::fmt;

use crate::genesys::api::CommParticipant;

/// Why no farewell is sent; its `Display` is a sentence for the log and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No agent or flow participant has a message communication.
    NoAgentOrFlow,
    /// Agent or flow communications exist, but every one of them has ended.
    AllEnded,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NoAgentOrFlow => "no agent or flow communication found",
            SkipReason::AllEnded => "every agent and flow communication has already ended",
        })
    }
}

fn is_agent(p: &CommParticipant) -> bool {
    p.has_purpose("agent")
}

fn is_flow(p: &CommParticipant) -> bool {
    p.has_purpose("workflow") || p.has_purpose("botflow")
}

/// The `(participant id, communication id)` to post the farewell on: the first
/// connected agent with a communication that has not ended (its newest such one),
/// else the first connected flow participant likewise. Never the customer's, an
/// ACD's or anyone else's.
pub fn farewell_communication(parts: &[CommParticipant]) -> Result<(String, String), SkipReason> {
    let mut saw_any = false;
    for wanted in [is_agent, is_flow] {
        for p in parts.iter().filter(|p| wanted(p)) {
            if p.communications.is_empty() {
                continue;
            }
            saw_any = true;
            if p.ended {
                continue;
            }
            if let Some(c) = p.communications.iter().rev().find(|c| !c.is_ended()) {
                return Ok((p.id.clone(), c.id.clone()));
            }
        }
    }
    Err(if saw_any {
        SkipReason::AllEnded
    } else {
        SkipReason::NoAgentOrFlow
    })
}

/// `(participant id, communication id)` of every agent participant that requires a
/// wrap-up (`wrapupRequired`), has none yet, and has a communication (its newest:
/// wrap-up comes after the disconnect, so ended ones count).
pub fn wrapup_targets(parts: &[CommParticipant]) -> Vec<(String, String)> {
    parts
        .iter()
        .filter(|p| is_agent(p) && p.wrapup_required && !p.wrapup_done)
        .filter_map(|p| Some((p.id.clone(), p.communications.last()?.id.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesys::api::parse_comm_participants;
    use serde_json::{Value, json};

    fn parts(v: Value) -> Vec<CommParticipant> {
        parse_comm_participants(v.to_string().as_bytes()).expect("parses")
    }

    fn comm(id: &str, state: &str) -> Value {
        json!({ "id": id, "state": state, "direction": "inbound", "type": "webmessaging",
                "messages": [{ "messageId": "m1", "messageStatus": "sent" }] })
    }

    /// A queue conversation as the generic GET shows it: the flow has transferred,
    /// the ACD and an agent are connected. Participants carry no `state` (the
    /// generic `Participant` model has none); the communications do.
    fn queue_conversation(agent: Value) -> Value {
        json!({
            "id": "c1", "startTime": "2026-11-24T10:00:00.000Z",
            "participants": [
                { "id": "p-cust", "purpose": "customer", "startTime": "2026-11-24T10:00:00.000Z",
                  "wrapupRequired": false, "attributes": { "Bot.Intent": "cancel" },
                  "messages": [comm("k-cust", "connected")] },
                { "id": "p-flow", "purpose": "workflow", "endTime": "2026-11-24T10:00:20.000Z",
                  "messages": [comm("k-flow", "disconnected")] },
                { "id": "p-acd", "purpose": "acd", "queueId": "q1",
                  "messages": [comm("k-acd", "connected")] },
                agent,
            ],
            "divisions": [{ "division": { "id": "d1" }, "entities": [{ "id": "q1" }] }],
            "selfUri": "/api/v2/conversations/c1",
        })
    }

    fn agent(extra: Value) -> Value {
        let mut a = json!({ "id": "p-agent", "purpose": "agent", "userId": "u1",
                            "wrapupRequired": true, "wrapupPrompt": "mandatory",
                            "messages": [comm("k-agent", "connected")] });
        if let (Value::Object(a), Value::Object(extra)) = (&mut a, extra) {
            a.extend(extra);
        }
        a
    }

    fn pair(p: &str, c: &str) -> (String, String) {
        (p.to_string(), c.to_string())
    }

    #[test]
    fn the_connected_agent_gets_the_farewell_and_the_wrapup() {
        let ps = parts(queue_conversation(agent(json!({}))));
        assert_eq!(farewell_communication(&ps), Ok(pair("p-agent", "k-agent")));
        assert_eq!(wrapup_targets(&ps), vec![pair("p-agent", "k-agent")]);
    }

    #[test]
    fn a_bot_phase_conversation_uses_the_flow_of_either_purpose() {
        for purpose in ["workflow", "botflow", "BotFlow"] {
            let ps = parts(
                json!({ "id": "c2", "startTime": "2026-11-24T10:00:00Z", "participants": [
                    { "id": "p-cust", "purpose": "customer", "messages": [comm("k-cust", "connected")] },
                    { "id": "p-flow", "purpose": purpose, "messages": [comm("k-flow", "connected")] },
                ]}),
            );
            assert_eq!(farewell_communication(&ps), Ok(pair("p-flow", "k-flow")));
            assert!(wrapup_targets(&ps).is_empty());
        }
    }

    #[test]
    fn an_ended_agent_falls_back_to_a_connected_flow() {
        // Communication state alone says the agent ended.
        let mut v = queue_conversation(agent(json!({
            "messages": [comm("k-agent", "disconnected")] })));
        v["participants"][1] = json!({ "id": "p-flow", "purpose": "botflow", "messages": [comm("k-flow", "connected")] });
        assert_eq!(
            farewell_communication(&parts(v.clone())),
            Ok(pair("p-flow", "k-flow"))
        );
        // endTime alone says the agent ended; the wrap-up still targets it.
        let mut v = queue_conversation(agent(json!({ "endTime": "2026-11-24T10:05:00Z" })));
        v["participants"][1]["messages"] = json!([comm("k-flow", "connected")]);
        if let Some(flow) = v["participants"][1].as_object_mut() {
            flow.remove("endTime");
        }
        let ps = parts(v);
        assert_eq!(farewell_communication(&ps), Ok(pair("p-flow", "k-flow")));
        assert_eq!(wrapup_targets(&ps), vec![pair("p-agent", "k-agent")]);
    }

    #[test]
    fn the_newest_open_communication_of_the_agent_is_chosen() {
        let ps = parts(queue_conversation(agent(json!({ "messages": [
            comm("k-old", "disconnected"), comm("k-new", "connected"), { "state": "connected" },
        ]}))));
        assert_eq!(farewell_communication(&ps), Ok(pair("p-agent", "k-new")));
        assert_eq!(wrapup_targets(&ps), vec![pair("p-agent", "k-new")]);
    }

    #[test]
    fn never_the_customer_nor_the_acd() {
        // No agent; the flow has ended after its transfer.
        let mut v = queue_conversation(json!({ "id": "p-x", "purpose": "external" }));
        let ps = parts(v.clone());
        assert_eq!(farewell_communication(&ps), Err(SkipReason::AllEnded));
        // Only a customer and an ACD.
        v["participants"] = json!([v["participants"][0], v["participants"][2]]);
        let ps = parts(v);
        assert_eq!(farewell_communication(&ps), Err(SkipReason::NoAgentOrFlow));
        assert_eq!(
            SkipReason::NoAgentOrFlow.to_string(),
            "no agent or flow communication found"
        );
        // A flow participant without communications is not one to post on.
        let ps = parts(json!({ "participants": [
            { "id": "p-cust", "purpose": "customer", "messages": [comm("k-cust", "connected")] },
            { "id": "p-flow", "purpose": "workflow", "messages": [] },
        ]}));
        assert_eq!(farewell_communication(&ps), Err(SkipReason::NoAgentOrFlow));
    }

    #[test]
    fn wrapup_only_for_agents_that_require_one_and_have_none_yet() {
        let cases = [
            (json!({}), true),
            (json!({ "wrapupRequired": false }), false),
            (json!({ "wrapupRequired": "true" }), false),
            (json!({ "messages": [] }), false),
            (
                json!({ "wrapup": { "code": "w1", "notes": "done" } }),
                false,
            ),
            (
                json!({ "wrapup": { "code": "w1", "provisional": true } }),
                true,
            ),
            (json!({ "wrapup": { "notes": "no code yet" } }), true),
            (json!({ "wrapupSkipped": true }), false),
        ];
        for (extra, wanted) in cases {
            let ps = parts(queue_conversation(agent(extra.clone())));
            assert_eq!(!wrapup_targets(&ps).is_empty(), wanted, "{extra}");
        }
        // A customer flagged wrapupRequired is still not an agent.
        let mut v = queue_conversation(agent(json!({ "wrapupRequired": false })));
        v["participants"][0]["wrapupRequired"] = json!(true);
        assert!(wrapup_targets(&parts(v)).is_empty());
    }

    #[test]
    fn the_parse_ignores_what_it_does_not_need() {
        let ps = parts(json!({
            "id": 7, "startTime": null, "endTime": false, "recordingState": 3,
            "participants": [
                { "id": "p-agent", "purpose": "agent", "name": 42, "attributes": "x",
                  "wrapupTimeoutMs": "soon", "wrapup": "none", "mediaRoles": {},
                  "state": "connected", "calls": 1, "messages": [
                    { "id": "k1", "state": 5, "messages": "many", "segments": {} },
                    { "id": 9 }, "junk", { "id": "" },
                  ] },
                { "purpose": "customer" },
                "not a participant",
                { "id": "p-gone", "purpose": "agent", "state": "TERMINATED", "endTime": null },
            ]
        }));
        assert_eq!(ps.len(), 2);
        let a = &ps[0];
        assert_eq!(
            (a.id.as_str(), a.state.as_deref()),
            ("p-agent", Some("connected"))
        );
        assert!(!a.ended && !a.wrapup_required && !a.wrapup_done);
        assert_eq!(a.communications.len(), 1);
        assert_eq!(
            (
                a.communications[0].id.as_str(),
                a.communications[0].state.as_deref()
            ),
            ("k1", None)
        );
        assert!(ps[1].ended);
        assert_eq!(farewell_communication(&ps), Ok(pair("p-agent", "k1")));
        // Not JSON, or no participants array: an error, not an empty list.
        assert!(parse_comm_participants(b"<html>").is_err());
        assert!(parse_comm_participants(br#"{"participants":{}}"#).is_err());
        assert!(parse_comm_participants(br#"[]"#).is_err());
    }
}
