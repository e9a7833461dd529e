//! Notifications API: channels and their topic subscriptions.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json};
use serde_json::{Value, json};

use super::available_topics::family;
use super::channels::MAX_TOPICS;
use super::rest::{ApiError, ApiResult, authorize};
use super::world::World;

fn channel_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Channel {id} was not found."))
}

/// The channel must exist (and is marked used); else 404.
fn require_channel(world: &World, id: &str) -> Result<(), ApiError> {
    if world.touch_channel(id) {
        Ok(())
    } else {
        Err(channel_not_found(id))
    }
}

/// `POST /api/v2/notifications/channels` -> `Channel`.
pub(crate) async fn create_channel(
    State(world): State<Arc<World>>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    let (id, expires) = world.create_channel();
    let uri = format!("ws://{}/channels/{id}", world.host());
    Ok(Json(json!({ "connectUri": uri, "id": id, "expires": expires })).into_response())
}

/// `GET /api/v2/notifications/channels` -> `ChannelEntityListing`.
pub(crate) async fn list_channels(
    State(world): State<Arc<World>>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    let host = world.host();
    let entities: Vec<Value> = world
        .list_channels()
        .into_iter()
        .map(|(id, expires)| {
            json!({ "connectUri": format!("ws://{host}/channels/{id}"), "id": id, "expires": expires })
        })
        .collect();
    Ok(Json(json!({ "entities": entities })).into_response())
}

/// `HEAD /api/v2/notifications/channels/{id}`: 200 if the channel exists, else 404.
pub(crate) async fn head_channel(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    require_channel(&world, &id)?;
    Ok(StatusCode::OK.into_response())
}

/// `GET .../subscriptions` -> every subscribed topic.
pub(crate) async fn get_subscriptions(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    require_channel(&world, &id)?;
    let topics = world.topics(&id).ok_or_else(|| channel_not_found(&id))?;
    let entities: Vec<Value> = topics
        .iter()
        .map(|t| json!({ "id": t, "state": "Permitted" }))
        .collect();
    Ok(Json(json!({ "entities": entities })).into_response())
}

/// `PUT .../subscriptions`: replaces the topic set.
pub(crate) async fn put_subscriptions(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    update(&world, &id, query.as_deref(), &headers, &body, true)
}

/// `POST .../subscriptions`: adds to the topic set.
pub(crate) async fn post_subscriptions(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    update(&world, &id, query.as_deref(), &headers, &body, false)
}

/// `DELETE .../subscriptions`: removes every topic.
pub(crate) async fn delete_subscriptions(
    State(world): State<Arc<World>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    require_channel(&world, &id)?;
    // Clearing can never pass the topic limit; only a vanished channel can fail.
    match world.set_topics(&id, &[], true) {
        Some(_) => Ok(StatusCode::OK.into_response()),
        None => Err(channel_not_found(&id)),
    }
}

fn update(
    world: &World,
    id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    replace: bool,
) -> ApiResult {
    authorize(world, headers)?;
    require_channel(world, id)?;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "ignoreErrors" && v != "true" && v != "false" {
            return Err(ApiError::field(
                "ignoreErrors",
                format!("ignoreErrors must be true or false, not {v:?}."),
            ));
        }
    }
    let requested = parse_topics(body)?;
    let mut entities = Vec::with_capacity(requested.len());
    let mut permitted = Vec::with_capacity(requested.len());
    for topic in requested {
        match family(&topic) {
            Some(f) if world.refuses_websocket(f) => {
                let reason = format!(
                    "Topic {topic} is not available over WebSocket: {} is delivered only via EventBridge.",
                    f.template
                );
                entities
                    .push(json!({ "id": topic, "state": "Rejected", "rejectionReason": reason }));
            }
            Some(_) => {
                entities.push(json!({ "id": topic, "state": "Permitted" }));
                permitted.push(topic);
            }
            None => {
                let reason = format!("Topic {topic} is not a valid topic for this channel.");
                entities
                    .push(json!({ "id": topic, "state": "Rejected", "rejectionReason": reason }));
            }
        }
    }
    match world.set_topics(id, &permitted, replace) {
        None => Err(channel_not_found(id)),
        Some(Err(n)) => Err(ApiError::field(
            "topics",
            format!("The channel would have {n} topics; a channel allows at most {MAX_TOPICS}."),
        )),
        Some(Ok(())) => {
            // Resubscribing is how a channel is kept past its lifetime (README B.3).
            world.renew_channel(id);
            Ok(Json(json!({ "entities": entities })).into_response())
        }
    }
}

/// Parses `[ChannelTopic]`; topics are lowercased (matching is case-insensitive)
/// and deduplicated in request order.
fn parse_topics(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::field("body", format!("Request body is not valid JSON: {e}.")))?;
    let Value::Array(items) = value else {
        return Err(ApiError::field(
            "body",
            "Request body must be a JSON array of ChannelTopic objects.",
        ));
    };
    let mut seen = HashSet::new();
    let mut topics = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(id) = item
            .as_object()
            .and_then(|o| o.get("id"))
            .and_then(Value::as_str)
        else {
            return Err(ApiError::field(
                &format!("[{i}].id"),
                format!("Item {i} must be an object with a string id."),
            ));
        };
        let topic = id.to_ascii_lowercase();
        if seen.insert(topic.clone()) {
            topics.push(topic);
        }
    }
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_lowercased_and_deduplicated() {
        let body = br#"[{"id":"V2.Users.A.conversations.messages"},{"id":"v2.users.a.conversations.messages"}]"#;
        assert_eq!(
            parse_topics(body).ok(),
            Some(vec!["v2.users.a.conversations.messages".to_owned()])
        );
        assert!(parse_topics(br#"[{"id":1}]"#).is_err());
        assert!(parse_topics(br#"{"id":"x"}"#).is_err());
        assert!(parse_topics(b"").is_err());
    }
}
