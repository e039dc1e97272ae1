//! The live events the Admin UI follows (`socket_connected`, `socket_updated`,
//! `socket_disconnected`, `room_joined`, `room_left`), kept from becoming the node's main cost:
//! nothing is made while no admin watches, here or on another node of the fleet; what is made is
//! taken from a node-wide rate ([`RATE`] a second, [`BURST`] at once). For this node's admins it
//! goes to one task that emits it to the `/admin` namespace (each event encoded once for every
//! admin); for another node's it is kept in a ring of the [`RECENT`] latest, which those nodes
//! read ([`super::relay`]) and hand to their own task. Over the rate, or with [`QUEUED`]
//! waiting, an event is dropped and counted (`droppedEvents` in the next `server_stats`; the
//! UI's list then catches up on its next `all_sockets`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use tokio::sync::mpsc;

use crate::rate::{Limiter, limiter};

/// Live events emitted per second at most, and at once.
pub const RATE: u32 = 200;
pub const BURST: u32 = 400;
/// Events waiting for the emitting task at most.
const QUEUED: usize = 1_024;
/// Events kept for the other nodes' admins at most.
pub const RECENT: usize = 1_024;

/// One live event, for the namespace `/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Live {
    /// The socket as [`super::registry::describe`] tells it.
    Connected {
        socket: Value,
    },
    /// Its transport changed (a long-polling client upgraded).
    Updated {
        id: String,
        transport: String,
    },
    Disconnected {
        id: String,
        reason: String,
    },
    Joined {
        id: String,
        room: String,
    },
    Left {
        id: String,
        room: String,
    },
}

/// An event and when it happened, in milliseconds since the epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stamped {
    pub at: u64,
    pub live: Live,
}

/// The events kept for other nodes' admins, numbered.
#[derive(Default)]
struct Recent {
    events: VecDeque<Stamped>,
    /// The number the next event gets.
    next: u64,
}

/// What another node reads of the ring: the events after its cursor, the cursor to ask from
/// next, and how many it missed (they left the ring before it asked).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Since {
    pub cursor: u64,
    pub events: Vec<Stamped>,
    pub missed: u64,
}

pub struct Feed {
    sender: mpsc::Sender<Stamped>,
    receiver: Mutex<Option<mpsc::Receiver<Stamped>>>,
    limiter: Limiter,
    dropped: AtomicU64,
    recent: Mutex<Recent>,
    /// Whether an admin is logged in on another node of the fleet.
    elsewhere: AtomicBool,
}

impl Default for Feed {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUED);
        Feed {
            sender,
            receiver: Mutex::new(Some(receiver)),
            limiter: limiter(RATE, BURST),
            dropped: AtomicU64::new(0),
            recent: Mutex::default(),
            elsewhere: AtomicBool::new(false),
        }
    }
}

impl Feed {
    /// Sends the event `make` makes to this node's admins (`here`: one is logged in) and keeps
    /// it for the other nodes' (while one is logged in there), if it fits the rate (else counts
    /// it dropped).
    pub fn push(&self, here: bool, make: impl FnOnce() -> Option<Live>) {
        let elsewhere = self.is_watched_elsewhere();
        if !here && !elsewhere {
            return;
        }
        if self.limiter.check().is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(live) = make() else { return };
        let stamped = Stamped { at: now_ms(), live };
        if elsewhere {
            self.keep(stamped.clone());
        }
        if here {
            self.relay(stamped);
        }
    }

    /// Hands an event to the task emitting to this node's admins (one of another node's comes
    /// here having been taken from that node's rate).
    pub fn relay(&self, stamped: Stamped) {
        if self.sender.try_send(stamped).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn keep(&self, stamped: Stamped) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.events.len() == RECENT {
            recent.events.pop_front();
        }
        recent.events.push_back(stamped);
        recent.next += 1;
    }

    /// The events kept after `cursor` (`None`: none, only where the ring stands now).
    pub fn since(&self, cursor: Option<u64>) -> Since {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let next = recent.next;
        let Some(cursor) = cursor.filter(|c| *c <= next) else {
            return Since {
                cursor: next,
                ..Since::default()
            };
        };
        let oldest = next - recent.events.len() as u64;
        let from = cursor.max(oldest);
        Since {
            cursor: next,
            events: recent
                .events
                .iter()
                .skip((from - oldest) as usize)
                .cloned()
                .collect(),
            missed: from - cursor,
        }
    }

    /// Whether an admin is logged in on another node (as the fleet's announcements say).
    pub fn is_watched_elsewhere(&self) -> bool {
        self.elsewhere.load(Ordering::Relaxed)
    }

    pub fn watched_elsewhere(&self, watched: bool) {
        self.elsewhere.store(watched, Ordering::Relaxed);
        if !watched {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.events.clear();
        }
    }

    /// Counts `n` events another node dropped before this one read them.
    pub fn missed(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Events dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Starts the task that emits the events to the `/admin` namespace (once).
    pub fn spawn(&self, io: SocketIo) {
        let Some(mut receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        tokio::spawn(async move {
            while let Some(Stamped { at, live }) = receiver.recv().await {
                let Some(admins) = io.of(super::NAMESPACE) else {
                    continue;
                };
                let at = UNIX_EPOCH + Duration::from_millis(at);
                let at = humantime::format_rfc3339_millis(at).to_string();
                let sent = match live {
                    Live::Connected { socket } => {
                        admins.emit("socket_connected", &(socket, at)).await
                    }
                    Live::Updated { id, transport } => {
                        let updated =
                            serde_json::json!({ "id": id, "nsp": "/", "transport": transport });
                        admins.emit("socket_updated", &updated).await
                    }
                    Live::Disconnected { id, reason } => {
                        admins
                            .emit("socket_disconnected", &("/", id, reason, at))
                            .await
                    }
                    Live::Joined { id, room } => {
                        admins.emit("room_joined", &("/", room, id, at)).await
                    }
                    Live::Left { id, room } => admins.emit("room_left", &("/", room, id, at)).await,
                };
                if let Err(e) = sent {
                    tracing::debug!("admin event not sent: {e}");
                }
            }
        });
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(n: usize) -> impl FnOnce() -> Option<Live> {
        move || {
            Some(Live::Joined {
                id: format!("s{n}"),
                room: "r".into(),
            })
        }
    }

    fn ids(since: &Since) -> Vec<String> {
        since
            .events
            .iter()
            .map(|e| match &e.live {
                Live::Joined { id, .. } => id.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn other_nodes_read_what_was_kept_after_their_cursor_and_learn_what_they_missed() {
        let feed = Feed::default();
        feed.push(false, joined(0));
        assert_eq!(
            feed.since(None).cursor,
            0,
            "nothing kept while no one watches"
        );
        feed.watched_elsewhere(true);
        let start = feed.since(None);
        assert!(
            start.events.is_empty(),
            "a first read only learns the cursor"
        );
        for n in 1..=3 {
            feed.push(false, joined(n));
        }
        let read = feed.since(Some(start.cursor));
        assert_eq!(ids(&read), ["s1", "s2", "s3"]);
        assert_eq!(read.missed, 0);
        assert!(feed.since(Some(read.cursor)).events.is_empty());
        // Past the ring's bound, the oldest are gone and counted.
        for n in 0..RECENT + 10 {
            feed.keep(Stamped {
                at: 0,
                live: joined(n)().unwrap(),
            });
        }
        let late = feed.since(Some(read.cursor));
        assert_eq!(late.events.len(), RECENT);
        assert_eq!(late.missed, 10);
        assert_eq!(ids(&late)[0], "s10");
        // A cursor from the future (the node restarted) starts over.
        assert!(feed.since(Some(u64::MAX)).events.is_empty());
    }
}
