//! A store's live feed: the messages appended from now on, of the rooms a node listens to, each
//! with the position of the message before it in its room, so a node that missed one knows.
//!
//! The feed is bounded in bytes ([`FeedBudget`]): a message is taken out of the budget when it is
//! fed and put back once the node has delivered it. A message that does not fit is not fed;
//! its room is reported as a [`FeedEvent::Gap`] instead (once until it catches up), and the node
//! reads what it missed from the history by position. So a node that falls behind (paused,
//! overloaded) costs a bounded amount of memory and still delivers everything, in order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{Message, Position, StoreError};

/// What a feed yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// A message just appended; a room's messages arrive in position order. `prev` is the
    /// position of the room's message appended before it ([`Position::ZERO`] for a room's first),
    /// so a receiver that has not seen `prev` missed something.
    Message { message: Message, prev: Position },
    /// Messages of this room may have been missed: read them from the history.
    Gap(String),
    /// Messages of every room may have been missed (the subscription was interrupted).
    GapAll,
}

/// The rooms a feed carries. A store that feeds every room to every node (one node in memory)
/// ignores them.
#[async_trait]
pub trait Listen: Send + Sync + 'static {
    /// Starts feeding `room`. Resolves once it is fed: what the history holds after that is fed
    /// or was appended before. Listening to a room listened to already is immediate.
    async fn listen(&self, room: &str) -> Result<(), StoreError>;

    /// Stops feeding `room`.
    fn unlisten(&self, room: &str);
}

/// A [`Listen`] for stores that feed every room.
pub struct EveryRoom;

#[async_trait]
impl Listen for EveryRoom {
    async fn listen(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn unlisten(&self, _: &str) {}
}

/// What a node holds of a feed: its events, the rooms it carries, and its budget.
pub struct Feed {
    pub events: mpsc::UnboundedReceiver<FeedEvent>,
    pub rooms: Arc<dyn Listen>,
    pub budget: Arc<FeedBudget>,
}

/// Counts of what a feed did, for the node's metrics.
#[derive(Default, Debug)]
pub struct FeedStats {
    /// Messages the store's pub/sub delivered to this node (stores shared between nodes).
    pub received: AtomicU64,
    /// Messages not fed because the budget was full (their rooms caught up from history).
    pub dropped: AtomicU64,
    /// Times the subscription was found silent (no heartbeat) and made again.
    pub silent: AtomicU64,
    /// Times the subscription was interrupted and made again.
    pub resubscribed: AtomicU64,
}

/// The bytes of messages fed and not yet delivered, and the rooms whose gap is announced.
pub struct FeedBudget {
    limit: usize,
    in_flight: AtomicUsize,
    gapped: Mutex<HashSet<String>>,
    pub stats: FeedStats,
}

impl FeedBudget {
    pub fn new(limit: usize) -> Arc<FeedBudget> {
        Arc::new(FeedBudget {
            limit,
            in_flight: AtomicUsize::new(0),
            gapped: Mutex::default(),
            stats: FeedStats::default(),
        })
    }

    /// Takes room for `bytes`; false (taking nothing) when they do not fit.
    pub fn take(&self, bytes: usize) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now + bytes <= self.limit).then_some(now + bytes)
            })
            .is_ok()
    }

    /// Takes room for `bytes` whether or not they fit (what a catch-up reads is bounded by its
    /// page, and waits for room before reading).
    pub fn force(&self, bytes: usize) {
        self.in_flight.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives back what a delivered message took.
    pub fn release(&self, bytes: usize) {
        self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes fed and not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Records that a message of `room` was not fed; true when the room's gap must be announced
    /// (the first since its last catch-up began).
    fn gap(&self, room: &str) -> bool {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let mut gapped = self.gapped.lock().unwrap_or_else(|e| e.into_inner());
        gapped.insert(room.to_owned())
    }

    /// A catch-up of `room` begins: a message not fed from now on is announced again.
    pub fn catching_up(&self, room: &str) {
        let mut gapped = self.gapped.lock().unwrap_or_else(|e| e.into_inner());
        gapped.remove(room);
    }
}

/// The feeding half: what a store holds for one node's feed.
#[derive(Clone)]
pub struct FeedSender {
    tx: mpsc::UnboundedSender<FeedEvent>,
    budget: Arc<FeedBudget>,
}

/// The node's feed is gone.
#[derive(Debug)]
pub struct FeedClosed;

impl FeedSender {
    /// Feeds `message`, or reports its room's gap when it does not fit the budget.
    pub fn message(&self, message: Message, prev: Position) -> Result<(), FeedClosed> {
        let event = if self.budget.take(message.size()) {
            FeedEvent::Message { message, prev }
        } else if self.budget.gap(&message.room) {
            FeedEvent::Gap(message.room)
        } else {
            return Ok(());
        };
        self.tx.send(event).map_err(|_| FeedClosed)
    }

    /// Reports that `room` may have missed messages.
    pub fn gap(&self, room: &str) -> Result<(), FeedClosed> {
        self.tx
            .send(FeedEvent::Gap(room.to_owned()))
            .map_err(|_| FeedClosed)
    }

    /// Reports that every room may have missed messages.
    pub fn gap_all(&self) -> Result<(), FeedClosed> {
        self.tx.send(FeedEvent::GapAll).map_err(|_| FeedClosed)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn budget(&self) -> &Arc<FeedBudget> {
        &self.budget
    }
}

/// A feed of at most `limit` bytes in flight, carrying the rooms `rooms` says.
pub fn channel(limit: usize, rooms: Arc<dyn Listen>) -> (FeedSender, Feed) {
    let (tx, events) = mpsc::unbounded_channel();
    let budget = FeedBudget::new(limit);
    let sender = FeedSender {
        tx,
        budget: budget.clone(),
    };
    (
        sender,
        Feed {
            events,
            rooms,
            budget,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room: &str, position: u64) -> Message {
        Message {
            room: room.into(),
            position: Position(position),
            payload: "x".repeat(100),
        }
    }

    #[test]
    fn a_full_budget_turns_messages_into_one_gap_per_room_until_it_catches_up() {
        let size = message("a", 1).size();
        let (sender, mut feed) = channel(size * 2, Arc::new(EveryRoom));
        for p in 1..=5 {
            sender.message(message("a", p), Position(p - 1)).unwrap();
        }
        sender.message(message("b", 1), Position::ZERO).unwrap();
        let mut events = Vec::new();
        while let Ok(event) = feed.events.try_recv() {
            events.push(event);
        }
        assert!(matches!(events[0], FeedEvent::Message { .. }));
        assert!(matches!(events[1], FeedEvent::Message { .. }));
        assert_eq!(
            events[2..],
            [FeedEvent::Gap("a".into()), FeedEvent::Gap("b".into())],
            "one gap per room however many were dropped"
        );
        assert_eq!(feed.budget.stats.dropped.load(Ordering::Relaxed), 4);
        feed.budget.release(size * 2);
        feed.budget.catching_up("a");
        sender.message(message("a", 6), Position(5)).unwrap();
        assert!(matches!(
            feed.events.try_recv(),
            Ok(FeedEvent::Message { .. })
        ));
        feed.budget.force(size * 2);
        sender.message(message("a", 7), Position(6)).unwrap();
        assert_eq!(
            feed.events.try_recv().unwrap(),
            FeedEvent::Gap("a".into()),
            "a drop after the catch-up began is announced again"
        );
    }
}
