//! A node's budget of bytes that its clients' events may hold while they wait to be handled,
//! shared by every connection ([`crate::socket`]'s queues take from it and give back).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of events waiting across the node's connections.
pub struct QueueMemory {
    used: AtomicUsize,
    max: usize,
}

impl QueueMemory {
    pub fn new(max: usize) -> Arc<QueueMemory> {
        Arc::new(QueueMemory {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes `bytes` if they fit.
    pub fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.max).then_some(used + bytes)
            })
            .is_ok()
    }

    pub fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes waiting now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}
