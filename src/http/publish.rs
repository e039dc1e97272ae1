//! `POST /api/twine`: a backend publishes `{"room_id": "...", "payload": {...}}` to a room.
//!
//! The key is checked before the body is read; the message is accepted (201) once it is stored.
//! An `Idempotency-Key` header makes a retry safe: the same key answers 201 again without
//! storing or delivering the message twice.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use twine_store::Publish;

use crate::error::AppError;
use crate::publish;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;

/// The header a backend sets to make retries of one publish safe.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on the answer to a retry that stored nothing new.
static REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub async fn publish(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    app.api_key.check(&headers)?;
    app.admit(publish::Source::Backend)?;
    let key = idempotency_key(&headers)?;
    let bytes = super::read_body(body, app.config.max_payload).await?;
    let (room, payload) = parse(&bytes)?;
    let publish = Publish::new(&room, payload).with_key(key);
    let appended = publish::store(&*app.history, &app.metrics, publish).await?;
    let mut response = (StatusCode::CREATED, "ok").into_response();
    if appended.repeated {
        response
            .headers_mut()
            .insert(REPLAYED.clone(), HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| publish::usable_key(k))
        .map(Some)
        .ok_or(AppError::Malformed(
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
        ))
}

/// Validates a publish body in the original server's order, returning the room and the payload
/// as JSON text. Only the top level is decoded, so a payload may nest as deeply as its size
/// allows (as with the original's `JSON.parse`).
fn parse(bytes: &[u8]) -> Result<(String, &str), AppError> {
    let fields: HashMap<Cow<str>, &RawValue> = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            AppError::Malformed("The request body must be a JSON object.")
        } else {
            AppError::Malformed("The request body is not valid JSON.")
        }
    })?;
    if fields.len() > 2 {
        return Err(AppError::Malformed(
            "Extra parameters were included in request.",
        ));
    }
    let room = fields.get("room_id").copied().filter(|v| is_truthy(v));
    let payload = fields.get("payload").copied().filter(|v| is_truthy(v));
    let (Some(room), Some(payload)) = (room, payload) else {
        return Err(AppError::Malformed(
            "One or more required parameters is missing",
        ));
    };
    if !payload.get().starts_with('{') {
        return Err(AppError::Malformed("Payload is of an incorrect data type."));
    }
    let room: String = serde_json::from_str(room.get())
        .map_err(|_| AppError::Malformed("room_id is of an incorrect data type."))?;
    crate::room::check(&room)?;
    Ok((room, payload.get()))
}

/// JavaScript truthiness, as the original's `if (!room_id || !payload)` check.
fn is_truthy(value: &RawValue) -> bool {
    match value.get() {
        "null" | "false" | "\"\"" => false,
        text if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => {
            text.parse::<f64>().is_ok_and(|f| f != 0.0)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn accepts_the_twine_body() {
        let (room, payload) = parse(br#"{"room_id":"news","payload":{"a":1}}"#).unwrap();
        assert_eq!(room, "news");
        assert_eq!(payload, r#"{"a":1}"#);
    }

    #[test]
    fn refuses_with_the_original_texts() {
        assert_eq!(
            refusal(r#"{"room_id":"r","payload":{},"x":1}"#),
            "Malformed Request: Extra parameters were included in request."
        );
        for missing in [
            r#"{"room_id":"","payload":{"a":1}}"#,
            r#"{"payload":{"a":1}}"#,
            r#"{"room_id":"r","payload":null}"#,
            r#"{"room_id":0,"payload":{}}"#,
            r#"{"room_id":"r","payload":false}"#,
        ] {
            assert_eq!(
                refusal(missing),
                "Malformed Request: One or more required parameters is missing",
                "{missing}"
            );
        }
        assert!(refusal(r#"{"room_id":"r","payload":"text"}"#).ends_with("incorrect data type."));
        assert!(refusal(r#"{"room_id":"r","payload":[1]}"#).ends_with("incorrect data type."));
        assert!(refusal(r#"{"room_id":5,"payload":{}}"#).ends_with("incorrect data type."));
        assert!(refusal("not json").contains("not valid JSON"));
        assert!(refusal("[1,2]").contains("JSON object"));
        assert!(refusal(r#"{"room_id":"r","payload":{"a":1"#).contains("not valid JSON"));
    }

    #[test]
    fn payloads_nest_as_deep_as_the_original_accepts() {
        let deep = format!(
            r#"{{"room_id":"r","payload":{{"d":{}1{}}}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let (_, payload) = parse(deep.as_bytes()).expect("10,000 levels");
        assert!(payload.len() > 20_000);
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert(&IDEMPOTENCY_KEY, HeaderValue::from_static("order-42/retry"));
        assert_eq!(idempotency_key(&headers).unwrap(), Some("order-42/retry"));
        headers.insert(&IDEMPOTENCY_KEY, HeaderValue::from_static("has space"));
        assert!(idempotency_key(&headers).is_err());
        headers.insert(
            &IDEMPOTENCY_KEY,
            HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        );
        assert!(idempotency_key(&headers).is_err());
    }
}
