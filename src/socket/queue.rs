//! The work a connection has waiting, bounded in bytes before anything is queued: per
//! connection (`--event-queue`) and across the node (`--event-queue-memory`, [`QueueMemory`]).
//!
//! A client that stops reading holds its connection's replay, and so everything queued behind
//! it; what it can make the node hold while it does is these bounds, whatever it sends.

use std::collections::VecDeque;
use std::sync::Arc;

pub use crate::budget::QueueMemory;

/// What a queued item costs besides the bytes it carries: its slot, its command, its room name's
/// handle.
pub const ITEM_OVERHEAD: usize = 96;

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// The connection has its most bytes waiting.
    Connection,
    /// The node has.
    Node,
}

/// One ordered queue of a connection's work, run by at most one task at a time.
pub struct Lane<T> {
    items: VecDeque<(T, usize)>,
    /// A task is running the lane.
    pub running: bool,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane {
            items: VecDeque::new(),
            running: false,
        }
    }
}

/// The bytes a connection has waiting in all its lanes, and where they are counted node-wide.
pub struct Waiting {
    bytes: usize,
    max: usize,
    node: Arc<QueueMemory>,
}

impl Waiting {
    pub fn new(max: usize, node: Arc<QueueMemory>) -> Waiting {
        Waiting {
            bytes: 0,
            max,
            node,
        }
    }

    /// Queues `item`, costing `bytes` (plus [`ITEM_OVERHEAD`]), on `lane`. Returns whether the
    /// lane needs a task started; refused, the item back.
    pub fn push<T>(
        &mut self,
        lane: &mut Lane<T>,
        item: T,
        bytes: usize,
    ) -> Result<bool, (Full, T)> {
        let cost = bytes + ITEM_OVERHEAD;
        if self.bytes + cost > self.max {
            return Err((Full::Connection, item));
        }
        if !self.node.take(cost) {
            return Err((Full::Node, item));
        }
        self.bytes += cost;
        lane.items.push_back((item, cost));
        Ok(!std::mem::replace(&mut lane.running, true))
    }

    /// Queues work of the connection's own (its start, its end), never refused.
    pub fn push_own<T>(&mut self, lane: &mut Lane<T>, item: T) -> bool {
        lane.items.push_back((item, 0));
        !std::mem::replace(&mut lane.running, true)
    }

    /// The lane's next item; `None` (and the lane marked idle) when it has none.
    pub fn pop<T>(&mut self, lane: &mut Lane<T>) -> Option<T> {
        match lane.items.pop_front() {
            Some((item, cost)) => {
                self.release(cost);
                Some(item)
            }
            None => {
                lane.running = false;
                None
            }
        }
    }

    /// Drops everything `lane` has waiting.
    pub fn clear<T>(&mut self, lane: &mut Lane<T>) {
        for (_, cost) in lane.items.drain(..) {
            self.bytes -= cost;
            self.node.give(cost);
        }
    }

    fn release(&mut self, cost: usize) {
        self.bytes -= cost;
        self.node.give(cost);
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.node.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_holds_at_most_its_bytes_and_the_node_at_most_its_own() {
        let node = QueueMemory::new(3 * (100 + ITEM_OVERHEAD));
        let mut a = Waiting::new(2 * (100 + ITEM_OVERHEAD), node.clone());
        let mut b = Waiting::new(10_000, node.clone());
        let (mut lane_a, mut lane_b) = (Lane::default(), Lane::default());
        assert_eq!(a.push(&mut lane_a, 1, 100), Ok(true), "starts a task");
        assert_eq!(a.push(&mut lane_a, 2, 100), Ok(false), "one task a lane");
        assert_eq!(a.push(&mut lane_a, 3, 100), Err((Full::Connection, 3)));
        assert_eq!(b.push(&mut lane_b, 4, 100), Ok(true));
        assert_eq!(b.push(&mut lane_b, 5, 100), Err((Full::Node, 5)));
        assert_eq!(a.pop(&mut lane_a), Some(1));
        assert_eq!(b.push(&mut lane_b, 5, 100), Ok(false), "room again");
        drop(b);
        assert_eq!(
            node.used(),
            100 + ITEM_OVERHEAD,
            "what a gone connection held is given back"
        );
        a.clear(&mut lane_a);
        assert_eq!(node.used(), 0);
        assert_eq!(a.pop(&mut lane_a), None);
        assert!(!lane_a.running);
    }
}
