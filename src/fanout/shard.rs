//! One shard of live delivery: the rooms that hash to it, each with its local members and the
//! connections recovering into it. A shard is one task working through one ordered queue, so a
//! join, a hold or a release is an exact cut between two messages of the room, with no lock; the
//! shards share nothing, so rooms on different shards are delivered in parallel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use socketioxide::socket::Sid;
use tokio::sync::{mpsc, oneshot};
use twine_store::{Message, Position};

use crate::metrics::Metrics;
use crate::outbox::acks::Slot;
use crate::outbox::{Encoded, Gone, Outbox};

/// Where a shard sends a member's messages: a connection's outbox.
pub trait Recipient: Send + Sync {
    /// Sends a live message without waiting; fails when the recipient is gone or was cut.
    fn deliver(&self, message: &Encoded, slot: Slot) -> Result<(), Gone>;
    /// Sends a live event that is not a message, without waiting.
    fn announce(&self, event: &str, data: &RawValue) -> Result<(), Gone>;
    fn is_closed(&self) -> bool;
    /// How long what was sent to it has waited to be written.
    fn backlog_age(&self) -> Duration;
}

impl Recipient for Outbox {
    fn deliver(&self, message: &Encoded, slot: Slot) -> Result<(), Gone> {
        Outbox::deliver(self, message, slot)
    }

    fn announce(&self, event: &str, data: &RawValue) -> Result<(), Gone> {
        Outbox::announce(self, event, data)
    }

    fn is_closed(&self) -> bool {
        Outbox::is_closed(self)
    }

    fn backlog_age(&self) -> Duration {
        Outbox::backlog_age(self)
    }
}

/// A local connection in a room.
#[derive(Clone)]
pub struct Member {
    pub sid: Sid,
    pub outbox: Arc<dyn Recipient>,
    /// The room's place in the connection's bookkeeping.
    pub slot: Slot,
    /// The member has every message up to here already (its cut, or what its replay read from
    /// the store, which can be ahead of this node's feed).
    pub after: Position,
}

impl Member {
    pub fn new(sid: Sid, outbox: Arc<dyn Recipient>, slot: Slot) -> Member {
        Member {
            sid,
            outbox,
            slot,
            after: Position::ZERO,
        }
    }

    fn deliver(&self, message: &Encoded) -> Result<(), Gone> {
        if message.position <= self.after {
            return Ok(());
        }
        self.outbox.deliver(message, self.slot)
    }
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
    /// An event for the room's live members that is not a message (a presence change).
    Announce {
        room: Arc<str>,
        event: &'static str,
        data: Arc<RawValue>,
        arrived: Instant,
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
    /// Newest position delivered here (repeats of the feed after a gap are skipped by it).
    last: Position,
    /// A join cut the room against the store since it is tracked here, so any message after
    /// `last` reaches this node through the feed: a join can cut at `last`.
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

/// How far behind a shard is, for publishing to decline when delivery falls behind.
#[derive(Default)]
pub struct Lag {
    /// Microseconds between a message's arrival on this node and its delivery by the shard, as
    /// last measured.
    delay_us: AtomicU64,
    /// Messages handed to the shard and not yet delivered.
    queued: AtomicU64,
    /// Microseconds the members of the last large room delivered to had been waiting for their
    /// previous messages to be written (the tenth most behind in a hundred: a few stalled
    /// clients do not make the node refuse publishes; most of them behind does). Small rooms
    /// are left out for the same reason: their slow clients are cut by their send queues.
    behind_us: AtomicU64,
    /// When `behind_us` was measured (ms since the epoch). An old measure is ignored: while
    /// publishes are refused nothing is delivered to measure again, so it must not outlive
    /// [`BEHIND_FRESH`].
    behind_at_ms: AtomicU64,
}

/// Members a room needs for their backlog to count towards the shard's lag.
const MIN_SAMPLED: usize = 20;
/// How long a measure of members' backlog stands.
const BEHIND_FRESH: Duration = Duration::from_secs(1);

impl Lag {
    /// A message was queued for the shard.
    pub fn queued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// How far behind the shard's deliveries run: the wait in its queue, or the writing its
    /// members are waiting for, whichever is longer.
    pub fn delay(&self) -> Duration {
        let queue = if self.queued.load(Ordering::Relaxed) == 0 {
            0
        } else {
            self.delay_us.load(Ordering::Relaxed)
        };
        let measured = self.behind_at_ms.load(Ordering::Relaxed);
        let fresh = Position::now_ms().saturating_sub(measured) < BEHIND_FRESH.as_millis() as u64;
        let behind = if fresh {
            self.behind_us.load(Ordering::Relaxed)
        } else {
            0
        };
        Duration::from_micros(queue.max(behind))
    }

    fn delivered(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Shard {
    rooms: HashMap<Arc<str>, Room>,
    metrics: Arc<Metrics>,
    /// Most bytes buffered per held connection; beyond it the holder catches up from the store.
    hold_bytes: usize,
    lag: Arc<Lag>,
}

impl Shard {
    pub fn new(hold_bytes: usize, lag: Arc<Lag>, metrics: Arc<Metrics>) -> Shard {
        Shard {
            rooms: HashMap::new(),
            metrics,
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
                self.lag.delivered(arrived.elapsed());
                self.deliver(&message);
            }
            Command::Track { room, reply } => {
                let room = self.room(room);
                room.pending += 1;
                let _ = reply.send(room.known.then_some(room.last));
            }
            Command::Join {
                room,
                mut member,
                floor,
                reply,
            } => {
                let entry = self.room(room);
                entry.pending = entry.pending.saturating_sub(1);
                entry.known |= floor.is_some();
                // The store can be ahead of this node's feed: what lies between arrives later and
                // is before this member's cut, so it is skipped for this member alone.
                let cut = entry.last.max(floor.unwrap_or(Position::ZERO));
                member.after = cut;
                if reply.send(cut).is_ok() && !member.outbox.is_closed() {
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
            Command::Announce {
                room,
                event,
                data,
                arrived,
            } => {
                self.lag.delivered(arrived.elapsed());
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry
                        .members
                        .retain(|m| m.outbox.announce(event, &data).is_ok());
                }
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
        let since_stored = Position::now_ms().saturating_sub(message.position.0);
        self.metrics
            .delivery_seconds
            .observe(since_stored as f64 / 1000.0);
        let mut ages: Vec<Duration> = Vec::new();
        let sampled = room.members.len() >= MIN_SAMPLED;
        let sample_every = (room.members.len() / 100).max(1);
        let mut n = 0;
        room.members.retain(|m| {
            n += 1;
            if sampled && n % sample_every == 0 {
                ages.push(m.outbox.backlog_age());
            }
            m.deliver(&encoded).is_ok()
        });
        self.metrics.delivered.inc_by(room.members.len() as u64);
        if !ages.is_empty() {
            // The tenth most behind of the sample.
            let rank = ages.len() / 10;
            let (_, age, _) = ages.select_nth_unstable_by(rank, |a, b| b.cmp(a));
            self.lag
                .behind_us
                .store(age.as_micros() as u64, Ordering::Relaxed);
            self.lag
                .behind_at_ms
                .store(Position::now_ms(), Ordering::Relaxed);
        }
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
        let mut member = holder.member;
        member.after = replayed;
        for message in &holder.buffer {
            if member.deliver(message).is_err() {
                return Released::Gone;
            }
        }
        entry.members.push(member);
        Released::Live
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A recipient that records what it was sent, and is `behind` in writing it.
    #[derive(Default)]
    struct Record {
        got: Mutex<Vec<(String, u64)>>,
        behind: Duration,
    }

    impl Recipient for Record {
        fn deliver(&self, message: &Encoded, _: Slot) -> Result<(), Gone> {
            let mut got = self.got.lock().unwrap();
            got.push((message.room.to_string(), message.position.0));
            Ok(())
        }

        fn announce(&self, event: &str, _: &RawValue) -> Result<(), Gone> {
            let mut got = self.got.lock().unwrap();
            got.push((event.to_owned(), 0));
            Ok(())
        }

        fn is_closed(&self) -> bool {
            false
        }

        fn backlog_age(&self) -> Duration {
            self.behind
        }
    }

    impl Record {
        fn positions(&self) -> Vec<u64> {
            self.got.lock().unwrap().iter().map(|(_, p)| *p).collect()
        }
    }

    fn shard() -> Shard {
        Shard::new(1 << 20, Arc::default(), Metrics::new())
    }

    fn deliver(shard: &mut Shard, room: &str, position: u64) {
        let message = Message {
            room: room.into(),
            position: Position(position),
            payload: "{}".into(),
        };
        shard.handle(Command::Deliver(message, Instant::now()));
    }

    fn member(record: &Arc<Record>) -> (Sid, Member) {
        let sid = Sid::new();
        (sid, Member::new(sid, record.clone(), 0))
    }

    fn track(shard: &mut Shard, room: &str) -> Option<Position> {
        let (reply, mut answer) = oneshot::channel();
        shard.handle(Command::Track {
            room: Arc::from(room),
            reply,
        });
        answer.try_recv().unwrap()
    }

    fn join(shard: &mut Shard, room: &str, member: Member, floor: Option<Position>) -> Position {
        let (reply, mut answer) = oneshot::channel();
        shard.handle(Command::Join {
            room: Arc::from(room),
            member,
            floor,
            reply,
        });
        answer.try_recv().unwrap()
    }

    fn hold(shard: &mut Shard, room: &str, member: Member) {
        let (reply, _answer) = oneshot::channel();
        shard.handle(Command::Hold {
            room: Arc::from(room),
            member,
            reply,
        });
    }

    fn release(shard: &mut Shard, room: &str, sid: Sid, replayed: u64) -> Released {
        let (reply, mut answer) = oneshot::channel();
        shard.handle(Command::Release {
            room: Arc::from(room),
            sid,
            replayed: Position(replayed),
            reply,
        });
        answer.try_recv().unwrap()
    }

    fn room_of(shard: &mut Shard, room: &str, members: usize, behind: Duration) {
        let record = Arc::new(Record {
            behind,
            ..Record::default()
        });
        for _ in 0..members {
            track(shard, room);
            join(shard, room, member(&record).1, Some(Position(0)));
        }
    }

    #[test]
    fn only_most_of_a_large_room_behind_counts_as_lag_and_only_while_fresh() {
        let lag = Arc::new(Lag::default());
        let mut shard = Shard::new(1 << 20, lag.clone(), Metrics::new());
        let stalled = Duration::from_secs(5);
        room_of(&mut shard, "small", 5, stalled);
        deliver(&mut shard, "small", 1);
        assert_eq!(
            lag.delay(),
            Duration::ZERO,
            "a small room's slow clients are cut instead"
        );
        room_of(&mut shard, "large", 5, stalled);
        room_of(&mut shard, "large", 95, Duration::ZERO);
        deliver(&mut shard, "large", 1);
        assert_eq!(lag.delay(), Duration::ZERO, "one in twenty behind");
        room_of(&mut shard, "late", 30, stalled);
        deliver(&mut shard, "late", 1);
        assert_eq!(lag.delay(), stalled, "all of a large room behind");
        lag.behind_at_ms
            .store(Position::now_ms() - 2_000, Ordering::Relaxed);
        assert_eq!(lag.delay(), Duration::ZERO, "nothing measured for a while");
    }

    #[test]
    fn a_joiner_gets_live_exactly_what_comes_after_its_cut() {
        let mut shard = shard();
        deliver(&mut shard, "a", 5); // nobody here: not even tracked
        assert_eq!(track(&mut shard, "a"), None, "unknown: read the store");
        let record = Arc::new(Record::default());
        let (_, m) = member(&record);
        assert_eq!(join(&mut shard, "a", m, Some(Position(7))), Position(7));
        deliver(&mut shard, "a", 7); // the store was ahead of the feed: before the cut
        deliver(&mut shard, "a", 8);
        assert_eq!(record.positions(), vec![8]);
        assert_eq!(track(&mut shard, "a"), Some(Position(8)), "known now");
    }

    #[test]
    fn a_cut_ahead_of_the_feed_skips_only_for_the_joiner() {
        let mut shard = shard();
        let early = Arc::new(Record::default());
        let late = Arc::new(Record::default());
        track(&mut shard, "a");
        join(&mut shard, "a", member(&early).1, Some(Position(1)));
        track(&mut shard, "a");
        // A second node tracked nothing: its joiner reads the store, which is ahead of the feed.
        join(&mut shard, "a", member(&late).1, Some(Position(3)));
        for p in [2, 3, 4] {
            deliver(&mut shard, "a", p);
        }
        assert_eq!(
            early.positions(),
            vec![2, 3, 4],
            "nobody else misses anything"
        );
        assert_eq!(late.positions(), vec![4]);
    }

    #[test]
    fn a_held_connection_gets_after_its_replay_exactly_what_it_did_not_read() {
        let mut shard = shard();
        let record = Arc::new(Record::default());
        let (sid, m) = member(&record);
        hold(&mut shard, "a", m);
        for p in [10, 11, 12] {
            deliver(&mut shard, "a", p);
        }
        assert!(record.positions().is_empty(), "buffered while held");
        // The replay read the store up to 11, and the store was ahead of the feed up to 13.
        assert_eq!(release(&mut shard, "a", sid, 13), Released::Live);
        assert!(record.positions().is_empty(), "all of it was replayed");
        deliver(&mut shard, "a", 13); // arriving late through the feed: replayed already
        deliver(&mut shard, "a", 14);
        assert_eq!(record.positions(), vec![14]);

        let second = Arc::new(Record::default());
        let (sid, m) = member(&second);
        hold(&mut shard, "a", m);
        deliver(&mut shard, "a", 15);
        deliver(&mut shard, "a", 16);
        assert_eq!(release(&mut shard, "a", sid, 15), Released::Live);
        assert_eq!(second.positions(), vec![16], "the seam: no gap, no repeat");
    }

    #[test]
    fn a_hold_that_overflows_sends_its_holder_back_to_the_store() {
        let mut shard = Shard::new(200, Arc::default(), Metrics::new()); // room for seven of these
        let record = Arc::new(Record::default());
        let (sid, m) = member(&record);
        hold(&mut shard, "a", m);
        for p in 1..=20 {
            deliver(&mut shard, "a", p);
        }
        assert_eq!(
            release(&mut shard, "a", sid, 3),
            Released::Behind(Position(20))
        );
        deliver(&mut shard, "a", 21);
        assert_eq!(release(&mut shard, "a", sid, 20), Released::Live);
        assert_eq!(record.positions(), vec![21]);
    }

    #[test]
    fn repeats_after_a_feed_gap_are_skipped_and_unused_rooms_forgotten() {
        let mut shard = shard();
        let record = Arc::new(Record::default());
        let (sid, m) = member(&record);
        track(&mut shard, "a");
        join(&mut shard, "a", m, Some(Position::ZERO));
        for p in [1, 2, 2, 1, 3] {
            deliver(&mut shard, "a", p);
        }
        assert_eq!(record.positions(), vec![1, 2, 3]);
        shard.handle(Command::Leave {
            room: Arc::from("a"),
            sid,
        });
        assert!(shard.rooms.is_empty());
        track(&mut shard, "b");
        shard.handle(Command::Untrack {
            room: Arc::from("b"),
        });
        assert!(shard.rooms.is_empty(), "an abandoned track lets go too");
    }
}
