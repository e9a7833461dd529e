//! `POST /api/v2/analytics/queues/observations/query`: the conversations in a queue now.
//!
//! The facts sheet (D.6) lists it to recover queue conversations after an outage of
//! every socket. Body `QueueObservationQuery` (`filter` and `metrics` required,
//! `detailMetrics` optional), answer `QueueObservationQueryResponse`, both in
//! `openapi-subset.json`; only fields listed there are used.
//!
//! What the simulator supports and answers:
//! - `filter`: `type` `and`|`or`, `predicates` and `clauses` (one level) of `dimension`
//!   predicates on `queueId` or `mediaType` with operator `matches` (the default) and a
//!   `value`. The queues asked for are the `queueId` values named anywhere in the
//!   filter (at least one is required); each gives one group
//!   `{"queueId": Q, "mediaType": "message"}` (every simulated conversation is a
//!   message), listed in `results` if the filter admits it, in the order first named.
//! - `metrics`: any non-empty metric names; `oWaiting` counts the open conversations
//!   in the queue with no agent connected (an `acd` participant for the queue not
//!   ended), `oInteracting` those connected to an agent and not ended; any other
//!   metric counts 0. Conversations still with a bot flow and closed ones are in no
//!   queue. `data` holds one `ObservationMetricData{metric, stats{count}}` per metric.
//! - `detailMetrics`: for a metric named there too, `truncated` and (when not empty)
//!   `observations`: `ObservationValue{observationDate, conversationId, sessionId,
//!   direction}` (plus `userId` while interacting), oldest first; past
//!   `SimConfig::observation_cap` the oldest half and newest half are kept and
//!   `truncated` is `true`. `observationDate` is when the conversation entered the
//!   queue (waiting) or when the agent connected (interacting).
//!
//! A body that breaks these rules is answered 400 with an `ErrorBody` naming the field.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json};
use serde_json::{Map, Value, json};

use super::ids::rfc3339;
use super::lifecycle::{InQueue, QueueState};
use super::rest::{ApiError, ApiResult, authorize};
use super::world::{World, lock};

/// The media type of every simulated conversation.
const MEDIA: &str = "message";

/// A dimension a predicate may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dimension {
    QueueId,
    MediaType,
}

/// `dimension matches value`.
#[derive(Debug)]
struct Predicate {
    dimension: Dimension,
    value: String,
}

impl Predicate {
    fn admits(&self, queue_id: &str, media: &str) -> bool {
        match self.dimension {
            Dimension::QueueId => self.value == queue_id,
            Dimension::MediaType => self.value.eq_ignore_ascii_case(media),
        }
    }
}

/// `and` (every term) or `or` (any term) over predicates and clauses.
#[derive(Debug)]
struct Filter {
    any: bool,
    predicates: Vec<Predicate>,
    /// `(any, predicates)` per clause.
    clauses: Vec<(bool, Vec<Predicate>)>,
}

fn combine(any: bool, mut terms: impl Iterator<Item = bool>) -> bool {
    if any {
        terms.any(|t| t)
    } else {
        terms.all(|t| t)
    }
}

impl Filter {
    fn admits(&self, queue_id: &str, media: &str) -> bool {
        let preds = self.predicates.iter().map(|p| p.admits(queue_id, media));
        let clauses = self
            .clauses
            .iter()
            .map(|(any, ps)| combine(*any, ps.iter().map(|p| p.admits(queue_id, media))));
        combine(self.any, preds.chain(clauses))
    }

    /// The queue ids named anywhere, each once, in the order first named.
    fn queues(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = self
            .predicates
            .iter()
            .chain(self.clauses.iter().flat_map(|(_, ps)| ps.iter()));
        for p in all.filter(|p| p.dimension == Dimension::QueueId) {
            if !out.contains(&p.value) {
                out.push(p.value.clone());
            }
        }
        out
    }
}

/// `and` -> false, `or` -> true.
fn bool_type(v: Option<&Value>, field: &str) -> Result<bool, ApiError> {
    match v.and_then(Value::as_str) {
        Some("and") => Ok(false),
        Some("or") => Ok(true),
        _ => Err(ApiError::field(
            field,
            format!("{field} must be \"and\" or \"or\"."),
        )),
    }
}

fn parse_predicates(v: Option<&Value>, at: &str) -> Result<Vec<Predicate>, ApiError> {
    let field = format!("{at}.predicates");
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::field(&field, format!("{field} must be a list.")))?;
    list.iter().map(|p| predicate(p, &field)).collect()
}

fn predicate(p: &Value, at: &str) -> Result<Predicate, ApiError> {
    let p = p
        .as_object()
        .ok_or_else(|| ApiError::field(at, format!("Each of {at} must be an object.")))?;
    if let Some(t) = p.get("type")
        && t.as_str() != Some("dimension")
    {
        return Err(ApiError::field(
            &format!("{at}.type"),
            format!("Predicate type {t} is not supported here; use \"dimension\"."),
        ));
    }
    let dimension = match p.get("dimension").and_then(Value::as_str) {
        Some("queueId") => Dimension::QueueId,
        Some("mediaType") => Dimension::MediaType,
        other => {
            return Err(ApiError::field(
                &format!("{at}.dimension"),
                format!("Unknown dimension {other:?}; use queueId or mediaType."),
            ));
        }
    };
    match p.get("operator") {
        None => {}
        Some(op) if op.as_str() == Some("matches") => {}
        Some(op) => {
            return Err(ApiError::field(
                &format!("{at}.operator"),
                format!("Operator {op} is not supported here; use \"matches\"."),
            ));
        }
    }
    if p.contains_key("range") {
        return Err(ApiError::field(
            &format!("{at}.range"),
            "A dimension predicate takes a value, not a range.",
        ));
    }
    let value = p
        .get("value")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::field(
                &format!("{at}.value"),
                "A matches predicate needs a non-empty string value.",
            )
        })?;
    Ok(Predicate {
        dimension,
        value: value.to_owned(),
    })
}

fn filter(body: &Map<String, Value>) -> Result<Filter, ApiError> {
    let f = body
        .get("filter")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::field("filter", "filter is required and must be an object."))?;
    let any = bool_type(f.get("type"), "filter.type")?;
    let predicates = parse_predicates(f.get("predicates"), "filter")?;
    let mut clauses = Vec::new();
    if let Some(cs) = f.get("clauses") {
        let cs = cs
            .as_array()
            .ok_or_else(|| ApiError::field("filter.clauses", "filter.clauses must be a list."))?;
        for c in cs {
            let c = c.as_object().ok_or_else(|| {
                ApiError::field(
                    "filter.clauses",
                    "Each of filter.clauses must be an object.",
                )
            })?;
            let any = bool_type(c.get("type"), "filter.clauses.type")?;
            if c.get("predicates").is_none() {
                return Err(ApiError::field(
                    "filter.clauses.predicates",
                    "filter.clauses.predicates is required.",
                ));
            }
            clauses.push((
                any,
                parse_predicates(c.get("predicates"), "filter.clauses")?,
            ));
        }
    }
    let filter = Filter {
        any,
        predicates,
        clauses,
    };
    if filter.queues().is_empty() {
        return Err(ApiError::field(
            "filter",
            "The filter must name at least one queueId.",
        ));
    }
    Ok(filter)
}

/// A list of metric names; `required` makes absence (and an empty list) an error.
fn names(body: &Map<String, Value>, field: &str, required: bool) -> Result<Vec<String>, ApiError> {
    let bad = || {
        let what = if required { "a non-empty" } else { "a" };
        ApiError::field(
            field,
            format!("{field} must be {what} list of metric names."),
        )
    };
    let Some(v) = body.get(field) else {
        return if required { Err(bad()) } else { Ok(Vec::new()) };
    };
    let list = v.as_array().ok_or_else(bad)?;
    if required && list.is_empty() {
        return Err(bad());
    }
    let mut out: Vec<String> = Vec::new();
    for m in list {
        let m = m.as_str().filter(|m| !m.is_empty()).ok_or_else(bad)?;
        if !out.iter().any(|o| o == m) {
            out.push(m.to_owned());
        }
    }
    Ok(out)
}

/// One `ObservationValue`.
fn observation(o: &InQueue) -> Value {
    let mut v = json!({
        "observationDate": rfc3339(o.since),
        "conversationId": o.conversation_id,
        "sessionId": o.session_id,
        "direction": "inbound",
    });
    if let Some(u) = &o.user_id {
        v["userId"] = json!(u);
    }
    v
}

/// One `ObservationMetricData`; `listed` is sorted oldest first.
fn metric_data(metric: &str, listed: &[&InQueue], detail: bool, cap: usize) -> Value {
    let mut d = json!({ "metric": metric, "stats": { "count": listed.len() } });
    if detail {
        let truncated = listed.len() > cap;
        let kept: Vec<&&InQueue> = if truncated {
            // "the first half of the list of observations will contain the oldest
            // observations and the second half the newest observations"
            let newest = cap / 2;
            let oldest = cap - newest;
            listed[..oldest]
                .iter()
                .chain(&listed[listed.len() - newest..])
                .collect()
        } else {
            listed.iter().collect()
        };
        d["truncated"] = json!(truncated);
        if !kept.is_empty() {
            d["observations"] = kept.iter().map(|o| observation(o)).collect();
        }
    }
    d
}

pub(crate) async fn query(
    State(world): State<Arc<World>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&world, &headers)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::field("body", format!("Request body is not valid JSON: {e}.")))?;
    let body = body.as_object().ok_or_else(|| {
        ApiError::field("body", "The body must be a QueueObservationQuery object.")
    })?;
    let filter = filter(body)?;
    let metrics = names(body, "metrics", true)?;
    let details = names(body, "detailMetrics", false)?;
    let mut now = lock(&world.conversations).in_queues();
    now.sort_by(|a, b| (a.since, &a.conversation_id).cmp(&(b.since, &b.conversation_id)));
    let results: Vec<Value> = filter
        .queues()
        .into_iter()
        .filter(|q| filter.admits(q, MEDIA))
        .map(|q| {
            let data: Vec<Value> = metrics
                .iter()
                .map(|m| {
                    let state = match m.as_str() {
                        "oWaiting" => Some(QueueState::Waiting),
                        "oInteracting" => Some(QueueState::Interacting),
                        _ => None,
                    };
                    let listed: Vec<&InQueue> = now
                        .iter()
                        .filter(|o| o.queue_id == q && Some(o.state) == state)
                        .collect();
                    metric_data(m, &listed, details.contains(m), world.observation_cap)
                })
                .collect();
            json!({ "group": { "queueId": q, "mediaType": MEDIA }, "data": data })
        })
        .collect();
    world.observation_queries.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({ "results": results })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Filter, ApiError> {
        filter(body.as_object().expect("object"))
    }

    fn field_of(e: ApiError) -> String {
        format!("{e:?}")
    }

    #[test]
    fn filters_pick_groups_like_boolean_expressions() {
        let f = parse(json!({"filter": {"type": "or", "predicates": [
            {"dimension": "queueId", "value": "q1"},
            {"type": "dimension", "dimension": "queueId", "operator": "matches", "value": "q2"},
            {"dimension": "queueId", "value": "q1"},
        ]}}))
        .expect("valid");
        assert_eq!(f.queues(), ["q1", "q2"]);
        assert!(f.admits("q1", MEDIA) && f.admits("q2", MEDIA));
        assert!(!f.admits("q3", MEDIA));

        let f = parse(json!({"filter": {"type": "and",
            "predicates": [{"dimension": "mediaType", "value": "message"}],
            "clauses": [{"type": "or", "predicates": [
                {"dimension": "queueId", "value": "q1"},
                {"dimension": "queueId", "value": "q2"}]}]}}))
        .expect("valid");
        assert_eq!(f.queues(), ["q1", "q2"]);
        assert!(f.admits("q2", MEDIA));
        assert!(!f.admits("q2", "voice"));

        // One group has one queue: "q1 and q2" admits none.
        let f = parse(json!({"filter": {"type": "and", "predicates": [
            {"dimension": "queueId", "value": "q1"},
            {"dimension": "queueId", "value": "q2"}]}}))
        .expect("valid");
        assert!(!f.admits("q1", MEDIA));
    }

    #[test]
    fn bad_filters_name_their_field() {
        let cases = [
            (json!({}), "filter"),
            (json!({"filter": {"predicates": []}}), "filter.type"),
            (json!({"filter": {"type": "xor"}}), "filter.type"),
            (
                json!({"filter": {"type": "or", "predicates": {}}}),
                "filter.predicates",
            ),
            (
                json!({"filter": {"type": "or", "predicates": [{"dimension": "userId", "value": "u"}]}}),
                "filter.predicates.dimension",
            ),
            (
                json!({"filter": {"type": "or", "predicates": [{"dimension": "queueId", "operator": "exists"}]}}),
                "filter.predicates.operator",
            ),
            (
                json!({"filter": {"type": "or", "predicates": [{"dimension": "queueId"}]}}),
                "filter.predicates.value",
            ),
            (
                json!({"filter": {"type": "or", "clauses": [{"type": "or"}]}}),
                "filter.clauses.predicates",
            ),
            (
                json!({"filter": {"type": "or", "predicates": [{"dimension": "mediaType", "value": "message"}]}}),
                "filter",
            ),
        ];
        for (body, field) in cases {
            let e = field_of(parse(body.clone()).expect_err("invalid"));
            assert!(
                e.contains(&format!("field: Some(\"{field}\")")),
                "{body}: {e}"
            );
        }
    }

    #[test]
    fn metric_lists_are_checked_and_deduplicated() {
        let m = |v: Value| {
            let body = json!({ "metrics": v });
            names(body.as_object().expect("object"), "metrics", true)
        };
        assert_eq!(
            m(json!(["oWaiting", "oInteracting", "oWaiting"])).expect("valid"),
            ["oWaiting", "oInteracting"]
        );
        assert!(m(json!([])).is_err());
        assert!(m(json!("oWaiting")).is_err());
        assert!(m(json!([""])).is_err());
        assert!(m(json!([{"metric": "oWaiting"}])).is_err());
        let none = json!({});
        assert!(
            names(none.as_object().expect("object"), "detailMetrics", false)
                .expect("optional")
                .is_empty()
        );
    }

    #[test]
    fn long_lists_keep_the_oldest_and_newest_halves() {
        let t0 = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_510_000);
        let all: Vec<InQueue> = (0..7u64)
            .map(|i| InQueue {
                queue_id: "q1".into(),
                state: QueueState::Waiting,
                conversation_id: format!("c{i}"),
                session_id: format!("s{i}"),
                since: t0 + std::time::Duration::from_secs(i),
                user_id: None,
            })
            .collect();
        let listed: Vec<&InQueue> = all.iter().collect();
        let ids = |d: &Value| -> Vec<String> {
            d["observations"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| o["conversationId"].as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let d = metric_data("oWaiting", &listed, true, 5);
        assert_eq!(d["stats"]["count"], 7);
        assert_eq!(d["truncated"], true);
        assert_eq!(ids(&d), ["c0", "c1", "c2", "c5", "c6"]);
        let d = metric_data("oWaiting", &listed, true, 7);
        assert_eq!(d["truncated"], false);
        assert_eq!(ids(&d).len(), 7);
        // Not a detail metric: the count only.
        let d = metric_data("oWaiting", &listed, false, 5);
        assert_eq!(d, json!({"metric": "oWaiting", "stats": {"count": 7}}));
        // A detail metric with nothing listed: no empty list.
        let d = metric_data("oInteracting", &[], true, 5);
        assert_eq!(
            d,
            json!({"metric": "oInteracting", "stats": {"count": 0}, "truncated": false})
        );
    }
}
