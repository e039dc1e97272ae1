//! The Twine client events: `subscribe`, `unsubscribe`, `updateSessionTS`, `stateRecovery`, and
//! the disconnect that ends a connection.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::ParserError;
use socketioxide::extract::{Extension, SocketRef, TryData};
use twine_store::Position;

use super::connection::{AckArrival, Connection, InTurn};
use super::{emit, reject};

/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 256;

fn room_name(data: Result<Value, ParserError>) -> Result<String, String> {
    match data {
        Ok(Value::String(room)) if room.is_empty() => Err("room must not be empty".into()),
        Ok(Value::String(room)) if room.len() > MAX_ROOM_BYTES => Err(format!(
            "room is {} bytes long; the limit is {MAX_ROOM_BYTES}",
            room.len()
        )),
        Ok(Value::String(room)) => Ok(room),
        _ => Err("room must be a string".into()),
    }
}

/// A client's `updateSessionTS` argument as a position: a non-negative whole number.
pub(super) fn timestamp(arg: &Value) -> Option<Position> {
    let Value::Number(number) = arg else {
        return None;
    };
    number.as_u64().map(Position).or_else(|| {
        let f = number.as_f64()?;
        (f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64).then_some(Position(f as u64))
    })
}

pub async fn subscribe(s: SocketRef, TryData(data): TryData<Value>, InTurn(ticket): InTurn) {
    let conn = ticket.wait().await;
    let room = match room_name(data) {
        Ok(room) => room,
        Err(message) => return reject(&s, "subscribe", message),
    };
    if !conn.is_live(&room) {
        match conn.app.fanout.join(&s, &room).await {
            Ok((joined_at, seq)) => {
                conn.went_live(&room, seq);
                if let Err(e) = conn.session.join(&room, joined_at).await {
                    tracing::warn!(%room, "session not updated on subscribe: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(%room, "subscribe failed: {e}");
                return reject(&s, "subscribe", "the room could not be joined; try again");
            }
        }
    }
    emit(&s, "roomJoined", &format!("You have joined room: {room}"));
}

pub async fn unsubscribe(s: SocketRef, TryData(data): TryData<Value>, InTurn(ticket): InTurn) {
    let conn = ticket.wait().await;
    let room = match room_name(data) {
        Ok(room) => room,
        Err(message) => return reject(&s, "unsubscribe", message),
    };
    if conn.is_live(&room) {
        conn.app.fanout.leave(&s, &room).await;
        conn.left(&room);
    }
    if let Err(e) = conn.session.leave(&room).await {
        tracing::warn!(%room, "session not updated on unsubscribe: {e}");
    }
    emit(&s, "roomLeft", &format!("You have left room: {room}"));
}

pub async fn update_session_ts(s: SocketRef, ack: AckArrival) {
    if ack.position.is_none() || ack.flush {
        // Behind every event that arrived earlier (their tickets were taken as they arrived).
        let turn = ack.conn.ticket().wait().await;
        if ack.position.is_none() {
            return reject(
                &s,
                "updateSessionTS",
                "timestamp must be the non-negative integer timestamp of a received message",
            );
        }
        turn.flush_acks().await;
    }
}

/// Sent by the client library on every connect; recovery already runs on connect without it.
pub async fn state_recovery(InTurn(ticket): InTurn) {
    drop(ticket.wait().await);
}

pub async fn disconnect(s: SocketRef, Extension(conn): Extension<Arc<Connection>>) {
    let turn = conn.ticket().wait().await;
    turn.flush_acks().await;
    let positions = turn.last_sent().await;
    if let Err(e) = turn.session.advance(&positions).await {
        tracing::warn!("positions not stored on disconnect: {e}");
    }
    let fanout = &turn.app.fanout;
    let recovering = turn.recovering_rooms();
    if !recovering.is_empty() {
        fanout.abandon(s.id, &recovering).await;
    }
    for room in turn.live_rooms() {
        fanout.leave(&s, &room).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_must_be_non_empty_strings_of_bounded_length() {
        assert_eq!(room_name(Ok(Value::from("news"))), Ok("news".into()));
        assert!(room_name(Ok(Value::from(""))).is_err());
        assert!(room_name(Ok(Value::from("x".repeat(257)))).is_err());
        assert!(room_name(Ok(Value::from("x".repeat(256)))).is_ok());
        assert!(room_name(Ok(Value::from(7))).is_err());
        assert!(room_name(Ok(Value::Null)).is_err());
    }

    #[test]
    fn timestamps_are_non_negative_whole_numbers() {
        assert_eq!(
            timestamp(&Value::from(1_732_000_000_123u64)),
            Some(Position(1_732_000_000_123))
        );
        assert_eq!(
            timestamp(&Value::from(1.5e12)),
            Some(Position(1_500_000_000_000))
        );
        assert_eq!(timestamp(&Value::from(1.5)), None);
        assert_eq!(timestamp(&Value::from(-3)), None);
        assert_eq!(timestamp(&Value::from("123")), None);
    }
}
