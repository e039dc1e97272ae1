//! `POST /api/twine`: a backend publishes `{"room_id": "...", "payload": {...}}` to a room.
//! The key is checked before the body is read; the message is accepted (201) once it is stored.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::error::AppError;
use crate::socket::MAX_ROOM_BYTES;
use crate::state::AppState;

pub async fn publish(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, &'static str), AppError> {
    app.api_key.check(&headers)?;
    let limit = app.config.max_payload;
    let bytes = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|_| AppError::TooLarge(limit))?;
    let (room, payload) = parse(&bytes)?;
    let message = app.history.append(&room, &payload).await?;
    tracing::debug!(%room, position = %message.position, "published");
    Ok((StatusCode::CREATED, "ok"))
}

/// Validates a publish body in the original server's order, returning the room and the payload
/// as JSON text.
fn parse(bytes: &[u8]) -> Result<(String, String), AppError> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|_| AppError::Malformed("The request body is not valid JSON."))?;
    let Value::Object(mut fields) = body else {
        return Err(AppError::Malformed(
            "The request body must be a JSON object.",
        ));
    };
    if fields.len() > 2 {
        return Err(AppError::Malformed(
            "Extra parameters were included in request.",
        ));
    }
    let room = fields.remove("room_id").filter(is_truthy);
    let payload = fields.remove("payload").filter(is_truthy);
    let (Some(room), Some(payload)) = (room, payload) else {
        return Err(AppError::Malformed(
            "One or more required parameters is missing",
        ));
    };
    let Value::Object(_) = payload else {
        return Err(AppError::Malformed("Payload is of an incorrect data type."));
    };
    let Value::String(room) = room else {
        return Err(AppError::Malformed("room_id is of an incorrect data type."));
    };
    if room.len() > MAX_ROOM_BYTES {
        return Err(AppError::Malformed("room_id is longer than 256 bytes."));
    }
    Ok((room, payload.to_string()))
}

/// JavaScript truthiness, as the original's `if (!room_id || !payload)` check.
fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
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
        assert_eq!(
            refusal(r#"{"room_id":"","payload":{"a":1}}"#),
            "Malformed Request: One or more required parameters is missing"
        );
        assert_eq!(
            refusal(r#"{"payload":{"a":1}}"#),
            "Malformed Request: One or more required parameters is missing"
        );
        assert!(refusal(r#"{"room_id":"r","payload":"text"}"#).ends_with("incorrect data type."));
        assert!(refusal(r#"{"room_id":5,"payload":{}}"#).ends_with("incorrect data type."));
        assert!(refusal("not json").contains("not valid JSON"));
        assert!(refusal("[1,2]").contains("JSON object"));
    }
}
