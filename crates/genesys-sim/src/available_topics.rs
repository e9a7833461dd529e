//! The topic families the simulator delivers: `GET /api/v2/notifications/availabletopics`
//! lists them, and a subscription accepts a concrete topic only if it belongs to
//! one (with a concrete id: WebSocket topics have no wildcards, README C).
//!
//! Families named in `SimConfig::refused_transports` are listed as EventBridge-only,
//! as some real topics are, so the daemon's start-up check has something to find.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json};
use serde_json::{Map, Value, json};

use super::rest::{ApiError, ApiResult, authorize};
use super::world::World;

/// What a family's `{id}` must look like in a concrete topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdShape {
    /// A conversation id: 36 hex digits and dashes (the schemas' topic pattern).
    Uuid,
    /// Any non-empty run of letters, digits and dashes (queue, user, flow ids).
    Token,
}

impl IdShape {
    fn accepts(self, id: &str) -> bool {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-';
        match self {
            IdShape::Uuid => {
                id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            }
            IdShape::Token => !id.is_empty() && id.chars().all(ok),
        }
    }
}

/// One topic family, e.g. `v2.routing.queues.{id}.conversations.messages`.
#[derive(Debug)]
pub(crate) struct Family {
    /// The template id as `availabletopics` names it.
    pub(crate) template: &'static str,
    description: &'static str,
    /// SIMULATOR VALUES, NOT FACTS: illustrative permissions only. The real ones
    /// must be read from a live org's `availabletopics` (README C, "Permissions per
    /// topic ... not verified offline").
    permissions: &'static [&'static str],
    id: IdShape,
}

impl Family {
    fn matches(&self, topic: &str) -> bool {
        let (prefix, suffix) = self
            .template
            .split_once("{id}")
            .unwrap_or((self.template, ""));
        topic
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|id| self.id.accepts(id))
    }
}

/// Simulator value (see `Family::permissions`).
const DETAIL_PERMISSIONS: &[&str] = &["analytics:conversationDetail:view"];

const fn detail(template: &'static str, description: &'static str) -> Family {
    Family {
        template,
        description,
        permissions: DETAIL_PERMISSIONS,
        id: IdShape::Uuid,
    }
}

/// Every family the simulator can deliver.
const FAMILIES: &[Family] = &[
    Family {
        template: "v2.routing.queues.{id}.conversations.messages",
        description: "Messaging conversations involving the queue.",
        permissions: &[],
        id: IdShape::Token,
    },
    Family {
        template: "v2.users.{id}.conversations.messages",
        description: "Messaging conversations the user is a participant of.",
        permissions: &[],
        id: IdShape::Token,
    },
    Family {
        template: "v2.analytics.flow.{id}.metrics",
        description: "Flow metric records of conversations running the flow.",
        // Simulator value (see `Family::permissions`).
        permissions: &["analytics:flowObservation:view"],
        id: IdShape::Token,
    },
    detail(
        "v2.detail.events.conversation.{id}.customer.start",
        "A customer participant of the conversation started.",
    ),
    detail(
        "v2.detail.events.conversation.{id}.customer.end",
        "A customer participant of the conversation ended.",
    ),
    detail(
        "v2.detail.events.conversation.{id}.flow.start",
        "A flow took the conversation.",
    ),
    detail(
        "v2.detail.events.conversation.{id}.flow.end",
        "A flow left the conversation.",
    ),
    detail(
        "v2.detail.events.conversation.{id}.attributes",
        "Participant attributes of the conversation changed.",
    ),
    detail(
        "v2.detail.events.conversation.{id}.acd.start",
        "The conversation entered a queue.",
    ),
    detail(
        "v2.detail.events.conversation.{id}.acd.end",
        "The conversation left a queue.",
    ),
    detail(
        "v2.detail.events.conversation.{id}.user.start",
        "A user participant of the conversation started.",
    ),
    detail(
        "v2.detail.events.conversation.{id}.user.end",
        "A user participant of the conversation ended.",
    ),
];

/// The family of a concrete topic (case-insensitive), if the simulator knows it.
pub(crate) fn family(topic: &str) -> Option<&'static Family> {
    let topic = topic.to_ascii_lowercase();
    FAMILIES.iter().find(|f| f.matches(&topic))
}

impl World {
    /// Whether the family is simulated as EventBridge-only (not over the WebSocket).
    pub(crate) fn refuses_websocket(&self, f: &Family) -> bool {
        self.refused_transports.contains(f.template)
    }
}

/// The `expand` values the SDK documents.
const EXPANDABLE: &[&str] = &[
    "description",
    "enforced",
    "schema",
    "visibility",
    "transports",
    "publicApiTemplateUriPaths",
    "requiresPermissions",
    "permissionDetails",
    "topicParameters",
];

/// `GET /api/v2/notifications/availabletopics?expand=...&includePreview=...` ->
/// `AvailableTopicEntityListing`. Fields other than `id` appear only when named in
/// `expand` ("Which fields, if any, to expand"); `expand` may repeat or hold a
/// comma-separated list. `schema` and `publicApiTemplateUriPaths` are accepted but
/// not simulated (left out rather than invented).
pub(crate) async fn list(
    State(world): State<Arc<World>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&world, &headers)?;
    let expand = parse_query(query.as_deref())?;
    let entities: Vec<Value> = FAMILIES
        .iter()
        .map(|f| entity(f, world.refuses_websocket(f), &expand))
        .collect();
    Ok(Json(json!({ "entities": entities })).into_response())
}

fn parse_query(query: Option<&str>) -> Result<BTreeSet<String>, ApiError> {
    let mut expand = BTreeSet::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "expand" => {
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !EXPANDABLE.contains(&item) {
                        return Err(ApiError::field(
                            "expand",
                            format!(
                                "Invalid expand value {item:?}; valid: {}.",
                                EXPANDABLE.join(", ")
                            ),
                        ));
                    }
                    expand.insert(item.to_owned());
                }
            }
            "includePreview" if v != "true" && v != "false" => {
                return Err(ApiError::field(
                    "includePreview",
                    format!("includePreview must be true or false, not {v:?}."),
                ));
            }
            _ => {}
        }
    }
    Ok(expand)
}

/// One `AvailableTopic`; only fields of that definition.
fn entity(f: &Family, refused: bool, expand: &BTreeSet<String>) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(f.template));
    let mut put = |field: &str, v: Value| {
        if expand.contains(field) {
            m.insert(field.into(), v);
        }
    };
    put("description", json!(f.description));
    put("enforced", json!(true));
    put("visibility", json!("Public"));
    let transports = if refused { "EventBridge" } else { "All" };
    put("transports", json!([transports]));
    put("requiresPermissions", json!(f.permissions));
    let details: Vec<Value> = if f.permissions.is_empty() {
        Vec::new()
    } else {
        vec![
            json!({ "type": "requiresPermissions", "permissions": f.permissions, "enforced": true }),
        ]
    };
    put("permissionDetails", Value::Array(details));
    put("topicParameters", json!(["id"]));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: &str = "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38";

    fn template(topic: &str) -> Option<&'static str> {
        family(topic).map(|f| f.template)
    }

    #[test]
    fn concrete_topics_find_their_family() {
        assert_eq!(
            template(
                "v2.routing.queues.8f14e45f-ceea-467a-9575-3b9d1c2e4a77.conversations.messages"
            ),
            Some("v2.routing.queues.{id}.conversations.messages")
        );
        assert!(template("v2.users.abc.conversations.messages").is_some());
        assert!(template("v2.users..conversations.messages").is_none());
        assert!(template("v2.routing.queues.a.b.conversations.messages").is_none());
        assert!(template("v2.routing.queues.a.conversations").is_none());
        assert!(template("v2.system.socket_closing").is_none());
        assert_eq!(
            template(&format!(
                "v2.detail.events.conversation.{CONV}.customer.end"
            )),
            Some("v2.detail.events.conversation.{id}.customer.end")
        );
        assert_eq!(
            template(&format!(
                "V2.Detail.Events.Conversation.{}.Attributes",
                CONV.to_uppercase()
            )),
            Some("v2.detail.events.conversation.{id}.attributes")
        );
        assert!(template("v2.detail.events.conversation.{id}.customer.end").is_none());
        assert!(template("v2.detail.events.conversation.abc.customer.end").is_none());
        assert!(
            template(&format!(
                "v2.detail.events.conversation.{CONV}.flow.outcome"
            ))
            .is_none()
        );
        assert!(template("v2.analytics.flow.a3c9e5f1-8b27.metrics").is_some());
        assert!(template("v2.analytics.flow..metrics").is_none());
    }

    #[test]
    fn expand_selects_fields() {
        let f = &FAMILIES[2];
        let none = entity(f, false, &BTreeSet::new());
        assert_eq!(none, json!({ "id": "v2.analytics.flow.{id}.metrics" }));
        let expand = parse_query(Some(
            "expand=transports,topicParameters&expand=requiresPermissions",
        ));
        let expand = expand.unwrap_or_default();
        let e = entity(f, true, &expand);
        assert_eq!(e["transports"], json!(["EventBridge"]));
        assert_eq!(e["topicParameters"], json!(["id"]));
        assert_eq!(
            e["requiresPermissions"],
            json!(["analytics:flowObservation:view"])
        );
        assert!(e.get("description").is_none());
        assert!(parse_query(Some("expand=bogus")).is_err());
        assert!(parse_query(Some("includePreview=maybe")).is_err());
    }
}
