//! One shard of live delivery: the rooms that hash to it, each with its local members and the
//! connections recovering into it. A shard is one task working through one ordered queue, so a
//! join, a hold or a release is an exact cut between two messages of the room, with no lock; the
//! shards share nothing, so rooms on different shards are delivered in parallel.
//!
//! Every decision is by position: a member gets the room's messages after its cut, a holder
//! buffers those after the hold began, and a message at or before what the room delivered is
//! skipped. A room whose feed missed a message (the message's `prev` is past what the room
//! delivered, or the store said so) catches up from the history by position: live messages are
//! set aside meanwhile (they are in the history too) and the catch-up reads until it has passed
//! every one of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::transport::Sid;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use twine_store::{FeedBudget, Listen, Message, Position};

use super::lag::{Lag, MIN_SAMPLED};
use super::members::Indexed;
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
pub struct Subscriber {
    pub sid: Sid,
    pub outbox: Arc<dyn Recipient>,
    /// The room's place in the connection's bookkeeping.
    pub slot: Slot,
    /// The member has every message up to here already (its cut, or what its replay read from
    /// the store, which can be ahead of this node's feed).
    pub after: Position,
}

impl Subscriber {
    pub fn new(sid: Sid, outbox: Arc<dyn Recipient>, slot: Slot) -> Subscriber {
        Subscriber {
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
    /// A message from the store's feed; `prev` is its room's message before it.
    Deliver {
        message: Message,
        prev: Position,
        arrived: Instant,
    },
    /// The feed may have missed messages of this room.
    Gap(Arc<str>),
    /// The feed may have missed messages of every room.
    GapAll,
    /// A page of a room's catch-up, read from the history after what it delivered; `more`
    /// when the history holds more after it. Answers where to read on, or that it is done.
    CatchUp {
        room: Arc<str>,
        messages: Vec<Message>,
        more: bool,
        reply: oneshot::Sender<CatchUp>,
    },
    /// Pins `room` until a `Join`, `Hold` or `Untrack`; answers its newest position if the shard
    /// knows it (the room is fed to this node), or `None` (the caller makes the feed carry it
    /// and reads its newest position from the store).
    Track {
        room: Arc<str>,
        reply: oneshot::Sender<Option<Position>>,
    },
    /// Ends a `Track`: `member` gets live every message after the answered position (`floor`,
    /// from the store, when `Track` answered `None`).
    Join {
        room: Arc<str>,
        member: Subscriber,
        floor: Option<Position>,
        reply: oneshot::Sender<Position>,
    },
    /// Ends a `Track` without joining.
    Untrack { room: Arc<str> },
    /// Takes the member out; answers (when asked) once nothing more will be sent to it.
    Leave {
        room: Arc<str>,
        sid: Sid,
        done: Option<oneshot::Sender<()>>,
    },
    /// Ends a `Track`: buffers the room's messages for `member`, which is about to replay it;
    /// answers once in place, so whatever the replay does not read from the store is buffered.
    Hold {
        room: Arc<str>,
        member: Subscriber,
        floor: Option<Position>,
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
    Unhold { room: Arc<str>, sid: Sid },
    /// An event for the room's live members that is not a message (a presence change).
    Announce {
        room: Arc<str>,
        event: &'static str,
        data: Arc<RawValue>,
        arrived: Instant,
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

/// What a room's catch-up does next.
#[derive(Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Read on, after this position.
    After(Position),
    Done,
}

/// One room on this shard.
struct Room {
    name: Arc<str>,
    /// Newest position delivered here (repeats are skipped by it).
    last: Position,
    /// A join or hold cut the room against the store since it is tracked here, so the feed
    /// carries it from `last` on: a message whose `prev` is past `last` shows a gap.
    known: bool,
    /// The feed missed messages before the room was known: catch up once it is.
    gap_pending: bool,
    /// A catch-up from the history is under way.
    catching: Option<Catching>,
    members: Indexed<Subscriber>,
    holders: Indexed<Holder>,
    /// `Track`s not yet ended.
    pending: u32,
}

struct Catching {
    /// Newest position the feed brought meanwhile (set aside: the catch-up must pass it).
    seen: Position,
    /// The feed reported another gap meanwhile.
    again: bool,
}

struct Holder {
    member: Subscriber,
    buffer: Vec<Arc<Encoded>>,
    bytes: usize,
    overflowed: bool,
}

impl Holder {
    fn new(member: Subscriber) -> Holder {
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
            gap_pending: false,
            catching: None,
            members: Indexed::default(),
            holders: Indexed::default(),
            pending: 0,
        }
    }

    fn unused(&self) -> bool {
        self.members.is_empty() && self.holders.is_empty() && self.pending == 0
    }
}

/// What a shard needs besides its rooms.
pub struct ShardContext {
    /// Most bytes buffered per held connection; beyond it the holder catches up from the store.
    pub hold_bytes: usize,
    pub lag: Arc<Lag>,
    pub metrics: Arc<Metrics>,
    /// What the feed's messages took, given back as they are delivered.
    pub budget: Arc<FeedBudget>,
    /// The rooms the feed carries: a room this shard forgets is no longer needed here.
    pub rooms: Arc<dyn Listen>,
    /// Where a room that must catch up from the history is announced, with where from.
    pub catch_up: mpsc::UnboundedSender<(Arc<str>, Position)>,
    /// Rooms served on this node, across its shards (the fleet view announces it).
    pub served: Arc<AtomicUsize>,
}

pub struct Shard {
    rooms: HashMap<Arc<str>, Room>,
    cx: ShardContext,
}

impl Shard {
    pub fn new(cx: ShardContext) -> Shard {
        Shard {
            rooms: HashMap::new(),
            cx,
        }
    }

    /// Works through `commands` until every sender is gone.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = commands.recv().await {
            self.handle(command);
        }
    }

    fn room(&mut self, name: Arc<str>) -> &mut Room {
        self.rooms.entry(name.clone()).or_insert_with(|| {
            self.cx.served.fetch_add(1, Ordering::Relaxed);
            Room::new(name)
        })
    }

    fn drop_if_unused(&mut self, name: &str) {
        if self.rooms.get(name).is_some_and(Room::unused) {
            self.rooms.remove(name);
            self.cx.served.fetch_sub(1, Ordering::Relaxed);
            self.cx.rooms.unlisten(name);
        }
    }

    pub fn handle(&mut self, command: Command) {
        match command {
            Command::Deliver {
                message,
                prev,
                arrived,
            } => {
                self.cx.lag.delivered(arrived.elapsed());
                self.fed(&message, prev);
                self.cx.budget.release(message.size());
            }
            Command::Gap(room) => {
                if let Some(entry) = self.rooms.get_mut(&room) {
                    gap(entry, &self.cx);
                }
            }
            Command::GapAll => {
                for entry in self.rooms.values_mut() {
                    gap(entry, &self.cx);
                }
            }
            Command::CatchUp {
                room,
                messages,
                more,
                reply,
            } => {
                let next = self.caught_up(&room, &messages, more);
                for message in &messages {
                    self.cx.budget.release(message.size());
                }
                let _ = reply.send(next);
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
                let cut = self.cut(room.clone(), floor);
                member.after = cut;
                let entry = self.room(room);
                if reply.send(cut).is_ok() && !member.outbox.is_closed() {
                    entry.members.insert(member.sid, member);
                }
            }
            Command::Untrack { room } => {
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.pending = entry.pending.saturating_sub(1);
                }
                self.drop_if_unused(&room);
            }
            Command::Leave { room, sid, done } => {
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.members.remove(sid);
                }
                self.drop_if_unused(&room);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::Hold {
                room,
                member,
                floor,
                reply,
            } => {
                self.cut(room.clone(), floor);
                if reply.send(()).is_ok() {
                    let holder = Holder::new(member);
                    self.room(room.clone())
                        .holders
                        .insert(holder.member.sid, holder);
                }
                self.drop_if_unused(&room);
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
                    entry.holders.remove(sid);
                }
                self.drop_if_unused(&room);
            }
            Command::Announce {
                room,
                event,
                data,
                arrived,
            } => {
                self.cx.lag.delivered(arrived.elapsed());
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry
                        .members
                        .retain(|m| m.outbox.announce(event, &data).is_ok());
                }
            }
        }
    }

    /// Ends a `Track` with the room cut at the newer of what it delivered and `floor` (from the
    /// store, which can be ahead of the feed: what lies between arrives later and is skipped
    /// by the member alone).
    fn cut(&mut self, room: Arc<str>, floor: Option<Position>) -> Position {
        let cx_catch_up = self.cx.catch_up.clone();
        let entry = self.room(room);
        entry.pending = entry.pending.saturating_sub(1);
        let cut = entry.last.max(floor.unwrap_or(Position::ZERO));
        if floor.is_some() && !entry.known {
            entry.known = true;
            entry.last = cut;
            if std::mem::take(&mut entry.gap_pending) {
                start_catching(entry, &cx_catch_up, cut);
            }
        }
        cut
    }

    /// A message from the feed.
    fn fed(&mut self, message: &Message, prev: Position) {
        let Some(room) = self.rooms.get_mut(message.room.as_str()) else {
            return; // nobody here listens to it
        };
        if message.position <= room.last {
            return; // delivered already, or before a join's cut
        }
        if let Some(catching) = &mut room.catching {
            catching.seen = catching.seen.max(message.position);
            return; // the catch-up reads it from the history
        }
        if room.known && prev > room.last {
            tracing::debug!(room = %room.name, last = %room.last, %prev, "the feed missed messages; catching up from history");
            let from = room.last;
            start_catching(room, &self.cx.catch_up, from);
            if let Some(catching) = &mut room.catching {
                catching.seen = message.position;
            }
            return;
        }
        deliver(room, message, &self.cx);
    }

    /// A page of a room's catch-up.
    fn caught_up(&mut self, room: &str, messages: &[Message], more: bool) -> CatchUp {
        let Some(entry) = self.rooms.get_mut(room) else {
            return CatchUp::Done;
        };
        for message in messages {
            if message.position > entry.last {
                deliver(entry, message, &self.cx);
            }
        }
        let Some(catching) = &mut entry.catching else {
            return CatchUp::Done;
        };
        if more || catching.seen > entry.last || catching.again {
            catching.again = false;
            return CatchUp::After(entry.last);
        }
        entry.catching = None;
        CatchUp::Done
    }

    fn release(&mut self, room: &str, sid: Sid, replayed: Position) -> Released {
        let Some(entry) = self.rooms.get_mut(room) else {
            return Released::Gone;
        };
        let Some(holder) = entry.holders.remove(sid) else {
            return Released::Gone;
        };
        if holder.overflowed {
            let behind = entry.last;
            entry.holders.insert(sid, Holder::new(holder.member));
            return Released::Behind(behind);
        }
        let mut member = holder.member;
        member.after = replayed;
        for message in &holder.buffer {
            if member.deliver(message).is_err() {
                return Released::Gone;
            }
        }
        entry.members.insert(sid, member);
        Released::Live
    }
}

/// The feed may have missed messages of `room`.
fn gap(room: &mut Room, cx: &ShardContext) {
    if !room.known {
        room.gap_pending = true;
    } else if let Some(catching) = &mut room.catching {
        catching.again = true;
    } else {
        let from = room.last;
        start_catching(room, &cx.catch_up, from);
    }
}

fn start_catching(
    room: &mut Room,
    catch_up: &mpsc::UnboundedSender<(Arc<str>, Position)>,
    from: Position,
) {
    room.catching = Some(Catching {
        seen: Position::ZERO,
        again: false,
    });
    let _ = catch_up.send((room.name.clone(), from));
}

/// Sends `message` to the room's members, encoded once, and buffers it for its holders.
fn deliver(room: &mut Room, message: &Message, cx: &ShardContext) {
    room.last = message.position;
    if room.members.is_empty() && room.holders.is_empty() {
        return;
    }
    let encoded = Arc::new(Encoded::with_room(room.name.clone(), message));
    let since_stored = Position::now_ms().saturating_sub(message.position.0);
    cx.metrics
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
    cx.metrics.delivered.inc_by(room.members.len() as u64);
    cx.lag.members_behind(&mut ages);
    let size = encoded.json().len();
    for holder in room.holders.iter_mut().filter(|h| !h.overflowed) {
        holder.bytes += size;
        if holder.bytes > cx.hold_bytes {
            holder.overflowed = true;
            holder.buffer = Vec::new();
        } else {
            holder.buffer.push(encoded.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use twine_store::EveryRoom;

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

    /// A shard, and what it asks to catch up.
    struct Harness {
        shard: Shard,
        catch_ups: mpsc::UnboundedReceiver<(Arc<str>, Position)>,
        budget: Arc<FeedBudget>,
    }

    fn harness_with(hold_bytes: usize, lag: Arc<Lag>) -> Harness {
        let (catch_up, catch_ups) = mpsc::unbounded_channel();
        let budget = FeedBudget::new(1 << 30);
        let cx = ShardContext {
            hold_bytes,
            lag,
            metrics: Metrics::new(),
            budget: budget.clone(),
            rooms: Arc::new(EveryRoom),
            catch_up,
            served: Arc::default(),
        };
        Harness {
            shard: Shard::new(cx),
            catch_ups,
            budget,
        }
    }

    fn harness() -> Harness {
        harness_with(1 << 20, Arc::default())
    }

    fn message(room: &str, position: u64) -> Message {
        Message {
            room: room.into(),
            position: Position(position),
            payload: "{}".into(),
        }
    }

    impl Harness {
        /// A message from the feed, whose room's previous message was at `prev`.
        fn fed(&mut self, room: &str, position: u64, prev: u64) {
            let message = message(room, position);
            self.budget.force(message.size());
            self.shard.handle(Command::Deliver {
                message,
                prev: Position(prev),
                arrived: Instant::now(),
            });
        }

        /// Messages fed one after the other, each the one before's successor.
        fn fed_in_order(&mut self, room: &str, positions: &[u64]) {
            for (i, p) in positions.iter().enumerate() {
                let prev = if i == 0 { p - 1 } else { positions[i - 1] };
                self.fed(room, *p, prev);
            }
        }

        fn track(&mut self, room: &str) -> Option<Position> {
            let (reply, mut answer) = oneshot::channel();
            self.shard.handle(Command::Track {
                room: Arc::from(room),
                reply,
            });
            answer.try_recv().unwrap()
        }

        fn join(&mut self, room: &str, member: Subscriber, floor: Option<Position>) -> Position {
            self.track(room);
            let (reply, mut answer) = oneshot::channel();
            self.shard.handle(Command::Join {
                room: Arc::from(room),
                member,
                floor,
                reply,
            });
            answer.try_recv().unwrap()
        }

        fn hold(&mut self, room: &str, member: Subscriber, floor: Option<Position>) {
            self.track(room);
            let (reply, _answer) = oneshot::channel();
            self.shard.handle(Command::Hold {
                room: Arc::from(room),
                member,
                floor,
                reply,
            });
        }

        fn release(&mut self, room: &str, sid: Sid, replayed: u64) -> Released {
            let (reply, mut answer) = oneshot::channel();
            self.shard.handle(Command::Release {
                room: Arc::from(room),
                sid,
                replayed: Position(replayed),
                reply,
            });
            answer.try_recv().unwrap()
        }

        fn catch_up_page(&mut self, room: &str, positions: &[u64], more: bool) -> CatchUp {
            let messages: Vec<Message> = positions.iter().map(|p| message(room, *p)).collect();
            for m in &messages {
                self.budget.force(m.size());
            }
            let (reply, mut answer) = oneshot::channel();
            self.shard.handle(Command::CatchUp {
                room: Arc::from(room),
                messages,
                more,
                reply,
            });
            answer.try_recv().unwrap()
        }

        fn asked_to_catch_up(&mut self) -> Vec<(String, u64)> {
            let mut asked = Vec::new();
            while let Ok((room, from)) = self.catch_ups.try_recv() {
                asked.push((room.to_string(), from.0));
            }
            asked
        }
    }

    fn member(record: &Arc<Record>) -> (Sid, Subscriber) {
        let sid = Sid::new();
        (sid, Subscriber::new(sid, record.clone(), 0))
    }

    fn room_of(h: &mut Harness, room: &str, members: usize, behind: Duration) {
        let record = Arc::new(Record {
            behind,
            ..Record::default()
        });
        for _ in 0..members {
            h.join(room, member(&record).1, Some(Position(0)));
        }
    }

    #[test]
    fn only_most_of_a_large_room_behind_counts_as_lag_and_only_while_fresh() {
        let lag = Arc::new(Lag::default());
        let mut h = harness_with(1 << 20, lag.clone());
        let stalled = Duration::from_secs(5);
        room_of(&mut h, "small", 5, stalled);
        h.fed("small", 1, 0);
        assert_eq!(
            lag.delay(),
            Duration::ZERO,
            "a small room's slow clients are cut instead"
        );
        room_of(&mut h, "large", 5, stalled);
        room_of(&mut h, "large", 95, Duration::ZERO);
        h.fed("large", 1, 0);
        assert_eq!(lag.delay(), Duration::ZERO, "one in twenty behind");
        room_of(&mut h, "late", 30, stalled);
        h.fed("late", 1, 0);
        assert_eq!(lag.delay(), stalled, "all of a large room behind");
        lag.age_measure(Duration::from_secs(2));
        assert_eq!(lag.delay(), Duration::ZERO, "nothing measured for a while");
        assert_eq!(h.budget.in_flight(), 0, "what was fed is given back");
    }

    #[test]
    fn a_joiner_gets_live_exactly_what_comes_after_its_cut() {
        let mut h = harness();
        h.fed("a", 5, 4); // nobody here: not even tracked
        assert_eq!(h.track("a"), None, "unknown: read the store");
        h.shard.handle(Command::Untrack {
            room: Arc::from("a"),
        });
        let record = Arc::new(Record::default());
        let (_, m) = member(&record);
        assert_eq!(h.join("a", m, Some(Position(7))), Position(7));
        h.fed("a", 7, 6); // the store was ahead of the feed: before the cut
        h.fed("a", 8, 7);
        assert_eq!(record.positions(), vec![8]);
        assert_eq!(h.track("a"), Some(Position(8)), "known now");
    }

    #[test]
    fn a_cut_ahead_of_the_feed_skips_only_for_the_joiner() {
        let mut h = harness();
        let early = Arc::new(Record::default());
        let late = Arc::new(Record::default());
        h.join("a", member(&early).1, Some(Position(1)));
        // A second node tracked nothing: its joiner reads the store, which is ahead of the feed.
        h.join("a", member(&late).1, Some(Position(3)));
        h.fed_in_order("a", &[2, 3, 4]);
        assert_eq!(
            early.positions(),
            vec![2, 3, 4],
            "nobody else misses anything"
        );
        assert_eq!(late.positions(), vec![4]);
    }

    #[test]
    fn a_held_connection_gets_after_its_replay_exactly_what_it_did_not_read() {
        let mut h = harness();
        let record = Arc::new(Record::default());
        let (sid, m) = member(&record);
        h.hold("a", m, Some(Position(9)));
        h.fed_in_order("a", &[10, 11, 12]);
        assert!(record.positions().is_empty(), "buffered while held");
        // The replay read the store up to 13, which was ahead of the feed.
        assert_eq!(h.release("a", sid, 13), Released::Live);
        assert!(record.positions().is_empty(), "all of it was replayed");
        h.fed_in_order("a", &[13, 14]); // 13 arrives late through the feed: replayed already
        assert_eq!(record.positions(), vec![14]);

        let second = Arc::new(Record::default());
        let (sid, m) = member(&second);
        h.hold("a", m, None);
        h.fed_in_order("a", &[15, 16]);
        assert_eq!(h.release("a", sid, 15), Released::Live);
        assert_eq!(second.positions(), vec![16], "the seam: no gap, no repeat");
    }

    #[test]
    fn a_hold_that_overflows_sends_its_holder_back_to_the_store() {
        let mut h = harness_with(200, Arc::default()); // room for seven of these
        let record = Arc::new(Record::default());
        let (sid, m) = member(&record);
        h.hold("a", m, Some(Position(0)));
        let all: Vec<u64> = (1..=20).collect();
        h.fed_in_order("a", &all);
        assert_eq!(h.release("a", sid, 3), Released::Behind(Position(20)));
        h.fed("a", 21, 20);
        assert_eq!(h.release("a", sid, 20), Released::Live);
        assert_eq!(record.positions(), vec![21]);
    }

    #[test]
    fn repeats_are_skipped_and_unused_rooms_forgotten() {
        let mut h = harness();
        let record = Arc::new(Record::default());
        let (sid, m) = member(&record);
        h.join("a", m, Some(Position::ZERO));
        for (p, prev) in [(1, 0), (2, 1), (2, 1), (1, 0), (3, 2)] {
            h.fed("a", p, prev);
        }
        assert_eq!(record.positions(), vec![1, 2, 3]);
        h.shard.handle(Command::Leave {
            room: Arc::from("a"),
            sid,
            done: None,
        });
        assert!(h.shard.rooms.is_empty());
        h.track("b");
        h.shard.handle(Command::Untrack {
            room: Arc::from("b"),
        });
        assert!(h.shard.rooms.is_empty(), "an abandoned track lets go too");
    }

    #[test]
    fn a_message_whose_predecessor_never_came_makes_the_room_catch_up_in_order() {
        let mut h = harness();
        let record = Arc::new(Record::default());
        h.join("a", member(&record).1, Some(Position(0)));
        h.fed_in_order("a", &[1, 2]);
        h.fed("a", 5, 4); // 3 and 4 were missed
        assert_eq!(h.asked_to_catch_up(), [("a".to_owned(), 2)]);
        h.fed("a", 6, 5); // live meanwhile: set aside, it is in the history
        assert_eq!(record.positions(), vec![1, 2], "nothing out of order");
        assert_eq!(
            h.catch_up_page("a", &[3, 4, 5], false),
            CatchUp::After(Position(5)),
            "the history's end was before 6: read on"
        );
        assert_eq!(h.catch_up_page("a", &[6], false), CatchUp::Done);
        h.fed("a", 7, 6);
        assert_eq!(record.positions(), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(h.budget.in_flight(), 0);
    }

    #[test]
    fn a_gap_reported_by_the_feed_catches_up_every_room_it_names_and_waits_for_joins() {
        let mut h = harness();
        let record = Arc::new(Record::default());
        h.join("a", member(&record).1, Some(Position(10)));
        h.fed("a", 11, 10);
        // A room tracked but not yet cut: its join catches up from the cut.
        h.track("b");
        h.shard.handle(Command::GapAll);
        assert_eq!(h.asked_to_catch_up(), [("a".to_owned(), 11)]);
        h.shard.handle(Command::Gap(Arc::from("a")));
        assert!(h.asked_to_catch_up().is_empty(), "one catch-up at a time");
        assert_eq!(
            h.catch_up_page("a", &[12], false),
            CatchUp::After(Position(12)),
            "a gap reported meanwhile reads on"
        );
        assert_eq!(h.catch_up_page("a", &[], false), CatchUp::Done);
        let late = Arc::new(Record::default());
        let (reply, _) = oneshot::channel();
        h.shard.handle(Command::Join {
            room: Arc::from("b"),
            member: member(&late).1,
            floor: Some(Position(50)),
            reply,
        });
        assert_eq!(h.asked_to_catch_up(), [("b".to_owned(), 50)]);
        assert_eq!(record.positions(), vec![11, 12]);
    }

    #[test]
    fn members_leave_one_room_in_any_order_and_the_rest_stay() {
        let mut h = harness();
        let records: Vec<Arc<Record>> = (0..200).map(|_| Arc::new(Record::default())).collect();
        let sids: Vec<Sid> = records
            .iter()
            .map(|record| {
                let (sid, m) = member(record);
                h.join("big", m, Some(Position(0)));
                sid
            })
            .collect();
        for sid in sids.iter().step_by(3).chain(sids.iter().skip(1).step_by(3)) {
            h.shard.handle(Command::Leave {
                room: Arc::from("big"),
                sid: *sid,
                done: None,
            });
        }
        h.fed("big", 1, 0);
        for (i, record) in records.iter().enumerate() {
            let expected: Vec<u64> = if i % 3 == 2 { vec![1] } else { vec![] };
            assert_eq!(record.positions(), expected, "member {i}");
        }
    }
}
