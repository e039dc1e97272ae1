//! How far behind live delivery runs on one shard: the wait of what was handed to it, and how far
//! behind writing its large rooms' members are. Publishing declines past `--max-delivery-lag`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use twine_store::Position;

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
pub const MIN_SAMPLED: usize = 20;
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

    pub fn delivered(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// How far behind writing the sampled members of a large room were, as `ages`: the tenth
    /// most behind counts.
    pub fn members_behind(&self, ages: &mut [Duration]) {
        if ages.is_empty() {
            return;
        }
        let rank = ages.len() / 10;
        let (_, age, _) = ages.select_nth_unstable_by(rank, |a, b| b.cmp(a));
        self.behind_us
            .store(age.as_micros() as u64, Ordering::Relaxed);
        self.behind_at_ms
            .store(Position::now_ms(), Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn age_measure(&self, by: Duration) {
        let at = self.behind_at_ms.load(Ordering::Relaxed);
        self.behind_at_ms
            .store(at.saturating_sub(by.as_millis() as u64), Ordering::Relaxed);
    }
}
