//! The open-loop publisher: it sends `POST /api/twine` on a fixed schedule whether or not earlier
//! publishes have been answered, so every server is offered the same load, and it counts what
//! became of each: accepted (`201`), refused (`503`/`429`, a server shedding load), failed
//! (anything else, or no answer), or not sent because `concurrency` publishes were already
//! waiting for their answers (the bound that keeps an overloaded server from being sent an
//! unbounded number of connections).
//!
//! A pooled keep-alive connection is checked before it is reused (a server closes idle ones:
//! Node's after 5 s), and a publish on a reused connection that ends before any answer is sent
//! again on a fresh one, as HTTP clients do. A publish that was sent and never answered counts
//! as failed and stays due: the server may have taken it, and its subscribers are owed it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::http::Publisher;
use crate::stats::Histogram;

pub fn room_name(i: usize) -> String {
    format!("bench-{i}")
}

/// When a schedule ends.
#[derive(Clone, Copy)]
pub enum Limit {
    Count(u64),
    For(Duration),
    /// Until the stop signal.
    Open,
}

/// What to send: at `rate` per second until `limit`, round-robin over `rooms` rooms from
/// `first_room` on, numbered from `first_seq`, at most `concurrency` unanswered at once.
#[derive(Clone, Copy)]
pub struct Schedule {
    pub rate: f64,
    pub limit: Limit,
    pub rooms: usize,
    pub first_room: usize,
    pub first_seq: u64,
    pub concurrency: usize,
    /// A new connection for every publish, as through a load balancer that must be able to move
    /// the next publish to another node.
    pub fresh_connections: bool,
}

/// Counters a run reads while publishing goes on (backlog sampling) and after.
pub struct Tally {
    /// Accepted publishes per room, as they are answered.
    pub accepted_per_room: Vec<AtomicU64>,
    /// Publishes sent per room and not (yet) refused or failed: what the server owes its
    /// subscribers, including publishes it has not answered yet.
    pub owed_per_room: Vec<AtomicU64>,
    /// Sequence numbers accepted, per room.
    accepted_seqs: Mutex<Vec<Vec<u64>>>,
    /// Publishes sent and never answered, per room: failed, and still due.
    unanswered_per_room: Vec<AtomicU64>,
    unanswered_seqs: Mutex<Vec<Vec<u64>>>,
    pub offered: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub unsent: AtomicU64,
    /// Publish request → answer, for every answered publish.
    pub answer_latency: Histogram,
}

impl Tally {
    pub fn new(rooms: usize) -> Tally {
        Tally {
            accepted_per_room: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            owed_per_room: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            accepted_seqs: Mutex::new(vec![Vec::new(); rooms]),
            unanswered_per_room: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            unanswered_seqs: Mutex::new(vec![Vec::new(); rooms]),
            offered: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            answer_latency: Histogram::new(),
        }
    }

    /// Sequence numbers accepted so far, per room.
    pub fn accepted_seqs(&self) -> Vec<Vec<u64>> {
        let mut seqs = self
            .accepted_seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for room in &mut seqs {
            room.sort_unstable();
        }
        seqs
    }

    /// Sequence numbers due to a room's subscribers, per room: accepted, or sent and never
    /// answered (the server may have taken them).
    pub fn due_seqs(&self) -> Vec<Vec<u64>> {
        let mut seqs = self.accepted_seqs();
        let unanswered = self
            .unanswered_seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (room, more) in seqs.iter_mut().zip(unanswered.iter()) {
            room.extend(more);
            room.sort_unstable();
        }
        seqs
    }

    /// Publishes due to each room's subscribers so far (accepted, or sent and never answered).
    pub fn due_in(&self, room: usize) -> u64 {
        Self::load(&self.accepted_per_room[room]) + Self::load(&self.unanswered_per_room[room])
    }

    fn accept(&self, room: usize, seq: u64) {
        self.accepted_seqs.lock().unwrap_or_else(|e| e.into_inner())[room].push(seq);
        self.accepted_per_room[room].fetch_add(1, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A publish that failed before it was sent, or was answered with another status.
    fn fail(&self, room: usize) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.owed_per_room[room].fetch_sub(1, Ordering::Relaxed);
    }

    /// A publish sent and never answered: failed, and still owed to the room.
    fn unanswered(&self, room: usize, seq: u64) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.unanswered_seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())[room]
            .push(seq);
        self.unanswered_per_room[room].fetch_add(1, Ordering::Relaxed);
    }

    pub fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Microseconds since the epoch: the payload carries the publisher's clock, and clients compare
/// it with theirs (one machine, one clock).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs `schedule` against `target`, counting into `tally`; returns, once every publish it sent
/// is answered (or failed), when the schedule ended (its last publish sent).
pub async fn publish(
    target: SocketAddr,
    api_key: Arc<str>,
    schedule: Schedule,
    tally: Arc<Tally>,
    mut stop: Option<watch::Receiver<bool>>,
) -> std::time::Instant {
    let pool: Arc<Mutex<Vec<Publisher>>> = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(schedule.concurrency.max(1)));
    let rate = schedule.rate.max(0.001);
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    let mut tasks = JoinSet::new();
    loop {
        let over = match schedule.limit {
            Limit::Count(n) => sent >= n,
            Limit::For(d) => started.elapsed() >= d,
            Limit::Open => false,
        };
        if over || stop.as_ref().is_some_and(|s| *s.borrow()) {
            break;
        }
        // Every publish whose time has come goes now, even if the previous ones are unanswered.
        let due = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
        let due = match schedule.limit {
            Limit::Count(n) => due.min(n),
            _ => due,
        };
        while sent < due {
            let seq = schedule.first_seq + sent;
            sent += 1;
            tally.offered.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = gate.clone().try_acquire_owned() else {
                tally.unsent.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (pool, tally, api_key) = (pool.clone(), tally.clone(), api_key.clone());
            let room = schedule.first_room + (seq % schedule.rooms.max(1) as u64) as usize;
            let pooled = !schedule.fresh_connections;
            tally.owed_per_room[room].fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                one(
                    target,
                    &api_key,
                    room,
                    seq,
                    pooled.then_some(&*pool),
                    &tally,
                )
                .await;
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
        let next = started + Duration::from_secs_f64(sent as f64 / rate);
        match stop.as_mut() {
            Some(stop) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop.changed() => {}
                }
            }
            None => tokio::time::sleep_until(next).await,
        }
    }
    let ended = std::time::Instant::now();
    while tasks.join_next().await.is_some() {}
    ended
}

/// One publish on a pooled keep-alive connection (a new one when none is free, or always when
/// there is no pool). A reused connection that ends before answering (closed while idle) is
/// replaced by a fresh one and the publish sent again.
async fn one(
    target: SocketAddr,
    api_key: &str,
    room: usize,
    seq: u64,
    pool: Option<&Mutex<Vec<Publisher>>>,
    tally: &Tally,
) {
    // A pooled connection the server has closed meanwhile is dropped, not reused.
    let pooled = pool.and_then(|p| {
        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
        std::iter::from_fn(|| p.pop()).find(Publisher::is_open)
    });
    let mut reused = pooled.is_some();
    let mut publisher = match pooled {
        Some(p) => p,
        None => match Publisher::connect(target).await {
            Ok(p) => p,
            Err(_) => {
                tally.fail(room);
                return;
            }
        },
    };
    let sent = now_us();
    let payload = format!(
        r#"{{"seq":{seq},"sent_us":{sent},"text":"benchmark message, about a hundred bytes"}}"#
    );
    loop {
        match publisher.publish(api_key, &room_name(room), &payload).await {
            Ok(answer) => {
                tally
                    .answer_latency
                    .record_us(now_us().saturating_sub(sent));
                match answer.status {
                    201 => tally.accept(room, seq),
                    503 | 429 => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        tally.owed_per_room[room].fetch_sub(1, Ordering::Relaxed);
                    }
                    _ => tally.fail(room),
                }
                if let Some(pool) = pool.filter(|_| answer.reusable) {
                    pool.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(publisher);
                }
                return;
            }
            Err(e) if reused && !e.answered => {
                // The race a keep-alive client has: the server closed the idle connection as
                // the request went out. Once more, on a fresh connection.
                reused = false;
                publisher = match Publisher::connect(target).await {
                    Ok(p) => p,
                    Err(_) => {
                        tally.unanswered(room, seq);
                        return;
                    }
                };
            }
            Err(_) => {
                tally.unanswered(room, seq);
                return;
            }
        }
    }
}
