//! What a session remembers between connections: its rooms and how far it got in each.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{Position, StoreError};

/// How far a session got in one room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomCursor {
    /// The room's newest position when the session joined it.
    pub joined_at: Position,
    /// The newest position the session handled (acknowledged, or was last sent for clients that
    /// never acknowledge).
    pub acked: Position,
    /// The session has acknowledged messages of this room one by one (as twine-client-library
    /// does for the rooms it listens on), so only acknowledged messages count as handled.
    pub listened: bool,
}

impl RoomCursor {
    pub fn joined(at: Position) -> RoomCursor {
        RoomCursor {
            joined_at: at,
            ..RoomCursor::default()
        }
    }

    /// Recovery replays every message after this position.
    pub fn resume_after(&self) -> Position {
        self.joined_at.max(self.acked)
    }
}

/// A session's rooms, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    pub rooms: BTreeMap<String, RoomCursor>,
}

/// What [`SessionStore::join`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// The room was added.
    Added,
    /// The session was in the room already; its cursor is kept.
    Already,
    /// The session holds as many rooms as the store allows; nothing changed.
    Full,
}

/// How far a session got in one room, as reported when acknowledgements are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub room: String,
    /// The newest position handled.
    pub handled: Position,
    /// The room's messages are acknowledged one by one (see [`RoomCursor::listened`]).
    pub listened: bool,
}

impl Progress {
    pub fn new(room: impl Into<String>, handled: Position) -> Progress {
        Progress {
            room: room.into(),
            handled,
            listened: false,
        }
    }
}

/// Sessions keyed by their id (the `twineid` cookie). A session lives for the store's window after
/// its last activity: every call below counts as activity.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The session, if it exists and has not expired.
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError>;

    /// Adds `room` joined at `at`, creating the session if needed. A room the session is already in
    /// keeps its cursor; a session at the store's room limit gets no new room.
    async fn join(&self, id: &str, room: &str, at: Position) -> Result<Joined, StoreError>;

    /// Forgets `room`.
    async fn leave(&self, id: &str, room: &str) -> Result<(), StoreError>;

    /// Moves the handled position of each listed room forward (never back) and marks it listened
    /// when reported so (never unmarked). Rooms the session is not in are ignored.
    async fn advance(&self, id: &str, progress: &[Progress]) -> Result<(), StoreError>;

    /// [`SessionStore::advance`] for many sessions, in one round trip where the backend allows.
    async fn advance_many(&self, batch: &[(&str, &[Progress])]) -> Result<(), StoreError> {
        for (id, progress) in batch {
            self.advance(id, progress).await?;
        }
        Ok(())
    }
}
