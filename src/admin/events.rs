//! The live events the Admin UI follows (`socket_connected`, `socket_disconnected`,
//! `room_joined`, `room_left`), kept from becoming the node's main cost: nothing is made while no
//! admin watches; what is made is taken from a node-wide rate ([`RATE`] a second, [`BURST`] at
//! once) and handed to one task that emits it to the `/admin` namespace (each event encoded
//! once for every admin). Over the rate, or with [`QUEUED`] waiting, an event is dropped and
//! counted (`droppedEvents` in the next `server_stats`; the UI's list then catches up on its
//! next `all_sockets`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::Value;
use socketioxide::SocketIo;
use tokio::sync::mpsc;

use crate::rate::{Limiter, limiter};

/// Live events emitted per second at most, and at once.
pub const RATE: u32 = 200;
pub const BURST: u32 = 400;
/// Events waiting for the emitting task at most.
const QUEUED: usize = 1_024;

/// One live event, for the namespace `/`.
pub enum Live {
    /// The socket as [`super::registry::describe`] tells it.
    Connected(Value),
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

pub struct Feed {
    sender: mpsc::Sender<(Live, SystemTime)>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<(Live, SystemTime)>>>,
    limiter: Limiter,
    dropped: AtomicU64,
}

impl Default for Feed {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUED);
        Feed {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            limiter: limiter(RATE, BURST),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Feed {
    /// Sends the event `make` makes, if it fits the rate (else counts it dropped).
    pub fn push(&self, make: impl FnOnce() -> Option<Live>) {
        if self.limiter.check().is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(live) = make() else { return };
        if self.sender.try_send((live, SystemTime::now())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
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
            while let Some((live, at)) = receiver.recv().await {
                let Some(admins) = io.of(super::NAMESPACE) else {
                    continue;
                };
                let at = humantime::format_rfc3339_millis(at).to_string();
                let sent = match live {
                    Live::Connected(socket) => admins.emit("socket_connected", &(socket, at)).await,
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
