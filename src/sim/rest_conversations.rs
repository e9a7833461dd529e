//! Conversations API: read a messaging conversation and the three ways to end it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json};
use serde_json::{Map, Value};

use super::lifecycle::ParticipantRequest;
use super::rest::{ApiError, ApiResult, authorize};
use super::world::World;

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
