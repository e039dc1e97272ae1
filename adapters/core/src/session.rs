//! What a session remembers between connections: its rooms and how far it got in each.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{Position, StoreError};

/// How far a session got in one room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomCursor {
    /// The room's newest position when the session joined it.
    pub joined_at: Position,
    /// The newest position the session acknowledged (or was last sent, for clients that never
    /// acknowledge).
    pub acked: Position,
}

impl RoomCursor {
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

/// Sessions keyed by their id (the `twineid` cookie). A session lives for the store's window after
/// its last activity: every call below counts as activity.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The session, if it exists and has not expired.
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError>;

    /// Adds `room` joined at `at`, creating the session if needed. A room the session is already in
    /// keeps its cursor.
    async fn join(&self, id: &str, room: &str, at: Position) -> Result<(), StoreError>;

    /// Forgets `room`.
    async fn leave(&self, id: &str, room: &str) -> Result<(), StoreError>;

    /// Moves the acknowledged position of each listed room forward (never back). Rooms the session
    /// is not in are ignored.
    async fn advance(&self, id: &str, positions: &[(String, Position)]) -> Result<(), StoreError>;
}
