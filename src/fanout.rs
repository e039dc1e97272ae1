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
use twine_store::{Feed, FeedEvent, History, Message, Position, StoreError};

/// Broadcasts remembered per room for resolving acknowledgements. An acknowledgement of an older
/// message is ignored: recovery then replays from the previous acknowledgement, never losing one.
const RECENT_PER_ROOM: usize = 4096;

/// Most messages one room catches up on after an interrupted feed.
const CATCH_UP_LIMIT: usize = 100_000;

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
        while let Some(event) = feed.recv().await {
            match event {
                FeedEvent::Message(message) => self.deliver(&message).await,
                FeedEvent::Gap => self.catch_up().await,
            }
        }
        tracing::warn!("the store's live feed closed; live delivery stopped");
    }

    /// After the feed was interrupted: delivers, in order, what each room tracked here missed.
    /// The feed is already back, so anything newer follows in it (and repeats are skipped).
    async fn catch_up(&self) {
        let rooms: Vec<(String, Position)> = {
            let state = self.state.lock().await;
            state
                .rooms
                .iter()
                .map(|(r, s)| (r.clone(), s.last))
                .collect()
        };
        tracing::info!(
            rooms = rooms.len(),
            "live feed resumed; catching up from history"
        );
        for (room, last) in rooms {
            let mut attempts = 0;
            let page = loop {
                match self
                    .history
                    .read_after(&room, last, Position::MAX, CATCH_UP_LIMIT)
                    .await
                {
                    Ok(page) => break Some(page),
                    Err(e) if attempts < 10 => {
                        attempts += 1;
                        tracing::warn!(%room, "catch-up read failed, retrying: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        tracing::error!(%room, "catch-up gave up; live clients may have missed messages until they reconnect: {e}");
                        break None;
                    }
                }
            };
            for message in page.into_iter().flat_map(|p| p.messages) {
                self.deliver(&message).await;
            }
        }
    }

    async fn deliver(&self, message: &Message) {
        let mut state = self.state.lock().await;
        let Some(outgoing) = state.deliver(message) else {
            return;
        };
        // Broadcast under the lock, so no join can slip between this message and the next.
        let sent = self
            .io
            .to(message.room.clone())
            .emit("message", &outgoing.body)
            .await;
        if let Err(e) = sent {
            tracing::warn!(room = %message.room, "broadcast did not reach every socket: {e}");
        }
    }

    /// Makes sure `rooms` are tracked here, starting unknown ones at the store's newest position.
    /// Called under the lock: a message appended meanwhile is either at or before that position
    /// (so before any join that follows) or delivered after the room is tracked.
    async fn track(&self, state: &mut State, rooms: &[String]) -> Result<(), StoreError> {
        for room in rooms {
            if !state.rooms.contains_key(room) {
                let last = self.history.last_position(room).await?;
                state.rooms.insert(room.clone(), RoomState::new(last));
            }
        }
        Ok(())
    }

    /// Joins `socket` to `room` now. Returns the room's position at the join (the socket gets
    /// live every message after it) and the sequence number live delivery starts after.
    pub async fn join(
        &self,
        socket: &SocketRef,
        room: &str,
    ) -> Result<(Position, Seq), StoreError> {
        let mut state = self.state.lock().await;
        self.track(&mut state, &[room.to_owned()]).await?;
        socket.join(room.to_owned());
        Ok(state.join(room))
    }

    /// Takes `socket` out of `room`.
    pub async fn leave(&self, socket: &SocketRef, room: &str) {
        let mut state = self.state.lock().await;
        socket.leave(room.to_owned());
        state.leave(room);
    }

    /// Starts buffering the live messages of `rooms` for connection `sid`, which is about to
    /// replay. Returns the cut its replay must stop at.
    pub async fn hold(&self, sid: Sid, rooms: &[String]) -> Result<Cut, StoreError> {
        let mut state = self.state.lock().await;
        self.track(&mut state, rooms).await?;
        Ok(state.hold(sid, rooms))
    }

    /// Ends the hold: sends `socket` what was buffered since [`Fanout::hold`], then joins it to
    /// `rooms`, all before any further broadcast. Returns what was sent and the sequence number
    /// live delivery starts after.
    pub async fn release(&self, socket: &SocketRef, rooms: &[String]) -> (Vec<Arc<Outgoing>>, Seq) {
        let mut state = self.state.lock().await;
        let (buffered, seq) = state.release(socket.id, rooms);
        for message in &buffered {
            if let Err(e) = socket.emit("message", &message.body) {
                tracing::warn!(sid = %socket.id, "could not send a buffered message: {e}");
            }
        }
        socket.join(rooms.to_vec());
        (buffered, seq)
    }

    /// Forgets a held connection that went away before its release.
    pub async fn abandon(&self, sid: Sid, rooms: &[String]) {
        self.state.lock().await.abandon(sid, rooms);
    }

    /// The newest position broadcast to `room` here.
    pub async fn last_broadcast(&self, room: &str) -> Option<Position> {
        self.state.lock().await.rooms.get(room).map(|r| r.last)
    }

    /// See [`State::resolve_ack`].
    pub async fn resolve_ack(
        &self,
        position: Position,
        links: &[(String, Seq)],
    ) -> Option<Vec<(String, Position)>> {
        self.state.lock().await.resolve_ack(position, links)
    }
}

impl RoomState {
    fn new(last: Position) -> RoomState {
        RoomState {
            last,
            members: 0,
            holders: Vec::new(),
            recent: VecDeque::new(),
        }
    }
}

/// The bookkeeping, kept apart from the sockets so it can be checked on its own.
impl State {
    /// Records `message` as broadcast and buffers it for held connections. Returns it encoded when
    /// local sockets are in its room.
    fn deliver(&mut self, message: &Message) -> Option<Arc<Outgoing>> {
        let room = self.rooms.get_mut(&message.room)?; // nobody here listens to it
        if message.position <= room.last {
            return None; // at or before a join cut already
        }
        self.seq += 1;
        room.last = message.position;
        room.recent.push_back((self.seq, message.position));
        if room.recent.len() > RECENT_PER_ROOM {
            room.recent.pop_front();
        }
        let outgoing = Arc::new(Outgoing::new(message));
        for holder in &room.holders {
            if let Some(buffer) = self.held.get_mut(holder) {
                buffer.push(outgoing.clone());
            }
        }
        (room.members > 0).then_some(outgoing)
    }

    fn join(&mut self, room: &str) -> (Position, Seq) {
        let entry = self.rooms.get_mut(room).expect("tracked before joining");
        entry.members += 1;
        (entry.last, self.seq)
    }

    fn leave(&mut self, room: &str) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.members = entry.members.saturating_sub(1);
        }
        self.forget_if_unused(room);
    }

    fn hold(&mut self, sid: Sid, rooms: &[String]) -> Cut {
        self.held.entry(sid).or_default();
        rooms
            .iter()
            .filter_map(|room| {
                let entry = self.rooms.get_mut(room)?;
                entry.holders.push(sid);
                Some((room.clone(), entry.last))
            })
            .collect()
    }

    fn release(&mut self, sid: Sid, rooms: &[String]) -> (Vec<Arc<Outgoing>>, Seq) {
        let buffered = self.held.remove(&sid).unwrap_or_default();
        for room in rooms {
            if let Some(entry) = self.rooms.get_mut(room) {
                entry.holders.retain(|h| *h != sid);
                entry.members += 1;
            }
        }
        (buffered, self.seq)
    }

    fn abandon(&mut self, sid: Sid, rooms: &[String]) {
        self.held.remove(&sid);
        for room in rooms {
            if let Some(entry) = self.rooms.get_mut(room) {
                entry.holders.retain(|h| *h != sid);
            }
            self.forget_if_unused(room);
        }
    }

    /// Resolves an acknowledgement of `position` by a connection whose live rooms are `links`
    /// (room, sequence number its live delivery started after). The acknowledged message is the
    /// earliest one sent to it with that position; the answer is, per room, the newest position
    /// sent to it up to and including that message. `None` when no such message is remembered.
    fn resolve_ack(
        &self,
        position: Position,
        links: &[(String, Seq)],
    ) -> Option<Vec<(String, Position)>> {
        let sent_after = |room: &str, since: Seq| {
            self.rooms.get(room).map(|r| {
                let from = r.recent.partition_point(|(seq, _)| *seq <= since);
                r.recent.range(from..)
            })
        };
        // Within a room, sequence numbers and positions both increase: binary searches.
        let acked_seq = links
            .iter()
            .filter_map(|(room, since)| {
                let recent = &self.rooms.get(room)?.recent;
                let at = recent.partition_point(|(_, p)| *p < position);
                match recent.get(at) {
                    Some(&(seq, p)) if p == position && seq > *since => Some(seq),
                    _ => None,
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room: &str, position: u64) -> Message {
        Message {
            room: room.into(),
            position: Position(position),
            payload: format!("{{\"p\":{position}}}"),
        }
    }

    fn tracked(rooms: &[(&str, u64)]) -> State {
        let mut state = State::default();
        for (room, last) in rooms {
            state
                .rooms
                .insert(room.to_string(), RoomState::new(Position(*last)));
        }
        state
    }

    fn positions(buffered: &[Arc<Outgoing>]) -> Vec<(String, u64)> {
        buffered
            .iter()
            .map(|o| (o.room.clone(), o.position.0))
            .collect()
    }

    #[test]
    fn a_held_connection_gets_exactly_what_came_after_its_cut() {
        let mut state = tracked(&[("a", 10), ("b", 20)]);
        state.join("a"); // another socket, so broadcasts happen
        let sid = Sid::new();
        let rooms = vec!["a".to_string(), "b".to_string()];
        let cut = state.hold(sid, &rooms);
        assert_eq!(
            cut,
            Cut::from([("a".into(), Position(10)), ("b".into(), Position(20))])
        );

        assert!(state.deliver(&message("a", 11)).is_some(), "a has a member");
        assert!(state.deliver(&message("b", 21)).is_none(), "b has none yet");
        assert!(
            state.deliver(&message("b", 21)).is_none(),
            "a repeat is dropped"
        );
        state.deliver(&message("a", 9)); // before the cut: replay covers it
        let (buffered, seq) = state.release(sid, &rooms);
        assert_eq!(
            positions(&buffered),
            vec![("a".into(), 11), ("b".into(), 21)]
        );

        assert!(state.deliver(&message("b", 22)).is_some(), "b is live now");
        assert!(state.held.is_empty());
        assert_eq!(seq, 2);
    }

    #[test]
    fn messages_for_rooms_nobody_here_joined_are_skipped() {
        let mut state = tracked(&[]);
        assert!(state.deliver(&message("elsewhere", 5)).is_none());
        assert_eq!(state.seq, 0);
    }

    #[test]
    fn an_ack_covers_what_was_sent_before_it_in_every_room_but_not_after() {
        let mut state = tracked(&[("a", 0), ("b", 0)]);
        let (_, since_a) = state.join("a");
        let (_, since_b) = state.join("b");
        // Same millisecond in two rooms: a@100 is sent before b@100.
        for m in [
            message("a", 90),
            message("b", 95),
            message("a", 100),
            message("b", 100),
            message("a", 101),
        ] {
            state.deliver(&m);
        }
        let links = vec![("a".to_string(), since_a), ("b".to_string(), since_b)];
        let mut handled = state.resolve_ack(Position(100), &links).unwrap();
        handled.sort();
        assert_eq!(
            handled,
            vec![("a".into(), Position(100)), ("b".into(), Position(95))]
        );
        assert_eq!(state.resolve_ack(Position(42), &links), None, "never sent");
    }

    #[test]
    fn an_ack_ignores_messages_sent_before_the_connection_joined() {
        let mut state = tracked(&[("a", 0)]);
        state.join("a");
        state.deliver(&message("a", 5));
        let (_, since) = state.join("a");
        state.deliver(&message("a", 6));
        let links = vec![("a".to_string(), since)];
        assert_eq!(state.resolve_ack(Position(5), &links), None);
        assert_eq!(
            state.resolve_ack(Position(6), &links),
            Some(vec![("a".into(), Position(6))])
        );
    }

    #[test]
    fn rooms_are_forgotten_once_nobody_uses_them() {
        let mut state = tracked(&[("a", 0)]);
        state.join("a");
        state.leave("a");
        assert!(state.rooms.is_empty());
    }
}
