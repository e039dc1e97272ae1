//! What a node does between the signal to stop and its exit: a slow drain, so a deploy that
//! restarts every node is not a reconnect storm.
//!
//! On the first SIGTERM (or SIGINT) the node turns unready (`GET /ready` answers `503`) and
//! refuses new Engine.IO handshakes with `503`, so a load balancer stops sending it clients and a
//! client that asks anyway retries elsewhere. After `--drain-delay` (time for the balancer's
//! readiness check to notice) it closes its sockets' transports a few at a time, evenly over
//! `--drain-period`: every client library reconnects by itself after a transport closes (a
//! server-side namespace disconnect would not reconnect), and recovers what it missed on
//! whichever node it reaches. Then the acknowledgements still waiting are stored and the node
//! exits. A second signal closes everything at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::transport::Sid;
use socketioxide::SocketIo;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::session::Flusher;

/// How often a paced drain closes its next few sockets.
const STEP: Duration = Duration::from_millis(100);
/// How long the last closes have to end their connections (and store their positions).
const SETTLE: Duration = Duration::from_secs(1);
/// How long after the last close the exit waits, at most, for positions and acknowledgements
/// a store that does not answer has not taken yet: the drain's end plus this stays within 5 s.
const SETTLE_STORES: Duration = Duration::from_millis(4_500);
/// How long the drained connections have, at most, to finish draining before whatever is left
/// is closed: a second for their clients' acknowledgements, then their positions stored.
const LAST_DRAINS: Duration = Duration::from_secs(3);
/// How often the drain looks whether they have.
const LAST_DRAINS_POLL: Duration = Duration::from_millis(20);
/// How often the drain's progress is logged.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// A connection a drain closes.
pub trait Drained: Send + Sync {
    /// Stops sending it live messages, gives the client a moment to acknowledge what it was
    /// sent (so it comes back to exactly what it missed, nothing repeated), then closes its
    /// transport.
    fn drain(self: Arc<Self>);
}

/// An open connection, and when it began.
type Open = (Weak<dyn Drained>, Instant);

/// Whether the node is draining, shared with readiness and the Engine.IO gate, and the
/// connections it will close.
#[derive(Default)]
pub struct Draining {
    on: AtomicBool,
    /// Each open connection, and when it began.
    connections: Mutex<HashMap<Sid, Open>>,
    /// A second signal: close everything now.
    hurry: Notify,
    hurried: AtomicBool,
}

impl Draining {
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// A connection began: a drain will close it.
    pub fn register(&self, sid: Sid, connection: Weak<dyn Drained>) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.insert(sid, (connection, Instant::now()));
    }

    /// A connection ended.
    pub fn forget(&self, sid: Sid) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.remove(&sid);
    }

    fn open(&self) -> Vec<Arc<dyn Drained>> {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections
            .values()
            .filter_map(|(connection, _)| connection.upgrade())
            .collect()
    }

    /// Whether connection `sid` is still open.
    pub fn holds(&self, sid: Sid) -> bool {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.contains_key(&sid)
    }

    /// The `n` connections open longest among those that began when `eligible` says: the first a
    /// node moves away when it rebalances.
    pub fn oldest(
        &self,
        n: usize,
        eligible: impl Fn(std::time::Instant) -> bool,
    ) -> Vec<(Sid, Arc<dyn Drained>)> {
        let mut open: Vec<(Instant, Sid, Weak<dyn Drained>)> = {
            let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            connections
                .iter()
                .filter(|(_, (_, since))| eligible(since.into_std()))
                .map(|(sid, (connection, since))| (*since, *sid, connection.clone()))
                .collect()
        };
        if open.len() > n {
            open.select_nth_unstable_by_key(n, |(since, ..)| *since);
            open.truncate(n);
        }
        open.sort_by_key(|(since, ..)| *since);
        open.into_iter()
            .filter_map(|(_, sid, connection)| Some((sid, connection.upgrade()?)))
            .collect()
    }

    /// Waits for the drained connections to end (at most [`LAST_DRAINS`]): closing them
    /// before they stored what their clients acknowledged would repeat it. Returns whether a
    /// second signal cut it short.
    async fn last_drains(&self) -> bool {
        let deadline = Instant::now() + LAST_DRAINS;
        while !self.open().is_empty() && Instant::now() < deadline {
            if self.sleep_unless_hurried(LAST_DRAINS_POLL).await {
                return true;
            }
        }
        false
    }

    /// The second signal.
    pub fn hurry(&self) {
        self.hurried.store(true, Ordering::Release);
        self.hurry.notify_waiters();
    }

    fn hurried(&self) -> bool {
        self.hurried.load(Ordering::Acquire)
    }

    /// Sleeps `duration`, or less if a second signal comes. Returns whether it came.
    async fn sleep_unless_hurried(&self, duration: Duration) -> bool {
        if self.hurried() {
            return true;
        }
        let hurry = self.hurry.notified();
        tokio::select! {
            () = tokio::time::sleep(duration) => self.hurried(),
            () = hurry => true,
        }
    }
}

/// How a node drains: `--drain-delay` and `--drain-period`.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub delay: Duration,
    pub period: Duration,
}

/// Drains the node: unready at once, sockets closed paced after the delay, acknowledgements
/// stored by `flusher`. Returns once every socket is closed.
pub async fn drain(
    draining: &Draining,
    plan: Plan,
    io: &SocketIo,
    metrics: &Metrics,
    flusher: &Flusher,
) {
    draining.on.store(true, Ordering::Release);
    metrics.draining.set(1);
    let Plan { delay, period } = plan;
    let open = draining.open().len();
    tracing::info!(
        sockets = open,
        "draining: /ready answers 503 and new connections are refused; closing sockets over {period:?} in {delay:?}"
    );
    let hurried = draining.sleep_unless_hurried(delay).await
        || close_paced(draining, period, metrics).await
        || draining.last_drains().await;
    if hurried {
        tracing::info!("second signal: closing every socket now");
    }
    // Whatever is left (long-polling sessions, sockets that connected meanwhile) closes now.
    let closed_at = Instant::now();
    io.close().await;
    if !hurried {
        // The connections that ended store their positions (retrying while the store does
        // not answer): the exit waits for them, within the drain's last seconds.
        tokio::time::sleep(SETTLE).await;
        while !draining.open().is_empty() && closed_at.elapsed() < SETTLE_STORES {
            tokio::time::sleep(LAST_DRAINS_POLL).await;
        }
    }
    let deadline = closed_at
        + if hurried {
            Duration::ZERO
        } else {
            SETTLE_STORES
        };
    flusher.flush_until(deadline).await;
    tracing::info!("drained");
}

/// Drains the open connections evenly over `period`. Returns whether a second signal cut it
/// short.
async fn close_paced(draining: &Draining, period: Duration, metrics: &Metrics) -> bool {
    let sockets = draining.open();
    let total = sockets.len();
    let steps = (period.as_millis() / STEP.as_millis()).max(1) as usize;
    let started = Instant::now();
    let mut reported = Instant::now();
    let mut closed = 0;
    for step in 1..=steps {
        // The share of the sockets due by the end of this step.
        let due = (total * step).div_ceil(steps);
        for connection in &sockets[closed..due] {
            connection.clone().drain();
        }
        metrics.drain_closed.inc_by((due - closed) as u64);
        closed = due;
        if reported.elapsed() >= REPORT_EVERY {
            reported = Instant::now();
            tracing::info!(closed, of = total, "draining");
        }
        if closed == total {
            break;
        }
        let next = started + STEP * step as u32;
        if draining
            .sleep_unless_hurried(next.saturating_duration_since(Instant::now()))
            .await
        {
            return true;
        }
    }
    tracing::info!(closed, of = total, "draining: every socket closed");
    false
}
