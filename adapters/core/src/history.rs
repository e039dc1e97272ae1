//! The per-room message log a server replays from.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{Position, StoreError};

/// One published message as stored: its room, its position and the publisher's payload, a JSON
/// object kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub room: String,
    pub position: Position,
    pub payload: String,
}

/// The answer to [`History::read_after`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Some messages in the asked range are not in `messages`: left out by the limit (the newest
    /// ones are kept) or already dropped by retention.
    pub truncated: bool,
}

/// What a [`History`] subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// A message just appended; a room's messages arrive in position order.
    Message(Message),
    /// The subscription was interrupted and is back: messages appended meanwhile were not
    /// yielded, and must be read from the history.
    Gap,
}

/// Every message appended to a [`History`], in append order within each room.
pub type Feed = mpsc::UnboundedReceiver<FeedEvent>;

/// A per-room, append-only message log with positions assigned by the store.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Stores `payload` (a JSON object as text) in `room` and returns it with its position,
    /// which is greater than every earlier position of that room.
    async fn append(&self, room: &str, payload: &str) -> Result<Message, StoreError>;

    /// The messages of `room` with `after < position <= until`, oldest first; when there are more
    /// than `limit`, the newest `limit` of them and `truncated` set.
    async fn read_after(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// The position of the newest message of `room`, or [`Position::ZERO`] when it has none.
    async fn last_position(&self, room: &str) -> Result<Position, StoreError>;

    /// Every message appended from now on, in append order within each room. Resolves once the
    /// subscription is in place.
    async fn subscribe(&self) -> Result<Feed, StoreError>;

    /// Whether the store answers now; a load balancer is told through `GET /`.
    async fn check(&self) -> Result<(), StoreError>;

    /// Messages accepted but not yet written to the archive, for stores that write behind.
    async fn backlog(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}
