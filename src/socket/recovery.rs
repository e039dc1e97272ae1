//! Recovery on connect: a known session gets its rooms back and every message published after its
//! position in each room, merged across rooms in publish order, with original timestamps, then
//! continues live from the exact cut where the replay stopped.

use std::collections::BTreeSet;

use serde::Serialize;
use socketioxide::extract::SocketRef;
use twine_store::{History, Message, Session, StoreError};

use super::connection::Turn;
use super::{EventError, emit, send_in_order};
use crate::fanout::{Cut, Outgoing};

/// The `recoveryTruncated` event: messages of `room` after position `from` were not all replayed
/// (over the replay limit, or past retention); the oldest replayed one, if any, is `until`.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Truncation {
    pub room: String,
    pub from: u64,
    pub until: Option<u64>,
}

/// What one recovery sends, in order.
#[derive(Debug, Default)]
pub struct Replay {
    pub truncated: Vec<Truncation>,
    pub messages: Vec<Message>,
}

/// Reads what `session` missed in each room, up to `cut`, keeping the newest `max` overall.
pub async fn plan(
    history: &dyn History,
    session: &Session,
    cut: &Cut,
    max: usize,
) -> Result<Replay, StoreError> {
    let mut messages = Vec::new();
    let mut truncated_rooms = BTreeSet::new();
    for (room, cursor) in &session.rooms {
        let Some(&until) = cut.get(room) else {
            continue;
        };
        let after = cursor.resume_after();
        if until <= after {
            continue;
        }
        let page = history.read_after(room, after, until, max).await?;
        if page.truncated {
            truncated_rooms.insert(room.as_str());
        }
        messages.extend(page.messages);
    }
    // Positions come from one clock, so position order is publish order across rooms.
    messages.sort_by(|a, b| (a.position, &a.room).cmp(&(b.position, &b.room)));
    let excess = messages.len().saturating_sub(max);
    for dropped in &messages[..excess] {
        truncated_rooms.insert(dropped.room.as_str());
    }
    let kept = &messages[excess..];
    let truncated = truncated_rooms
        .into_iter()
        .map(|room| Truncation {
            room: room.to_owned(),
            from: session.rooms[room].resume_after().0,
            until: kept.iter().find(|m| m.room == room).map(|m| m.position.0),
        })
        .collect();
    let messages = messages.split_off(excess);
    Ok(Replay {
        truncated,
        messages,
    })
}

/// Restores the connection's session: rejoins its rooms (emitting `roomJoined` for each), replays
/// what it missed and goes live. A client without a known session has nothing to recover.
pub async fn recover(conn: &Turn, s: &SocketRef) {
    let session = match conn.session.load().await {
        Ok(Some(session)) if !session.rooms.is_empty() => session,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(sid = %s.id, "session not loaded: {e}");
            return fail(
                conn,
                s,
                "the session could not be loaded; reconnect to retry",
            );
        }
    };
    let rooms: Vec<String> = session.rooms.keys().cloned().collect();
    for room in &rooms {
        emit(s, "roomJoined", &format!("You have joined room: {room}"));
    }
    conn.recovering(&rooms);
    let app = &conn.app;
    let replay = match app.fanout.hold(s.id, &rooms).await {
        Ok(cut) => {
            plan(
                &*app.history,
                &session,
                &cut,
                app.config.max_replay as usize,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match replay {
        Ok(replay) => {
            for truncation in &replay.truncated {
                emit(s, "recoveryTruncated", truncation);
            }
            let count = replay.messages.len();
            for message in replay.messages {
                if let Err(e) = send_in_order(s, "message", &Outgoing::new(&message).body).await {
                    tracing::debug!(sid = %s.id, "replay stopped: {e}");
                    break;
                }
                conn.replayed(&message.room, message.position);
            }
            tracing::debug!(sid = %s.id, rooms = rooms.len(), count, "replayed");
        }
        Err(e) => {
            tracing::warn!(sid = %s.id, "history not read for recovery: {e}");
            fail(
                conn,
                s,
                "missed messages could not be read; reconnect to retry",
            );
        }
    }
    let (buffered, seq) = app.fanout.release(s, &rooms).await;
    tracing::debug!(sid = %s.id, buffered = buffered.len(), "live");
    for message in buffered {
        conn.replayed(&message.room, message.position);
    }
    for room in &rooms {
        conn.went_live(room, seq);
    }
}

fn fail(conn: &Turn, s: &SocketRef, message: &str) {
    conn.freeze_positions();
    emit(
        s,
        "error",
        &EventError {
            event: "stateRecovery",
            message: message.to_owned(),
        },
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use twine_store::{MemoryStore, Position, RoomCursor};

    use super::*;

    fn session(rooms: &[(&str, Position)]) -> Session {
        Session {
            rooms: rooms
                .iter()
                .map(|(r, p)| {
                    let cursor = RoomCursor {
                        joined_at: Position::ZERO,
                        acked: *p,
                    };
                    (r.to_string(), cursor)
                })
                .collect(),
        }
    }

    fn cut_at_newest(rooms: &[&str]) -> Cut {
        rooms
            .iter()
            .map(|r| (r.to_string(), Position::MAX))
            .collect()
    }

    #[tokio::test]
    async fn replay_merges_rooms_in_publish_order_after_each_position() {
        let store = MemoryStore::new(Duration::from_secs(60), 100);
        let mut published = Vec::new();
        for i in 0..30 {
            let room = ["a", "b", "c"][i % 3];
            published.push(store.append(room, "{}").await.unwrap());
        }
        let a_acked = published[3].position; // a's second message
        let s = session(&[("a", a_acked), ("b", Position::ZERO)]);
        let replay = plan(&store, &s, &cut_at_newest(&["a", "b"]), 100)
            .await
            .unwrap();
        let expected: Vec<_> = published
            .iter()
            .filter(|m| (m.room == "a" && m.position > a_acked) || m.room == "b")
            .cloned()
            .collect();
        assert_eq!(replay.messages, expected);
        assert!(replay.truncated.is_empty());
    }

    #[tokio::test]
    async fn replay_stops_at_the_cut() {
        let store = MemoryStore::new(Duration::from_secs(60), 100);
        let first = store.append("a", "{}").await.unwrap();
        let second = store.append("a", "{}").await.unwrap();
        store.append("a", "{}").await.unwrap();
        let cut = Cut::from([("a".to_string(), second.position)]);
        let replay = plan(&store, &session(&[("a", Position::ZERO)]), &cut, 100)
            .await
            .unwrap();
        assert_eq!(replay.messages, vec![first, second]);
    }

    #[tokio::test]
    async fn over_the_limit_the_newest_are_replayed_and_the_rest_reported() {
        let store = MemoryStore::new(Duration::from_secs(60), 100);
        let mut published = Vec::new();
        for i in 0..10 {
            published.push(store.append(["a", "b"][i % 2], "{}").await.unwrap());
        }
        let s = session(&[("a", Position::ZERO), ("b", Position::ZERO)]);
        let replay = plan(&store, &s, &cut_at_newest(&["a", "b"]), 3)
            .await
            .unwrap();
        assert_eq!(replay.messages, published[7..].to_vec());
        assert_eq!(
            replay.truncated,
            vec![
                Truncation {
                    room: "a".into(),
                    from: 0,
                    until: Some(published[8].position.0)
                },
                Truncation {
                    room: "b".into(),
                    from: 0,
                    until: Some(published[7].position.0)
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_room_whose_history_expired_is_reported_truncated() {
        let store = MemoryStore::new(Duration::from_secs(60), 2);
        let first = store.append("a", "{}").await.unwrap();
        for _ in 0..3 {
            store.append("a", "{}").await.unwrap();
        }
        let s = session(&[("a", first.position)]);
        let replay = plan(&store, &s, &cut_at_newest(&["a"]), 100).await.unwrap();
        assert_eq!(replay.messages.len(), 2, "only two are retained");
        assert_eq!(replay.truncated.len(), 1);
        assert_eq!(replay.truncated[0].from, first.position.0);
    }
}
