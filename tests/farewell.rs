//! The farewell and wrap-up calls against the simulator: the generic conversation
//! read names the communications, the farewell goes on the agent's (else the flow's)
//! communication, and the simulator validates and records what it is sent.

#[path = "common/ids.rs"]
mod ids;

use std::time::Duration;

use genesys_closer::farewell::{SkipReason, farewell_communication, wrapup_targets};
use genesys_closer::genesys::api::{ApiClient, ApiError};
use genesys_closer::genesys::auth::TokenSource;
use genesys_sim::{
    self as sim, BotConversationSpec, BotPurpose, ConversationSpec, RestFault, SentMessage,
    SentWrapup, SimConfig, SimHandle,
};
use ids::QUEUE;
use secrecy::SecretString;
use url::Url;

const AGENT: &str = "5a5a5a5a-1111-4222-8333-444455556666";

async fn start() -> (SimHandle, ApiClient) {
    let sim = sim::start(SimConfig::default())
        .await
        .expect("simulator starts");
    let base = Url::parse(&sim.base_url()).expect("sim url");
    let http = ApiClient::http_client().expect("http client");
    let secret = SecretString::from("sim-secret".to_string());
    let tokens = TokenSource::new(
        http.clone(),
        &base,
        "5e1f0c1e-51a0-4c1e-8e57-0000000c11e7".into(),
        secret,
    );
    (sim, ApiClient::new(http, base, tokens))
}

fn status(r: Result<impl std::fmt::Debug, ApiError>) -> Option<u16> {
    match r {
        Ok(a) => panic!("expected an error, got {a:?}"),
        Err(e) => e.status(),
    }
}

fn message(conversation: &str, communication: &str, text: &str) -> SentMessage {
    SentMessage {
        conversation_id: conversation.into(),
        communication_id: communication.into(),
        text: text.into(),
    }
}

#[tokio::test]
async fn queue_conversation_farewell_and_wrapup_go_to_the_agent() {
    let (sim, api) = start().await;
    let id = sim.create_conversation(ConversationSpec {
        queue_id: QUEUE.into(),
        intent_attribute: "Bot.Intent".into(),
        intent: Some("Goodbye".into()),
        agent_user_id: Some(AGENT.into()),
    });

    let parts = api.get_communications(&id).await.expect("generic GET");
    let purposes: Vec<_> = parts.iter().map(|p| p.purpose.as_deref()).collect();
    assert_eq!(
        purposes,
        [
            Some("customer"),
            Some("workflow"),
            Some("acd"),
            Some("agent")
        ]
    );
    assert!(parts.iter().all(|p| p.communications.len() == 1));
    let agent = &parts[3];
    assert!(agent.wrapup_required && !agent.ended && !agent.wrapup_done);
    let (pid, cid) = farewell_communication(&parts).expect("a communication");
    assert_eq!((&pid, &cid), (&agent.id, &agent.communications[0].id));
    // The communication ids are stable across reads.
    assert_eq!(api.get_communications(&id).await.unwrap(), parts);

    // The farewell; a second route with the same prefix still reaches its own handler.
    let text = "Thanks, this conversation is now closed.";
    let a = api.send_message(&id, &cid, text).await.expect("sent");
    assert_eq!(a.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(body["normalizedMessage"]["text"], text);
    api.get_conversation(&id, &[]).await.expect("messaging GET");
    assert_eq!(sim.sent_messages(), [message(&id, &cid, text)]);

    // Refusals, none recorded: too long (2000 is the limit for web messaging), the
    // customer's communication, unknown ids, and an injected 403 (the undocumented
    // "may this app post here" case), which the retry policy does not retry.
    let long = "x".repeat(2001);
    assert_eq!(status(api.send_message(&id, &cid, &long).await), Some(400));
    assert!(api.send_message(&id, &cid, &long[..2000]).await.is_ok());
    let customer_comm = &parts[0].communications[0].id;
    assert_eq!(
        status(api.send_message(&id, customer_comm, text).await),
        Some(400)
    );
    assert_eq!(status(api.send_message(&id, "nope", text).await), Some(404));
    assert_eq!(
        status(api.send_message("nope", &cid, text).await),
        Some(404)
    );
    sim.fail_requests(RestFault {
        path_prefix: format!("/api/v2/conversations/messages/{id}/communications/"),
        status: 403,
        retry_after: None,
        count: 1,
    });
    assert_eq!(status(api.send_message(&id, &cid, text).await), Some(403));
    assert_eq!(sim.sent_messages().len(), 2);

    // Unknown conversations, and `/api/v2/conversations/messages` itself, are 404.
    assert_eq!(status(api.get_communications("nope").await), Some(404));
    assert_eq!(status(api.get_communications("messages").await), Some(404));

    // The guest leaves: no farewell can go out any more, the wrap-up still can.
    sim.customer_leaves(&id);
    let parts = api.get_communications(&id).await.unwrap();
    assert!(parts.iter().all(|p| p.ended));
    assert_eq!(farewell_communication(&parts), Err(SkipReason::AllEnded));
    assert_eq!(status(api.send_message(&id, &cid, text).await), Some(400));

    assert_eq!(wrapup_targets(&parts), [(pid.clone(), cid.clone())]);
    let workflow = &parts[1];
    let wrong = &workflow.communications[0].id;
    assert_eq!(
        status(api.send_wrapup(&id, &workflow.id, wrong, "w-1", "").await),
        Some(400),
        "the flow requires no wrap-up"
    );
    assert_eq!(
        status(api.send_wrapup(&id, &pid, wrong, "w-1", "").await),
        Some(404),
        "not the agent's communication"
    );
    api.send_wrapup(&id, &pid, &cid, "w-1", "closed by bot intent")
        .await
        .expect("wrap-up");
    assert_eq!(
        sim.wrapups(),
        [SentWrapup {
            conversation_id: id.clone(),
            participant_id: pid.clone(),
            communication_id: cid.clone(),
            code: "w-1".into(),
            notes: Some("closed by bot intent".into()),
        }]
    );
    // The generic GET now shows the wrap-up, so it is not sent twice.
    let parts = api.get_communications(&id).await.unwrap();
    assert!(parts[3].wrapup_done);
    assert!(wrapup_targets(&parts).is_empty());

    let posted: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/wrapup") && r.status == 200)
        .map(|r| r.body)
        .collect();
    assert_eq!(posted, [r#"{"code":"w-1","notes":"closed by bot intent"}"#]);
    sim.shutdown().await;
}

#[tokio::test]
async fn bot_phase_farewell_goes_to_the_flow() {
    let (sim, api) = start().await;
    for purpose in [BotPurpose::Workflow, BotPurpose::Botflow] {
        let id = sim.create_bot_conversation(BotConversationSpec {
            flow_id: "0a0a0a0a-1111-4222-8333-444455556666".into(),
            purpose,
            intent_attribute: "Bot.Intent".into(),
            intent: None,
            intent_after: Duration::from_secs(600),
            transfer: None,
            post_on_start: false,
            post_on_intent: false,
        });
        let parts = api.get_communications(&id).await.expect("generic GET");
        assert_eq!(parts.len(), 2);
        let flow = &parts[1];
        let (pid, cid) = farewell_communication(&parts).expect("the flow's communication");
        assert_eq!((&pid, &cid), (&flow.id, &flow.communications[0].id));
        assert!(wrapup_targets(&parts).is_empty());
        api.send_message(&id, &cid, "Goodbye!").await.expect("sent");
        assert_eq!(
            sim.sent_messages().last(),
            Some(&message(&id, &cid, "Goodbye!"))
        );
    }
    assert_eq!(sim.sent_messages().len(), 2);
    sim.shutdown().await;
}
