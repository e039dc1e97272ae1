//! The embedded default: history and sessions in this process's memory, with the retention rules
//! a shared store applies (a time window, a per-room count) and bounds of its own on the memory it
//! may take (history bytes across all rooms, oldest dropped first; session bytes, least recently
//! active dropped first).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{
    Appended, EveryRoom, Feed, FeedSender, History, Joined, Message, Page, PageLimit, Position,
    Progress, Publish, ReplayStart, RoomCursor, Session, SessionStore, StoreError,
};

/// How often expired messages, idle rooms and expired sessions are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Most removals one hold of the store's lock makes while sweeping: a sweep of any size holds
/// up the store's callers for one batch at a time.
const SWEEP_BATCH: usize = 1_024;
/// Bookkeeping counted per stored message besides its payload (entry, ordering index, key).
const ENTRY_OVERHEAD: usize = 96;
/// Bookkeeping counted per session and per room of a session.
const SESSION_OVERHEAD: usize = 128;
const SESSION_ROOM_OVERHEAD: usize = 64;

/// Settings of a [`MemoryStore`].
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// How long messages and idle sessions are kept.
    pub window: Duration,
    /// Most messages kept per room.
    pub max_per_room: usize,
    /// Most bytes of history kept across all rooms; beyond it the oldest messages go first.
    pub history_bytes: usize,
    /// Most bytes of sessions kept; beyond it the least recently active sessions go first.
    pub session_bytes: usize,
    /// Most rooms one session may hold.
    pub max_rooms_per_session: usize,
}

impl MemoryOptions {
    /// Generous bounds for tests: `window` and `max_per_room`, everything else 1 GiB / 100,000.
    pub fn new(window: Duration, max_per_room: usize) -> MemoryOptions {
        MemoryOptions {
            window,
            max_per_room,
            history_bytes: 1 << 30,
            session_bytes: 1 << 30,
            max_rooms_per_session: 100_000,
        }
    }
}

/// Both stores in memory. Cloning shares the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    options: Arc<MemoryOptions>,
}

struct Inner {
    rooms: HashMap<Arc<str>, RoomLog>,
    /// Every retained message by position, across rooms: the front is the oldest, dropped first
    /// when history takes more than its bytes.
    oldest: BTreeSet<(Position, Arc<str>)>,
    history_bytes: usize,
    /// Idempotency keys of retained messages.
    keys: HashMap<Box<str>, KeyRecord>,
    /// Positions of rooms dropped entirely are never reused: a room created again starts after
    /// the newest of them.
    dropped_rooms_floor: Position,
    sessions: HashMap<Arc<str>, StoredSession>,
    /// Sessions by last activity, least recent first.
    recency: BTreeMap<u64, Arc<str>>,
    activity: u64,
    session_bytes: usize,
    feeds: Vec<FeedSender>,
    /// Rooms whose log went empty, roughly oldest first: dropped once nothing can ask for
    /// positions near their last.
    emptied: VecDeque<Arc<str>>,
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
    key: Option<Box<str>>,
    stored_at: Instant,
}

impl Entry {
    fn size(&self, room: &str) -> usize {
        ENTRY_OVERHEAD + room.len() + self.payload.len() + self.key.as_ref().map_or(0, |k| k.len())
    }
}

struct KeyRecord {
    room: Arc<str>,
    position: Position,
    fingerprint: u64,
}

struct StoredSession {
    rooms: SessionRooms,
    expires_at: Instant,
    touched: u64,
    bytes: usize,
}

/// A session's rooms sorted by name: most sessions have a room or two, and a map's node would
/// cost several times their size.
#[derive(Default)]
struct SessionRooms(Vec<(Box<str>, RoomCursor)>);

impl SessionRooms {
    fn find(&self, room: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(r, _)| (**r).cmp(room))
    }

    fn get_mut(&mut self, room: &str) -> Option<&mut RoomCursor> {
        let at = self.find(room).ok()?;
        Some(&mut self.0[at].1)
    }

    fn insert(&mut self, room: &str, cursor: RoomCursor) {
        if let Err(at) = self.find(room) {
            if self.0.len() < 4 {
                self.0.reserve_exact(1); // grow by doubling only past a few rooms
            }
            self.0.insert(at, (Box::from(room), cursor));
        }
    }

    fn remove(&mut self, room: &str) {
        if let Ok(at) = self.find(room) {
            self.0.remove(at);
            self.0.shrink_to_fit();
        }
    }

    fn to_session(&self) -> Session {
        Session {
            rooms: self
                .0
                .iter()
                .map(|(room, cursor)| (room.to_string(), *cursor))
                .collect(),
        }
    }

    fn size(&self) -> usize {
        self.0
            .iter()
            .map(|(r, _)| r.len() + SESSION_ROOM_OVERHEAD)
            .sum::<usize>()
    }
}

fn session_size(id: &str, rooms: &SessionRooms) -> usize {
    SESSION_OVERHEAD + id.len() + rooms.size()
}

impl MemoryStore {
    pub fn new(options: MemoryOptions) -> Self {
        let store = MemoryStore {
            inner: Arc::new(Mutex::new(Inner {
                rooms: HashMap::new(),
                oldest: BTreeSet::new(),
                history_bytes: 0,
                keys: HashMap::new(),
                dropped_rooms_floor: Position::ZERO,
                sessions: HashMap::new(),
                recency: BTreeMap::new(),
                activity: 0,
                session_bytes: 0,
                feeds: Vec::new(),
                emptied: VecDeque::new(),
                last_sweep: Instant::now(),
            })),
            options: Arc::new(MemoryOptions {
                max_per_room: options.max_per_room.max(1),
                ..options
            }),
        };
        store.spawn_sweeper();
        store
    }

    /// Sweeps every [`SWEEP_EVERY`] in the background, a batch per hold of the lock, for as long
    /// as the store lives. Without a runtime (a store made outside one), operations sweep
    /// instead, a batch at a time.
    fn spawn_sweeper(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::downgrade(&self.inner);
        let window = self.options.window;
        runtime.spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                loop {
                    let Some(inner) = inner.upgrade() else {
                        return;
                    };
                    let done = {
                        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
                        inner.last_sweep = Instant::now();
                        inner.sweep(Instant::now(), window, SWEEP_BATCH)
                    };
                    if done {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves data that is still consistent (every update is a
        // single push, pop or insert), so keep serving it.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Only when the background sweeper has not run (no runtime): a batch at a time.
        if now.duration_since(inner.last_sweep) >= 2 * SWEEP_EVERY
            && inner.sweep(now, self.options.window, SWEEP_BATCH)
        {
            inner.last_sweep = now;
        }
        inner
    }

    /// Bytes of history and of sessions held now, for tests and metrics.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.history_bytes, inner.session_bytes)
    }
}

impl Inner {
    /// Sweeps out up to `batch` expired messages, idle rooms and expired sessions, oldest
    /// first; whether nothing more is due. Each is found in order (messages by position, rooms
    /// as they emptied, sessions by activity), so a sweep costs what it removes, not what the
    /// store holds.
    fn sweep(&mut self, now: Instant, window: Duration, batch: usize) -> bool {
        let mut left = batch;
        while left > 0 {
            let Some((_, room)) = self.oldest.first() else {
                break;
            };
            let expired = self.rooms.get(room).and_then(|log| log.entries.front());
            if expired.is_none_or(|e| now.duration_since(e.stored_at) < window) {
                break;
            }
            let room = room.clone();
            self.drop_front(&room);
            left -= 1;
        }
        let horizon = Position(Position::now_ms().saturating_sub(window.as_millis() as u64));
        while left > 0 {
            let Some(room) = self.emptied.front() else {
                break;
            };
            match self.rooms.get(room) {
                // Nothing can ask for positions near an idle room's last any more.
                Some(log) if log.entries.is_empty() && log.last < horizon => {
                    self.dropped_rooms_floor = self.dropped_rooms_floor.max(log.last);
                    let room = room.clone();
                    self.rooms.remove(&room);
                }
                // Not yet: the rooms behind it emptied later.
                Some(log) if log.entries.is_empty() => break,
                // Written to again, or gone: it comes back here when it empties again.
                _ => {}
            }
            self.emptied.pop_front();
            left -= 1;
        }
        while left > 0 {
            let Some((_, id)) = self.recency.first_key_value() else {
                break;
            };
            let expired = self.sessions.get(id).is_none_or(|s| s.expires_at <= now);
            if !expired {
                break;
            }
            let id = id.clone();
            self.remove_session(&id);
            left -= 1;
        }
        left > 0
    }

    /// Drops the front message of `room`, which must exist.
    fn drop_front(&mut self, room: &Arc<str>) {
        let Some(log) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(entry) = log.entries.pop_front() else {
            return;
        };
        log.dropped_up_to = entry.position;
        if log.entries.is_empty() {
            self.emptied.push_back(room.clone());
        }
        self.history_bytes -= entry.size(room);
        self.oldest.remove(&(entry.position, room.clone()));
        if let Some(key) = entry.key {
            self.keys.remove(&key);
        }
    }

    fn expire_room(&mut self, room: &Arc<str>, now: Instant, window: Duration) {
        while self
            .rooms
            .get(room)
            .and_then(|log| log.entries.front())
            .is_some_and(|e| now.duration_since(e.stored_at) >= window)
        {
            self.drop_front(room);
        }
    }

    /// Drops the oldest messages across all rooms until history fits in `budget`.
    fn fit_history(&mut self, budget: usize) {
        while self.history_bytes > budget {
            let Some((_, room)) = self.oldest.first().cloned() else {
                break;
            };
            self.drop_front(&room);
        }
    }

    fn room_entry(&mut self, room: &str) -> (Arc<str>, &mut RoomLog) {
        let floor = self.dropped_rooms_floor;
        let key = match self.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => {
                let key: Arc<str> = Arc::from(room);
                self.rooms.insert(
                    key.clone(),
                    RoomLog {
                        last: floor,
                        ..RoomLog::default()
                    },
                );
                key
            }
        };
        let log = self.rooms.get_mut(&key).expect("just ensured");
        (key, log)
    }

    fn touch(&mut self, id: &str, window: Duration) -> Option<&mut StoredSession> {
        let now = Instant::now();
        let (key, stored) = self.sessions.get_key_value(id)?;
        if stored.expires_at <= now {
            return None;
        }
        let (key, previous) = (key.clone(), stored.touched);
        self.activity += 1;
        self.recency.remove(&previous);
        self.recency.insert(self.activity, key);
        let stored = self.sessions.get_mut(id).expect("found above");
        stored.touched = self.activity;
        stored.expires_at = now + window;
        Some(stored)
    }

    fn advance(&mut self, id: &str, progress: &[Progress], window: Duration) {
        if let Some(stored) = self.touch(id, window) {
            for p in progress {
                if let Some(cursor) = stored.rooms.get_mut(&p.room) {
                    cursor.acked = cursor.acked.max(p.handled);
                    cursor.listened |= p.listened;
                }
            }
        }
    }

    fn remove_session(&mut self, id: &str) {
        if let Some(stored) = self.sessions.remove(id) {
            self.recency.remove(&stored.touched);
            self.session_bytes -= stored.bytes;
        }
    }

    /// Re-counts a session's bytes after a change and drops the least recently active sessions
    /// until all of them fit in `budget`.
    fn resize_session(&mut self, id: &str, budget: usize) {
        if let Some(stored) = self.sessions.get_mut(id) {
            let bytes = session_size(id, &stored.rooms);
            self.session_bytes = self.session_bytes - stored.bytes + bytes;
            stored.bytes = bytes;
        }
        while self.session_bytes > budget {
            let Some((_, oldest)) = self.recency.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.remove_session(&oldest);
        }
    }
}

fn deadline_passed(deadline: Option<SystemTime>) -> bool {
    deadline.is_some_and(|d| SystemTime::now() > d)
}

#[async_trait]
impl History for MemoryStore {
    async fn repeat(&self, publish: &Publish<'_>) -> Result<Option<Position>, StoreError> {
        let Some(key) = publish.scoped_key() else {
            return Ok(None);
        };
        match self.lock().keys.get(key.as_str()) {
            Some(record) if record.fingerprint != publish.fingerprint() => {
                Err(StoreError::KeyReused)
            }
            Some(record) => Ok(Some(record.position)),
            None => Ok(None),
        }
    }

    async fn append(&self, publish: Publish<'_>) -> Result<Appended, StoreError> {
        if deadline_passed(publish.deadline) {
            return Err(StoreError::Expired("the publish deadline passed".into()));
        }
        let options = &self.options;
        let mut inner = self.lock();
        let scoped = publish.scoped_key();
        if let Some(key) = &scoped
            && let Some(record) = inner.keys.get(key.as_str())
        {
            if record.fingerprint != publish.fingerprint() {
                return Err(StoreError::KeyReused);
            }
            let (room, position) = (record.room.clone(), record.position);
            let payload = inner.rooms[&room]
                .entries
                .iter()
                .find(|e| e.position == position)
                .map(|e| e.payload.to_string())
                .unwrap_or_default();
            return Ok(Appended {
                message: Message {
                    room: room.to_string(),
                    position,
                    payload,
                },
                repeated: true,
            });
        }
        let now = Instant::now();
        let (room, log) = inner.room_entry(publish.room);
        let prev = log.last;
        let position = Position::next(prev, Position::now_ms());
        log.last = position;
        let entry = Entry {
            position,
            payload: Arc::from(publish.payload),
            key: scoped.as_deref().map(Box::from),
            stored_at: now,
        };
        let size = entry.size(&room);
        log.entries.push_back(entry);
        let over = log.entries.len() > options.max_per_room;
        inner.history_bytes += size;
        inner.oldest.insert((position, room.clone()));
        if let Some(key) = scoped {
            let fingerprint = publish.fingerprint();
            let record = KeyRecord {
                room: room.clone(),
                position,
                fingerprint,
            };
            inner.keys.insert(Box::from(key.as_str()), record);
        }
        if over {
            inner.drop_front(&room);
        }
        inner.expire_room(&room, now, options.window);
        // A room emptied by this keeps its log (and its last position) until the sweep.
        inner.fit_history(options.history_bytes);
        let message = Message {
            room: publish.room.to_owned(),
            position,
            payload: publish.payload.to_owned(),
        };
        // Sent under the lock, so every subscriber sees a room's messages in position order.
        inner
            .feeds
            .retain(|feed| feed.message(message.clone(), prev).is_ok());
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
        let window = self.options.window;
        let mut inner = self.lock();
        let Some((room, _)) = inner.rooms.get_key_value(room) else {
            return Ok(Page::default());
        };
        let room = room.clone();
        inner.expire_room(&room, Instant::now(), window);
        let log = &inner.rooms[&room];
        let start = log.entries.partition_point(|e| e.position <= after);
        let end = log.entries.partition_point(|e| e.position <= until);
        let mut messages = Vec::new();
        let mut bytes = 0;
        for entry in log.entries.range(start..end.max(start)) {
            if messages.len() >= limit.count || bytes >= limit.bytes {
                break;
            }
            bytes += entry.payload.len();
            messages.push(Message {
                room: room.to_string(),
                position: entry.position,
                payload: entry.payload.to_string(),
            });
        }
        Ok(Page {
            more: start + messages.len() < end,
            truncated: log.dropped_up_to > after,
            messages,
        })
    }

    async fn replay_start(
        &self,
        room: &str,
        after: Position,
        until: Position,
        max: usize,
    ) -> Result<ReplayStart, StoreError> {
        let window = self.options.window;
        let mut inner = self.lock();
        let Some((room, _)) = inner.rooms.get_key_value(room) else {
            return Ok(ReplayStart {
                after,
                truncated: false,
            });
        };
        let room = room.clone();
        inner.expire_room(&room, Instant::now(), window);
        let log = &inner.rooms[&room];
        let start = log.entries.partition_point(|e| e.position <= after);
        let end = log.entries.partition_point(|e| e.position <= until);
        if end.saturating_sub(start) > max {
            let skip_to = end - max - 1;
            return Ok(ReplayStart {
                after: log.entries[skip_to].position,
                truncated: true,
            });
        }
        Ok(ReplayStart {
            after,
            truncated: log.dropped_up_to > after,
        })
    }

    async fn last_position(&self, room: &str) -> Result<Position, StoreError> {
        Ok(self
            .lock()
            .rooms
            .get(room)
            .map_or(Position::ZERO, |l| l.last))
    }

    async fn feed(&self, limit: usize) -> Result<Feed, StoreError> {
        let (sender, feed) = crate::feed::channel(limit, Arc::new(EveryRoom));
        self.lock().feeds.push(sender);
        Ok(feed)
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let mut inner = self.lock();
        Ok(inner
            .touch(id, self.options.window)
            .map(|s| s.rooms.to_session()))
    }

    async fn join(&self, id: &str, room: &str, at: Position) -> Result<Joined, StoreError> {
        let options = &self.options;
        let mut inner = self.lock();
        if inner.touch(id, options.window).is_none() {
            inner.remove_session(id);
            inner.activity += 1;
            let touched = inner.activity;
            let key: Arc<str> = Arc::from(id);
            inner.recency.insert(touched, key.clone());
            inner.sessions.insert(
                key,
                StoredSession {
                    rooms: SessionRooms::default(),
                    expires_at: Instant::now() + options.window,
                    touched,
                    bytes: 0,
                },
            );
        }
        let stored = inner.sessions.get_mut(id).expect("just ensured");
        let rooms = &mut stored.rooms;
        let joined = if rooms.find(room).is_ok() {
            Joined::Already
        } else if rooms.0.len() >= options.max_rooms_per_session {
            Joined::Full
        } else {
            rooms.insert(room, RoomCursor::joined(at));
            Joined::Added
        };
        inner.resize_session(id, options.session_bytes);
        Ok(joined)
    }

    async fn leave(&self, id: &str, room: &str) -> Result<(), StoreError> {
        let options = &self.options;
        let mut inner = self.lock();
        if let Some(stored) = inner.touch(id, options.window) {
            stored.rooms.remove(room);
            inner.resize_session(id, options.session_bytes);
        }
        Ok(())
    }

    async fn advance(&self, id: &str, progress: &[Progress]) -> Result<(), StoreError> {
        self.lock().advance(id, progress, self.options.window);
        Ok(())
    }

    async fn advance_many(&self, batch: &[(&str, &[Progress])]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for (id, progress) in batch {
            inner.advance(id, progress, self.options.window);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(window_secs: u64, max_per_room: usize) -> MemoryStore {
        MemoryStore::new(MemoryOptions::new(
            Duration::from_secs(window_secs),
            max_per_room,
        ))
    }

    async fn append(store: &MemoryStore, room: &str, payload: &str) -> Message {
        store
            .append(Publish::new(room, payload))
            .await
            .unwrap()
            .message
    }

    async fn all(store: &MemoryStore, room: &str) -> Page {
        store
            .read_page(room, Position::ZERO, Position::MAX, PageLimit::count(1000))
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn messages_expire_after_the_window_and_readers_are_told() {
        let store = store(10, 100);
        let first = append(&store, "r", "{}").await;
        tokio::time::advance(Duration::from_secs(6)).await;
        let second = append(&store, "r", "{}").await;
        tokio::time::advance(Duration::from_secs(5)).await;

        let page = all(&store, "r").await;
        assert_eq!(page.messages.len(), 1);
        assert_eq!(page.messages[0].position, second.position);
        assert!(page.truncated, "the expired first message is missing");

        let page = store
            .read_page("r", first.position, Position::MAX, PageLimit::count(10))
            .await
            .unwrap();
        assert!(
            !page.truncated,
            "nothing after the first message was dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_live_for_the_window_after_their_last_activity() {
        let store = store(10, 100);
        store.join("s", "r", Position(5)).await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        store
            .advance("s", &[Progress::new("r", Position(7))])
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
    async fn expired_history_is_swept_in_the_background_in_batches() {
        let store = store(1, 100);
        for i in 0..(3 * SWEEP_BATCH) {
            append(&store, &format!("room-{i}"), "{}").await;
        }
        assert!(store.usage().0 > 0);
        // No call between: only the background sweeper can have dropped them.
        tokio::time::advance(SWEEP_EVERY + Duration::from_millis(1)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.usage().0, 0);
        let emptied = store.lock().emptied.len();
        assert_eq!(
            emptied,
            3 * SWEEP_BATCH,
            "every emptied room is queued to go"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn positions_stay_increasing_after_retention_empties_a_room() {
        let store = store(1, 100);
        let first = append(&store, "r", "{}").await;
        tokio::time::advance(Duration::from_secs(120)).await;
        let second = append(&store, "r", "{}").await;
        assert!(second.position > first.position);
    }

    #[tokio::test]
    async fn history_across_rooms_stays_within_its_bytes_oldest_dropped_first() {
        let mut options = MemoryOptions::new(Duration::from_secs(3600), 1000);
        options.history_bytes = 10_000;
        let store = MemoryStore::new(options);
        let payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(900));
        let mut appended = Vec::new();
        for i in 0..40 {
            appended.push(append(&store, ["a", "b", "c"][i % 3], &payload).await);
        }
        let (history, _) = store.usage();
        assert!(history <= 10_000, "history holds {history} bytes");
        let mut kept: Vec<Message> = Vec::new();
        for room in ["a", "b", "c"] {
            let page = all(&store, room).await;
            assert!(page.truncated, "{room} lost its oldest and says so");
            kept.extend(page.messages);
        }
        kept.sort_by_key(|m| m.position);
        let newest = &appended[appended.len() - kept.len()..];
        assert_eq!(kept, newest, "the newest survive, across rooms");
    }

    #[tokio::test]
    async fn sessions_stay_within_their_bytes_least_recently_active_dropped_first() {
        let mut options = MemoryOptions::new(Duration::from_secs(3600), 10);
        options.session_bytes = 20_000;
        options.max_rooms_per_session = 50;
        let store = MemoryStore::new(options);
        for s in 0..20 {
            let id = format!("s{s}");
            for r in 0..50 {
                let room = format!("room-{r:0>40}");
                let joined = store.join(&id, &room, Position(1)).await.unwrap();
                assert_eq!(joined, Joined::Added);
            }
            let over = store.join(&id, "one-more", Position(1)).await.unwrap();
            assert_eq!(over, Joined::Full, "fifty rooms at most");
            store.load("s19").await.unwrap();
        }
        let (_, sessions) = store.usage();
        assert!(sessions <= 20_000, "sessions hold {sessions} bytes");
        assert!(
            store.load("s0").await.unwrap().is_none(),
            "the least recent went first"
        );
        assert!(
            store.load("s19").await.unwrap().is_some(),
            "the active one stayed"
        );
    }

    #[tokio::test]
    async fn the_memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(|| {
            let mut options = MemoryOptions::new(Duration::from_secs(3600), 1000);
            options.max_rooms_per_session = crate::conformance::SESSION_ROOM_LIMIT;
            let store = MemoryStore::new(options);
            (Arc::new(store.clone()), Arc::new(store))
        })
        .await;
    }
}
