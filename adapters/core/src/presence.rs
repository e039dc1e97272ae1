//! Who is present in a room, across every node: members enter with some data (a name, a status),
//! update it, and leave; a member whose node stops refreshing it (the node died) expires. Every
//! change is fed to every node, so each tells its own clients in the room.
//!
//! [`MemoryPresence`] is the one-node store; the Redis store shares presence between nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::StoreError;

/// One member's entry: its id (unique across nodes) and what the room is told about it, a JSON
/// object as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub info: String,
}

/// What happened to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Enter,
    Update,
    Leave,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Enter => "enter",
            Change::Update => "update",
            Change::Leave => "leave",
        }
    }

    pub fn parse(text: &str) -> Option<Change> {
        match text {
            "enter" => Some(Change::Enter),
            "update" => Some(Change::Update),
            "leave" => Some(Change::Leave),
            _ => None,
        }
    }
}

/// A change to a room's members, as fed to every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEvent {
    pub room: String,
    pub change: Change,
    pub member: Member,
}

/// Every presence change, from every node.
pub type PresenceFeed = mpsc::UnboundedReceiver<PresenceEvent>;

/// Room membership shared by the nodes.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Puts `member` in `room` (an update if it is there already) until `ttl` from now unless
    /// refreshed, and feeds the change. A room holding `max_members` others refuses a newcomer
    /// with [`StoreError::Full`].
    async fn enter(
        &self,
        room: &str,
        member: &Member,
        ttl: Duration,
        max_members: usize,
    ) -> Result<Change, StoreError>;

    /// Takes the member out of `room`, feeding the change if it was there.
    async fn leave(&self, room: &str, member_id: &str) -> Result<bool, StoreError>;

    /// The members of `room` now, expired ones left out, in no particular order.
    async fn members(&self, room: &str) -> Result<Vec<Member>, StoreError>;

    /// Extends the entries of `(room, member id)` by `ttl` from now (a node's heartbeat for its
    /// own members). Entries gone meanwhile stay gone.
    async fn refresh(&self, entries: &[(&str, &str)], ttl: Duration) -> Result<(), StoreError>;

    /// Drops members whose time ran out, feeding each as leaving, once, whichever node finds it
    /// first.
    async fn expire(&self) -> Result<(), StoreError>;

    /// Every change from now on.
    async fn subscribe(&self) -> Result<PresenceFeed, StoreError>;
}

/// Presence for one node, in memory. Cloning shares it.
#[derive(Clone, Default)]
pub struct MemoryPresence {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, HashMap<String, Entry>>,
    subscribers: Vec<mpsc::UnboundedSender<PresenceEvent>>,
}

struct Entry {
    info: String,
    until: Instant,
}

impl Inner {
    fn feed(&mut self, room: &str, change: Change, id: &str, info: &str) {
        let event = PresenceEvent {
            room: room.to_owned(),
            change,
            member: Member {
                id: id.to_owned(),
                info: info.to_owned(),
            },
        };
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }
}

impl MemoryPresence {
    pub fn new() -> MemoryPresence {
        MemoryPresence::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn enter(
        &self,
        room: &str,
        member: &Member,
        ttl: Duration,
        max_members: usize,
    ) -> Result<Change, StoreError> {
        let mut inner = self.lock();
        let entries = inner.rooms.entry(room.to_owned()).or_default();
        let now = Instant::now();
        let change = match entries.get(&member.id) {
            Some(entry) if entry.until > now => Change::Update,
            _ => {
                let present = entries.values().filter(|e| e.until > now).count();
                if present >= max_members {
                    if entries.is_empty() {
                        inner.rooms.remove(room);
                    }
                    return Err(StoreError::Full(format!(
                        "room {room} has {max_members} members present already"
                    )));
                }
                Change::Enter
            }
        };
        entries.insert(
            member.id.clone(),
            Entry {
                info: member.info.clone(),
                until: now + ttl,
            },
        );
        inner.feed(room, change, &member.id, &member.info);
        Ok(change)
    }

    async fn leave(&self, room: &str, member_id: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(entries) = inner.rooms.get_mut(room) else {
            return Ok(false);
        };
        let Some(entry) = entries.remove(member_id) else {
            return Ok(false);
        };
        if entries.is_empty() {
            inner.rooms.remove(room);
        }
        inner.feed(room, Change::Leave, member_id, &entry.info);
        Ok(true)
    }

    async fn members(&self, room: &str) -> Result<Vec<Member>, StoreError> {
        let inner = self.lock();
        let now = Instant::now();
        Ok(inner
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter(|(_, e)| e.until > now)
            .map(|(id, e)| Member {
                id: id.clone(),
                info: e.info.clone(),
            })
            .collect())
    }

    async fn refresh(&self, entries: &[(&str, &str)], ttl: Duration) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let until = Instant::now() + ttl;
        for (room, id) in entries {
            if let Some(entry) = inner.rooms.get_mut(*room).and_then(|r| r.get_mut(*id)) {
                entry.until = until;
            }
        }
        Ok(())
    }

    async fn expire(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut gone = Vec::new();
        inner.rooms.retain(|room, entries| {
            entries.retain(|id, e| {
                let alive = e.until > now;
                if !alive {
                    gone.push((room.clone(), id.clone(), std::mem::take(&mut e.info)));
                }
                alive
            });
            !entries.is_empty()
        });
        for (room, id, info) in gone {
            inner.feed(&room, Change::Leave, &id, &info);
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<PresenceFeed, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_presence_passes_the_presence_conformance_suite() {
        crate::conformance::run_presence(|| {
            let presence = MemoryPresence::new();
            (Arc::new(presence.clone()), Arc::new(presence))
        })
        .await;
    }
}
