//! The intake's tests: call bodies, error bodies and the credential check.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;

use super::*;

#[test]
fn bodies_name_the_bad_field() {
    let id = "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38";
    let now = 1_795_510_000_000;
    let ok = parse_call(
        format!(r#"{{"conversationId":"{id}","intent":"Bye","x":1}}"#).as_bytes(),
        now,
    )
    .expect("valid");
    assert_eq!(ok.intent.as_deref(), Some("Bye"));
    assert_eq!(ok.event_time, None);
    let field = |b: &str| parse_call(b.as_bytes(), now).err().map(|e| e.0);
    assert_eq!(field("{"), Some("body"));
    assert_eq!(field("[]"), Some("body"));
    assert_eq!(field(r#"{"intent":"x"}"#), Some("conversationId"));
    assert_eq!(field(r#"{"conversationId":5}"#), Some("conversationId"));
    assert_eq!(field(r#"{"conversationId":"abc"}"#), Some("conversationId"));
    let long = "x".repeat(MAX_INTENT + 1);
    assert_eq!(
        field(&format!(r#"{{"conversationId":"{id}","intent":"{long}"}}"#)),
        Some("intent")
    );
    assert_eq!(
        field(&format!(
            r#"{{"conversationId":"{id}","attributes":{{"a":1}}}}"#
        )),
        Some("attributes")
    );
    let empty = parse_call(
        format!(r#"{{"conversationId":"{id}","intent":""}}"#).as_bytes(),
        now,
    )
    .expect("valid");
    assert_eq!(empty.intent, None, "an empty intent is no intent");
}

#[test]
fn event_time_is_whole_epoch_milliseconds_not_far_ahead() {
    let id = "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38";
    let now: u64 = 1_795_510_000_000;
    let parse = |t: &str| {
        parse_call(
            format!(r#"{{"conversationId":"{id}","eventTime":{t}}}"#).as_bytes(),
            now,
        )
    };
    let at = |t: &str| parse(t).map(|p| p.event_time).map_err(|e| e.0);
    assert_eq!(at("1795509997000"), Ok(Some(now - 3_000)));
    assert_eq!(at("null"), Ok(None));
    // A little ahead (clocks differ) is fine; far ahead is not a start.
    assert_eq!(at("1795510060000"), Ok(Some(now + 60_000)));
    assert_eq!(at("1795511000000"), Err("eventTime"));
    for bad in [
        "\"1795509997000\"",
        "1795509997000.5",
        "-1",
        "1e12",
        "true",
        "{}",
    ] {
        assert_eq!(at(bad), Err("eventTime"), "{bad}");
    }
    // Long ago is a start (it only earns a read).
    assert_eq!(at("0"), Ok(Some(0)));
}

#[test]
fn intents_and_attributes_are_kept_exactly_as_sent() {
    let id = "5d2b8c1e-9a47-4f3e-b6d0-7e1c2a9f4b38";
    // As JSON escapes them: a newline, a no-break space, a leading space or tab.
    for sent in [
        r"Goodbye\n",
        r"Goodbye\u00a0",
        " Goodbye",
        r"\tGoodbye",
        "  ",
    ] {
        let body = format!(r#"{{"conversationId":"{id}","intent":"{sent}"}}"#);
        let intent = parse_call(body.as_bytes(), 0).expect("valid").intent;
        let expected: String = serde_json::from_str(&format!("\"{sent}\"")).expect("json");
        assert_eq!(intent.as_deref(), Some(expected.as_str()), "{sent:?}");
        let body = format!(r#"{{"conversationId":"{id}","attributes":{{"Bot.Intent":"{sent}"}}}}"#);
        let attributes = parse_call(body.as_bytes(), 0).expect("valid").attributes;
        assert_eq!(attributes[0].1.as_ref(), expected.as_str(), "{sent:?}");
    }
}

async fn body_of(resp: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(resp.into_body(), MAX_BODY)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json body")
}

#[tokio::test]
async fn error_bodies_name_a_field_only_when_one_is_at_fault() {
    let unauthorized = error(StatusCode::UNAUTHORIZED, None, "unauthorized");
    assert_eq!(
        unauthorized.headers().get(WWW_AUTHENTICATE),
        Some(&HeaderValue::from_static("Bearer"))
    );
    assert_eq!(
        body_of(unauthorized).await,
        serde_json::json!({ "error": "unauthorized" })
    );
    assert_eq!(
        body_of(error(
            StatusCode::BAD_REQUEST,
            Some("intent"),
            "intent: bad"
        ))
        .await,
        serde_json::json!({ "error": "intent: bad", "field": "intent" })
    );
}

#[test]
fn credentials_are_checked_by_digest() {
    let c = Credentials::new(
        &SecretString::from("s3cret-token-0123456789".to_string()),
        Some("genesys"),
    );
    let mut h = HeaderMap::new();
    assert!(!c.admits(&h));
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer s3cret-token-0123456789"),
    );
    assert!(c.admits(&h));
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer s3cret-token-012345678"),
    );
    assert!(!c.admits(&h));
    let basic = base64::engine::general_purpose::STANDARD.encode("genesys:s3cret-token-0123456789");
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
    );
    assert!(c.admits(&h));
    let wrong = base64::engine::general_purpose::STANDARD.encode("other:s3cret-token-0123456789");
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {wrong}")).unwrap(),
    );
    assert!(!c.admits(&h));
}

#[test]
fn every_answer_reads_back_from_its_text() {
    let texts: std::collections::HashSet<&str> = super::IntakeAnswer::ALL
        .iter()
        .map(|a| a.as_str())
        .collect();
    assert_eq!(
        texts.len(),
        super::IntakeAnswer::ALL.len(),
        "each has its own text"
    );
    for a in super::IntakeAnswer::ALL {
        assert_eq!(super::IntakeAnswer::parse(a.as_str()), Some(a));
    }
    assert_eq!(super::IntakeAnswer::parse("closed"), None);
    assert_eq!(super::IntakeAnswer::parse(""), None);
}
