//! Long-lived client sessions, kept the way apps on socket.io-client keep theirs: each connects,
//! subscribes once, and whenever its connection ends (closed by the server, e.g. a node that
//! drains, or force-closed by the client itself, like a flaky mobile network) reconnects by
//! itself after socket.io-client's backoff (first delay 0.5–1.5 s, then doubling up to 5 s, each
//! ±50 %), recovering what it missed the Twine way (its cookie) or socket.io's (`pid` and last
//! offset; a session the server did not recover subscribes again, as an app does when
//! `socket.recovered` is false). Each keeps every message in arrival order, tells replayed ones
//! (published before its reconnect began) from live ones, and how long it was away.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::addrs::SourceAddrs;
use crate::client::{Client, Event, Hello};
use crate::publisher::now_us;
use crate::stats::Histogram;

/// How a reconnecting client asks for what it missed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryFlow {
    /// The `twineid` cookie on the handshake (Twine).
    Cookie,
    /// `{pid, offset}` in the connect packet (socket.io connection state recovery).
    SocketIo,
}

/// How a client's forced close (churn) goes.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Pending acknowledgements flushed, then the TCP connection closed (FIN): the server has the
    /// last acknowledgements and sees the close at once.
    #[default]
    Clean,
    /// As a network that goes away: pending acknowledgements lost, no FIN, no pong; the old
    /// connection still looks alive to the server until its ping timeout, when the client is
    /// already back on a new one.
    Silent,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::Clean => "clean",
            Loss::Silent => "silent",
        }
    }
}

/// How long a silently lost connection is held open at most (past any ping timeout: 25 s
/// interval + 20 s timeout by default on both servers), unless the server closes it first.
const SILENT_HOLD: Duration = Duration::from_secs(90);

/// Longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// socket.io-client's defaults: `reconnectionDelay`, `reconnectionDelayMax`,
/// `randomizationFactor`.
const DELAY_MS: f64 = 1000.0;
const DELAY_MAX_MS: f64 = 5000.0;
const JITTER: f64 = 0.5;
/// Reconnections counted per wall second, for this many seconds.
const SECONDS_KEPT: usize = 3600;

pub struct SessionPlan {
    pub target: SocketAddr,
    pub room: String,
    /// The `twineid` cookie (Twine flow).
    pub cookie: Option<String>,
    pub flow: RecoveryFlow,
}

/// What one session saw.
#[derive(Default)]
pub struct Trace {
    /// Publish sequence numbers, in arrival order.
    pub seqs: Vec<u64>,
    /// Connected when the run stopped.
    pub connected: bool,
    pub reconnects: u32,
}

/// Counters every session shares.
pub struct Sessions {
    sources: SourceAddrs,
    started: Instant,
    ack: bool,
    stop: watch::Receiver<bool>,
    churn: watch::Receiver<bool>,
    /// Mean seconds between two forced closes of one connection while churning.
    churn_every: f64,
    /// How a forced close goes.
    loss: Loss,
    connecting: Semaphore,
    /// Sessions connected right now.
    pub connected: AtomicUsize,
    /// Sessions whose first subscription was confirmed.
    pub ready: AtomicUsize,
    pub failed_attempts: AtomicU64,
    pub reconnects: AtomicU64,
    per_second: Vec<AtomicU64>,
    /// Connections the clients force-closed (churn).
    pub forced: AtomicU64,
    /// Connections the server ended.
    pub closed_by_server: AtomicU64,
    /// Namespace disconnects (`41`) received.
    pub kicked: AtomicU64,
    /// socket.io flow: reconnections the server recovered (the same `pid` came back) or not.
    pub recovered: AtomicU64,
    pub not_recovered: AtomicU64,
    pub delivered: AtomicU64,
    /// Deliveries of messages the session had not received before (what [`SessionRun::settle`]
    /// waits for: repeats must not stand in for a message still on its way).
    pub fresh: AtomicU64,
    /// Publish → deliver of messages published while connected.
    pub live: Histogram,
    /// Publish → deliver of messages published before the reconnect that delivered them began.
    pub replayed: Histogram,
    /// The same messages from the reconnect's start (TCP connect) to delivery: the server's part.
    pub replay_after_connect: Histogram,
    /// Longest time one session was away, from its connection ending to the next one open.
    pub longest_away_us: AtomicU64,
    /// Set once the run stops churning: a session connected then is not force-closed again.
    churn_over: AtomicBool,
}

/// Uniform numbers in [0, 1) for the backoff's and the churn's randomness (splitmix64).
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// socket.io-client's delay before reconnection attempt `attempt` (0 for the first).
    fn backoff(&mut self, attempt: u32) -> Duration {
        let ms = DELAY_MS * 2f64.powi(attempt.min(16) as i32);
        let deviation = self.next() * JITTER * ms;
        let ms = if self.next() < 0.5 {
            ms - deviation
        } else {
            ms + deviation
        };
        Duration::from_secs_f64(ms.min(DELAY_MAX_MS) / 1000.0)
    }
}

/// Sleeps, unless the run stops first (then returns true).
async fn stopped_during(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Why one connection ended.
enum End {
    Stopped,
    Lost,
}

async fn session(s: Arc<Sessions>, plan: SessionPlan, seed: u64) -> Trace {
    let mut trace = Trace::default();
    let mut rng = Jitter(seed);
    let mut stop = s.stop.clone();
    let mut churn = s.churn.clone();
    let (mut pid, mut offset) = (None::<String>, None::<String>);
    let (mut subscribed, mut counted_ready) = (false, false);
    let mut attempt = 0u32;
    let mut seen = HashSet::new();
    let mut away_since: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return trace;
        }
        // The load generator's own bound on connections being opened: waiting for a slot is
        // not the server's time, so the reconnect begins once it has one.
        let permit = s.connecting.acquire().await;
        let began_us = now_us();
        let hello = match plan.flow {
            RecoveryFlow::Cookie => Hello {
                cookie: plan.cookie.as_deref(),
                recover: None,
                token: None,
            },
            RecoveryFlow::SocketIo => Hello {
                cookie: None,
                recover: pid.as_deref().zip(offset.as_deref()),
                token: None,
            },
        };
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Client::connect(plan.target, s.sources.next(), hello),
        )
        .await;
        drop(permit);
        let Ok(Ok(mut client)) = connected else {
            s.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let delay = rng.backoff(attempt);
            attempt += 1;
            if stopped_during(delay, &mut stop).await {
                return trace;
            }
            continue;
        };
        attempt = 0;
        let resubscribe = match plan.flow {
            RecoveryFlow::Cookie => !subscribed,
            RecoveryFlow::SocketIo => {
                let same = pid.is_some() && client.pid == pid;
                if subscribed {
                    let counter = if same { &s.recovered } else { &s.not_recovered };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if !same {
                    offset = None;
                }
                pid = client.pid.clone();
                !same
            }
        };
        if resubscribe && client.subscribe(&plan.room).await.is_err() {
            s.closed_by_server.fetch_add(1, Ordering::Relaxed);
            away_since.get_or_insert_with(Instant::now);
            if stopped_during(rng.backoff(0), &mut stop).await {
                return trace;
            }
            continue;
        }
        let first = !subscribed;
        subscribed = true;
        if let Some(since) = away_since.take() {
            let away = since.elapsed().as_micros() as u64;
            s.longest_away_us.fetch_max(away, Ordering::Relaxed);
            s.reconnects.fetch_add(1, Ordering::Relaxed);
            let second = (s.started.elapsed().as_secs() as usize).min(SECONDS_KEPT - 1);
            s.per_second[second].fetch_add(1, Ordering::Relaxed);
            trace.reconnects += 1;
        }
        s.connected.fetch_add(1, Ordering::Relaxed);
        // A connection opened while churning is force-closed at a random moment around
        // `churn_every` from now; when churning starts, the connections already open are
        // closed at moments spread evenly over the first period.
        let churning =
            |c: &watch::Receiver<bool>| *c.borrow() && !s.churn_over.load(Ordering::Relaxed);
        let mut close_at = churning(&churn)
            .then(|| Instant::now() + Duration::from_secs_f64(s.churn_every * (0.5 + rng.next())));
        let end = loop {
            let sleep_until =
                close_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                event = client.next_event() => match event {
                    Ok(Some(Event::Message(m))) => {
                        s.delivered.fetch_add(1, Ordering::Relaxed);
                        if seen.insert(m.seq) {
                            s.fresh.fetch_add(1, Ordering::Relaxed);
                        }
                        let latency = now_us().saturating_sub(m.sent_us);
                        if !first && m.sent_us < began_us {
                            s.replayed.record_us(latency);
                            s.replay_after_connect.record_us(now_us().saturating_sub(began_us));
                        } else {
                            s.live.record_us(latency);
                        }
                        trace.seqs.push(m.seq);
                        if m.offset.is_some() {
                            offset = m.offset;
                        }
                        if s.ack && client.acknowledge(m.timestamp).await.is_err() {
                            s.closed_by_server.fetch_add(1, Ordering::Relaxed);
                            break End::Lost;
                        }
                    }
                    Ok(Some(Event::Joined)) => {
                        if !counted_ready {
                            counted_ready = true;
                            s.ready.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Event::Kicked)) => {
                        s.kicked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(Event::Other | Event::Ack(..) | Event::Error)) => {}
                    Ok(None) | Err(_) => {
                        s.closed_by_server.fetch_add(1, Ordering::Relaxed);
                        break End::Lost;
                    }
                },
                _ = tokio::time::sleep_until(sleep_until.into()), if close_at.is_some() => {
                    s.forced.fetch_add(1, Ordering::Relaxed);
                    match s.loss {
                        Loss::Clean => client.abandon().await,
                        Loss::Silent => client.vanish(SILENT_HOLD),
                    }
                    break End::Lost;
                }
                _ = churn.changed() => {
                    close_at = churning(&churn)
                        .then(|| Instant::now() + Duration::from_secs_f64(s.churn_every * rng.next()));
                }
                _ = stop.changed() => break End::Stopped,
            }
        };
        s.connected.fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Stopped => {
                trace.connected = true;
                return trace;
            }
            End::Lost => {
                trace.connected = false;
                away_since = Some(Instant::now());
                if stopped_during(rng.backoff(0), &mut stop).await {
                    return trace;
                }
            }
        }
    }
}

/// Sessions while they run.
pub struct SessionRun {
    pub sessions: Arc<Sessions>,
    stop: watch::Sender<bool>,
    churn: watch::Sender<bool>,
    quiet: bool,
}

impl SessionRun {
    /// `churn_every`: mean seconds between forced closes once [`SessionRun::churn`] is on.
    pub fn new(ack: bool, churn_every: f64, quiet: bool) -> SessionRun {
        let (stop, stop_rx) = watch::channel(false);
        let (churn, churn_rx) = watch::channel(false);
        SessionRun {
            sessions: Arc::new(Sessions {
                // Every (re)connection takes the next address after 1,000: a session's closed
                // connections stay in TIME_WAIT on its address for a minute, and one address
                // has about 28,000 ports.
                sources: SourceAddrs::spread(1_000),
                started: Instant::now(),
                ack,
                stop: stop_rx,
                churn: churn_rx,
                churn_every,
                loss: Loss::Clean,
                connecting: Semaphore::new(512),
                connected: AtomicUsize::new(0),
                ready: AtomicUsize::new(0),
                failed_attempts: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                per_second: (0..SECONDS_KEPT).map(|_| AtomicU64::new(0)).collect(),
                forced: AtomicU64::new(0),
                closed_by_server: AtomicU64::new(0),
                kicked: AtomicU64::new(0),
                recovered: AtomicU64::new(0),
                not_recovered: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                fresh: AtomicU64::new(0),
                live: Histogram::new(),
                replayed: Histogram::new(),
                replay_after_connect: Histogram::new(),
                longest_away_us: AtomicU64::new(0),
                churn_over: AtomicBool::new(false),
            }),
            stop,
            churn,
            quiet,
        }
    }

    /// Forced closes go as `loss` says (before the sessions are launched).
    pub fn losing(mut self, loss: Loss) -> SessionRun {
        if let Some(s) = Arc::get_mut(&mut self.sessions) {
            s.loss = loss;
        }
        self
    }

    pub fn progress(&self, what: &str) {
        if !self.quiet {
            eprint!("\r{what:<78}");
            let _ = std::io::stderr().flush();
        }
    }

    fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Deliveries of messages new to their session.
    pub fn fresh(&self) -> u64 {
        Self::load(&self.sessions.fresh)
    }

    pub fn connected(&self) -> usize {
        self.sessions.connected.load(Ordering::Relaxed)
    }

    /// Seconds since the sessions were created (the clock of [`SessionRun::peak_reconnects`]).
    pub fn second(&self) -> usize {
        self.sessions.started.elapsed().as_secs() as usize
    }

    /// Starts `plans` at `rate` per second and waits (up to a minute) until every one has
    /// subscribed once.
    pub async fn launch(&self, plans: Vec<SessionPlan>, rate: u32) -> Vec<JoinHandle<Trace>> {
        let total = plans.len();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let per_tick = (rate as usize / 100).max(1);
        let mut handles = Vec::with_capacity(total);
        let mut plans = plans.into_iter().enumerate();
        let give_up = Instant::now() + Duration::from_secs(60);
        let seed = now_us();
        loop {
            tick.tick().await;
            for (i, plan) in plans.by_ref().take(per_tick) {
                let seed = seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
                handles.push(tokio::spawn(session(self.sessions.clone(), plan, seed)));
            }
            let ready = self.sessions.ready.load(Ordering::Relaxed);
            self.progress(&format!(
                "connecting {ready}/{total}, failed attempts {}",
                Self::load(&self.sessions.failed_attempts)
            ));
            if handles.len() == total && (ready >= total || Instant::now() > give_up) {
                break;
            }
        }
        handles
    }

    /// Starts (or stops) force-closing connections.
    pub fn churn(&self, on: bool) {
        if !on {
            self.sessions.churn_over.store(true, Ordering::Relaxed);
        }
        let _ = self.churn.send(on);
    }

    /// Waits until `n` sessions are connected, up to `patience`; returns whether they were.
    pub async fn all_connected(&self, n: usize, patience: Duration) -> bool {
        let give_up = Instant::now() + patience;
        loop {
            let now = self.connected();
            if now >= n {
                return true;
            }
            if Instant::now() > give_up {
                return false;
            }
            self.progress(&format!("{now}/{n} sessions connected"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `expected` messages have arrived in all (each counted once per session), or
    /// nothing more arrives for `quiet_for`.
    pub async fn settle(&self, expected: u64, quiet_for: Duration) {
        let mut last = self.fresh();
        let mut still_since = Instant::now();
        let give_up = Instant::now() + Duration::from_secs(120);
        loop {
            let now = self.fresh();
            if now >= expected || still_since.elapsed() > quiet_for || Instant::now() > give_up {
                return;
            }
            if now != last {
                last = now;
                still_since = Instant::now();
            }
            self.progress(&format!("delivering: {now}/{expected}"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Most reconnections in one wall second, over seconds `from..=to` of the run.
    pub fn peak_reconnects(&self, from: usize, to: usize) -> u64 {
        let to = to.min(SECONDS_KEPT - 1);
        self.sessions.per_second[from.min(to)..=to]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    pub async fn finish(&self, handles: Vec<JoinHandle<Trace>>) -> Vec<Trace> {
        let _ = self.stop.send(true);
        let mut traces = Vec::with_capacity(handles.len());
        for h in handles {
            traces.push(h.await.unwrap_or_default());
        }
        if !self.quiet {
            eprintln!();
        }
        traces
    }
}

/// What the sessions received against what was accepted for their rooms (from `from_seq` on).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Count {
    pub deliveries: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Messages that arrived after a later one of their room.
    pub out_of_order: u64,
    pub sessions_with_loss: u64,
    pub most_lost: u64,
    pub most_duplicated: u64,
}

pub fn count(traces: &[Trace], rooms_of: &[usize], accepted: &[Vec<u64>], from_seq: u64) -> Count {
    let mut c = Count::default();
    for (t, &room) in traces.iter().zip(rooms_of) {
        let due: HashSet<u64> = accepted[room]
            .iter()
            .copied()
            .filter(|q| *q >= from_seq)
            .collect();
        let mut seen = HashSet::with_capacity(t.seqs.len());
        let (mut duplicated, mut highest) = (0, None::<u64>);
        for &q in t.seqs.iter().filter(|q| **q >= from_seq) {
            c.deliveries += 1;
            if !seen.insert(q) {
                duplicated += 1;
                continue;
            }
            if highest.is_some_and(|h| q < h) {
                c.out_of_order += 1;
            }
            highest = highest.max(Some(q));
        }
        let lost = due.difference(&seen).count() as u64;
        c.expected += due.len() as u64;
        c.lost += lost;
        c.duplicated += duplicated;
        c.sessions_with_loss += u64::from(lost > 0);
        c.most_lost = c.most_lost.max(lost);
        c.most_duplicated = c.most_duplicated.max(duplicated);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_socket_io_clients() {
        let mut j = Jitter(7);
        for _ in 0..1000 {
            let first = j.backoff(0).as_secs_f64();
            assert!((0.5..=1.5).contains(&first), "{first}");
            assert!(j.backoff(5).as_secs_f64() <= 5.0);
        }
    }

    #[test]
    fn counts_loss_repeats_and_order() {
        let traces = vec![
            Trace {
                seqs: vec![1, 2, 2, 4, 3],
                ..Trace::default()
            },
            Trace {
                seqs: vec![1, 2, 3, 4],
                ..Trace::default()
            },
        ];
        let c = count(&traces, &[0, 0], &[vec![1, 2, 3, 4, 5]], 1);
        assert_eq!((c.lost, c.duplicated, c.out_of_order), (2, 1, 1));
        assert_eq!((c.sessions_with_loss, c.most_lost), (2, 1));
    }
}
