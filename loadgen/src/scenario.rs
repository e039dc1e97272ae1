//! The scenarios and what they measure. Each connects a fleet of simulated clients following the
//! Twine flow (cookie, connect with it, subscribe), offers the server a fixed publish schedule,
//! and measures it from outside: resident memory and CPU time from /proc (the server's, Redis's
//! and the load generator's own), publishes offered / accepted / refused, deliveries, loss and
//! duplicates counted by the clients, and publish→deliver latency from the send time each
//! payload carries.
//!
//! `idle` and `fanout` live here; the latency search, the publish-rate run, the reconnect storm,
//! the quiet node, the rolling deploy, the scale-out, the churn, the mass disconnect and the hooks
//! have a file each.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::addrs::SourceAddrs;
use crate::fleet::{self, Plan, Run};
use crate::http::{delivery_lag, fetch_cookie};
use crate::procfs::{self, CpuSpent, CpuWindow};
use crate::publisher::{self, Limit, Schedule, Tally, room_name};
use crate::redis::CommandStat;
use crate::stats::Latency;

pub use crate::session::{Loss, RecoveryFlow};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Hold connections and report the server's memory per connection.
    Idle,
    /// Subscribers in one or more rooms, publishes offered at a fixed rate.
    Fanout,
    /// The highest publish rate at which p99 publish→deliver stays within a limit.
    LatencySearch,
    /// Publishes only (no subscribers), as many as the server accepts.
    PublishRate,
    /// Sessions drop at once while publishes go on, then all reconnect and recover.
    ReconnectStorm,
    /// Two nodes: busy rooms on the first, clients in rooms without traffic on the second; what
    /// the second spends.
    QuietNode,
    /// Clients behind a load balancer while every node is restarted in turn.
    Deploy,
    /// Clients behind a round-robin balancer; then one more node is started and added to it.
    ScaleOut,
    /// Every connection force-closed by its client every so often; recovery each time.
    Churn,
    /// The members of one room drop at once, then come back at once and recover, while another
    /// room is published to.
    MassDrop,
    /// Connects, subscribes and client publishes, each at `--concurrency` in flight, with the
    /// server's backend hooks (where it has them) deciding each.
    Hooks,
}

#[derive(clap::Args, Clone, Debug, Serialize, Deserialize)]
pub struct Args {
    #[arg(value_enum)]
    pub scenario: Kind,
    /// The server's nodes (base URLs), comma-separated: clients are spread over them, publishes
    /// go to the first.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:3005")]
    pub targets: Vec<String>,
    /// The nodes' process ids, for memory and CPU figures (summed).
    #[arg(long, value_delimiter = ',', required = true)]
    pub server_pids: Vec<u32>,
    /// The Redis the nodes share (`IP:PORT`; every primary of a cluster, comma-separated), for
    /// its CPU time and command statistics.
    #[arg(long, value_delimiter = ',')]
    pub redis: Vec<String>,
    /// Simulated clients.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Rooms the clients (and publishes) are spread over.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Publishes offered per second (fanout, publish-rate; while sessions are away in a storm;
    /// the first probe of a search).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds to publish (fanout, publish-rate) or to hold the connections (idle).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
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
    /// Publishes that may wait for their answers at once; beyond it the schedule's publishes
    /// are counted as not sent.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Publish-rate: messages put into the first room before measuring (a room with history).
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Storm: how sessions recover.
    #[arg(long, value_enum, default_value = "cookie")]
    pub recovery: RecoveryFlow,
    /// Search: seconds of each probe.
    #[arg(long, default_value_t = 3.0)]
    pub probe_seconds: f64,
    /// Search: most probes, the ramp and the bisection together.
    #[arg(long, default_value_t = 11)]
    pub max_probes: usize,
    /// Search: the p99 publish→deliver a rate must stay within.
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    /// Quiet node: subscribers of each busy room (on the first node).
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// Churn: mean seconds between two forced closes of one connection.
    #[arg(long, default_value_t = 15.0)]
    pub every: f64,
    /// Scale-out: seconds the nodes are watched after the new node is added.
    #[arg(long, default_value_t = 60.0)]
    #[serde(default)]
    pub watch_seconds: f64,
    /// Churn: how a client's connection is lost: `clean` (pending acknowledgements flushed,
    /// then a FIN) or `silent` (as a network that goes away: acknowledgements not yet sent lost,
    /// no FIN, the server learns by its ping timeout or the client's next connection).
    #[arg(long, value_enum, default_value = "clean")]
    #[serde(default)]
    pub loss: Loss,
    /// Hooks: the app backend's process id, for its CPU time.
    #[arg(long)]
    #[serde(default)]
    pub backend_pid: Option<u32>,
    /// Deploy: how to start each node again (filled in by the benchmark).
    #[arg(skip)]
    #[serde(default)]
    pub restart: Vec<crate::servers::Recipe>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// One Redis process's share of a run (a cluster's primaries each have one).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PrimaryFigures {
    pub addr: String,
    pub cpu_seconds: f64,
    pub cpu_us_per_publish: f64,
}

/// One node's share of a run (the quiet node compares two).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeFigures {
    pub clients: usize,
    /// CPU seconds per wall second.
    pub cores: f64,
    pub cpu_seconds: f64,
    /// Messages it took from Redis pub/sub meanwhile (`twine_redis_messages_received_total`).
    pub redis_messages: Option<f64>,
    /// What Redis itself reports of the node's connections (`CLIENT LIST`): channels subscribed
    /// (`sub` + `ssub`) and patterns (`psub`).
    #[serde(default)]
    pub redis_channels: Option<u64>,
    #[serde(default)]
    pub redis_patterns: Option<u64>,
}

/// Redis's share of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RedisFigures {
    /// Each primary's share, when there are several.
    #[serde(default)]
    pub primaries: Vec<PrimaryFigures>,
    pub cpu_seconds: f64,
    /// Redis process CPU time per accepted publish.
    pub cpu_us_per_publish: f64,
    /// `usec_per_call` of EVALSHA (the append script), when the server calls it.
    pub evalsha_us_per_call: Option<f64>,
    /// Microseconds of all commands (INFO commandstats) per accepted publish.
    pub commands_us_per_publish: f64,
    pub commands: BTreeMap<String, CommandStat>,
}

/// One probe of a latency search.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Probe {
    pub rate: f64,
    pub offered: u64,
    pub accepted: u64,
    /// Refused, failed or not sent.
    pub not_accepted: u64,
    pub late_or_lost: u64,
    pub latency: Option<Latency>,
    pub deliveries_per_cpu_second: f64,
    pub server_cores: f64,
    pub loadgen_cores: f64,
    pub other_cores: f64,
    pub passed: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Search {
    /// The highest rate that passed (0 when none did).
    pub found_rate: f64,
    pub probes: Vec<Probe>,
}

/// What a run measured. Fields a scenario does not measure stay empty.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figures {
    pub scenario: String,
    pub connections: usize,
    pub rooms: usize,
    pub nodes: usize,
    pub ack: bool,
    pub rate: f64,
    pub connect_errors: usize,
    /// Connections the server dropped while they should have stayed.
    pub dropped: usize,
    pub rss_before_bytes: u64,
    pub rss_bytes: u64,
    pub rss_per_connection_bytes: f64,
    pub held_seconds: f64,
    /// Publishes the schedule called for.
    pub offered: u64,
    /// Answered `201`.
    pub accepted: u64,
    /// Answered `503` or `429`.
    pub refused: u64,
    /// Any other answer, or none.
    pub failed: u64,
    /// Not sent: the publisher had `concurrency` publishes waiting for answers.
    pub unsent: u64,
    pub accepted_per_second: f64,
    /// Publish request → answer.
    pub answer_latency: Option<Latency>,
    pub deliveries: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Wall time of the measured window.
    pub seconds: f64,
    pub server_cpu_seconds: f64,
    /// Server CPU seconds per wall second (1.0 = one core busy).
    pub server_cores: f64,
    pub loadgen_cpu_seconds: f64,
    pub loadgen_cores: f64,
    /// What else kept the machine's cores busy meanwhile (a build, another benchmark): near zero
    /// for a clean run.
    pub other_cores: f64,
    /// Redis's CPU seconds per wall second, where the run has a Redis.
    pub redis_cores: Option<f64>,
    pub deliveries_per_second: f64,
    pub deliveries_per_cpu_second: f64,
    /// Server CPU time per accepted publish, in microseconds.
    pub server_cpu_us_per_publish: f64,
    pub latency: Option<Latency>,
    /// (latency ms, fraction of deliveries at or under it)
    pub latency_cdf: Vec<(f64, f64)>,
    /// Most deliveries owed at once: accepted × subscribers of the room, less delivered.
    pub peak_backlog: u64,
    /// The same in messages (per subscriber).
    pub peak_backlog_messages: f64,
    /// From the last publish sent to the last delivery.
    pub drain_seconds: f64,
    /// Highest `twine_delivery_lag_seconds` seen on `/metrics` (our server only), in ms.
    pub max_server_lag_ms: Option<f64>,
    pub redis: Option<RedisFigures>,
    pub recovery_seconds: Option<f64>,
    pub replayed_per_second: Option<f64>,
    pub sessions_complete: usize,
    pub sessions_recovered: usize,
    pub search: Option<Search>,
    /// Each node's share (quiet node).
    #[serde(default)]
    pub nodes_each: Vec<NodeFigures>,
    pub deploy: Option<crate::figures::DeployFigures>,
    #[serde(default)]
    pub scale_out: Option<crate::figures::ScaleOutFigures>,
    pub churn: Option<crate::figures::ChurnFigures>,
    pub mass: Option<crate::figures::MassFigures>,
    #[serde(default)]
    pub hooks: Option<crate::figures::HooksFigures>,
}

impl Figures {
    pub fn spent(&mut self, cpu: &CpuSpent) {
        self.redis_cores = cpu.measured_redis.then(|| cpu.redis / cpu.wall.max(1e-9));
        self.seconds = cpu.wall;
        self.server_cpu_seconds = cpu.server;
        self.server_cores = cpu.server / cpu.wall.max(1e-9);
        self.loadgen_cpu_seconds = cpu.loadgen;
        self.loadgen_cores = cpu.loadgen / cpu.wall.max(1e-9);
        self.other_cores = cpu.other / cpu.wall.max(1e-9);
    }

    /// What the clients' traces counted: deliveries, those due, lost and repeated.
    pub fn delivered(&mut self, c: &crate::session::Count) {
        (self.deliveries, self.expected, self.lost, self.duplicated) =
            (c.deliveries, c.expected, c.lost, c.duplicated);
    }

    pub fn published(&mut self, tally: &Tally) {
        self.offered = Tally::load(&tally.offered);
        self.accepted = Tally::load(&tally.accepted);
        self.refused = Tally::load(&tally.refused);
        self.failed = Tally::load(&tally.failed);
        self.unsent = Tally::load(&tally.unsent);
        self.answer_latency = tally.answer_latency.summary();
    }
}

/// The run's context: nodes, pids, the fleet's rooms.
pub struct Setup {
    pub targets: Vec<SocketAddr>,
    pub pids: Vec<u32>,
    /// Every Redis primary.
    pub redis: Vec<SocketAddr>,
    /// Their process ids (asked of Redis), for their CPU time.
    pub redis_pids: Vec<u32>,
    pub api_key: Arc<str>,
    pub rooms: usize,
    /// The room of each client.
    pub rooms_of: Vec<usize>,
    /// Clients per room.
    pub members: Vec<u64>,
}

impl Setup {
    pub async fn new(args: &Args) -> anyhow::Result<Setup> {
        let targets = args
            .targets
            .iter()
            .map(|t| resolve(t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!targets.is_empty(), "no target");
        let redis = args
            .redis
            .iter()
            .map(|r| r.parse().with_context(|| format!("--redis {r}")))
            .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
        let rooms = args.rooms.max(1);
        let rooms_of: Vec<usize> = (0..args.connections).map(|i| i % rooms).collect();
        let mut members = vec![0u64; rooms];
        for &r in &rooms_of {
            members[r] += 1;
        }
        let mut redis_pids = Vec::with_capacity(redis.len());
        for &addr in &redis {
            redis_pids.push(crate::redis::pid(addr).await?);
        }
        Ok(Setup {
            targets,
            pids: args.server_pids.clone(),
            redis,
            redis_pids,
            api_key: args.api_key.as_str().into(),
            rooms,
            rooms_of,
            members,
        })
    }

    /// Node for client `i` in connection round `round`: a client comes back on another node.
    pub fn node_of(&self, i: usize, round: usize) -> SocketAddr {
        self.targets[(i + round) % self.targets.len()]
    }

    /// One plan per client, on the nodes of `round`.
    pub fn plans(&self, cookies: &[String], round: usize, subscribe: bool) -> Vec<Plan> {
        self.rooms_of
            .iter()
            .enumerate()
            .map(|(i, &room)| Plan {
                target: self.node_of(i, round),
                room: room_name(room),
                cookie: cookies.get(i).cloned(),
                recover: None,
                subscribe,
                waiting_for: None,
            })
            .collect()
    }

    /// Deliveries due for the publishes counted in `tally` (accepted, or sent and never
    /// answered).
    pub fn due(&self, tally: &Tally) -> u64 {
        self.members
            .iter()
            .enumerate()
            .map(|(room, m)| tally.due_in(room) * m)
            .sum()
    }

    pub fn schedule(&self, rate: f64, limit: Limit, first_seq: u64, args: &Args) -> Schedule {
        Schedule {
            rate,
            limit,
            rooms: self.rooms,
            first_room: 0,
            first_seq,
            concurrency: args.concurrency,
            fresh_connections: false,
        }
    }

    /// Publishes `schedule` through the first node, counting into `tally`; returns when the last
    /// publish was sent.
    pub async fn publish(&self, schedule: Schedule, tally: &Arc<Tally>) -> std::time::Instant {
        publisher::publish(
            self.targets[0],
            self.api_key.clone(),
            schedule,
            tally.clone(),
            None,
        )
        .await
    }
}

pub fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    let host = target.trim_start_matches("http://").trim_end_matches('/');
    host.parse()
        .with_context(|| format!("target must be http://IP:PORT, got {target}"))
}

/// A `twineid` cookie per client, each from the node it will first connect to.
pub async fn cookies(setup: &Setup, connections: usize) -> anyhow::Result<Vec<String>> {
    let sources = Arc::new(SourceAddrs::new());
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let (sources, gate, target) = (sources.clone(), gate.clone(), setup.node_of(i, 0));
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

/// Watches, while publishing goes on, how many deliveries are owed (for every publish sent and
/// not refused, answered or not: a server slow to answer holds its queue there too) and (on our
/// server) the delivery lag it reports; returns `(peak owed, highest lag in ms)` once stopped.
pub fn watch_backlog(
    setup: &Setup,
    run: &Run,
    tally: &Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(u64, Option<f64>)> {
    let fleet = run.fleet.clone();
    let tally = tally.clone();
    let members = setup.members.clone();
    let targets = setup.targets.clone();
    tokio::spawn(async move {
        let mut peak = 0u64;
        let mut lag: Option<f64> = None;
        let mut ask_lag = true;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return (peak, lag),
            }
            let due: u64 = tally
                .owed_per_room
                .iter()
                .zip(&members)
                .map(|(a, m)| a.load(Ordering::Relaxed) * m)
                .sum();
            peak = peak.max(due.saturating_sub(fleet.delivered.load(Ordering::Relaxed)));
            n += 1;
            if ask_lag && n.is_multiple_of(4) {
                for &t in &targets {
                    match delivery_lag(t).await {
                        Some(l) => lag = Some(lag.unwrap_or(0.0).max(l * 1000.0)),
                        None => ask_lag = false,
                    }
                }
            }
        }
    })
}

impl Figures {
    /// The figures of a run of `args` against `setup`, before anything is measured.
    pub fn of(args: &Args, setup: &Setup) -> Figures {
        Figures {
            scenario: format!("{:?}", args.scenario),
            connections: args.connections,
            rooms: setup.rooms,
            nodes: setup.targets.len(),
            ack: args.ack,
            rate: args.rate,
            ..Figures::default()
        }
    }
}

pub async fn idle(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    let cookies = cookies(setup, args.connections).await?;
    let run = Run::new(args.ack, args.quiet);
    figures.rss_before_bytes = procfs::total_rss_bytes(&setup.pids)?;
    let handles = run
        .launch(setup.plans(&cookies, 0, true), args.connect_rate)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    figures.rss_bytes = procfs::total_rss_bytes(&setup.pids)?;
    let held = Instant::now();
    while held.elapsed().as_secs_f64() < args.seconds {
        run.progress(&format!(
            "holding {} connections: {:.0}/{} s, dropped {}",
            run.fleet.ready.load(Ordering::Relaxed),
            held.elapsed().as_secs_f64(),
            args.seconds,
            run.fleet.dropped.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    figures.held_seconds = held.elapsed().as_secs_f64();
    figures.dropped = run.fleet.dropped.load(Ordering::Relaxed);
    figures.connect_errors = run.fleet.errors.load(Ordering::Relaxed);
    let connected = (args.connections - figures.connect_errors).max(1);
    figures.rss_per_connection_bytes =
        (figures.rss_bytes.saturating_sub(figures.rss_before_bytes)) as f64 / connected as f64;
    run.finish(handles).await;
    Ok(())
}

pub async fn fanout(args: &Args, setup: &Setup, figures: &mut Figures) -> anyhow::Result<()> {
    let cookies = cookies(setup, args.connections).await?;
    let run = Run::new(args.ack, args.quiet);
    let handles = run
        .launch(setup.plans(&cookies, 0, true), args.connect_rate)
        .await;
    figures.rss_bytes = procfs::total_rss_bytes(&setup.pids)?;
    let tally = Arc::new(Tally::new(setup.rooms));
    let (stop_watch, watching) = watch::channel(false);
    let backlog = watch_backlog(setup, &run, &tally, watching);
    let cpu = CpuWindow::start(&setup.pids, &setup.redis_pids)?;
    run.progress(&format!(
        "publishing {} /s for {} s",
        args.rate, args.seconds
    ));
    let schedule = setup.schedule(
        args.rate,
        Limit::For(Duration::from_secs_f64(args.seconds)),
        0,
        args,
    );
    let published = setup.publish(schedule, &tally).await;
    let last = run.settle(setup.due(&tally), Duration::from_secs(5)).await;
    figures.spent(&cpu.spent()?);
    let _ = stop_watch.send(true);
    let (peak, lag) = backlog.await?;
    figures.drain_seconds = last.saturating_duration_since(published).as_secs_f64();
    figures.peak_backlog = peak;
    figures.peak_backlog_messages = peak as f64 / args.connections.max(1) as f64;
    figures.max_server_lag_ms = lag;
    figures.dropped = run.fleet.dropped.load(Ordering::Relaxed);
    figures.connect_errors = run.fleet.errors.load(Ordering::Relaxed);
    figures.latency = run.fleet.latency.summary();
    figures.latency_cdf = run.fleet.latency.cdf();
    let seen = run.finish(handles).await;
    figures.published(&tally);
    (
        figures.deliveries,
        figures.expected,
        figures.lost,
        figures.duplicated,
    ) = fleet::tally(&seen, &setup.rooms_of, &tally.due_seqs(), 0);
    finish_rates(figures);
    Ok(())
}

/// Rates derived from counts and CPU time.
pub fn finish_rates(figures: &mut Figures) {
    figures.deliveries_per_second = figures.deliveries as f64 / figures.seconds.max(1e-9);
    figures.deliveries_per_cpu_second =
        figures.deliveries as f64 / figures.server_cpu_seconds.max(1e-9);
    figures.server_cpu_us_per_publish =
        figures.server_cpu_seconds * 1e6 / (figures.accepted.max(1)) as f64;
}
