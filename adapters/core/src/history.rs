//! The per-room message log a server publishes into and replays from.

use std::time::SystemTime;

use async_trait::async_trait;

use crate::{Feed, Position, StoreError};

/// One published message as stored: its room, its position and the publisher's payload, a JSON
/// object kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub room: String,
    pub position: Position,
    pub payload: String,
}

impl Message {
    /// Bytes the message holds, for memory accounting.
    pub fn size(&self) -> usize {
        self.room.len() + self.payload.len() + std::mem::size_of::<Message>()
    }
}

/// A message to append.
#[derive(Clone, Copy, Debug)]
pub struct Publish<'a> {
    pub room: &'a str,
    /// A JSON object, as text.
    pub payload: &'a str,
    /// The publisher's idempotency key: an append to the same room repeated with the same key
    /// stores nothing and answers with the message the first one stored.
    pub key: Option<&'a str>,
    /// When the publisher stops waiting. A store that would run the append after this instant
    /// refuses it ([`StoreError::Expired`]) instead, so a publisher that gave up can be told the
    /// message was not stored.
    pub deadline: Option<SystemTime>,
    /// What makes two appends with one key the same message: the payload, unless set (a client's
    /// payload as the client sent it, before a filter or a hook changed it).
    pub identity: Option<&'a str>,
}

impl<'a> Publish<'a> {
    pub fn new(room: &'a str, payload: &'a str) -> Publish<'a> {
        Publish {
            room,
            payload,
            key: None,
            deadline: None,
            identity: None,
        }
    }

    pub fn with_identity(mut self, identity: Option<&'a str>) -> Self {
        self.identity = identity;
        self
    }

    pub fn with_key(mut self, key: Option<&'a str>) -> Self {
        self.key = key;
        self
    }

    pub fn with_deadline(mut self, deadline: Option<SystemTime>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The idempotency key as the room's own: keys are remembered per room, so two rooms (which
    /// may live on different Redis primaries) never share one.
    pub fn scoped_key(&self) -> Option<String> {
        self.key
            .map(|key| format!("{}:{}{key}", self.room.len(), self.room))
    }

    /// A fingerprint of room and identity (the payload unless set), so a key reused for another
    /// message is told apart from a retry.
    pub fn fingerprint(&self) -> u64 {
        // FNV-1a: stable across processes and nodes, unlike std's randomly seeded hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let identity = self.identity.unwrap_or(self.payload);
        for byte in self.room.bytes().chain([0]).chain(identity.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }
}

/// What [`History::append`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub message: Message,
    /// The key was seen before: nothing new was stored and `message` is the first append's.
    pub repeated: bool,
}

/// How much one [`History::read_page`] may return: at most `count` messages, and it stops after
/// the message that takes it past `bytes` of payload (so a page has at least one message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit {
    pub count: usize,
    pub bytes: usize,
}

impl PageLimit {
    pub fn count(count: usize) -> PageLimit {
        PageLimit {
            count,
            bytes: usize::MAX,
        }
    }
}

/// The answer to [`History::read_page`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Retention already dropped messages after the asked position, before the first returned.
    pub truncated: bool,
    /// More messages follow in the asked range.
    pub more: bool,
}

/// Where a replay capped at some number of messages starts (see [`History::replay_start`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayStart {
    /// Replay the messages after this position.
    pub after: Position,
    /// Some messages after the asked position will not be replayed: over the cap, or already
    /// dropped by retention.
    pub truncated: bool,
}

/// A per-room, append-only message log with positions assigned by the store.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Stores the message and returns it with its position, which is greater than every earlier
    /// position of its room.
    async fn append(&self, publish: Publish<'_>) -> Result<Appended, StoreError>;

    /// The oldest messages of `room` with `after < position <= until`, up to `limit`.
    async fn read_page(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: PageLimit,
    ) -> Result<Page, StoreError>;

    /// Where to start replaying `room` to a reader that has everything up to `after`, keeping
    /// only the newest `max` messages up to `until`.
    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError>;

    /// The position of the newest message of `room`, or [`Position::ZERO`] when it has none.
    async fn last_position(&self, room: &str) -> Result<Position, StoreError>;

    /// A live feed of the messages appended from now on, of the rooms it is told to listen to,
    /// in append order within each room, holding at most `limit` bytes of them in flight (see
    /// [`crate::feed`]).
    async fn feed(&self, limit: usize) -> Result<Feed, StoreError>;

    /// Whether the store answers now; a load balancer is told through `GET /`.
    async fn check(&self) -> Result<(), StoreError>;

    /// Where `publish`'s key was stored in its room already, for the same message (the same
    /// fingerprint): a retry answered without running anything a fresh publish runs first. A
    /// key stored for another message is [`StoreError::KeyReused`]. Stores that cannot look a
    /// key up answer `None`, and [`History::append`] still stores a retry once.
    async fn repeat(&self, publish: &Publish<'_>) -> Result<Option<Position>, StoreError> {
        let _ = publish;
        Ok(None)
    }

    /// Messages accepted but not yet written to the archive, for stores that write behind.
    async fn backlog(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}
