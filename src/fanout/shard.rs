//! One shard of live delivery: the rooms that hash to it, each with its local members and the
//! connections recovering into it. A shard is one task working through one ordered queue, so a
//! join, a hold or a release is an exact cut between two messages of the room, with no lock; the
//! shards share nothing, so rooms on different shards are delivered in parallel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use socketioxide::socket::Sid;
use tokio::sync::{mpsc, oneshot};
use twine_store::{Message, Position};

use crate::outbox::acks::Slot;
use crate::outbox::{Encoded, Outbox};

/// A local connection in a room.
#[derive(Clone)]
pub struct Member {
    pub sid: Sid,
    pub outbox: Arc<Outbox>,
    /// The room's place in the connection's bookkeeping.
    pub slot: Slot,
}

/// What a shard is asked to do, in order.
pub enum Command {
    /// A message from the store's feed (or read back after a gap in it).
    Deliver(Message, Instant),
    /// Pins `room` until a `Join` or `Untrack`; answers its newest position if the shard knows
    /// it, or `None` (the caller reads it from the store).
    Track {
        room: Arc<str>,
        reply: oneshot::Sender<Option<Position>>,
    },
    /// Ends a `Track`: `member` gets live every message after the answered position (`floor`,
    /// from the store, when `Track` answered `None`).
    Join {
        room: Arc<str>,
        member: Member,
        floor: Option<Position>,
        reply: oneshot::Sender<Position>,
    },
    /// Ends a `Track` without joining.
    Untrack {
        room: Arc<str>,
    },
    Leave {
        room: Arc<str>,
        sid: Sid,
    },
    /// Buffers the room's messages for `member`, which is about to replay it; answers once in
    /// place, so whatever the replay does not read from the store is buffered.
    Hold {
        room: Arc<str>,
        member: Member,
        reply: oneshot::Sender<()>,
    },
    /// Ends a hold: `member` has replayed the room up to `replayed` and goes live.
    Release {
        room: Arc<str>,
        sid: Sid,
        replayed: Position,
        reply: oneshot::Sender<Released>,
    },
    /// Ends a hold without going live.
    Unhold {
        room: Arc<str>,
        sid: Sid,
    },
    /// The rooms this shard tracks with their newest positions (to catch up after a feed gap).
    Rooms {
        reply: oneshot::Sender<Vec<(Arc<str>, Position)>>,
    },
}

/// What a [`Command::Release`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// The connection is live; what arrived during its replay was sent after it.
    Live,
    /// More arrived during the replay than the hold buffers: replay up to this position from
    /// the store and release again (the room is held anew from it).
    Behind(Position),
    /// The connection is gone, or was cut while catching up.
    Gone,
}

/// One room on this shard.
struct Room {
    name: Arc<str>,
    /// Newest position delivered here (or learnt from the store).
    last: Position,
    /// `last` is at least the store's newest position as of some moment: a join can cut there.
    known: bool,
    members: Vec<Member>,
    holders: Vec<Holder>,
    /// `Track`s not yet ended.
    pending: u32,
}

struct Holder {
    member: Member,
    buffer: Vec<Arc<Encoded>>,
    bytes: usize,
    overflowed: bool,
}

impl Holder {
    fn new(member: Member) -> Holder {
        Holder {
            member,
            buffer: Vec::new(),
            bytes: 0,
            overflowed: false,
        }
    }
}

impl Room {
    fn new(name: Arc<str>) -> Room {
        Room {
            name,
            last: Position::ZERO,
            known: false,
            members: Vec::new(),
            holders: Vec::new(),
            pending: 0,
        }
    }

    fn unused(&self) -> bool {
        self.members.is_empty() && self.holders.is_empty() && self.pending == 0
    }
}

/// How far behind a shard's queue is, for publishing to decline when delivery falls behind.
#[derive(Default)]
pub struct Lag {
    /// Microseconds between a message's arrival on this node and its delivery by the shard, as
    /// last measured.
    pub delay_us: AtomicU64,
}

pub struct Shard {
    rooms: HashMap<Arc<str>, Room>,
    /// Most bytes buffered per held connection; beyond it the holder catches up from the store.
    hold_bytes: usize,
    lag: Arc<Lag>,
}

impl Shard {
    pub fn new(hold_bytes: usize, lag: Arc<Lag>) -> Shard {
        Shard {
            rooms: HashMap::new(),
            hold_bytes,
            lag,
        }
    }

    /// Works through `commands` until every sender is gone.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = commands.recv().await {
            self.handle(command);
        }
    }

    fn room(&mut self, name: Arc<str>) -> &mut Room {
        self.rooms
            .entry(name.clone())
            .or_insert_with(|| Room::new(name))
    }

    fn drop_if_unused(&mut self, name: &str) {
        if self.rooms.get(name).is_some_and(Room::unused) {
            self.rooms.remove(name);
        }
    }

    pub fn handle(&mut self, command: Command) {
        match command {
            Command::Deliver(message, arrived) => {
                let delay = arrived.elapsed().as_micros() as u64;
                self.lag.delay_us.store(delay, Ordering::Relaxed);
                self.deliver(&message);
            }
            Command::Track { room, reply } => {
                let room = self.room(room);
                room.pending += 1;
                let _ = reply.send(room.known.then_some(room.last));
            }
            Command::Join {
                room,
                member,
                floor,
                reply,
            } => {
                let entry = self.room(room);
                entry.pending = entry.pending.saturating_sub(1);
                if let Some(floor) = floor {
                    entry.last = entry.last.max(floor);
                    entry.known = true;
                }
                if reply.send(entry.last).is_ok() && !member.outbox.is_closed() {
                    entry.members.push(member);
                }
            }
            Command::Untrack { room } => {
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.pending = entry.pending.saturating_sub(1);
                }
                self.drop_if_unused(&room);
            }
            Command::Leave { room, sid } => {
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.members.retain(|m| m.sid != sid);
                }
                self.drop_if_unused(&room);
            }
            Command::Hold {
                room,
                member,
                reply,
            } => {
                if reply.send(()).is_ok() {
                    self.room(room).holders.push(Holder::new(member));
                }
            }
            Command::Release {
                room,
                sid,
                replayed,
                reply,
            } => {
                let released = self.release(&room, sid, replayed);
                let _ = reply.send(released);
                self.drop_if_unused(&room);
            }
            Command::Unhold { room, sid } => {
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.holders.retain(|h| h.member.sid != sid);
                }
                self.drop_if_unused(&room);
            }
            Command::Rooms { reply } => {
                let rooms = self
                    .rooms
                    .iter()
                    .map(|(name, room)| (name.clone(), room.last))
                    .collect();
                let _ = reply.send(rooms);
            }
        }
    }

    fn deliver(&mut self, message: &Message) {
        let hold_bytes = self.hold_bytes;
        let Some(room) = self.rooms.get_mut(message.room.as_str()) else {
            return; // nobody here listens to it
        };
        if message.position <= room.last {
            return; // delivered already (read back after a feed gap), or before a join's cut
        }
        room.last = message.position;
        if room.members.is_empty() && room.holders.is_empty() {
            return;
        }
        let encoded = Arc::new(Encoded::with_room(room.name.clone(), message));
        room.members
            .retain(|m| m.outbox.deliver(&encoded, m.slot).is_ok());
        let size = encoded.json().len();
        for holder in room.holders.iter_mut().filter(|h| !h.overflowed) {
            holder.bytes += size;
            if holder.bytes > hold_bytes {
                holder.overflowed = true;
                holder.buffer = Vec::new();
            } else {
                holder.buffer.push(encoded.clone());
            }
        }
    }

    fn release(&mut self, room: &str, sid: Sid, replayed: Position) -> Released {
        let Some(entry) = self.rooms.get_mut(room) else {
            return Released::Gone;
        };
        let Some(at) = entry.holders.iter().position(|h| h.member.sid == sid) else {
            return Released::Gone;
        };
        let holder = entry.holders.swap_remove(at);
        if holder.overflowed {
            let behind = entry.last;
            entry.holders.push(Holder::new(holder.member));
            return Released::Behind(behind);
        }
        let member = holder.member;
        for message in holder.buffer.iter().filter(|m| m.position > replayed) {
            if member.outbox.deliver(message, member.slot).is_err() {
                return Released::Gone;
            }
        }
        entry.members.push(member);
        Released::Live
    }
}
