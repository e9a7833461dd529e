//! Detail-event bodies (`v2.detail.events.conversation.{id}.*`) and flow-metrics
//! records (`v2.analytics.flow.{flowId}.metrics`) of bot conversations.
//!
//! The shared schemas set `additionalProperties:false`, so every body here uses
//! only fields of its SDK model (README C.2, C.3), in the shapes of the examples
//! in `events/bot-phase/`: epoch-millisecond `eventTime`, UPPERCASE enums in
//! detail events, lowercase ones in flow metrics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::bot::BotInfo;
use super::ids::rfc3339;
use super::model::{Conversation, Participant};

/// What web-messaging participants show as `provider` in detail events (example 06).
const PROVIDER: &str = "PureCloud Webmessaging";

/// `v2.detail.events.conversation.{id}.{suffix}`.
pub(crate) fn topic(conversation_id: &str, suffix: &str) -> String {
    format!("v2.detail.events.conversation.{conversation_id}.{suffix}")
}

/// `v2.analytics.flow.{flowId}.metrics`.
pub(crate) fn flow_metrics_topic(flow_id: &str) -> String {
    format!("v2.analytics.flow.{flow_id}.metrics")
}

/// Milliseconds since the epoch: how detail events carry times.
pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long the participant was connected, up to its end (or now).
fn connected_ms(p: &Participant) -> u64 {
    let until = p.end.unwrap_or_else(SystemTime::now);
    millis(until.duration_since(p.connected).unwrap_or_default())
}

/// The conversation model's lowercase `disconnectType` as the detail-event enum.
fn upper_disconnect(d: Option<&str>) -> &'static str {
    match d {
        Some("client") => "CLIENT",
        Some("peer") => "PEER",
        Some("system") => "SYSTEM",
        Some("transfer") => "TRANSFER",
        Some("endpoint") => "ENDPOINT",
        Some("timeout") => "TIMEOUT",
        Some("error") => "ERROR",
        Some(_) => "OTHER",
        None => "UNKNOWN",
    }
}

/// Fields every participant detail event shares.
fn common(c: &Conversation, p: &Participant) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("eventTime".into(), json!(epoch_ms(SystemTime::now())));
    m.insert("conversationId".into(), json!(c.id));
    m.insert("participantId".into(), json!(p.id));
    m.insert("sessionId".into(), json!(p.session));
    m.insert("mediaType".into(), json!("MESSAGE"));
    m.insert("messageType".into(), json!("WEBMESSAGING"));
    m.insert("direction".into(), json!("INBOUND"));
    m.insert("provider".into(), json!(PROVIDER));
    m.insert("divisionId".into(), json!(c.division_id));
    m
}

/// `.customer.start`: the guest opened the conversation, at the customer's start (the
/// `eventTime` a trigger on this topic passes on).
pub(crate) fn customer_start(c: &Conversation, p: &Participant) -> Value {
    let mut m = common(c, p);
    m.insert("eventTime".into(), json!(epoch_ms(p.start)));
    if let Some(a) = &p.address {
        m.insert("addressFrom".into(), json!(a));
    }
    Value::Object(m)
}

/// `.customer.end`: the guest's participant ended, shaped like example 06.
pub(crate) fn customer_end(c: &Conversation, p: &Participant) -> Value {
    let mut m = common(c, p);
    m.insert(
        "disconnectType".into(),
        json!(upper_disconnect(p.disconnect_type)),
    );
    m.insert("interactingDurationMs".into(), json!(connected_ms(p)));
    Value::Object(m)
}

fn flow_fields(m: &mut Map<String, Value>, bot: &BotInfo) {
    m.insert("flowType".into(), json!("INBOUNDSHORTMESSAGE"));
    m.insert("flowId".into(), json!(bot.flow_id));
    m.insert("flowVersion".into(), json!(bot.flow_version));
}

/// `.flow.start`: the inbound message flow took the conversation.
pub(crate) fn flow_start(c: &Conversation, p: &Participant, bot: &BotInfo) -> Value {
    let mut m = common(c, p);
    flow_fields(&mut m, bot);
    Value::Object(m)
}

/// `.flow.end`: the flow handed the conversation to a queue (`TRANSFER`/`ACD`) or
/// was disconnected with it (`DISCONNECT`).
pub(crate) fn flow_end(c: &Conversation, p: &Participant, bot: &BotInfo) -> Value {
    let mut m = common(c, p);
    flow_fields(&mut m, bot);
    m.insert(
        "disconnectType".into(),
        json!(upper_disconnect(p.disconnect_type)),
    );
    m.insert("connectedDurationMs".into(), json!(connected_ms(p)));
    if p.disconnect_type == Some("transfer") {
        m.insert("exitReason".into(), json!("TRANSFER"));
        m.insert("transferType".into(), json!("ACD"));
    } else {
        m.insert("exitReason".into(), json!("DISCONNECT"));
    }
    Value::Object(m)
}

fn queue_field(m: &mut Map<String, Value>, p: &Participant) {
    if let Some(q) = &p.queue_id {
        m.insert("queueId".into(), json!(q));
    }
}

/// `.acd.start`: the transfer put the conversation in a queue.
pub(crate) fn acd_start(c: &Conversation, p: &Participant) -> Value {
    let mut m = common(c, p);
    queue_field(&mut m, p);
    Value::Object(m)
}

/// `.acd.end`: the queue participant ended (here only by the conversation ending).
pub(crate) fn acd_end(c: &Conversation, p: &Participant) -> Value {
    let mut m = common(c, p);
    queue_field(&mut m, p);
    m.insert(
        "disconnectType".into(),
        json!(upper_disconnect(p.disconnect_type)),
    );
    m.insert("connectedDurationMs".into(), json!(connected_ms(p)));
    Value::Object(m)
}

/// `.attributes`: ALL the participant's attributes as they are now (example 05).
pub(crate) fn attributes(c: &Conversation, p: &Participant) -> Value {
    // The model keeps only string values; anything else is stringified so the
    // body stays a string map whatever a future caller stores.
    let attrs: Map<String, Value> = p
        .attributes
        .iter()
        .map(|(k, v)| {
            let s = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            (k.clone(), Value::String(s))
        })
        .collect();
    json!({
        "eventTime": epoch_ms(SystemTime::now()),
        "conversationId": c.id,
        "participantId": p.id,
        "attributes": attrs,
        "communications": [{ "id": p.session, "mediaType": "MESSAGE" }],
        "participantStartTime": epoch_ms(p.start),
    })
}

/// Which flow-metrics record to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowMetric {
    /// `nFlow` = 1 as the flow starts (example 04).
    Started,
    /// `tFlow` = milliseconds in the flow, once it ended.
    Ended,
}

/// A `FlowMetricsTopicFlowMetricRecord` for the flow participant `p`.
pub(crate) fn flow_metric(
    c: &Conversation,
    p: &Participant,
    bot: &BotInfo,
    which: FlowMetric,
) -> Value {
    let mut m = Map::new();
    let (metric, value) = match which {
        FlowMetric::Started => ("nFlow", 1),
        FlowMetric::Ended => ("tFlow", connected_ms(p)),
    };
    m.insert("metric".into(), json!(metric));
    m.insert("metricDate".into(), json!(rfc3339(SystemTime::now())));
    m.insert("value".into(), json!(value));
    m.insert("conversationId".into(), json!(c.id));
    m.insert("flowId".into(), json!(bot.flow_id));
    m.insert("flowName".into(), json!(p.name));
    m.insert("flowType".into(), json!("inboundshortmessage"));
    m.insert("flowVersion".into(), json!(bot.flow_version));
    m.insert("mediaType".into(), json!("message"));
    m.insert("messageType".into(), json!("webmessaging"));
    m.insert("purpose".into(), json!(p.role.purpose()));
    m.insert("direction".into(), json!("inbound"));
    m.insert("sessionId".into(), json!(p.session));
    m.insert("participantName".into(), json!(p.name));
    m.insert("divisionIds".into(), json!([c.division_id]));
    if which == FlowMetric::Ended {
        // The conversation model's values are all in this enum's lowercase spelling.
        if let Some(d) = p.disconnect_type {
            m.insert("disconnectType".into(), json!(d));
        }
        if p.disconnect_type == Some("transfer") {
            m.insert("exitReason".into(), json!("TRANSFER"));
            m.insert("transferType".into(), json!("ACD"));
        } else {
            m.insert("exitReason".into(), json!("DISCONNECT"));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnect_types_map_to_the_detail_enum() {
        assert_eq!(upper_disconnect(Some("peer")), "PEER");
        assert_eq!(upper_disconnect(Some("client")), "CLIENT");
        assert_eq!(upper_disconnect(Some("transfer")), "TRANSFER");
        assert_eq!(upper_disconnect(Some("takeover")), "OTHER");
        assert_eq!(upper_disconnect(None), "UNKNOWN");
    }

    #[test]
    fn epoch_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_511_704_512);
        assert_eq!(epoch_ms(t), 1_795_511_704_512);
        assert_eq!(
            topic("c", "customer.end"),
            "v2.detail.events.conversation.c.customer.end"
        );
    }
}
