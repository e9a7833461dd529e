//! A conversation's participants and their message communications, as the farewell
//! and the wrap-up need them (`GET /api/v2/conversations/messages/{id}`).

/// One message communication of a participant (`Participant.messages[]`, model `Message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Communication {
    /// The communication id, as the send-message and wrap-up paths want it.
    pub id: String,
    /// `alerting`, `connected`, `parked` or `disconnected`, when sent.
    pub state: Option<String>,
}

impl Communication {
    /// Whether the communication says it has ended (an absent state does not).
    pub fn is_ended(&self) -> bool {
        self.state.as_deref().is_some_and(is_ended_state)
    }
}

/// One participant of `GET /api/v2/conversations/{id}` (`Conversation.participants[]`),
/// reduced to what the farewell and wrap-up steps need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommParticipant {
    /// Participant id.
    pub id: String,
    /// `customer`, `agent`, `acd`, `workflow`, `botflow`, ... (a free string).
    pub purpose: Option<String>,
    /// Participant-level state, when sent. The generic `Participant` model has none
    /// (state lives on each communication); kept for bodies that do carry it.
    pub state: Option<String>,
    /// `endTime` is present, or `state` is `disconnected`/`terminated`.
    pub ended: bool,
    /// `wrapupRequired` is `true` (anything else, including a wrong type, is `false`).
    pub wrapup_required: bool,
    /// A wrap-up is already on the participant (`wrapup.code` set and not
    /// `provisional`), or `wrapupSkipped` is `true`.
    pub wrapup_done: bool,
    /// `messages[]`: the message communications, in the order Genesys lists them.
    pub communications: Vec<Communication>,
}

impl CommParticipant {
    /// Whether `purpose` is `p` (case-insensitive).
    pub fn has_purpose(&self, p: &str) -> bool {
        self.purpose
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(p))
    }
}

fn is_ended_state(s: &str) -> bool {
    s.eq_ignore_ascii_case("disconnected") || s.eq_ignore_ascii_case("terminated")
}

/// Reads a `Conversation` body into its participants. Lenient on purpose: unknown
/// fields are ignored, a field read here with the wrong type counts as absent, a
/// participant without an `id` and a communication without an `id` are skipped, and
/// nothing else in the (deeply recursive) model is looked at. Only a body that is not
/// JSON or has no `participants` array is an error.
pub fn parse_comm_participants(body: &[u8]) -> Result<Vec<CommParticipant>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let parts = v
        .get("participants")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| "no `participants` array in the Conversation".to_string())?;
    Ok(parts.iter().filter_map(comm_participant).collect())
}

fn json_str(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn comm_participant(p: &serde_json::Value) -> Option<CommParticipant> {
    let id = json_str(p, "id")?;
    let state = json_str(p, "state");
    let has_end_time = match p.get("endTime") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    let ended = has_end_time || state.as_deref().is_some_and(is_ended_state);
    let wrapped = p
        .get("wrapup")
        .is_some_and(|w| json_str(w, "code").is_some() && !flag_of(w, "provisional"));
    let communications = p
        .get("messages")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(Communication {
                id: json_str(m, "id")?,
                state: json_str(m, "state"),
            })
        })
        .collect();
    Some(CommParticipant {
        id,
        purpose: json_str(p, "purpose"),
        state,
        ended,
        wrapup_required: flag_of(p, "wrapupRequired"),
        wrapup_done: wrapped || flag_of(p, "wrapupSkipped"),
        communications,
    })
}

fn flag_of(v: &serde_json::Value, key: &str) -> bool {
    v.get(key).and_then(serde_json::Value::as_bool) == Some(true)
}
