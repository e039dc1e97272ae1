//! Live delivery on this node. The store's feed arrives here in append order; each message is
//! encoded once and broadcast to the local Socket.IO room. Every room join happens under the same
//! lock as the broadcasts, so a join is an exact cut: the joining socket gets live exactly the
//! messages after the room's position at that moment, and a recovering socket can be held (its
//! live messages buffered) while it replays up to the cut, then released with no gap and no
//! duplicate at the seam.
//!
//! Each broadcast also gets a node-local sequence number, kept for a while per room, so an
//! acknowledgement of one timestamp can be turned into "everything this connection was sent up to
//! that message" across all its rooms.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::Mutex;
use twine_store::{Feed, History, Message, Position, StoreError};

/// Broadcasts remembered per room for resolving acknowledgements. An acknowledgement of an older
/// message is ignored: recovery then replays from the previous acknowledgement, never losing one.
const RECENT_PER_ROOM: usize = 4096;

/// The node-local sequence number of a broadcast.
pub type Seq = u64;

pub struct Fanout {
    io: SocketIo,
    history: Arc<dyn History>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seq: Seq,
    rooms: HashMap<String, RoomState>,
    /// Messages broadcast to rooms a held (recovering) connection is waiting to join.
    held: HashMap<Sid, Vec<Arc<Outgoing>>>,
}

struct RoomState {
    /// Newest position broadcast (or, for a room first seen, stored) on this node.
    last: Position,
    /// Local sockets joined to the room.
    members: usize,
    /// Connections held for this room.
    holders: Vec<Sid>,
    recent: VecDeque<(Seq, Position)>,
}

/// A message as clients receive it: the payload with `timestamp` and `room` added.
pub struct Outgoing {
    pub room: String,
    pub position: Position,
    pub body: Value,
}

impl Outgoing {
    pub fn new(message: &Message) -> Outgoing {
        let mut body = match serde_json::from_str::<Value>(&message.payload) {
            Ok(Value::Object(map)) => map,
            _ => {
                tracing::warn!(room = %message.room, position = %message.position, "stored payload is not a JSON object; sending it empty");
                Map::new()
            }
        };
        body.insert("timestamp".into(), Value::from(message.position.0));
        body.insert("room".into(), Value::from(message.room.clone()));
        Outgoing {
            room: message.room.clone(),
            position: message.position,
            body: Value::Object(body),
        }
    }
}

/// Where a held connection's replay must stop, per room: live delivery starts after it.
pub type Cut = HashMap<String, Position>;

impl Fanout {
    pub fn new(io: SocketIo, history: Arc<dyn History>) -> Arc<Fanout> {
        Arc::new(Fanout {
            io,
            history,
            state: Mutex::new(State::default()),
        })
    }

    /// Delivers the feed until it closes.
    pub async fn run(self: Arc<Self>, mut feed: Feed) {
        while let Some(message) = feed.recv().await {
            self.deliver(&message).await;
        }
        tracing::warn!("the store's live feed closed; live delivery stopped");
    }

    async fn deliver(&self, message: &Message) {
        let mut state = self.state.lock().await;
        let State {
            seq, rooms, held, ..
        } = &mut *state;
        let Some(room) = rooms.get_mut(&message.room) else {
            return; // nobody here listens to this room
        };
        if message.position <= room.last {
            return; // already covered by a join cut
        }
        *seq += 1;
        room.last = message.position;
        room.recent.push_back((*seq, message.position));
        if room.recent.len() > RECENT_PER_ROOM {
            room.recent.pop_front();
        }
        let outgoing = Arc::new(Outgoing::new(message));
        for holder in &room.holders {
            if let Some(buffer) = held.get_mut(holder) {
                buffer.push(outgoing.clone());
            }
        }
        if room.members > 0 {
            let sent = self
                .io
                .to(message.room.clone())
                .emit("message", &outgoing.body)
                .await;
            if let Err(e) = sent {
                tracing::warn!(room = %message.room, "broadcast did not reach every socket: {e}");
            }
        }
    }

    async fn room_mut<'a>(
        &self,
        rooms: &'a mut HashMap<String, RoomState>,
        room: &str,
    ) -> Result<&'a mut RoomState, StoreError> {
        if !rooms.contains_key(room) {
            // Read under the lock: a message appended meanwhile is either before this position
            // (and so before the join) or delivered after the room exists here.
            let last = self.history.last_position(room).await?;
            rooms.insert(
                room.to_owned(),
                RoomState {
                    last,
                    members: 0,
                    holders: Vec::new(),
                    recent: VecDeque::new(),
                },
            );
        }
        Ok(rooms.get_mut(room).expect("inserted above"))
    }

    /// Joins `socket` to `room` now. Returns the room's position at the join (the socket gets
    /// live every message after it) and the sequence number live delivery starts after.
    pub async fn join(
        &self,
        socket: &SocketRef,
        room: &str,
    ) -> Result<(Position, Seq), StoreError> {
        let mut state = self.state.lock().await;
        let seq = state.seq;
        let entry = self.room_mut(&mut state.rooms, room).await?;
        entry.members += 1;
        socket.join(room.to_owned());
        Ok((entry.last, seq))
    }

    /// Takes `socket` out of `room`.
    pub async fn leave(&self, socket: &SocketRef, room: &str) {
        let mut state = self.state.lock().await;
        socket.leave(room.to_owned());
        if let Some(entry) = state.rooms.get_mut(room) {
            entry.members = entry.members.saturating_sub(1);
        }
        state.forget_if_unused(room);
    }

    /// Starts buffering the live messages of `rooms` for connection `sid`, which is about to
    /// replay. Returns the cut its replay must stop at.
    pub async fn hold(&self, sid: Sid, rooms: &[String]) -> Result<Cut, StoreError> {
        let mut state = self.state.lock().await;
        let mut cut = Cut::new();
        for room in rooms {
            let entry = self.room_mut(&mut state.rooms, room).await?;
            entry.holders.push(sid);
            cut.insert(room.clone(), entry.last);
        }
        state.held.entry(sid).or_default();
        Ok(cut)
    }

    /// Ends the hold: sends `socket` what was buffered since [`Fanout::hold`], then joins it to
    /// `rooms`, all before any further broadcast. Returns what was sent and the sequence number
    /// live delivery starts after.
    pub async fn release(&self, socket: &SocketRef, rooms: &[String]) -> (Vec<Arc<Outgoing>>, Seq) {
        let mut state = self.state.lock().await;
        let buffered = state.held.remove(&socket.id).unwrap_or_default();
        for message in &buffered {
            if let Err(e) = socket.emit("message", &message.body) {
                tracing::warn!(sid = %socket.id, "could not send a buffered message: {e}");
            }
        }
        for room in rooms {
            if let Some(entry) = state.rooms.get_mut(room) {
                entry.holders.retain(|h| *h != socket.id);
                entry.members += 1;
            }
        }
        socket.join(rooms.to_vec());
        (buffered, state.seq)
    }

    /// Forgets a held connection that went away before its release.
    pub async fn abandon(&self, sid: Sid, rooms: &[String]) {
        let mut state = self.state.lock().await;
        state.held.remove(&sid);
        for room in rooms {
            if let Some(entry) = state.rooms.get_mut(room) {
                entry.holders.retain(|h| *h != sid);
            }
            state.forget_if_unused(room);
        }
    }

    /// The newest position broadcast to `room` here.
    pub async fn last_broadcast(&self, room: &str) -> Option<Position> {
        self.state.lock().await.rooms.get(room).map(|r| r.last)
    }

    /// Resolves an acknowledgement of `position` by a connection whose live rooms are `links`
    /// (room, sequence number its live delivery started after). The acknowledged message is the
    /// earliest one sent to it with that position; the answer is, per room, the newest position
    /// sent to it up to and including that message. `None` when no such message is remembered.
    pub async fn resolve_ack(
        &self,
        position: Position,
        links: &[(String, Seq)],
    ) -> Option<Vec<(String, Position)>> {
        let state = self.state.lock().await;
        let sent_after = |room: &str, since: Seq| {
            state.rooms.get(room).map(|r| {
                let from = r.recent.partition_point(|(seq, _)| *seq <= since);
                r.recent.range(from..)
            })
        };
        let acked_seq = links
            .iter()
            .filter_map(|(room, since)| {
                let mut sent = sent_after(room, *since)?;
                sent.find(|(_, p)| *p == position).map(|(seq, _)| *seq)
            })
            .min()?;
        Some(
            links
                .iter()
                .filter_map(|(room, since)| {
                    let newest = sent_after(room, *since)?
                        .take_while(|(seq, _)| *seq <= acked_seq)
                        .last()?;
                    Some((room.clone(), newest.1))
                })
                .collect(),
        )
    }
}

impl State {
    fn forget_if_unused(&mut self, room: &str) {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.members == 0 && r.holders.is_empty())
        {
            self.rooms.remove(room);
        }
    }
}
