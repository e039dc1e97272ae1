//! A fleet of simulated clients: each connects (at a bounded rate), subscribes, then counts what
//! it receives, acknowledging each message when asked to. Counters the scenarios watch live
//! (ready, delivered, complete) are shared atomics; what each client saw comes back when the
//! fleet stops.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::addrs::SourceAddrs;
use crate::client::{Client, Event, Hello};
use crate::publisher::now_us;
use crate::stats::Histogram;

/// Longest a client waits to be connected (WebSocket open and namespace joined).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What one client saw.
#[derive(Default)]
pub struct Seen {
    pub seqs: Vec<u64>,
    /// The Socket.IO recovery session id and last offset, from a server that gives them.
    pub pid: Option<String>,
    pub offset: Option<String>,
}

/// What a client does once connected.
pub struct Plan {
    pub target: SocketAddr,
    pub room: String,
    pub cookie: Option<String>,
    /// Recover this Socket.IO session: `(pid, offset)`.
    pub recover: Option<(String, String)>,
    pub subscribe: bool,
    /// Mark complete once these publish sequence numbers have all arrived.
    pub waiting_for: Option<HashSet<u64>>,
}

pub struct Fleet {
    sources: SourceAddrs,
    pub ready: AtomicUsize,
    pub errors: AtomicUsize,
    pub dropped: AtomicUsize,
    /// Clients that have everything they were waiting for.
    pub complete: AtomicUsize,
    /// Clients whose recovery the server confirmed (the same `pid` came back).
    pub recovered: AtomicUsize,
    /// Messages received by all clients.
    pub delivered: AtomicU64,
    /// Publish → deliver, for every delivery.
    pub latency: Histogram,
    ack: bool,
    stop: watch::Receiver<bool>,
    connecting: Semaphore,
}

async fn client_task(fleet: Arc<Fleet>, plan: Plan) -> Seen {
    let mut seen = Seen::default();
    let mut stop = fleet.stop.clone();
    let permit = fleet.connecting.acquire().await;
    let source = fleet.sources.next();
    let hello = Hello {
        cookie: plan.cookie.as_deref(),
        recover: plan
            .recover
            .as_ref()
            .map(|(pid, offset)| (pid.as_str(), offset.as_str())),
        token: None,
    };
    // A server too busy to finish a handshake in this time counts it as a connect error, so a
    // run never waits on it for ever.
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(plan.target, source, hello)).await;
    drop(permit);
    let mut client = match connected {
        Ok(Ok(c)) => c,
        _ => {
            fleet.errors.fetch_add(1, Ordering::Relaxed);
            return seen;
        }
    };
    if plan.recover.as_ref().map(|r| &r.0) == client.pid.as_ref() && client.pid.is_some() {
        fleet.recovered.fetch_add(1, Ordering::Relaxed);
    }
    seen.pid = client.pid.clone();
    if plan.subscribe && client.subscribe(&plan.room).await.is_err() {
        fleet.errors.fetch_add(1, Ordering::Relaxed);
        return seen;
    }
    let mut ready = !plan.subscribe;
    if ready {
        fleet.ready.fetch_add(1, Ordering::Relaxed);
    }
    let mut waiting = plan.waiting_for;
    loop {
        tokio::select! {
            event = client.next_event() => match event {
                Ok(Some(Event::Message(m))) => {
                    fleet.delivered.fetch_add(1, Ordering::Relaxed);
                    fleet.latency.record_us(now_us().saturating_sub(m.sent_us));
                    seen.seqs.push(m.seq);
                    if m.offset.is_some() {
                        seen.offset = m.offset;
                    }
                    if let Some(w) = waiting.as_mut()
                        && w.remove(&m.seq)
                        && w.is_empty()
                    {
                        fleet.complete.fetch_add(1, Ordering::Relaxed);
                    }
                    if fleet.ack && client.acknowledge(m.timestamp).await.is_err() {
                        fleet.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                Ok(Some(Event::Joined)) if !ready => {
                    ready = true;
                    fleet.ready.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    if !*stop.borrow() {
                        fleet.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    return seen;
                }
            },
            _ = stop.changed() => break,
        }
    }
    client.close().await;
    seen
}

/// A fleet while it runs.
pub struct Run {
    pub fleet: Arc<Fleet>,
    stop: watch::Sender<bool>,
    quiet: bool,
}

impl Run {
    pub fn new(ack: bool, quiet: bool) -> Run {
        Run::with_sources(ack, quiet, SourceAddrs::new())
    }

    /// A fleet whose clients come from `sources` (e.g. spread over many addresses, as many
    /// users are).
    pub fn with_sources(ack: bool, quiet: bool, sources: SourceAddrs) -> Run {
        let (stop, stop_rx) = watch::channel(false);
        Run {
            fleet: Arc::new(Fleet {
                sources,
                ready: AtomicUsize::new(0),
                errors: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
                complete: AtomicUsize::new(0),
                recovered: AtomicUsize::new(0),
                delivered: AtomicU64::new(0),
                latency: Histogram::new(),
                ack,
                stop: stop_rx,
                connecting: Semaphore::new(512),
            }),
            stop,
            quiet,
        }
    }

    pub fn progress(&self, what: &str) {
        if !self.quiet {
            eprint!("\r{what:<78}");
            let _ = std::io::stderr().flush();
        }
    }

    pub fn delivered(&self) -> u64 {
        self.fleet.delivered.load(Ordering::Relaxed)
    }

    /// Starts `plans` at `rate` per second and waits until each is ready or failed.
    pub async fn launch(&self, plans: Vec<Plan>, rate: u32) -> Vec<JoinHandle<Seen>> {
        let total = plans.len();
        let base_ready = self.fleet.ready.load(Ordering::Relaxed);
        let base_errors = self.fleet.errors.load(Ordering::Relaxed);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let per_tick = (rate as usize / 100).max(1);
        let mut handles = Vec::with_capacity(total);
        let mut plans = plans.into_iter();
        loop {
            tick.tick().await;
            for plan in plans.by_ref().take(per_tick) {
                handles.push(tokio::spawn(client_task(self.fleet.clone(), plan)));
            }
            let ready = self.fleet.ready.load(Ordering::Relaxed) - base_ready;
            let errors = self.fleet.errors.load(Ordering::Relaxed) - base_errors;
            self.progress(&format!("connecting {ready}/{total}, errors {errors}"));
            if handles.len() == total && ready + errors >= total {
                break;
            }
        }
        handles
    }

    /// Waits until the clients have received `expected` messages in all, or nothing more
    /// arrives for `quiet_for` (a server behind its load delivers late, not never). Returns when
    /// the last delivery was seen.
    pub async fn settle(&self, expected: u64, quiet_for: Duration) -> Instant {
        let mut last = self.delivered();
        let mut still_since = Instant::now();
        let give_up = Instant::now() + Duration::from_secs(240);
        loop {
            let now = self.delivered();
            if now >= expected || still_since.elapsed() > quiet_for || Instant::now() > give_up {
                return if now >= expected {
                    Instant::now()
                } else {
                    still_since
                };
            }
            if now != last {
                last = now;
                still_since = Instant::now();
            }
            self.progress(&format!("delivering: {now}/{expected}"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn finish(&self, handles: Vec<JoinHandle<Seen>>) -> Vec<Seen> {
        let _ = self.stop.send(true);
        let mut seen = Vec::with_capacity(handles.len());
        for h in handles {
            seen.push(h.await.unwrap_or_default());
        }
        if !self.quiet {
            eprintln!();
        }
        seen
    }
}

/// Deliveries, loss and duplicates of each client against what was accepted for its room (from
/// `from_seq` on): `(deliveries, expected, lost, duplicated)`.
pub fn tally(
    seen: &[Seen],
    rooms_of: &[usize],
    accepted: &[Vec<u64>],
    from_seq: u64,
) -> (u64, u64, u64, u64) {
    let (mut deliveries, mut expected, mut lost, mut duplicated) = (0, 0, 0, 0);
    for (s, &room) in seen.iter().zip(rooms_of) {
        let due: HashSet<u64> = accepted[room]
            .iter()
            .copied()
            .filter(|q| *q >= from_seq)
            .collect();
        let got: Vec<u64> = s.seqs.iter().copied().filter(|q| *q >= from_seq).collect();
        let unique: HashSet<u64> = got.iter().copied().collect();
        deliveries += got.len() as u64;
        expected += due.len() as u64;
        duplicated += (got.len() - unique.len()) as u64;
        lost += due.difference(&unique).count() as u64;
    }
    (deliveries, expected, lost, duplicated)
}
