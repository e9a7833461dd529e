//! Conversations API: read a messaging conversation and the three ways to end it;
//! the generic read that names the communications, a message to the guest, and
//! wrap-up.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json};
use serde_json::{Map, Value};

use super::ids::{hex32, rfc3339};
use super::lifecycle::ParticipantRequest;
use super::model::{AppliedWrapup, MESSAGE_TYPE, Role, TEXT_MAX, TEXT_MAX_SMS, text_limit};
use super::rest::{ApiError, ApiResult, authorize};
use super::world::{World, lock};
use super::{SentMessage, SentWrapup};

fn conversation_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Conversation {id} was not found."))
}

/// The body as a JSON object, or the 400 to answer.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::field(
            "body",
            "Request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::field(
            "body",
            format!("Request body is not valid JSON: {e}."),
        )),
    }
}

/// Checks `state`: `required` for the conversation PATCH, where it is the only
/// meaningful field; optional for the participant PATCH (wrap-up only, say).
/// Returns whether a disconnect was asked for.
fn check_state(body: &Map<String, Value>, required: bool) -> Result<bool, ApiError> {
    match body.get("state") {
        Some(Value::String(s)) if s == "disconnected" => Ok(true),
        Some(other) => Err(ApiError::field(
            "state",
            format!(
                "Invalid value {other} for field 'state': the only valid value is \"disconnected\"."
            ),
        )),
        None if required => Err(ApiError::field(
            "state",
            "Missing field 'state': it must be \"disconnected\".",
        )),
        None => Ok(false),
    }
}

/// `GET /api/v2/conversations/messages/{id}` -> `MessageConversation`.
pub(crate) async fn get_conversation(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    let body = world
        .rest_view(&id)
        .ok_or_else(|| conversation_not_found(&id))?;
    Ok(Json(body).into_response())
}

/// `PATCH /api/v2/conversations/messages/{id}` with `{"state":"disconnected"}`:
/// answered at once; the participants end after `close_delay`.
pub(crate) async fn patch_conversation(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&world, &headers)?;
    // The body is checked before the lookup, as a validating gateway would.
    check_state(&parse_object(&body)?, true)?;
    let answer = world
        .request_disconnect(&id)
        .ok_or_else(|| conversation_not_found(&id))?;
    Ok(Json(answer).into_response())
}

/// `PATCH /api/v2/conversations/messages/{id}/participants/{pid}` -> 202, no body.
pub(crate) async fn patch_participant(
    State(world): State<Arc<World>>,
    Path((id, pid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&world, &headers)?;
    let disconnect = check_state(&parse_object(&body)?, false)?;
    match world.request_participant_disconnect(&id, &pid, disconnect) {
        ParticipantRequest::Accepted => Ok(StatusCode::ACCEPTED.into_response()),
        ParticipantRequest::UnknownConversation => Err(conversation_not_found(&id)),
        ParticipantRequest::UnknownParticipant => Err(ApiError::not_found(format!(
            "Participant {pid} was not found in conversation {id}."
        ))),
    }
}

/// `POST /api/v2/conversations/{id}/disconnect` -> 202 `"accepted"`; the full
/// teardown happens after `teardown_delay`.
pub(crate) async fn teardown(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    if !world.request_teardown(&id) {
        return Err(conversation_not_found(&id));
    }
    Ok((StatusCode::ACCEPTED, Json(Value::String("accepted".into()))).into_response())
}

/// `GET /api/v2/conversations/{id}` -> the generic `Conversation` (facts sheet D.6),
/// whose participants list their message communications.
pub(crate) async fn get_generic_conversation(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    let body = lock(&world.conversations)
        .get_mut(&id)
        .map(|c| c.generic_body())
        .ok_or_else(|| conversation_not_found(&id))?;
    Ok(Json(body).into_response())
}

fn communication_not_found(id: &str, cid: &str) -> ApiError {
    ApiError::not_found(format!(
        "Communication {cid} was not found in conversation {id}."
    ))
}

/// The three `AdditionalMessage` body fields, of which exactly one is accepted.
const BODY_FIELDS: [&str; 3] = ["textBody", "mediaIds", "messagingTemplate"];

/// Checks an `AdditionalMessage`: exactly one body field ("Only one message body
/// field can be accepted, per request"), each of its documented type, a non-empty
/// `textBody` of at most 2000 characters (the largest limit of any channel; the
/// SMS limit is checked once the conversation is known). Returns the text, empty
/// for a media or template message. A JSON `null` counts as absent.
fn check_additional_message(body: &Map<String, Value>) -> Result<String, ApiError> {
    let present: Vec<&str> = BODY_FIELDS
        .into_iter()
        .filter(|f| body.get(*f).is_some_and(|v| !v.is_null()))
        .collect();
    match present.as_slice() {
        [] => {
            return Err(ApiError::field(
                "textBody",
                "Missing message body: one of textBody, mediaIds or messagingTemplate is required.",
            ));
        }
        [_] => {}
        [_, second, ..] => {
            return Err(ApiError::field(
                second,
                format!(
                    "Only one message body field can be accepted, per request; got {}.",
                    present.join(" and ")
                ),
            ));
        }
    }
    match (present[0], &body[present[0]]) {
        ("textBody", Value::String(t)) if t.trim().is_empty() => {
            Err(ApiError::field("textBody", "textBody must not be empty."))
        }
        ("textBody", Value::String(t)) => {
            let len = t.chars().count();
            if len > TEXT_MAX {
                return Err(ApiError::field(
                    "textBody",
                    format!(
                        "textBody is {len} characters; the maximum is {TEXT_MAX} \
                         ({TEXT_MAX_SMS} for SMS)."
                    ),
                ));
            }
            Ok(t.clone())
        }
        ("textBody", other) => Err(ApiError::field(
            "textBody",
            format!("Invalid value {other} for field 'textBody': expected a string."),
        )),
        ("mediaIds", Value::Array(ids))
            if !ids.is_empty()
                && ids
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            Ok(String::new())
        }
        ("mediaIds", _) => Err(ApiError::field(
            "mediaIds",
            "Invalid value for field 'mediaIds': expected a non-empty array of media ids.",
        )),
        (_, Value::Object(_)) => Ok(String::new()),
        (field, _) => Err(ApiError::field(
            field,
            format!("Invalid value for field '{field}': expected an object."),
        )),
    }
}

/// `POST /api/v2/conversations/messages/{id}/communications/{cid}/messages` with an
/// `AdditionalMessage` -> 200 `MessageData`, recorded for `SimHandle::sent_messages`.
///
/// The body is checked before the lookup, as a validating gateway would. Then:
/// unknown conversation or communication -> 404; a conversation that has ended, a
/// communication that has ended, or the customer's own communication -> 400 (the
/// operation documents 400 and no 409; Genesys's exact answer is not documented, and
/// the simulator is strict so that a client posting where no guest can read it, or
/// as the guest, fails its tests). No event is pushed for the message.
pub(crate) async fn post_message(
    State(world): State<Arc<World>>,
    Path((id, cid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&world, &headers)?;
    let text = check_additional_message(&parse_object(&body)?)?;
    let mut convs = lock(&world.conversations);
    let c = convs
        .get_mut(&id)
        .ok_or_else(|| conversation_not_found(&id))?;
    let p = c
        .by_communication(&cid)
        .ok_or_else(|| communication_not_found(&id, &cid))?;
    let refuse = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad.request", message);
    if c.is_closed() {
        return Err(refuse(format!(
            "Conversation {id} has ended: no message can be sent on it."
        )));
    }
    if !p.is_connected() {
        return Err(refuse(format!(
            "Communication {cid} is disconnected: no message can be sent on it."
        )));
    }
    if p.role == Role::Customer {
        return Err(refuse(format!(
            "Communication {cid} is the customer's: send on an agent's or a flow's communication."
        )));
    }
    let max = text_limit(MESSAGE_TYPE);
    let len = text.chars().count();
    if len > max {
        return Err(ApiError::field(
            "textBody",
            format!("textBody is {len} characters; the maximum for {MESSAGE_TYPE} is {max}."),
        ));
    }
    let originating = if p.role == Role::Agent {
        "Human"
    } else {
        "Bot"
    };
    let message_id = hex32();
    let mut answer = serde_json::json!({
        "id": message_id,
        "timestamp": rfc3339(SystemTime::now()),
        "direction": "outbound",
        "messengerType": MESSAGE_TYPE,
        "status": "sent",
        "conversationId": id,
        "selfUri": format!("/api/v2/conversations/messages/{id}/messages/{message_id}"),
    });
    if !text.is_empty() {
        answer["normalizedMessage"] = serde_json::json!({
            "type": "Text", "text": text, "direction": "Outbound",
            "originatingEntity": originating,
        });
    }
    drop(convs);
    world.record_sent_message(SentMessage {
        conversation_id: id,
        communication_id: cid,
        text,
    });
    Ok(Json(answer).into_response())
}

/// The `WrapupInput` fields the simulator reads: `code` (a non-empty string, unless
/// `provisional` is true: "should not require a code") and `notes` (a string).
fn check_wrapup_input(body: &Map<String, Value>) -> Result<(String, Option<String>), ApiError> {
    let provisional = match body.get("provisional") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::field(
                "provisional",
                format!("Invalid value {other} for field 'provisional': expected a boolean."),
            ));
        }
    };
    let code = match body.get("code") {
        Some(Value::String(c)) if !c.trim().is_empty() => c.clone(),
        None | Some(Value::Null) if provisional => String::new(),
        None | Some(Value::Null) => {
            return Err(ApiError::field(
                "code",
                "Missing field 'code': the wrap-up code id is required.",
            ));
        }
        Some(other) => {
            return Err(ApiError::field(
                "code",
                format!("Invalid value {other} for field 'code': expected a wrap-up code id."),
            ));
        }
    };
    let notes = match body.get("notes") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(other) => {
            return Err(ApiError::field(
                "notes",
                format!("Invalid value {other} for field 'notes': expected a string."),
            ));
        }
    };
    Ok((code, notes))
}

/// `POST /api/v2/conversations/messages/{id}/participants/{pid}/communications/{cid}/wrapup`
/// with a `WrapupInput` -> 200, no body; recorded for `SimHandle::wrapups` and shown
/// as the participant's `wrapup` by the generic GET. Allowed before and after the
/// conversation ends (wrap-up is after-call work). Unknown conversation, participant,
/// or a communication that is not this participant's -> 404; a participant that does
/// not require wrap-up -> 400 (a strict simulator's choice; Genesys's answer there is
/// not documented).
pub(crate) async fn post_wrapup(
    State(world): State<Arc<World>>,
    Path((id, pid, cid)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&world, &headers)?;
    let (code, notes) = check_wrapup_input(&parse_object(&body)?)?;
    let mut convs = lock(&world.conversations);
    let c = convs
        .get_mut(&id)
        .ok_or_else(|| conversation_not_found(&id))?;
    let p = c.participants.iter().find(|p| p.id == pid).ok_or_else(|| {
        ApiError::not_found(format!(
            "Participant {pid} was not found in conversation {id}."
        ))
    })?;
    if p.session != cid {
        return Err(ApiError::not_found(format!(
            "Communication {cid} was not found for participant {pid}."
        )));
    }
    if !p.wrapup_required {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad.request",
            format!("Participant {pid} does not require wrap-up."),
        ));
    }
    c.wrapups.insert(
        pid.clone(),
        AppliedWrapup {
            code: code.clone(),
            notes: notes.clone(),
            at: SystemTime::now(),
        },
    );
    drop(convs);
    world.record_wrapup(SentWrapup {
        conversation_id: id,
        participant_id: pid,
        communication_id: cid,
        code,
        notes,
    });
    Ok(StatusCode::OK.into_response())
}
