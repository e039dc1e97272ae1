//! The embedded default: history and sessions in this process's memory, with the same retention
//! rules a shared store applies (a time window and a per-room count).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound::{Excluded, Included};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{
    Archive, Feed, FeedEvent, History, Message, Page, Position, RoomCursor, Session, SessionStore,
    StoreError,
};

/// How often, at most, an operation also sweeps out expired rooms and sessions.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Both stores in memory. Cloning shares the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    window: Duration,
    max_per_room: usize,
}

struct Inner {
    rooms: HashMap<String, RoomLog>,
    sessions: HashMap<String, StoredSession>,
    feeds: Vec<mpsc::UnboundedSender<FeedEvent>>,
    last_sweep: Instant,
}

#[derive(Default)]
struct RoomLog {
    entries: VecDeque<Entry>,
    /// Newest position ever assigned, kept when retention empties the log so positions never
    /// repeat.
    last: Position,
    /// Newest position retention has dropped: a reader asking for anything after an older
    /// position is told its page is incomplete.
    dropped_up_to: Position,
}

struct Entry {
    position: Position,
    payload: Arc<str>,
    stored_at: Instant,
}

struct StoredSession {
    session: Session,
    expires_at: Instant,
}

impl MemoryStore {
    /// Keeps messages and idle sessions for `window`, and at most `max_per_room` messages per room.
    pub fn new(window: Duration, max_per_room: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Mutex::new(Inner {
                rooms: HashMap::new(),
                sessions: HashMap::new(),
                feeds: Vec::new(),
                last_sweep: Instant::now(),
            })),
            window,
            max_per_room: max_per_room.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves data that is still consistent (every update is a
        // single push, pop or insert), so keep serving it.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(inner.last_sweep) >= SWEEP_EVERY {
            inner.last_sweep = now;
            inner.sweep(now, self.window);
        }
        inner
    }
}

impl Inner {
    fn sweep(&mut self, now: Instant, window: Duration) {
        self.sessions.retain(|_, s| s.expires_at > now);
        self.rooms.retain(|_, log| {
            log.expire(now, window);
            // An empty log still remembers its newest position; drop it only once nothing can ask
            // for positions near it any more.
            !log.entries.is_empty() || log.last.0 + (window.as_millis() as u64) > Position::now_ms()
        });
    }

    fn session_mut(&mut self, id: &str, window: Duration) -> Option<&mut Session> {
        let now = Instant::now();
        match self.sessions.get_mut(id) {
            Some(s) if s.expires_at > now => {
                s.expires_at = now + window;
                Some(&mut s.session)
            }
            _ => None,
        }
    }
}

impl RoomLog {
    fn drop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.dropped_up_to = e.position;
        }
    }

    fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .entries
            .front()
            .is_some_and(|e| now.duration_since(e.stored_at) >= window)
        {
            self.drop_front();
        }
    }
}

#[async_trait]
impl History for MemoryStore {
    async fn append(&self, room: &str, payload: &str) -> Result<Message, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let log = inner.rooms.entry(room.to_owned()).or_default();
        log.expire(now, self.window);
        let position = Position::next(log.last, Position::now_ms());
        log.last = position;
        log.entries.push_back(Entry {
            position,
            payload: Arc::from(payload),
            stored_at: now,
        });
        while log.entries.len() > self.max_per_room {
            log.drop_front();
        }
        let message = Message {
            room: room.to_owned(),
            position,
            payload: payload.to_owned(),
        };
        // Sent under the lock, so every subscriber sees a room's messages in position order.
        inner
            .feeds
            .retain(|feed| feed.send(FeedEvent::Message(message.clone())).is_ok());
        Ok(message)
    }

    async fn read_after(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let mut inner = self.lock();
        let Some(log) = inner.rooms.get_mut(room) else {
            return Ok(Page::default());
        };
        log.expire(Instant::now(), self.window);
        let start = log.entries.partition_point(|e| e.position <= after);
        let end = log.entries.partition_point(|e| e.position <= until);
        let available = end.saturating_sub(start);
        let skip = available.saturating_sub(limit);
        let messages = log
            .entries
            .range(start + skip..end.max(start))
            .map(|e| Message {
                room: room.to_owned(),
                position: e.position,
                payload: e.payload.to_string(),
            })
            .collect();
        Ok(Page {
            messages,
            truncated: skip > 0 || log.dropped_up_to > after,
        })
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        Ok(self
            .lock()
            .rooms
            .get(room)
            .map_or(Position::ZERO, |l| l.last))
    }

    async fn subscribe(&self) -> Result<Feed, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().feeds.push(tx);
        Ok(rx)
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().session_mut(id, self.window).map(|s| s.clone()))
    }

    async fn join(&self, id: &str, room: &str, at: Position) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let window = self.window;
        if inner.session_mut(id, window).is_none() {
            inner.sessions.insert(
                id.to_owned(),
                StoredSession {
                    session: Session::default(),
                    expires_at: Instant::now() + window,
                },
            );
        }
        if let Some(session) = inner.session_mut(id, window) {
            session.rooms.entry(room.to_owned()).or_insert(RoomCursor {
                joined_at: at,
                acked: Position::ZERO,
            });
        }
        Ok(())
    }

    async fn leave(&self, id: &str, room: &str) -> Result<(), StoreError> {
        if let Some(session) = self.lock().session_mut(id, self.window) {
            session.rooms.remove(room);
        }
        Ok(())
    }

    async fn advance(&self, id: &str, positions: &[(String, Position)]) -> Result<(), StoreError> {
        if let Some(session) = self.lock().session_mut(id, self.window) {
            for (room, position) in positions {
                if let Some(cursor) = session.rooms.get_mut(room) {
                    cursor.acked = cursor.acked.max(*position);
                }
            }
        }
        Ok(())
    }
}

/// An [`Archive`] in memory, for exercising the tiers in tests.
#[derive(Default)]
pub struct MemoryArchive {
    rooms: Mutex<HashMap<String, BTreeMap<Position, String>>>,
}

#[async_trait]
impl Archive for MemoryArchive {
    async fn put(&self, messages: &[Message]) -> Result<(), StoreError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for m in messages {
            let room = rooms.entry(m.room.clone()).or_default();
            room.insert(m.position, m.payload.clone());
        }
        Ok(())
    }

    async fn read_after(
        &self,
        room: &str,
        after: Position,
        until: Position,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(log) = rooms.get(room).filter(|_| after < until) else {
            return Ok(Page::default());
        };
        let range = log.range((Excluded(after), Included(until)));
        let available = range.clone().count();
        let skip = available.saturating_sub(limit);
        let messages = range
            .skip(skip)
            .map(|(position, payload)| Message {
                room: room.to_owned(),
                position: *position,
                payload: payload.clone(),
            })
            .collect();
        Ok(Page {
            messages,
            truncated: skip > 0,
        })
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let last = rooms.get(room).and_then(|r| r.keys().next_back().copied());
        Ok(last.unwrap_or(Position::ZERO))
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn messages_expire_after_the_window_and_readers_are_told() {
        let store = MemoryStore::new(Duration::from_secs(10), 100);
        let first = store.append("r", "{}").await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        let second = store.append("r", "{}").await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;

        let page = store
            .read_after("r", Position::ZERO, Position::MAX, 100)
            .await
            .unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].position, second.position);
        assert!(page.truncated, "the expired first message is missing");

        let page = store
            .read_after("r", first.position, Position::MAX, 100)
            .await
            .unwrap();
        assert!(
            !page.truncated,
            "nothing after the first message was dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_live_for_the_window_after_their_last_activity() {
        let store = MemoryStore::new(Duration::from_secs(10), 100);
        store.join("s", "r", Position(5)).await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        store
            .advance("s", &[("r".into(), Position(7))])
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        let session = store
            .load("s")
            .await
            .unwrap()
            .expect("activity extended it");
        assert_eq!(session.rooms["r"].acked, Position(7));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.load("s").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn positions_stay_increasing_after_retention_empties_a_room() {
        let store = MemoryStore::new(Duration::from_secs(1), 100);
        let first = store.append("r", "{}").await.unwrap();
        tokio::time::advance(Duration::from_secs(120)).await;
        let second = store.append("r", "{}").await.unwrap();
        assert!(second.position > first.position);
    }

    #[tokio::test]
    async fn the_memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(|| {
            let store = MemoryStore::new(Duration::from_secs(3600), 1000);
            (Arc::new(store.clone()), Arc::new(store))
        })
        .await;
    }

    #[tokio::test]
    async fn the_memory_archive_passes_the_archive_conformance_suite() {
        crate::conformance::run_archive(|| Arc::new(MemoryArchive::default())).await;
    }
}
