//! What a room name may be. Every entry point that names a room (a `subscribe`, a publish, the
//! history and presence routes, the demo, presence events) holds it to this one rule.
//!
//! A room is 1 to 256 bytes of text with no control characters: names travel inside Redis keys
//! and channels, log lines and JSON, and a `"\u0000"` room is never what an app meant.

use std::sync::Arc;

use serde_json::value::RawValue;

/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 256;

/// Why a room name was refused; the text is what the client is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room must be a string")]
    NotAString,
    #[error("room must not be empty")]
    Empty,
    #[error("room is {0} bytes long; the limit is {MAX_ROOM_BYTES}")]
    TooLong(usize),
    #[error("room must not contain control characters")]
    Control,
}

/// Checks a room name.
pub fn check(name: &str) -> Result<(), RoomError> {
    if name.is_empty() {
        return Err(RoomError::Empty);
    }
    if name.len() > MAX_ROOM_BYTES {
        return Err(RoomError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(RoomError::Control);
    }
    Ok(())
}

/// A room name given as a JSON value (an event's argument, a body's field).
pub fn from_json(arg: Option<&RawValue>) -> Result<Arc<str>, RoomError> {
    let room = arg
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .ok_or(RoomError::NotAString)?;
    check(&room)?;
    Ok(Arc::from(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn rooms_are_non_empty_bounded_strings_without_control_characters() {
        assert_eq!(from_json(Some(&raw(r#""news""#))).unwrap().as_ref(), "news");
        assert_eq!(from_json(Some(&raw(r#""""#))), Err(RoomError::Empty));
        let long = format!("\"{}\"", "x".repeat(257));
        assert_eq!(from_json(Some(&raw(&long))), Err(RoomError::TooLong(257)));
        let longest = format!("\"{}\"", "x".repeat(256));
        assert!(from_json(Some(&raw(&longest))).is_ok());
        for bad in [r#""\u0000""#, r#""a\nb""#, r#""\u007f""#, r#""\u0085""#] {
            assert_eq!(from_json(Some(&raw(bad))), Err(RoomError::Control), "{bad}");
        }
        assert!(from_json(Some(&raw(r#""ünïcode ✓ and spaces""#))).is_ok());
        assert_eq!(from_json(Some(&raw("7"))), Err(RoomError::NotAString));
        assert_eq!(from_json(Some(&raw("null"))), Err(RoomError::NotAString));
        assert_eq!(from_json(None), Err(RoomError::NotAString));
    }
}
