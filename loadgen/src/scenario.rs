//! The scenarios. Each connects a fleet of simulated clients following the Twine flow (cookie,
//! connect with it, subscribe), drives the server, and measures it from outside: resident memory
//! and CPU time from /proc, deliveries, loss and duplicates counted by the clients, and
//! publish→deliver latency from the send time each payload carries.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::addrs::SourceAddrs;
use crate::client::{Client, Event};
use crate::http::{Publisher, fetch_cookie};
use crate::procfs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Hold connections and report the server's memory per connection.
    Idle,
    /// Subscribers in one or more rooms, publishes at a fixed rate.
    Fanout,
    /// Sessions drop at once while publishes go on, then all reconnect and recover.
    ReconnectStorm,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[arg(value_enum)]
    pub scenario: Kind,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:3005")]
    pub target: String,
    /// The server's process id, for memory and CPU figures.
    #[arg(long)]
    pub server_pid: u32,
    /// Simulated clients.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Rooms the clients are spread over.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishes per second (fanout; and while sessions are away in a storm).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds to publish (fanout) or to hold the connections (idle).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Storm: messages published to each room while the sessions are away.
    #[arg(long, default_value_t = 100)]
    pub missed: usize,
    /// Acknowledge every message with `updateSessionTS`, as twine-client-library does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ack: bool,
    /// New connections per second while the fleet connects.
    #[arg(long, default_value_t = 2500)]
    pub connect_rate: u32,
    #[arg(long, default_value = "test-key")]
    pub api_key: String,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What a run measured. Fields a scenario does not measure stay empty.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Figures {
    pub scenario: String,
    pub connections: usize,
    pub rooms: usize,
    pub connect_errors: usize,
    /// Connections the server dropped while they should have stayed.
    pub dropped: usize,
    pub rss_before_bytes: u64,
    pub rss_bytes: u64,
    pub rss_per_connection_bytes: f64,
    pub held_seconds: f64,
    pub publishes: u64,
    pub publish_errors: u64,
    pub deliveries: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub server_cpu_seconds: f64,
    pub deliveries_per_second: f64,
    pub deliveries_per_cpu_second: f64,
    pub latency: Option<Latency>,
    /// (latency ms, fraction of deliveries at or under it)
    pub latency_cdf: Vec<(f64, f64)>,
    pub recovery_seconds: Option<f64>,
    pub replayed_per_second: Option<f64>,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    latencies_us: Vec<u32>,
}

struct Fleet {
    target: SocketAddr,
    sources: SourceAddrs,
    ready: AtomicUsize,
    errors: AtomicUsize,
    dropped: AtomicUsize,
    /// Clients that have everything they were waiting for.
    complete: AtomicUsize,
    /// Messages received by all clients.
    delivered: AtomicU64,
    ack: bool,
    stop: watch::Receiver<bool>,
    connecting: Semaphore,
}

/// What a client does once connected.
struct Plan {
    room: String,
    cookie: Option<String>,
    subscribe: bool,
    /// Mark complete once these publish sequence numbers have all arrived.
    waiting_for: Option<HashSet<u64>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn room_name(i: usize) -> String {
    format!("bench-{i}")
}

async fn client_task(fleet: Arc<Fleet>, plan: Plan) -> Seen {
    let mut seen = Seen::default();
    let mut stop = fleet.stop.clone();
    let permit = fleet.connecting.acquire().await;
    let source = fleet.sources.next();
    let connected = Client::connect(fleet.target, source, plan.cookie.as_deref()).await;
    drop(permit);
    let mut client = match connected {
        Ok(c) => c,
        Err(_) => {
            fleet.errors.fetch_add(1, Ordering::Relaxed);
            return seen;
        }
    };
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
                    let at = now_us();
                    seen.latencies_us.push(at.saturating_sub(m.sent_us).min(u32::MAX as u64) as u32);
                    seen.seqs.push(m.seq);
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

struct Run {
    fleet: Arc<Fleet>,
    stop: watch::Sender<bool>,
    quiet: bool,
}

impl Run {
    fn new(args: &Args, target: SocketAddr) -> Run {
        let (stop, stop_rx) = watch::channel(false);
        Run {
            fleet: Arc::new(Fleet {
                target,
                sources: SourceAddrs::new(),
                ready: AtomicUsize::new(0),
                errors: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
                complete: AtomicUsize::new(0),
                delivered: AtomicU64::new(0),
                ack: args.ack,
                stop: stop_rx,
                connecting: Semaphore::new(512),
            }),
            stop,
            quiet: args.quiet,
        }
    }

    fn progress(&self, what: &str) {
        if !self.quiet {
            eprint!("\r{what:<78}");
            let _ = std::io::stderr().flush();
        }
    }

    /// Starts `plans` at `rate` per second and waits until each is ready or failed.
    async fn launch(&self, plans: Vec<Plan>, rate: u32) -> Vec<JoinHandle<Seen>> {
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
    /// arrives for five seconds (a server behind its load delivers late, not never).
    async fn settle(&self, expected: u64) {
        let mut last = self.fleet.delivered.load(Ordering::Relaxed);
        let mut still_since = Instant::now();
        let give_up = Instant::now() + Duration::from_secs(180);
        loop {
            let now = self.fleet.delivered.load(Ordering::Relaxed);
            if now >= expected
                || still_since.elapsed() > Duration::from_secs(5)
                || Instant::now() > give_up
            {
                return;
            }
            if now != last {
                last = now;
                still_since = Instant::now();
            }
            self.progress(&format!("delivering: {now}/{expected}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(&self, handles: Vec<JoinHandle<Seen>>) -> Vec<Seen> {
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

/// Runs `job`; returns the sequence numbers published per room.
async fn publish(
    job: Publishing<'_>,
    errors: &AtomicU64,
    stop: Option<watch::Receiver<bool>>,
) -> anyhow::Result<Vec<Vec<u64>>> {
    let Publishing {
        target,
        api_key,
        rooms,
        rate,
        limit,
        first_seq,
    } = job;
    let mut publisher = Publisher::connect(target, api_key).await?;
    let mut published = vec![Vec::new(); rooms];
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut seq = first_seq;
    loop {
        match limit {
            PublishLimit::Count(n) if seq - first_seq >= n => break,
            PublishLimit::For(d) if started.elapsed() >= d => break,
            _ => {}
        }
        if stop.as_ref().is_some_and(|s| *s.borrow()) {
            break;
        }
        tick.tick().await;
        let room = (seq as usize) % rooms;
        let payload = serde_json::json!({ "seq": seq, "sent_us": now_us() });
        match publisher.publish(&room_name(room), &payload).await {
            Ok(()) => published[room].push(seq),
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                publisher = Publisher::connect(target, api_key).await?;
            }
        }
        seq += 1;
    }
    Ok(published)
}

/// What a publisher sends: `limit` messages (or for a time) at `rate` per second, round-robin
/// over `rooms`, numbered from `first_seq`.
struct Publishing<'a> {
    target: SocketAddr,
    api_key: &'a str,
    rooms: usize,
    rate: f64,
    limit: PublishLimit,
    first_seq: u64,
}

#[derive(Clone, Copy)]
enum PublishLimit {
    Count(u64),
    For(Duration),
}

/// Messages due to all clients: each gets everything published to its room.
fn due(rooms_of: &[usize], published: &[Vec<u64>]) -> u64 {
    rooms_of.iter().map(|&r| published[r].len() as u64).sum()
}

fn latency_figures(seen: &[Seen]) -> (Option<Latency>, Vec<(f64, f64)>) {
    let mut all: Vec<u32> = seen
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    if all.is_empty() {
        return (None, Vec::new());
    }
    all.sort_unstable();
    let at = |q: f64| {
        all[((q * (all.len() - 1) as f64).round() as usize).min(all.len() - 1)] as f64 / 1000.0
    };
    let cdf = (0..=200)
        .map(|i| i as f64 / 200.0)
        .map(|q| (at(q), q))
        .collect();
    (
        Some(Latency {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }),
        cdf,
    )
}

/// Counts deliveries, loss and duplicates of each client against what was published to its room
/// (from `from_seq` on).
fn tally(
    figures: &mut Figures,
    seen: &[Seen],
    rooms_of: &[usize],
    published: &[Vec<u64>],
    from_seq: u64,
) {
    for (s, &room) in seen.iter().zip(rooms_of) {
        let expected: HashSet<u64> = published[room]
            .iter()
            .copied()
            .filter(|q| *q >= from_seq)
            .collect();
        let got: Vec<u64> = s.seqs.iter().copied().filter(|q| *q >= from_seq).collect();
        let unique: HashSet<u64> = got.iter().copied().collect();
        figures.deliveries += got.len() as u64;
        figures.expected += expected.len() as u64;
        figures.duplicated += (got.len() - unique.len()) as u64;
        figures.lost += expected.difference(&unique).count() as u64;
    }
}

fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    let host = target.trim_start_matches("http://").trim_end_matches('/');
    host.parse()
        .with_context(|| format!("target must be http://IP:PORT, got {target}"))
}

async fn cookies(args: &Args, target: SocketAddr) -> anyhow::Result<Vec<String>> {
    let sources = Arc::new(SourceAddrs::new());
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (sources, gate) = (sources.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            fetch_cookie(sources.next(), target).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

pub async fn run(args: &Args) -> anyhow::Result<Figures> {
    let target = resolve(&args.target)?;
    let pid = args.server_pid;
    let rooms = args.rooms.max(1);
    let mut figures = Figures {
        scenario: format!("{:?}", args.scenario),
        connections: args.connections,
        rooms,
        ..Figures::default()
    };
    let cookies = cookies(args, target).await?;
    let rooms_of: Vec<usize> = (0..args.connections).map(|i| i % rooms).collect();
    let plans = |waiting: &dyn Fn(usize) -> Option<HashSet<u64>>, subscribe: bool| -> Vec<Plan> {
        rooms_of
            .iter()
            .zip(&cookies)
            .map(|(&room, cookie)| Plan {
                room: room_name(room),
                cookie: Some(cookie.clone()),
                subscribe,
                waiting_for: waiting(room),
            })
            .collect()
    };
    let publish_errors = AtomicU64::new(0);
    match args.scenario {
        Kind::Idle => {
            let run = Run::new(args, target);
            figures.rss_before_bytes = procfs::rss_bytes(pid)?;
            let handles = run.launch(plans(&|_| None, true), args.connect_rate).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            figures.rss_bytes = procfs::rss_bytes(pid)?;
            let held = Instant::now();
            while held.elapsed() < Duration::from_secs(args.seconds) {
                run.progress(&format!(
                    "holding {} connections: {:.0}/{} s, dropped {}",
                    run.fleet.ready.load(Ordering::Relaxed),
                    held.elapsed().as_secs_f64(),
                    args.seconds,
                    run.fleet.dropped.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            figures.held_seconds = held.elapsed().as_secs_f64();
            figures.dropped = run.fleet.dropped.load(Ordering::Relaxed);
            figures.connect_errors = run.fleet.errors.load(Ordering::Relaxed);
            let connected = (args.connections - figures.connect_errors).max(1);
            figures.rss_per_connection_bytes =
                (figures.rss_bytes.saturating_sub(figures.rss_before_bytes)) as f64
                    / connected as f64;
            run.finish(handles).await;
        }
        Kind::Fanout => {
            let run = Run::new(args, target);
            let handles = run.launch(plans(&|_| None, true), args.connect_rate).await;
            figures.rss_bytes = procfs::rss_bytes(pid)?;
            let cpu_before = procfs::cpu_seconds(pid)?;
            let started = Instant::now();
            run.progress(&format!(
                "publishing {} /s for {} s",
                args.rate, args.seconds
            ));
            let job = Publishing {
                target,
                api_key: &args.api_key,
                rooms,
                rate: args.rate,
                limit: PublishLimit::For(Duration::from_secs(args.seconds)),
                first_seq: 0,
            };
            let published = publish(job, &publish_errors, None).await?;
            run.settle(due(&rooms_of, &published)).await;
            figures.server_cpu_seconds = procfs::cpu_seconds(pid)? - cpu_before;
            let elapsed = started.elapsed().as_secs_f64();
            figures.dropped = run.fleet.dropped.load(Ordering::Relaxed);
            figures.connect_errors = run.fleet.errors.load(Ordering::Relaxed);
            let seen = run.finish(handles).await;
            figures.publishes = published.iter().map(|p| p.len() as u64).sum();
            tally(&mut figures, &seen, &rooms_of, &published, 0);
            figures.deliveries_per_second = figures.deliveries as f64 / elapsed;
            figures.deliveries_per_cpu_second =
                figures.deliveries as f64 / figures.server_cpu_seconds.max(1e-9);
            (figures.latency, figures.latency_cdf) = latency_figures(&seen);
        }
        Kind::ReconnectStorm => {
            // Sessions subscribe, then all drop at once.
            let first = Run::new(args, target);
            let handles = first
                .launch(plans(&|_| None, true), args.connect_rate)
                .await;
            figures.connect_errors = first.fleet.errors.load(Ordering::Relaxed);
            first.finish(handles).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            // While they are away: `missed` messages per room.
            let missed = (args.missed * rooms) as u64;
            let job = Publishing {
                target,
                api_key: &args.api_key,
                rooms,
                rate: 10_000.0,
                limit: PublishLimit::Count(missed),
                first_seq: 0,
            };
            let away = publish(job, &publish_errors, None).await?;
            // All come back at once, with their cookies, while publishing goes on.
            let again = Run::new(args, target);
            let (stop_live, live_stopped) = watch::channel(false);
            let live = {
                let api_key = args.api_key.clone();
                let rate = args.rate;
                tokio::spawn(async move {
                    let errors = AtomicU64::new(0);
                    let job = Publishing {
                        target,
                        api_key: &api_key,
                        rooms,
                        rate,
                        limit: PublishLimit::For(Duration::from_secs(3600)),
                        first_seq: missed,
                    };
                    publish(job, &errors, Some(live_stopped)).await
                })
            };
            let cpu_before = procfs::cpu_seconds(pid)?;
            let storm = Instant::now();
            let waiting = |room: usize| Some(away[room].iter().copied().collect());
            let handles = again.launch(plans(&waiting, false), u32::MAX / 2).await;
            let connected = args.connections - again.fleet.errors.load(Ordering::Relaxed);
            let deadline = Duration::from_secs(120);
            while again.fleet.complete.load(Ordering::Relaxed) < connected
                && storm.elapsed() < deadline
            {
                again.progress(&format!(
                    "recovering: {}/{connected} complete after {:.1} s",
                    again.fleet.complete.load(Ordering::Relaxed),
                    storm.elapsed().as_secs_f64()
                ));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let recovery = storm.elapsed().as_secs_f64();
            let all_recovered = again.fleet.complete.load(Ordering::Relaxed) >= args.connections;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = stop_live.send(true);
            let live = live.await??;
            let mut published = away;
            for (room, seqs) in live.into_iter().enumerate() {
                published[room].extend(seqs);
            }
            again.settle(due(&rooms_of, &published)).await;
            figures.server_cpu_seconds = procfs::cpu_seconds(pid)? - cpu_before;
            figures.connect_errors += again.fleet.errors.load(Ordering::Relaxed);
            figures.dropped = again.fleet.dropped.load(Ordering::Relaxed);
            let seen = again.finish(handles).await;
            figures.publishes = published.iter().map(|p| p.len() as u64).sum();
            tally(&mut figures, &seen, &rooms_of, &published, 0);
            figures.recovery_seconds = all_recovered.then_some(recovery);
            figures.replayed_per_second =
                Some((args.missed * args.connections) as f64 / recovery.max(1e-9));
            (figures.latency, figures.latency_cdf) = latency_figures(&seen);
        }
    }
    figures.publish_errors = publish_errors.load(Ordering::Relaxed);
    Ok(figures)
}
