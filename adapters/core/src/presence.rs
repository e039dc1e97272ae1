//! Who is present in a room, across every node: members enter with some data (a name, a status),
//! update it, and leave; a member whose node stops refreshing it (the node died) expires.
//!
//! Changes are applied a batch per room at a time ([`Presence::apply`]), and each batch is fed to
//! every node as one [`PresenceEvent`], so a room's members are told about many changes in one
//! announcement rather than one each.
//!
//! [`MemoryPresence`] is the one-node store; the Redis store shares presence between nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{EveryRoom, Listen, StoreError};

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

    /// The one-letter code changes travel under between nodes.
    pub fn code(self) -> u8 {
        match self {
            Change::Enter => b'e',
            Change::Update => b'u',
            Change::Leave => b'l',
        }
    }

    pub fn from_code(code: u8) -> Option<Change> {
        match code {
            b'e' => Some(Change::Enter),
            b'u' => Some(Change::Update),
            b'l' => Some(Change::Leave),
            _ => None,
        }
    }
}

/// A change a node asks for, one of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// Puts the member in the room, or updates it if it is there.
    Enter(Member),
    /// Takes the member with this id out.
    Leave(String),
}

/// The changes to one room's members that one batch (or one sweep) made, as fed to every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEvent {
    pub room: String,
    /// In the order they were made; a leave carries what the member last had.
    pub changes: Vec<(Change, Member)>,
}

/// The presence changes, from every node, of the rooms `rooms` listens to (a node's live feed
/// listens to the rooms it serves, for both).
pub struct PresenceFeed {
    pub events: mpsc::UnboundedReceiver<PresenceEvent>,
    pub rooms: Arc<dyn Listen>,
}

/// Room membership shared by the nodes.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Applies `updates` to `room` in order, atomically, each entry kept until `ttl` from now
    /// unless refreshed, and feeds what changed as one event. A newcomer to a room holding
    /// `max_members` is refused: its id is in the answer, and nothing else about it changes.
    async fn apply(
        &self,
        room: &str,
        updates: &[Update],
        ttl: Duration,
        max_members: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// The members of `room` now, expired ones left out, in no particular order.
    async fn members(&self, room: &str) -> Result<Vec<Member>, StoreError>;

    /// Extends the entries of `(room, member id)` by `ttl` from now (a node's heartbeat for its
    /// own members). Entries gone meanwhile stay gone.
    async fn refresh(&self, entries: &[(&str, &str)], ttl: Duration) -> Result<(), StoreError>;

    /// Drops members whose time ran out, feeding each as leaving, once, whichever node finds it
    /// first.
    async fn expire(&self) -> Result<(), StoreError>;

    /// Every change from now on, of the rooms listened to.
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
    fn feed(&mut self, event: PresenceEvent) {
        if !event.changes.is_empty() {
            self.subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
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
    async fn apply(
        &self,
        room: &str,
        updates: &[Update],
        ttl: Duration,
        max_members: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut inner = self.lock();
        let now = Instant::now();
        let entries = inner.rooms.entry(room.to_owned()).or_default();
        // Expired entries stay until a sweep announces their leave; they hold no place.
        let mut present = entries.values().filter(|e| e.until > now).count();
        let mut changes = Vec::new();
        let mut refused = Vec::new();
        for update in updates {
            match update {
                Update::Enter(member) => {
                    let change = match entries.get(&member.id) {
                        Some(e) if e.until > now => Change::Update,
                        _ if present >= max_members => {
                            refused.push(member.id.clone());
                            continue;
                        }
                        _ => {
                            present += 1;
                            Change::Enter
                        }
                    };
                    let entry = Entry {
                        info: member.info.clone(),
                        until: now + ttl,
                    };
                    entries.insert(member.id.clone(), entry);
                    changes.push((change, member.clone()));
                }
                Update::Leave(id) => {
                    if let Some(entry) = entries.remove(id) {
                        if entry.until > now {
                            present -= 1;
                        }
                        let member = Member {
                            id: id.clone(),
                            info: entry.info,
                        };
                        changes.push((Change::Leave, member));
                    }
                }
            }
        }
        if entries.is_empty() {
            inner.rooms.remove(room);
        }
        inner.feed(PresenceEvent {
            room: room.to_owned(),
            changes,
        });
        Ok(refused)
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
            let mut changes = Vec::new();
            entries.retain(|id, e| {
                let alive = e.until > now;
                if !alive {
                    let info = std::mem::take(&mut e.info);
                    changes.push((
                        Change::Leave,
                        Member {
                            id: id.clone(),
                            info,
                        },
                    ));
                }
                alive
            });
            if !changes.is_empty() {
                gone.push(PresenceEvent {
                    room: room.clone(),
                    changes,
                });
            }
            !entries.is_empty()
        });
        for event in gone {
            inner.feed(event);
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<PresenceFeed, StoreError> {
        let (tx, events) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        Ok(PresenceFeed {
            events,
            rooms: Arc::new(EveryRoom),
        })
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
