//! History kept in an archive alone, for a single node without a recent tier: each message is
//! written to the archive before the publish is accepted, then handed to live delivery.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::{
    Appended, Archive, EveryRoom, Feed, FeedSender, History, Message, Page, PageLimit, Position,
    Publish, ReplayStart, StoreError,
};

/// Idempotency keys remembered at most, oldest forgotten first.
const MAX_KEYS: usize = 100_000;
/// Rooms whose newest position is kept at least; beyond, rooms no append is using are forgotten
/// (their next append reads the position from the archive again).
const CACHED_ROOMS: usize = 10_000;

pub struct WriteThrough {
    archive: Arc<dyn Archive>,
    /// Newest position per room (loaded from the archive on first use), each behind its own lock
    /// so a room's appends are ordered without holding up other rooms.
    rooms: StdMutex<Rooms>,
    feeds: StdMutex<Vec<FeedSender>>,
    keys: StdMutex<Keys>,
}

/// The newest position of rooms appended to lately.
#[derive(Default)]
struct Rooms {
    last: HashMap<String, Arc<Mutex<Option<Position>>>>,
    /// How many may be kept before the next sweep: twice what the last one left, so sweeps cost
    /// a constant per append.
    sweep_at: usize,
}

/// Idempotency keys of recent appends, for `window`.
struct Keys {
    window: Duration,
    by_key: HashMap<Box<str>, (u64, Message)>,
    order: VecDeque<(Instant, Box<str>)>,
}

impl Keys {
    fn get(&mut self, key: &str) -> Option<&(u64, Message)> {
        let now = Instant::now();
        while let Some((at, oldest)) = self.order.front() {
            if now.duration_since(*at) < self.window && self.order.len() <= MAX_KEYS {
                break;
            }
            self.by_key.remove(oldest);
            self.order.pop_front();
        }
        self.by_key.get(key)
    }

    fn insert(&mut self, key: &str, fingerprint: u64, message: Message) {
        self.by_key.insert(Box::from(key), (fingerprint, message));
        self.order.push_back((Instant::now(), Box::from(key)));
    }
}

impl WriteThrough {
    /// Keys of publishes are remembered for `window`.
    pub fn new(archive: Arc<dyn Archive>, window: Duration) -> WriteThrough {
        WriteThrough {
            archive,
            rooms: StdMutex::default(),
            feeds: StdMutex::default(),
            keys: StdMutex::new(Keys {
                window,
                by_key: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn room(&self, room: &str) -> Arc<Mutex<Option<Position>>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cell) = rooms.last.get(room) {
            return cell.clone();
        }
        if rooms.last.len() >= rooms.sweep_at.max(CACHED_ROOMS) {
            // Nobody else holds a room's cell while this lock is held and its count is one: an
            // append in flight keeps its own.
            rooms.last.retain(|_, cell| Arc::strong_count(cell) > 1);
            rooms.sweep_at = 2 * rooms.last.len();
        }
        let cell = Arc::new(Mutex::new(None));
        rooms.last.insert(room.to_owned(), cell.clone());
        cell
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn repeated(&self, publish: &Publish<'_>) -> Result<Option<Appended>, StoreError> {
        let Some(key) = publish.scoped_key() else {
            return Ok(None);
        };
        match self.keys().get(&key) {
            Some((fingerprint, _)) if *fingerprint != publish.fingerprint() => {
                Err(StoreError::KeyReused)
            }
            Some((_, message)) => Ok(Some(Appended {
                message: message.clone(),
                repeated: true,
            })),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl History for WriteThrough {
    async fn repeat(&self, publish: &Publish<'_>) -> Result<Option<Position>, StoreError> {
        Ok(self.repeated(publish)?.map(|a| a.message.position))
    }

    async fn append(&self, publish: Publish<'_>) -> Result<Appended, StoreError> {
        let cell = self.room(publish.room);
        let mut last = cell.lock().await;
        // Checked under the room's lock, so a retry racing its original waits for it.
        if let Some(appended) = self.repeated(&publish)? {
            return Ok(appended);
        }
        if publish.deadline.is_some_and(|d| SystemTime::now() > d) {
            return Err(StoreError::Expired("the publish deadline passed".into()));
        }
        let previous = match *last {
            Some(p) => p,
            None => self.archive.last_position(publish.room).await?,
        };
        let message = Message {
            room: publish.room.to_owned(),
            position: Position::next(previous, Position::now_ms()),
            payload: publish.payload.to_owned(),
        };
        self.archive.put(std::slice::from_ref(&message)).await?;
        *last = Some(message.position);
        if let Some(key) = publish.scoped_key() {
            self.keys()
                .insert(&key, publish.fingerprint(), message.clone());
        }
        // Still under the room's lock, so the feed carries the room in position order.
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds.retain(|f| f.message(message.clone(), previous).is_ok());
        Ok(Appended {
            message,
            repeated: false,
        })
    }

    async fn read_page(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        self.archive.read_page(room, after, until, limit).await
    }

    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError> {
        self.archive.replay_start(room, after, until, max).await
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        let known = *self.room(room).lock().await;
        match known {
            Some(p) => Ok(p),
            None => self.archive.last_position(room).await,
        }
    }

    async fn feed(&self, limit: usize) -> Result<Feed, StoreError> {
        let (sender, feed) = crate::feed::channel(limit, Arc::new(EveryRoom));
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sender);
        Ok(feed)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.archive.check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryOptions, MemoryStore};
    use crate::testing::MemoryArchive;

    #[tokio::test]
    async fn write_through_passes_the_conformance_suite() {
        crate::conformance::run_all(|| {
            let window = Duration::from_secs(60);
            let history = WriteThrough::new(Arc::new(MemoryArchive::default()), window);
            let mut options = MemoryOptions::new(window, 10);
            options.max_rooms_per_session = crate::conformance::SESSION_ROOM_LIMIT;
            let sessions = MemoryStore::new(options);
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
        let history = WriteThrough::new(archive, Duration::from_secs(60));
        let next = history.append(Publish::new("r", "{}")).await.unwrap();
        assert_eq!(next.message.position, Position(future.0 + 1));
    }

    #[tokio::test]
    async fn rooms_no_append_uses_are_forgotten_and_positions_still_continue() {
        let archive = Arc::new(MemoryArchive::default());
        let history = WriteThrough::new(archive, Duration::from_secs(60));
        let first = history.append(Publish::new("first", "{}")).await.unwrap();
        for i in 0..(2 * CACHED_ROOMS + 1) {
            history
                .append(Publish::new(&format!("room-{i}"), "{}"))
                .await
                .unwrap();
        }
        let cached = history.rooms.lock().unwrap().last.len();
        assert!(cached <= CACHED_ROOMS + 1, "{cached} rooms kept");
        assert!(!history.rooms.lock().unwrap().last.contains_key("first"));
        let next = history.append(Publish::new("first", "{}")).await.unwrap();
        assert!(next.message.position > first.message.position);
    }
}
