//! The long-window tier: a durable archive of messages whose positions were already assigned,
//! and the history that puts a fast recent tier in front of it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Feed, History, Message, Page, Position, StoreError};

/// Durable message storage keyed by room and position. Writing a message again is harmless
/// (the same room and position overwrite the same item), so retries never duplicate.
#[async_trait]
pub trait Archive: Send + Sync + 'static {
    /// Stores `messages` (any rooms, positions assigned); all or an error.
    async fn put(&self, messages: &[Message]) -> Result<(), StoreError>;

    /// As [`History::read_after`].
    async fn read_after(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// The newest archived position of `room`, or [`Position::ZERO`].
    async fn last_position(&self, room: &str) -> Result<Position, StoreError>;

    /// Whether the archive answers now.
    async fn check(&self) -> Result<(), StoreError>;
}

/// A recent tier (which also hands every message to the archive, e.g. through a write-behind
/// queue) in front of an archive. Reads take what the recent tier still has and the older part
/// from the archive, with no gap or overlap at the boundary.
pub struct Tiered {
    recent: Arc<dyn History>,
    archive: Arc<dyn Archive>,
}

impl Tiered {
    pub fn new(recent: Arc<dyn History>, archive: Arc<dyn Archive>) -> Tiered {
        Tiered { recent, archive }
    }
}

#[async_trait]
impl History for Tiered {
    async fn append(&self, room: &str, payload: &str) -> Result<Message, StoreError> {
        self.recent.append(room, payload).await
    }

    async fn read_after(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let recent = self.recent.read_after(room, after, until, limit).await?;
        if !recent.truncated || recent.messages.len() >= limit {
            return Ok(recent); // complete, or already the newest `limit`
        }
        // The recent tier no longer has the oldest part of the range: it is in the archive,
        // strictly before the first message the recent tier still has.
        let older_until = match recent.messages.first() {
            Some(first) => Position(first.position.0 - 1),
            None => until,
        };
        let older = self
            .archive
            .read_after(room, after, older_until, limit - recent.messages.len())
            .await?;
        let mut messages = older.messages;
        messages.extend(recent.messages);
        Ok(Page {
            messages,
            truncated: older.truncated,
        })
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        match self.recent.last_position(room).await? {
            Position::ZERO => self.archive.last_position(room).await,
            last => Ok(last),
        }
    }

    async fn subscribe(&self) -> Result<Feed, StoreError> {
        self.recent.subscribe().await
    }

    async fn check(&self) -> Result<(), StoreError> {
        // Publishing depends only on the recent tier; an archive outage grows the backlog.
        self.recent.check().await
    }

    async fn backlog(&self) -> Result<Option<u64>, StoreError> {
        self.recent.backlog().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::memory::{MemoryArchive, MemoryStore};

    #[tokio::test]
    async fn reads_join_the_archive_and_the_recent_tier_without_gap_or_overlap() {
        // The recent tier keeps 3 messages; the archive has them all.
        let recent = MemoryStore::new(Duration::from_secs(60), 3);
        let archive = Arc::new(MemoryArchive::default());
        let mut all = Vec::new();
        for i in 0..8 {
            let m = recent.append("r", &format!("{{\"i\":{i}}}")).await.unwrap();
            archive.put(std::slice::from_ref(&m)).await.unwrap();
            all.push(m);
        }
        let tiered = Tiered::new(Arc::new(recent), archive);

        let page = tiered
            .read_after("r", all[1].position, Position::MAX, 100)
            .await
            .unwrap();
        assert_eq!(page.messages, all[2..].to_vec());
        assert!(!page.truncated);

        let page = tiered
            .read_after("r", Position::ZERO, Position::MAX, 4)
            .await
            .unwrap();
        assert_eq!(
            page.messages,
            all[4..].to_vec(),
            "the newest four across tiers"
        );
        assert!(page.truncated);

        let page = tiered
            .read_after("r", all[5].position, Position::MAX, 100)
            .await
            .unwrap();
        assert_eq!(page.messages, all[6..].to_vec(), "recent tier alone");
    }

    #[tokio::test]
    async fn the_last_position_survives_the_recent_tier_forgetting_a_room() {
        let recent = MemoryStore::new(Duration::from_secs(60), 3);
        let archive = Arc::new(MemoryArchive::default());
        let old = Message {
            room: "idle".into(),
            position: Position(42),
            payload: "{}".into(),
        };
        archive.put(&[old]).await.unwrap();
        let tiered = Tiered::new(Arc::new(recent), archive);
        assert_eq!(tiered.last_position("idle").await.unwrap(), Position(42));
    }
}
