//! The long-window tier: a durable archive of messages whose positions were already assigned,
//! and the history that puts a fast recent tier in front of it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    Appended, Feed, History, Message, Page, PageLimit, Position, Publish, ReplayStart, StoreError,
};

/// Durable message storage keyed by room and position. Writing a message again is harmless
/// (the same room and position overwrite the same item), so retries never duplicate.
#[async_trait]
pub trait Archive: Send + Sync + 'static {
    /// Stores `messages` (any rooms, positions assigned); all or an error.
    async fn put(&self, messages: &[Message]) -> Result<(), StoreError>;

    /// As [`History::read_page`]; an archive does not know what expired, so pages are never
    /// marked truncated.
    async fn read_page(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: PageLimit,
    ) -> Result<Page, StoreError>;

    /// As [`History::replay_start`], counting only what the archive holds.
    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError>;

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

    /// The recent tier has no trace of `room` (an idle room's recent history expires whole), so
    /// it cannot tell what it dropped: only the archive can answer.
    async fn forgot(&self, room: &str) -> Result<bool, StoreError> {
        Ok(self.recent.last_position(room).await? == Position::ZERO)
    }
}

#[async_trait]
impl History for Tiered {
    async fn append(&self, publish: Publish<'_>) -> Result<Appended, StoreError> {
        self.recent.append(publish).await
    }

    async fn repeat(&self, publish: &Publish<'_>) -> Result<Option<Position>, StoreError> {
        self.recent.repeat(publish).await
    }

    async fn read_page(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        let recent = self.recent.read_page(room, after, until, limit).await?;
        if !recent.truncated {
            if recent.messages.is_empty() && self.forgot(room).await? {
                return self.archive.read_page(room, after, until, limit).await;
            }
            return Ok(recent);
        }
        // The recent tier no longer has the oldest part of the range: it is in the archive,
        // strictly before the first message the recent tier still has.
        let older_until = match recent.messages.first() {
            Some(first) => Position(first.position.0 - 1),
            None => until,
        };
        let older = self
            .archive
            .read_page(room, after, older_until, limit)
            .await?;
        if older.messages.is_empty() {
            // Neither tier has it: retention took it for good, as the recent page says.
            return Ok(recent);
        }
        Ok(Page {
            more: older.more || !recent.messages.is_empty() || recent.more,
            truncated: false,
            messages: older.messages,
        })
    }

    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError> {
        if self.forgot(room).await? {
            return self.archive.replay_start(room, after, until, max).await;
        }
        let recent = self.recent.replay_start(room, after, until, max).await?;
        if !recent.truncated || recent.after > after {
            return Ok(recent); // all due is recent, or the recent tier alone fills the cap
        }
        // The recent tier dropped part of the range; the archive holds the whole of it (what is
        // not archived yet is still in the recent tier, so the count errs by that at most).
        self.archive.replay_start(room, after, until, max).await
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        match self.recent.last_position(room).await? {
            Position::ZERO => self.archive.last_position(room).await,
            last => Ok(last),
        }
    }

    async fn feed(&self, limit: usize) -> Result<Feed, StoreError> {
        self.recent.feed(limit).await
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
    use crate::memory::{MemoryOptions, MemoryStore};
    use crate::testing::MemoryArchive;

    /// A recent tier keeping 3 messages in front of an archive holding all 8.
    async fn tiers() -> (Tiered, Vec<Message>) {
        let recent = MemoryStore::new(MemoryOptions::new(Duration::from_secs(60), 3));
        let archive = Arc::new(MemoryArchive::default());
        let mut all = Vec::new();
        for i in 0..8 {
            let payload = format!("{{\"i\":{i}}}");
            let m = recent.append(Publish::new("r", &payload)).await.unwrap();
            archive.put(std::slice::from_ref(&m.message)).await.unwrap();
            all.push(m.message);
        }
        (Tiered::new(Arc::new(recent), archive), all)
    }

    /// Reads `room` after `after` page by page, as a replay does.
    async fn read_all(history: &dyn History, after: Position, limit: PageLimit) -> Vec<Message> {
        let mut after = after;
        let mut read = Vec::new();
        loop {
            let page = history
                .read_page("r", after, Position::MAX, limit)
                .await
                .unwrap();
            let Some(last) = page.messages.last() else {
                return read;
            };
            after = last.position;
            read.extend(page.messages);
        }
    }

    #[tokio::test]
    async fn pages_join_the_archive_and_the_recent_tier_without_gap_or_overlap() {
        let (tiered, all) = tiers().await;
        for count in [1, 2, 100] {
            let read = read_all(&tiered, all[1].position, PageLimit::count(count)).await;
            assert_eq!(read, all[2..].to_vec(), "pages of {count}");
        }
        let first = tiered
            .read_page("r", all[5].position, Position::MAX, PageLimit::count(10))
            .await
            .unwrap();
        assert_eq!(first.messages, all[6..].to_vec(), "recent tier alone");
    }

    #[tokio::test]
    async fn a_capped_replay_starts_at_the_newest_across_tiers() {
        let (tiered, all) = tiers().await;
        let start = tiered
            .replay_start("r", Position::ZERO, Position::MAX, 5)
            .await
            .unwrap();
        assert_eq!(
            start,
            ReplayStart {
                after: all[2].position,
                truncated: true
            }
        );
        let start = tiered
            .replay_start("r", all[1].position, Position::MAX, 100)
            .await
            .unwrap();
        assert_eq!(start.after, all[1].position);
    }

    #[tokio::test]
    async fn a_room_the_recent_tier_forgot_is_read_from_the_archive() {
        let recent = MemoryStore::new(MemoryOptions::new(Duration::from_secs(60), 3));
        let archive = Arc::new(MemoryArchive::default());
        let old: Vec<Message> = (1..=4)
            .map(|i| Message {
                room: "idle".into(),
                position: Position(100 + i),
                payload: "{}".into(),
            })
            .collect();
        archive.put(&old).await.unwrap();
        let tiered = Tiered::new(Arc::new(recent), archive);
        let page = tiered
            .read_page("idle", Position(101), Position::MAX, PageLimit::count(10))
            .await
            .unwrap();
        assert_eq!(page.messages, old[1..].to_vec());
        let start = tiered
            .replay_start("idle", Position::ZERO, Position::MAX, 2)
            .await
            .unwrap();
        assert_eq!(start.after, Position(102));
    }

    #[tokio::test]
    async fn the_last_position_survives_the_recent_tier_forgetting_a_room() {
        let recent = MemoryStore::new(MemoryOptions::new(Duration::from_secs(60), 3));
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
