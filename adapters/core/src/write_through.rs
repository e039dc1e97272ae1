//! History kept in an archive alone, for a single node without a recent tier: each message is
//! written to the archive before the publish is accepted, then handed to live delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};

use crate::{Archive, Feed, FeedEvent, History, Message, Page, Position, StoreError};

pub struct WriteThrough {
    archive: Arc<dyn Archive>,
    /// Newest position per room (loaded from the archive on first use), each behind its own lock
    /// so a room's appends are ordered without holding up other rooms.
    rooms: StdMutex<HashMap<String, Arc<Mutex<Option<Position>>>>>,
    feeds: StdMutex<Vec<mpsc::UnboundedSender<FeedEvent>>>,
}

impl WriteThrough {
    pub fn new(archive: Arc<dyn Archive>) -> WriteThrough {
        WriteThrough {
            archive,
            rooms: StdMutex::default(),
            feeds: StdMutex::default(),
        }
    }

    fn room(&self, room: &str) -> Arc<Mutex<Option<Position>>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.entry(room.to_owned()).or_default().clone()
    }
}

#[async_trait]
impl History for WriteThrough {
    async fn append(&self, room: &str, payload: &str) -> Result<Message, StoreError> {
        let cell = self.room(room);
        let mut last = cell.lock().await;
        let previous = match *last {
            Some(p) => p,
            None => self.archive.last_position(room).await?,
        };
        let message = Message {
            room: room.to_owned(),
            position: Position::next(previous, Position::now_ms()),
            payload: payload.to_owned(),
        };
        self.archive.put(std::slice::from_ref(&message)).await?;
        *last = Some(message.position);
        // Still under the room's lock, so the feed carries the room in position order.
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds.retain(|f| f.send(FeedEvent::Message(message.clone())).is_ok());
        Ok(message)
    }

    async fn read_after(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.archive.read_after(room, after, until, limit).await
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        let known = *self.room(room).lock().await;
        match known {
            Some(p) => Ok(p),
            None => self.archive.last_position(room).await,
        }
    }

    async fn subscribe(&self) -> Result<Feed, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        Ok(rx)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.archive.check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryArchive;

    #[tokio::test]
    async fn write_through_passes_the_conformance_suite() {
        crate::conformance::run_all(|| {
            let history = WriteThrough::new(Arc::new(MemoryArchive::default()));
            let sessions = crate::MemoryStore::new(std::time::Duration::from_secs(60), 10);
            (Arc::new(history), Arc::new(sessions))
        })
        .await;
    }

    #[tokio::test]
    async fn positions_continue_after_what_the_archive_already_has() {
        let archive = Arc::new(MemoryArchive::default());
        let future = Position(Position::now_ms() + 60_000);
        let old = Message {
            room: "r".into(),
            position: future,
            payload: "{}".into(),
        };
        archive.put(&[old]).await.unwrap();
        let history = WriteThrough::new(archive);
        let next = history.append("r", "{}").await.unwrap();
        assert_eq!(next.position, Position(future.0 + 1));
    }
}
