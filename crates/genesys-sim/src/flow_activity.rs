//! `POST /api/v2/analytics/flows/activity/query`: the conversations in a flow now.
//!
//! The facts sheet (C.3) lists it as the polling fallback for discovery: metric
//! `oFlow` with `details: true` lists each conversation currently in a flow
//! (`conversationId`, `flowId`, `flowType`, `mediaType`). Shapes follow the SDK
//! models `FlowActivityQuery` (`metrics[{metric, details}]`, `groupBy`, `filter{type,
//! predicates[{dimension, operator, value}]}`) and `FlowActivityResponse`
//! (`results[{group, data[{metric, count}], truncated, entities[]}]`). It is not in
//! `openapi-subset.json`, so the simulator checks the body itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json};
use serde_json::{Value, json};

use super::ids::rfc3339;
use super::rest::{ApiError, ApiResult, authorize};
use super::world::{World, lock};

/// Dimensions a predicate may name here (the real API knows more; the daemon uses
/// `flowId` only).
const DIMENSIONS: [&str; 3] = ["flowId", "flowType", "mediaType"];
/// Default and largest `pageSize`.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1_000;

#[derive(serde::Deserialize)]
pub(crate) struct Paging {
    #[serde(rename = "pageSize")]
    page_size: Option<usize>,
}

/// The `flowId` values the filter asks for (`None`: every flow).
fn flow_filter(body: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let Some(filter) = body.get("filter") else {
        return Ok(None);
    };
    match filter.get("type").and_then(Value::as_str) {
        Some("and" | "or") => {}
        _ => {
            return Err(ApiError::field(
                "filter.type",
                "filter.type must be \"and\" or \"or\".",
            ));
        }
    }
    let preds = filter
        .get("predicates")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::field("filter.predicates", "filter.predicates must be a list."))?;
    let mut flows = Vec::new();
    for p in preds {
        let dim = p.get("dimension").and_then(Value::as_str).unwrap_or("");
        if !DIMENSIONS.contains(&dim) {
            return Err(ApiError::field(
                "filter.predicates.dimension",
                format!("Unknown dimension '{dim}'."),
            ));
        }
        if let Some(op) = p.get("operator").and_then(Value::as_str)
            && op != "matches"
        {
            return Err(ApiError::field(
                "filter.predicates.operator",
                format!("Operator '{op}' is not supported here."),
            ));
        }
        if dim == "flowId" {
            let v = p.get("value").and_then(Value::as_str).ok_or_else(|| {
                ApiError::field(
                    "filter.predicates.value",
                    "A flowId predicate needs a value.",
                )
            })?;
            flows.push(v.to_owned());
        }
    }
    Ok((!flows.is_empty()).then_some(flows))
}

/// Whether the query asks for `oFlow` with details.
fn wants_details(body: &Value) -> Result<bool, ApiError> {
    let metrics = body
        .get("metrics")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::field("metrics", "metrics must be a non-empty list."))?;
    let mut details = false;
    for m in metrics {
        match m.get("metric").and_then(Value::as_str) {
            Some("oFlow") => details |= m.get("details").and_then(Value::as_bool) == Some(true),
            other => {
                return Err(ApiError::field(
                    "metrics.metric",
                    format!("Metric {other:?} is not supported here; use oFlow."),
                ));
            }
        }
    }
    Ok(details)
}

pub(crate) async fn query(
    State(world): State<Arc<World>>,
    Query(paging): Query<Paging>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&world, &headers)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::field("body", format!("Request body is not valid JSON: {e}.")))?;
    let details = wants_details(&body)?;
    let flows = flow_filter(&body)?;
    let page = paging.page_size.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    // Conversations a bot flow has now (not yet transferred, not ended), by flow.
    let mut by_flow: BTreeMap<String, Vec<(String, std::time::SystemTime)>> = BTreeMap::new();
    for c in lock(&world.conversations).open_in_flows() {
        if flows.as_ref().is_none_or(|f| f.contains(&c.0)) {
            by_flow.entry(c.0).or_default().push((c.1, c.2));
        }
    }
    let results: Vec<Value> = by_flow
        .into_iter()
        .map(|(flow, mut convs)| {
            convs.sort_by_key(|c| c.1);
            let count = convs.len();
            let truncated = count > page;
            if truncated {
                // "the first half of the list of entities will contain the oldest
                // entities and the second half the newest entities"
                let newest = convs.split_off(count - page / 2);
                convs.truncate(page - page / 2);
                convs.extend(newest);
            }
            let mut r = json!({
                "group": { "flowId": flow },
                "data": [{ "metric": "oFlow", "count": count }],
            });
            if details {
                r["truncated"] = json!(truncated);
                r["entities"] = convs
                    .iter()
                    .map(|(id, start)| {
                        json!({
                            "activityDate": rfc3339(*start),
                            "metric": "oFlow",
                            "conversationId": id,
                            "flowId": flow,
                            "flowType": "INBOUNDSHORTMESSAGE",
                            "mediaType": "message",
                        })
                    })
                    .collect();
            }
            r
        })
        .collect();
    Ok(Json(json!({ "results": results, "entityIdDimension": "conversationId" })).into_response())
}
