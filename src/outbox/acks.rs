//! What one connection was sent, per room and in order, and what its acknowledgements
//! (`updateSessionTS(timestamp)`) settle.
//!
//! Two kinds of client acknowledge differently:
//! - Stock clients that follow the Twine flow acknowledge *cumulatively*: `updateSessionTS(T)`
//!   means "handled the message sent to me with timestamp T and everything sent to me before
//!   it", in every room. A client may acknowledge only now and then.
//! - twine-client-library (which announces itself with `stateRecovery` on every connect)
//!   acknowledges *each message* it hands to a `listenOn` callback, and only those. A message
//!   that reached the page before its listener existed is never acknowledged, so a room counts as
//!   handled only up to its first unacknowledged message; what follows is replayed next time
//!   rather than lost. A room the app never listens on is never acknowledged at all: it follows
//!   what was sent unless the session has acknowledged that room before (then it is listened to,
//!   and an unacknowledged replay there was missed, not ignored).
//!
//! Timestamps are unique per room, not across rooms, so an acknowledgement is matched against
//! the order in which messages were sent to this connection.

use std::collections::VecDeque;
use std::sync::Arc;

use twine_store::{Position, Progress};

use super::offsets;

/// Messages remembered per connection while they wait for an acknowledgement. A client this far
/// behind in acknowledging loses track of the oldest (their rooms then advance only by later
/// cumulative acknowledgements, or not at all for per-message ones: repeated, never skipped).
pub const RING_CAP: usize = 512;

/// A room of the connection, as an index into its [`Sent`] rooms.
pub type Slot = u32;

/// How the client acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Cumulative,
    PerMessage,
}

/// The acknowledgement bookkeeping of one connection.
pub struct Sent {
    mode: Mode,
    ring: VecDeque<Entry>,
    rooms: Vec<Option<RoomSent>>,
    free: Vec<Slot>,
    /// The client has acknowledged something on this connection.
    acknowledges: bool,
    /// Off once the client was sent [`RING_CAP`] messages without acknowledging any.
    recording: bool,
    /// Recovery could not replay everything: stored positions must not move on, or the messages
    /// it missed would be skipped by the next recovery too.
    frozen: bool,
    /// The client follows Socket.IO's recovery: its events carry offsets.
    offsets: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    slot: Slot,
    position: Position,
    acked: bool,
}

struct RoomSent {
    name: Arc<str>,
    last_sent: Position,
    /// Newest position settled by acknowledgements.
    handled: Position,
    /// Newest position already reported by [`Sent::progress`].
    reported: Position,
    /// The session acknowledged this room one by one on an earlier connection.
    listened_before: bool,
    /// A per-message acknowledgement for this room arrived on this connection.
    acked_here: bool,
    /// A message of this room fell off the ring unacknowledged: per-message settling stops.
    blocked: bool,
}

impl Default for Sent {
    fn default() -> Self {
        Sent {
            mode: Mode::Cumulative,
            ring: VecDeque::new(),
            rooms: Vec::new(),
            free: Vec::new(),
            acknowledges: false,
            recording: true,
            frozen: false,
            offsets: false,
        }
    }
}

impl Sent {
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    pub fn give_offsets(&mut self) {
        self.offsets = true;
    }

    /// The offset of what was sent so far, if the client is given offsets.
    pub fn offset(&self) -> Option<String> {
        self.offsets.then(|| {
            offsets::encode(
                self.rooms
                    .iter()
                    .flatten()
                    .map(|r| (r.name.as_ref(), r.last_sent)),
            )
        })
    }

    /// The client has the room at `slot` up to `position` already (where its replay starts,
    /// or its join's cut).
    pub fn has_up_to(&mut self, slot: Slot, position: Position) {
        if !self.offsets {
            return; // positions stored for the session follow acknowledgements instead
        }
        if let Some(room) = self.room(slot) {
            room.last_sent = room.last_sent.max(position);
        }
    }

    /// A room this connection is in (or recovering), with what the session knew of it.
    pub fn add_room(&mut self, name: Arc<str>, listened_before: bool) -> Slot {
        let room = RoomSent {
            name,
            last_sent: Position::ZERO,
            handled: Position::ZERO,
            reported: Position::ZERO,
            listened_before,
            acked_here: false,
            blocked: false,
        };
        match self.free.pop() {
            Some(slot) => {
                self.rooms[slot as usize] = Some(room);
                slot
            }
            None => {
                if self.rooms.len() < 4 {
                    // Most connections are in a room or two: grow by doubling only past a few.
                    self.rooms.reserve_exact(1);
                }
                self.rooms.push(Some(room));
                (self.rooms.len() - 1) as Slot
            }
        }
    }

    /// The connection left the room: forget what it was sent there.
    pub fn remove_room(&mut self, slot: Slot) {
        if let Some(room) = self.rooms.get_mut(slot as usize)
            && room.take().is_some()
        {
            self.ring.retain(|e| e.slot != slot);
            self.free.push(slot);
        }
    }

    fn room(&mut self, slot: Slot) -> Option<&mut RoomSent> {
        self.rooms.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// Records a message sent in the room at `slot`.
    pub fn sent(&mut self, slot: Slot, position: Position) {
        let Some(room) = self.room(slot) else {
            return;
        };
        room.last_sent = room.last_sent.max(position);
        if !self.recording {
            return;
        }
        self.ring.push_back(Entry {
            slot,
            position,
            acked: false,
        });
        if self.ring.len() <= RING_CAP {
            return;
        }
        if !self.acknowledges {
            // A client that acknowledges nothing needs no ring: its rooms follow what was sent.
            self.recording = false;
            self.ring = VecDeque::new();
            return;
        }
        let evicted = self.ring.pop_front().expect("over the cap");
        if !evicted.acked
            && self.mode == Mode::PerMessage
            && let Some(room) = self.room(evicted.slot)
        {
            room.blocked = true;
        }
    }

    /// Applies `updateSessionTS(position)`. Returns whether it matched a message sent here.
    pub fn ack(&mut self, position: Position) -> bool {
        self.acknowledges = true;
        if !self.recording {
            self.recording = true; // acknowledging after all: later ones can be matched
            return false;
        }
        match self.mode {
            Mode::Cumulative => {
                let Some(at) = self.ring.iter().position(|e| e.position == position) else {
                    return false;
                };
                let settled: Vec<Entry> = self.ring.drain(..=at).collect();
                for entry in settled {
                    if let Some(room) = self.room(entry.slot) {
                        room.handled = room.handled.max(entry.position);
                    }
                }
                true
            }
            Mode::PerMessage => {
                let Some(entry) = self
                    .ring
                    .iter_mut()
                    .find(|e| e.position == position && !e.acked)
                else {
                    return false;
                };
                entry.acked = true;
                let slot = entry.slot;
                if let Some(room) = self.room(slot) {
                    room.acked_here = true;
                }
                true
            }
        }
    }

    /// Per-message mode: each room is handled up to the end of its run of acknowledged messages
    /// at the start of what it was sent; those leave the ring.
    fn settle_per_message(&mut self) {
        let mut open: Vec<bool> = self
            .rooms
            .iter()
            .map(|r| r.as_ref().is_some_and(|r| !r.blocked))
            .collect();
        let mut kept = VecDeque::with_capacity(self.ring.len());
        for entry in std::mem::take(&mut self.ring) {
            let slot = entry.slot as usize;
            if entry.acked && open[slot] {
                if let Some(room) = self.rooms[slot].as_mut() {
                    room.handled = room.handled.max(entry.position);
                }
                continue;
            }
            if !entry.acked {
                open[slot] = false;
            }
            kept.push_back(entry);
        }
        self.ring = kept;
    }

    /// What to store now: the rooms whose handled position moved since the last call. With
    /// `ending`, the connection is over, and rooms that were never acknowledged here follow what
    /// was sent (see the module documentation for which).
    pub fn progress(&mut self, ending: bool) -> Vec<Progress> {
        if self.frozen {
            return Vec::new();
        }
        if self.mode == Mode::PerMessage {
            self.settle_per_message();
        }
        let (mode, acknowledges) = (self.mode, self.acknowledges);
        let mut progress = Vec::new();
        for room in self.rooms.iter_mut().flatten() {
            let follows_sent = ending
                && match mode {
                    Mode::Cumulative => !acknowledges,
                    Mode::PerMessage => !room.acked_here && !room.listened_before,
                };
            let position = if follows_sent {
                room.last_sent
            } else {
                room.handled
            };
            let listened = mode == Mode::PerMessage && room.acked_here;
            if position > room.reported {
                room.reported = position;
                progress.push(Progress {
                    room: room.name.to_string(),
                    handled: position,
                    listened,
                });
            }
        }
        progress
    }

    /// Whether the client has acknowledged everything it was sent (a client that never
    /// acknowledges has nothing to wait for).
    pub fn settled(&self) -> bool {
        !self.acknowledges || self.ring.iter().all(|e| e.acked)
    }

    /// Messages waiting for an acknowledgement, for tests and memory checks.
    pub fn pending(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(rooms: &[&str]) -> (Sent, Vec<Slot>) {
        let mut sent = Sent::default();
        let slots = rooms
            .iter()
            .map(|r| sent.add_room(Arc::from(*r), false))
            .collect();
        (sent, slots)
    }

    fn handled(progress: &[Progress]) -> Vec<(&str, u64)> {
        let mut h: Vec<_> = progress
            .iter()
            .map(|p| (p.room.as_str(), p.handled.0))
            .collect();
        h.sort();
        h
    }

    #[test]
    fn a_cumulative_ack_covers_what_was_sent_before_it_in_every_room_but_not_after() {
        let (mut s, slots) = sent(&["a", "b"]);
        // Same millisecond in two rooms: a@100 is sent before b@100.
        for (slot, p) in [(0, 90), (1, 95), (0, 100), (1, 100), (0, 101)] {
            s.sent(slots[slot], Position(p));
        }
        assert!(s.ack(Position(100)));
        assert_eq!(handled(&s.progress(false)), vec![("a", 100), ("b", 95)]);
        assert!(!s.ack(Position(42)), "never sent");
        assert!(s.progress(false).is_empty(), "nothing new to store");
    }

    #[test]
    fn a_client_that_never_acknowledges_follows_what_it_was_sent_when_it_goes() {
        let (mut s, slots) = sent(&["a"]);
        for p in 1..=(RING_CAP as u64 + 10) {
            s.sent(slots[0], Position(p));
        }
        assert_eq!(s.pending(), 0, "no ring kept for it");
        assert!(s.progress(false).is_empty());
        assert_eq!(
            handled(&s.progress(true)),
            vec![("a", RING_CAP as u64 + 10)]
        );
    }

    #[test]
    fn per_message_acks_settle_a_room_only_up_to_its_first_missed_message() {
        let (mut s, slots) = sent(&["news", "other"]);
        s.set_mode(Mode::PerMessage);
        // Replayed before the page's listener existed: 1 and 2 were dropped by the client.
        for p in [1, 2, 3, 4] {
            s.sent(slots[0], Position(p));
        }
        assert!(s.ack(Position(3)));
        assert!(s.ack(Position(4)));
        assert!(
            s.progress(true).is_empty(),
            "3 and 4 do not mark the missed 1 and 2 handled"
        );
    }

    #[test]
    fn per_message_acks_of_every_message_settle_each_room_on_its_own() {
        let (mut s, slots) = sent(&["news", "sport", "unlistened"]);
        s.set_mode(Mode::PerMessage);
        for (slot, p) in [(2, 5), (0, 10), (1, 10), (0, 11), (2, 12), (1, 13)] {
            s.sent(slots[slot], Position(p));
        }
        for p in [10, 10, 11, 13] {
            assert!(s.ack(Position(p)), "{p}");
        }
        let progress = s.progress(false);
        assert_eq!(handled(&progress), vec![("news", 11), ("sport", 13)]);
        assert!(progress.iter().all(|p| p.listened));
        // On leaving, the room never acknowledged (and never listened before) follows what it
        // was sent: the app does not listen to it.
        assert_eq!(handled(&s.progress(true)), vec![("unlistened", 12)]);
    }

    #[test]
    fn a_room_listened_before_keeps_its_position_when_nothing_was_acknowledged() {
        let mut s = Sent::default();
        s.set_mode(Mode::PerMessage);
        let slot = s.add_room(Arc::from("news"), true);
        s.sent(slot, Position(7));
        assert!(
            s.progress(true).is_empty(),
            "a background tab whose listener came too late: replay it next time"
        );
    }

    #[test]
    fn frozen_positions_do_not_move() {
        let (mut s, slots) = sent(&["a"]);
        s.sent(slots[0], Position(1));
        s.freeze();
        assert!(s.ack(Position(1)));
        assert!(s.progress(true).is_empty());
    }

    #[test]
    fn leaving_a_room_forgets_it_and_its_slot_is_reused() {
        let (mut s, slots) = sent(&["a", "b"]);
        s.sent(slots[0], Position(1));
        s.sent(slots[1], Position(2));
        s.remove_room(slots[0]);
        assert_eq!(s.pending(), 1);
        let again = s.add_room(Arc::from("c"), false);
        assert_eq!(again, slots[0]);
        assert!(s.ack(Position(2)));
        assert_eq!(handled(&s.progress(false)), vec![("b", 2)]);
    }
}
