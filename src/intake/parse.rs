//! Reading a call's body: each field checked, a problem named by its field.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{MAX_ATTRIBUTE_TEXT, MAX_ATTRIBUTES, MAX_CLOCK_AHEAD, MAX_INTENT};
use crate::ids::is_uuid;

#[derive(Deserialize)]
struct CallBody<'a> {
    #[serde(rename = "conversationId", borrow, default)]
    conversation_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    intent: Option<&'a RawValue>,
    #[serde(borrow, default)]
    attributes: Option<&'a RawValue>,
    #[serde(rename = "eventTime", borrow, default)]
    event_time: Option<&'a RawValue>,
}

/// A field-level problem: the field and what is wrong with it.
type BadField = (&'static str, String);

/// A call's attributes: each name with its value.
type Attributes = Vec<(Box<str>, Box<str>)>;

/// A call's parts, checked.
#[derive(Debug)]
pub(super) struct CallParts {
    pub(super) conversation_id: Box<str>,
    pub(super) intent: Option<Box<str>>,
    pub(super) attributes: Attributes,
    /// `eventTime`, epoch milliseconds.
    pub(super) event_time: Option<u64>,
}

/// Validates a call's body into its parts; `now_ms` is this host's clock, against
/// which an `eventTime` may not be far ahead.
pub(super) fn parse_call(bytes: &[u8], now_ms: u64) -> Result<CallParts, BadField> {
    // serde would also read a struct from an array; only an object is a call.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(("body", "must be a JSON object".into()));
    }
    let body: CallBody<'_> =
        serde_json::from_slice(bytes).map_err(|e| ("body", format!("not a JSON object: {e}")))?;
    let id = conversation_id(body.conversation_id)?;
    let intent = intent(body.intent)?;
    let attributes = attributes(body.attributes)?;
    let event_time = event_time(body.event_time, now_ms)?;
    Ok(CallParts {
        conversation_id: id.into(),
        intent,
        attributes,
        event_time,
    })
}

/// `conversationId`: required, a conversation UUID.
fn conversation_id(raw: Option<&RawValue>) -> Result<String, BadField> {
    let id_raw = raw.ok_or(("conversationId", "required".to_string()))?;
    let id: String = serde_json::from_str(id_raw.get())
        .map_err(|_| ("conversationId", "must be a string".to_string()))?;
    if !is_uuid(&id) {
        return Err((
            "conversationId",
            "must be a conversation UUID (8-4-4-4-12 hex digits)".into(),
        ));
    }
    Ok(id)
}

/// `intent`: a string of at most [`MAX_INTENT`] bytes; absent, null or empty is none.
fn intent(raw: Option<&RawValue>) -> Result<Option<Box<str>>, BadField> {
    Ok(match raw {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => {
            let s: String = serde_json::from_str(raw.get())
                .map_err(|_| ("intent", "must be a string".to_string()))?;
            if s.len() > MAX_INTENT {
                return Err(("intent", format!("longer than {MAX_INTENT} bytes")));
            }
            // An empty template variable means "no intent yet". Anything else is kept
            // exactly as sent: rules match the value exactly, as they do a `.attributes`
            // event's, so " Goodbye" or "Goodbye\n" is another value, never trimmed
            // into one a rule holds.
            (!s.is_empty()).then(|| s.into())
        }
    })
}

/// `attributes`: an object of at most [`MAX_ATTRIBUTES`] strings, names and values of
/// at most [`MAX_ATTRIBUTE_TEXT`] bytes; absent or null is none.
fn attributes(raw: Option<&RawValue>) -> Result<Attributes, BadField> {
    let mut attributes = Vec::new();
    if let Some(raw) = raw.filter(|r| r.get() != "null") {
        let map: std::collections::HashMap<String, &RawValue> = serde_json::from_str(raw.get())
            .map_err(|_| ("attributes", "must be an object of strings".to_string()))?;
        if map.len() > MAX_ATTRIBUTES {
            return Err((
                "attributes",
                format!("more than {MAX_ATTRIBUTES} attributes"),
            ));
        }
        for (k, v) in map {
            let v: String = serde_json::from_str(v.get())
                .map_err(|_| ("attributes", format!("value of {k:?} must be a string")))?;
            if k.len() > MAX_ATTRIBUTE_TEXT || v.len() > MAX_ATTRIBUTE_TEXT {
                return Err((
                    "attributes",
                    format!("names and values are limited to {MAX_ATTRIBUTE_TEXT} bytes"),
                ));
            }
            attributes.push((k.into(), v.into()));
        }
    }
    Ok(attributes)
}

/// `eventTime`: epoch milliseconds, at most [`MAX_CLOCK_AHEAD`] ahead of `now_ms`;
/// absent or null is none.
fn event_time(raw: Option<&RawValue>, now_ms: u64) -> Result<Option<u64>, BadField> {
    Ok(match raw {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => {
            let ms: u64 = serde_json::from_str(raw.get()).map_err(|_| {
                (
                    "eventTime",
                    "must be epoch milliseconds, a whole number".to_string(),
                )
            })?;
            let ahead = Duration::from_millis(ms.saturating_sub(now_ms));
            if ahead > MAX_CLOCK_AHEAD {
                return Err((
                    "eventTime",
                    format!(
                        "{} s ahead of this host's clock (at most {} s allowed)",
                        ahead.as_secs(),
                        MAX_CLOCK_AHEAD.as_secs()
                    ),
                ));
            }
            Some(ms)
        }
    })
}
