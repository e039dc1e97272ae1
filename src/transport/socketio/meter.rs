//! What a Socket.IO connection has queued and not yet written to the network, in bytes.
//!
//! The server adds what it hands to a connection's transport; the transport subtracts what it
//! writes: a WebSocket through the TCP connection carrying it (its [`Carrier`]), long-polling as
//! response bodies leave. So a client that stops reading shows up as bytes that stop draining,
//! whatever it answers to pings, and the connection can be held to a byte budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use socketioxide::socket::Sid;
use tokio::sync::Notify;

/// The clock backlog ages are kept in: microseconds since the process's first use of it.
fn now_us() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    // Never 0, which means "nothing queued".
    EPOCH.elapsed().as_micros() as u64 + 1
}

/// What writes a connection's bytes to the network (its WebSocket's TCP connection), which
/// cutting the connection closes.
pub trait Carrier: Send + Sync {
    fn cut(&self);
}

/// One connection's queued bytes and its kill switch.
///
/// In declared order (`repr(C)`): what every delivery and every write reads (`queued`, `cut`,
/// `pid_pending`) shares the first cache line, so a delivery to thousands of connections costs
/// one cache miss per connection here, not three.
#[derive(Default)]
#[repr(C)]
pub struct SendMeter {
    queued: AtomicUsize,
    cut: AtomicBool,
    pid_pending: AtomicBool,
    /// When the queue last went from empty to not empty (see [`now_us`]); 0 while empty.
    backlog_since: AtomicU64,
    waiting: AtomicUsize,
    carrier: OnceLock<Weak<dyn Carrier>>,
    drained: Notify,
    /// The `pid` the connection's CONNECT reply must carry, until the reply has gone out (see
    /// [`super::frames`]).
    connect_pid: Mutex<Option<Box<str>>>,
}

impl SendMeter {
    /// Bytes handed to the transport and not yet written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub fn add(&self, bytes: usize) {
        if self.queued.fetch_add(bytes, Ordering::AcqRel) == 0 {
            self.backlog_since.store(now_us(), Ordering::Release);
        }
    }

    /// How long the connection has had something queued without its queue emptying: how far
    /// behind writing to it runs.
    pub fn backlog_age(&self) -> Duration {
        match self.backlog_since.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            since => Duration::from_micros(now_us().saturating_sub(since)),
        }
    }

    /// The transport wrote `bytes`. Written bytes include framing and heartbeats the server did
    /// not count, so the count stops at zero instead of going below.
    pub fn written(&self, bytes: usize) {
        let drained = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(bytes))
            })
            .is_ok_and(|before| before <= bytes);
        if drained {
            self.backlog_since.store(0, Ordering::Release);
        }
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.drained.notify_waiters();
        }
    }

    /// Takes back `bytes` that were added but will never be written (the transport refused them).
    pub fn withdraw(&self, bytes: usize) {
        self.written(bytes);
    }

    /// Resolves once fewer than `limit` bytes are queued.
    pub async fn drained_below(&self, limit: usize) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.queued() < limit || self.is_cut() {
                break;
            }
            notified.await;
        }
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// Closes the connection's transport from the server's side: its WebSocket fails at once;
    /// its long-polling requests are refused as an unknown session. Either way the client sees
    /// its transport close and reconnects.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        if let Some(carrier) = self.carrier.get().and_then(Weak::upgrade) {
            carrier.cut();
        }
        self.drained.notify_waiters();
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// The connection's CONNECT reply, not yet sent, must carry `pid`.
    pub fn reply_with_pid(&self, pid: &str) {
        *self.connect_pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid.into());
        self.pid_pending.store(true, Ordering::Release);
    }

    /// The `pid` the CONNECT reply must carry, while it has not gone out.
    pub fn pending_pid(&self) -> Option<Box<str>> {
        if !self.pid_pending.load(Ordering::Acquire) {
            return None;
        }
        self.connect_pid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The CONNECT reply went out with its `pid`.
    pub fn pid_sent(&self) {
        self.pid_pending.store(false, Ordering::Release);
        self.connect_pid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// From now on `carrier` writes this connection's bytes, and is closed when it is cut.
    pub fn carried_by(&self, carrier: &Arc<dyn Carrier>) {
        let _ = self.carrier.set(Arc::downgrade(carrier));
        if self.is_cut() {
            carrier.cut();
        }
    }
}

/// The meters of this node's connections by session id, for the transport requests that name
/// one. Entries are weak: a meter lives as long as its connection or its WebSocket.
#[derive(Default)]
pub struct Meters {
    by_sid: Mutex<HashMap<Sid, Weak<SendMeter>>>,
    inserted: AtomicUsize,
}

/// Dead entries are swept every this many insertions.
const SWEEP_EVERY: usize = 1024;

impl Meters {
    /// The meter of `sid`, made if there is none yet (a WebSocket upgrade can arrive before the
    /// Socket.IO connection it carries is set up).
    pub fn meter(&self, sid: Sid) -> Arc<SendMeter> {
        let mut by_sid = self.by_sid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(meter) = by_sid.get(&sid).and_then(Weak::upgrade) {
            return meter;
        }
        let meter = Arc::new(SendMeter::default());
        by_sid.insert(sid, Arc::downgrade(&meter));
        if self.inserted.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            by_sid.retain(|_, m| m.strong_count() > 0);
        }
        meter
    }

    /// The meter of `sid` if its connection is alive.
    pub fn get(&self, sid: Sid) -> Option<Arc<SendMeter>> {
        let by_sid = self.by_sid.lock().unwrap_or_else(|e| e.into_inner());
        by_sid.get(&sid).and_then(Weak::upgrade)
    }

    /// Forgets `sid` (its connection ended).
    pub fn remove(&self, sid: Sid) {
        let mut by_sid = self.by_sid.lock().unwrap_or_else(|e| e.into_inner());
        by_sid.remove(&sid);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn written_bytes_drain_what_was_queued_and_never_below_zero() {
        let meter = SendMeter::default();
        meter.add(100);
        meter.written(30);
        assert_eq!(meter.queued(), 70);
        meter.written(500);
        assert_eq!(meter.queued(), 0, "framing the server did not count");
    }

    #[tokio::test]
    async fn a_waiting_sender_resumes_once_the_queue_drains() {
        let meter = Arc::new(SendMeter::default());
        meter.add(1000);
        let waiter = tokio::spawn({
            let meter = meter.clone();
            async move { meter.drained_below(500).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "still 1000 queued");
        meter.written(600);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken by the write")
            .unwrap();
    }

    #[test]
    fn a_backlog_ages_until_the_queue_empties() {
        let meter = SendMeter::default();
        assert_eq!(meter.backlog_age(), Duration::ZERO);
        meter.add(10);
        std::thread::sleep(Duration::from_millis(20));
        meter.add(10);
        assert!(
            meter.backlog_age() >= Duration::from_millis(20),
            "from the first byte"
        );
        meter.written(15);
        assert!(
            meter.backlog_age() >= Duration::from_millis(20),
            "not empty yet"
        );
        meter.written(5);
        assert_eq!(meter.backlog_age(), Duration::ZERO);
    }

    #[test]
    fn meters_are_shared_by_sid_and_go_with_their_holders() {
        let meters = Meters::default();
        let sid = Sid::new();
        let meter = meters.meter(sid);
        assert!(Arc::ptr_eq(&meter, &meters.meter(sid)));
        drop(meter);
        assert!(meters.get(sid).is_none(), "nobody holds it any more");
    }
}
