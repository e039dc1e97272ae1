//! BENCHMARKS.md: the method (points, pinning, open-loop publisher, repeats, machine, date,
//! command), a table per point with ours, the peer and their ratio (each cell the median of the
//! runs and their range), the targets of issue 11, and two SVG charts drawn here. A section
//! filled by hand (what an idle connection holds, from a heap profile) is carried over from the
//! existing report when it is regenerated, and a profile kept beside the raw figures
//! (`bench/profile.md`) ends the report.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::scenario::Figures;
use crate::servers::{Deployment, Redis, Server};
use crate::stats::spread;

/// The sections of the report, in order.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Group {
    Idle,
    Fanout,
    Latency,
    Cores,
    RedisPublish,
    RedisFanout,
    RedisStorm,
    RedisCluster,
    QuietNode,
    Deploy,
    Churn,
    Mass,
    Hooks,
}

impl Group {
    fn heading(self) -> &'static str {
        match self {
            Group::Idle => "1. Idle memory per WebSocket connection",
            Group::Fanout => "2. Fan-out with acknowledgements on and off",
            Group::Latency => {
                "3. Latency under load: the highest rate within a p99 limit, and overload"
            }
            Group::Cores => "4. Many rooms on both cores",
            Group::RedisPublish => "5a. Redis mode: publishes accepted per second",
            Group::RedisFanout => "5b. Redis mode: cross-node fan-out",
            Group::RedisStorm => "5c. Redis mode: reconnect storm with recovery",
            Group::RedisCluster => "6. Redis Cluster: publishes accepted per second",
            Group::QuietNode => "7. A node whose rooms get no traffic",
            Group::Deploy => "8. Deploy: every node restarted in turn behind a load balancer",
            Group::Churn => "9. Churn: connections force-closed by their clients",
            Group::Mass => "10. Mass disconnect and mass recovery of one room",
            Group::Hooks => "11. Backend hooks: connects, subscribes and client publishes",
        }
    }

    /// What the section's points have in common, said once above their tables.
    fn intro(self) -> Option<&'static str> {
        Some(match self {
            Group::Cores => {
                "Left: our server and the load generator unpinned, both free to use both cores. \
                 Right: our server pinned to core 0, the load generator to core 1. The ratio of \
                 \"server CPU, cores busy\" shows how much of a second core delivery used."
            }
            Group::RedisPublish => {
                "No subscribers. Ours: one node; the peer: two nodes, all publishes into the first \
                 (each is sent to the other over Redis pub/sub). Redis shares core 1 with the load \
                 generator."
            }
            Group::RedisCluster => {
                "As 5a, on a Redis Cluster of three primaries (no replicas), all three pinned to \
                 core 1 with the load generator. Ours: one node given the three primaries as \
                 seeds (it finds the cluster by itself and publishes with sharded pub/sub). The \
                 peer: two nodes with `@socket.io/redis-adapter`'s `createShardedAdapter` \
                 (`subscriptionMode: \"dynamic\"`, a channel per room) on a `redis` v4 \
                 `createCluster` client (`js-fixtures/node-peer/redis-sharded.mjs`), all \
                 publishes into the first. Redis CPU is read from /proc of each redis-server: per \
                 primary and in total."
            }
            Group::QuietNode => {
                "Two nodes on core 0. Node A holds one subscriber (acknowledging) in each busy \
                 room and takes every publish; node B holds the other clients, in rooms nobody \
                 publishes to. What node B spends meanwhile is the point: its CPU and the messages \
                 it took from Redis pub/sub (`twine_redis_messages_received_total` on `/metrics`; \
                 the Node peers count what their subscribing Redis client hands to the adapter, \
                 under the same name). On one Redis the peer is the classic \
                 `@socket.io/redis-adapter` (every node receives every broadcast); on the \
                 cluster, the sharded adapter with a channel per room."
            }
            Group::Deploy => {
                "Three nodes on core 0 and one Redis, behind a TCP load balancer inside the load \
                 generator (core 1): each new connection goes round robin to a node whose \
                 `GET /ready` answered `200` in the last 0.5 s (asked every 250 ms; any other \
                 answer, or a refused connection, takes it out at once); connections \
                 to a node that stops being ready are not cut by the balancer. Clients connect \
                 over WebSocket through it, acknowledge every message and reconnect by \
                 themselves with socket.io-client's backoff (0.5–1.5 s, doubling to 5 s), ours \
                 with the `twineid` cookie, the peer's with `pid` and offset as stock \
                 socket.io-client does; publishes go through the balancer too, a new connection \
                 each. After 3 s of publishing, every node in turn gets SIGTERM, is waited for \
                 until it exits and is started again (same port, same flags); the next follows 3 s \
                 after every client is connected again (1 s in a smoke run). \"Surviving nodes' CPU\" is the other two \
                 nodes' CPU from the SIGTERM until every client was back. The peer has no drain: \
                 on SIGTERM it closes every connection and exits (its `/ready` answers `503` \
                 meanwhile), so its rows are alike in both points."
            }
            Group::Churn => {
                "One node each, no Redis: ours in memory, the peer socket.io 4.8 with \
                 `connectionStateRecovery` and its in-memory adapter \
                 (`js-fixtures/node-peer/recovery.mjs`). Every session first receives one \
                 message (so a socket.io session has an offset to recover from); then each \
                 client closes its own connection (no WebSocket close, as when a network goes \
                 away) at a random moment, the first spread over one period, then every 0.5–1.5 \
                 periods, and reconnects after socket.io-client's backoff (0.5–1.5 s), ours with \
                 its cookie, the peer's with `pid` and offset. Replay latency is publish → \
                 delivered for messages published before the reconnect that delivered them \
                 began."
            }
            Group::Mass => {
                "One node each, no Redis (ours in memory; the peer socket.io 4.8 with \
                 `connectionStateRecovery`, in memory). N members of one room and one client of \
                 another room, which gets a publish every 20 ms throughout. First every member \
                 closes at once; then 3 messages are published to their room; then all N come \
                 back at once (ours with their cookies, the peer's with `pid` and offset) and \
                 must each get the 3. Node CPU per member is the node's CPU from the moment they \
                 dropped (or began to reconnect) until its CPU had been back within 0.05 core of \
                 its rate before (the other room's traffic alone) for 0.5 s, less that rate (CPU \
                 read from each thread's `schedstat`, to the nanosecond); the \
                 other room's latency is over the same span. Figures of an earlier build of ours \
                 come from the same command with `--twine` pointing at it."
            }
            Group::Hooks => {
                "Both columns are our server, one node, no Redis; the left one with every hook on \
                 (`--connect-hook-url`, `--subscribe-hook-url`, `--publish-hook-url`, \
                 `--client-publish hook`) calling `js-fixtures/backend.mjs` (node:http, every \
                 hook allowing, checking every call's signature) pinned to core 1 beside the load \
                 generator; the right one with no hooks (`--auth optional --client-publish \
                 token`). The ratio is hooks on ÷ hooks off. One token is minted first (`publish` \
                 claim `hooks-*`); every client fetches its cookie; a first round of 500 other \
                 clients (all of them in a smoke run), not measured, warms the backend and the \
                 server's connections to it. Then three phases run one after another, 64 operations in flight in each: every client connects (the \
                 token in its connect packet; latency to the connect reply), subscribes to one \
                 room (to `roomJoined`), and sends 5 `publish` events with acknowledgements, one \
                 after another, into rooms nobody subscribes to (so the publish, not its \
                 fan-out, is measured; latency to the acknowledgement). Each phase's rate is its \
                 operations ÷ its wall time; server CPU per operation is the server's CPU over \
                 the phase (each thread's `schedstat`) ÷ its operations. A hook call's mean is \
                 the server's own account (`twine_hook_seconds` sum ÷ count on `/metrics`): the \
                 signed HTTP call to the backend and its answer."
            }
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Side {
    Ours,
    Peer,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub group: Group,
    pub title: String,
    pub side: Side,
    pub server: Server,
    pub label: String,
    /// The load generator was pinned to its own core.
    pub pinned: bool,
    pub repeat: usize,
    pub figures: Figures,
}

/// What the whole benchmark was.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub of_record: bool,
    /// Servers and load generator pinned to separate cores.
    pub pinned: bool,
    pub repeats: usize,
    pub minutes: f64,
    pub machine: String,
    pub date: String,
    /// Our server's binary, version and build time.
    #[serde(default)]
    pub server: String,
}

/// A deployment's name in table headers.
pub fn label(d: Deployment) -> String {
    let nodes = |n: usize| {
        if n == 1 {
            "1 node".to_owned()
        } else {
            format!("{n} nodes")
        }
    };
    let redis = match d.redis {
        Redis::None => "",
        Redis::One => " + Redis",
        Redis::Cluster => " + Redis Cluster (3 primaries)",
    };
    let mut name = match d.server {
        Server::Twine if d.redis != Redis::None => format!("twine, {}{redis}", nodes(d.nodes)),
        Server::Twine => "twine".to_owned(),
        Server::Node => "Node socket.io 4.8".to_owned(),
        Server::NodeRecovery => "Node socket.io 4.8 + connectionStateRecovery".to_owned(),
        Server::NodeRedisAdapter => {
            format!("Node socket.io 4.8 + redis-adapter, {}", nodes(d.nodes))
        }
        Server::NodeRedisSharded => format!(
            "Node socket.io 4.8 + sharded redis-adapter (dynamic), {}{redis}",
            nodes(d.nodes)
        ),
        Server::NodeRedisStreams => format!(
            "Node socket.io 4.8 + connectionStateRecovery + redis-streams-adapter, {}",
            nodes(d.nodes)
        ),
    };
    if d.backend {
        name.push_str(", every hook on (backend on core 1)");
    }
    if !d.flags.is_empty() {
        name.push_str(&format!(", {}", d.flags.join(" ")));
    }
    if !d.pinned {
        name.push_str(", both cores (unpinned)");
    }
    name
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem_gib:.0} GiB memory, Linux {}",
        kernel.trim()
    )
}

pub fn now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A figure of a run; `None` where the run does not have it.
type Pick = fn(&Figures) -> Option<f64>;

/// The median (and range) of one figure over a side's runs of a point.
fn stat(runs: &[&Run], pick: Pick) -> Option<(f64, f64, f64)> {
    let values: Vec<f64> = runs.iter().filter_map(|r| pick(&r.figures)).collect();
    spread(&values)
}

fn cell(s: Option<(f64, f64, f64)>, digits: usize) -> String {
    match s {
        None => "–".into(),
        Some((m, lo, hi)) if (hi - lo).abs() < 0.5 * 10f64.powi(-(digits as i32)) => {
            format!("{m:.digits$}")
        }
        Some((m, lo, hi)) => format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})"),
    }
}

/// Ours / peer of the medians, where both show as non-zero at the table's precision.
fn ratio(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>, digits: usize) -> String {
    let shown = |v: f64| v.is_finite() && v.abs() >= 0.5 * 10f64.powi(-(digits as i32));
    match (a, b) {
        (Some((a, ..)), Some((b, ..))) if shown(a) && shown(b) => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn lat(f: &Figures, q: fn(&crate::stats::Latency) -> f64) -> Option<f64> {
    f.latency.as_ref().map(q)
}

/// The rows of a point's table, by scenario.
fn rows(scenario: &str) -> Vec<(&'static str, Pick, usize)> {
    match scenario {
        "Idle" => vec![
            (
                "connections held",
                |f| Some((f.connections - f.connect_errors) as f64),
                0,
            ),
            ("connect errors", |f| Some(f.connect_errors as f64), 0),
            ("dropped while held", |f| Some(f.dropped as f64), 0),
            (
                "server RSS, MiB",
                |f| Some(f.rss_bytes as f64 / 1048576.0),
                1,
            ),
            (
                "server RSS per connection, KB",
                |f| Some(f.rss_per_connection_bytes / 1024.0),
                2,
            ),
        ],
        "Fanout" => vec![
            ("publishes offered", |f| Some(f.offered as f64), 0),
            ("accepted (201)", |f| Some(f.accepted as f64), 0),
            ("refused (503/429)", |f| Some(f.refused as f64), 0),
            (
                "failed or not sent",
                |f| Some((f.failed + f.unsent) as f64),
                0,
            ),
            ("deliveries", |f| Some(f.deliveries as f64), 0),
            ("lost", |f| Some(f.lost as f64), 0),
            ("duplicated", |f| Some(f.duplicated as f64), 0),
            (
                "deliveries per second",
                |f| Some(f.deliveries_per_second),
                0,
            ),
            ("server CPU, cores busy", |f| Some(f.server_cores), 2),
            (
                "deliveries per server CPU-second",
                |f| Some(f.deliveries_per_cpu_second),
                0,
            ),
            ("latency p50, ms", |f| lat(f, |l| l.p50_ms), 1),
            ("latency p99, ms", |f| lat(f, |l| l.p99_ms), 1),
            ("latency max, ms", |f| lat(f, |l| l.max_ms), 1),
            (
                "peak queue, deliveries owed",
                |f| Some(f.peak_backlog as f64),
                0,
            ),
            (
                "peak queue, messages per subscriber",
                |f| Some(f.peak_backlog_messages),
                1,
            ),
            (
                "drain after the last publish, s",
                |f| Some(f.drain_seconds),
                2,
            ),
            (
                "server-reported delivery lag, max ms",
                |f| f.max_server_lag_ms,
                0,
            ),
            (
                "load generator CPU, cores busy",
                |f| Some(f.loadgen_cores),
                2,
            ),
            (
                "other load on the machine, cores busy",
                |f| Some(f.other_cores),
                2,
            ),
        ],
        "LatencySearch" => vec![
            (
                "highest rate within the p99 limit, publishes/s",
                |f| f.search.as_ref().map(|s| s.found_rate),
                0,
            ),
            (
                "… deliveries per second at that rate",
                |f| {
                    f.search
                        .as_ref()
                        .map(|s| s.found_rate * f.connections as f64)
                },
                0,
            ),
            (
                "… latency p50 at that rate, ms",
                |f| lat(f, |l| l.p50_ms),
                1,
            ),
            (
                "… latency p99 at that rate, ms",
                |f| lat(f, |l| l.p99_ms),
                1,
            ),
            (
                "… deliveries per server CPU-second",
                |f| {
                    f.search
                        .as_ref()
                        .filter(|s| s.found_rate > 0.0)
                        .map(|_| f.deliveries_per_cpu_second)
                },
                0,
            ),
            ("… server CPU, cores busy", |f| Some(f.server_cores), 2),
            (
                "… load generator CPU, cores busy",
                |f| Some(f.loadgen_cores),
                2,
            ),
            (
                "other load on the machine, most in a probe, cores busy",
                |f| Some(f.other_cores),
                2,
            ),
            (
                "probes",
                |f| f.search.as_ref().map(|s| s.probes.len() as f64),
                0,
            ),
            ("lost (all probes)", |f| Some(f.lost as f64), 0),
            ("duplicated (all probes)", |f| Some(f.duplicated as f64), 0),
        ],
        "PublishRate" => vec![
            ("offered per second", |f| Some(f.rate), 0),
            ("accepted per second", |f| Some(f.accepted_per_second), 0),
            ("refused (503/429)", |f| Some(f.refused as f64), 0),
            ("failed", |f| Some(f.failed as f64), 0),
            (
                "answer p50, ms",
                |f| f.answer_latency.as_ref().map(|l| l.p50_ms),
                2,
            ),
            (
                "answer p99, ms",
                |f| f.answer_latency.as_ref().map(|l| l.p99_ms),
                2,
            ),
            (
                "server CPU per publish, µs (all nodes)",
                |f| Some(f.server_cpu_us_per_publish),
                1,
            ),
            (
                "server CPU, cores busy (all nodes)",
                |f| Some(f.server_cores),
                2,
            ),
            (
                "Redis CPU per publish, µs (/proc)",
                |f| f.redis.as_ref().map(|r| r.cpu_us_per_publish),
                1,
            ),
            ("… primary 1, µs per publish", |f| primary(f, 0), 1),
            ("… primary 2, µs per publish", |f| primary(f, 1), 1),
            ("… primary 3, µs per publish", |f| primary(f, 2), 1),
            (
                "Redis's ceiling at that cost (one core ÷ CPU per publish), publishes/s",
                |f| {
                    f.redis
                        .as_ref()
                        .filter(|r| r.cpu_us_per_publish > 0.0 && r.primaries.is_empty())
                        .map(|r| 1e6 / r.cpu_us_per_publish)
                },
                0,
            ),
            (
                "the cluster's ceiling at that cost (one core ÷ its busiest primary's CPU per publish), publishes/s",
                |f| {
                    let busiest = f
                        .redis
                        .as_ref()?
                        .primaries
                        .iter()
                        .map(|p| p.cpu_us_per_publish)
                        .reduce(f64::max)?;
                    (busiest > 0.0).then(|| 1e6 / busiest)
                },
                0,
            ),
            (
                "Redis command time per publish, µs (commandstats)",
                |f| f.redis.as_ref().map(|r| r.commands_us_per_publish),
                1,
            ),
            (
                "EVALSHA usec_per_call",
                |f| f.redis.as_ref().and_then(|r| r.evalsha_us_per_call),
                1,
            ),
            (
                "load generator CPU, cores busy",
                |f| Some(f.loadgen_cores),
                2,
            ),
            (
                "other load on the machine, cores busy",
                |f| Some(f.other_cores),
                2,
            ),
        ],
        "QuietNode" => quiet_rows(),
        "Deploy" => deploy_rows(),
        "Churn" => churn_rows(),
        "MassDrop" => mass_rows(),
        "Hooks" => hooks_rows(),
        _ => vec![
            ("sessions", |f| Some(f.connections as f64), 0),
            (
                "sessions with every message due",
                |f| Some(f.sessions_complete as f64),
                0,
            ),
            (
                "sessions the server recovered",
                |f| Some(f.sessions_recovered as f64),
                0,
            ),
            (
                "time until every session had its messages, s",
                |f| f.recovery_seconds,
                2,
            ),
            ("replayed messages per second", |f| f.replayed_per_second, 0),
            (
                "messages due (missed + live)",
                |f| Some(f.expected as f64),
                0,
            ),
            ("lost", |f| Some(f.lost as f64), 0),
            ("duplicated", |f| Some(f.duplicated as f64), 0),
            (
                "publishes refused or failed",
                |f| Some((f.refused + f.failed + f.unsent) as f64),
                0,
            ),
            (
                "server CPU seconds (all nodes)",
                |f| Some(f.server_cpu_seconds),
                2,
            ),
            (
                "load generator CPU, cores busy",
                |f| Some(f.loadgen_cores),
                2,
            ),
            (
                "other load on the machine, cores busy",
                |f| Some(f.other_cores),
                2,
            ),
        ],
    }
}

fn primary(f: &Figures, i: usize) -> Option<f64> {
    f.redis
        .as_ref()
        .and_then(|r| r.primaries.get(i))
        .map(|p| p.cpu_us_per_publish)
}

/// Node A (`0`) or B (`1`) of the quiet node.
fn node(f: &Figures, i: usize) -> Option<&crate::scenario::NodeFigures> {
    f.nodes_each.get(i)
}

type Rows = Vec<(&'static str, Pick, usize)>;

fn quiet_rows() -> Rows {
    vec![
        ("publishes offered per second", |f| Some(f.rate), 0),
        ("accepted per second", |f| Some(f.accepted_per_second), 0),
        (
            "refused or failed",
            |f| Some((f.refused + f.failed + f.unsent) as f64),
            0,
        ),
        (
            "node B: clients (rooms without traffic)",
            |f| node(f, 1).map(|n| n.clients as f64),
            0,
        ),
        (
            "node B: CPU, cores busy",
            |f| node(f, 1).map(|n| n.cores),
            3,
        ),
        (
            "node B: messages taken from Redis",
            |f| node(f, 1).and_then(|n| n.redis_messages),
            0,
        ),
        (
            "node B: messages taken from Redis per second",
            |f| {
                node(f, 1)
                    .and_then(|n| n.redis_messages)
                    .map(|m| m / f.seconds.max(1e-9))
            },
            0,
        ),
        (
            "node A: subscribers",
            |f| node(f, 0).map(|n| n.clients as f64),
            0,
        ),
        (
            "node A: CPU, cores busy",
            |f| node(f, 0).map(|n| n.cores),
            2,
        ),
        (
            "node A: messages taken from Redis",
            |f| node(f, 0).and_then(|n| n.redis_messages),
            0,
        ),
        ("node A: deliveries", |f| Some(f.deliveries as f64), 0),
        ("node A: lost", |f| Some(f.lost as f64), 0),
        ("node A: duplicated", |f| Some(f.duplicated as f64), 0),
        ("node A: latency p50, ms", |f| lat(f, |l| l.p50_ms), 1),
        ("node A: latency p99, ms", |f| lat(f, |l| l.p99_ms), 1),
        (
            "Redis CPU, cores busy (all primaries)",
            |f| f.redis_cores,
            2,
        ),
        (
            "load generator CPU, cores busy",
            |f| Some(f.loadgen_cores),
            2,
        ),
        (
            "other load on the machine, cores busy",
            |f| Some(f.other_cores),
            2,
        ),
    ]
}

fn deployed(f: &Figures) -> Option<&crate::figures::DeployFigures> {
    f.deploy.as_ref()
}

/// The mean of one figure over a deploy's restarts.
fn per_restart(f: &Figures, pick: fn(&crate::figures::Restart) -> f64) -> Option<f64> {
    let r = &deployed(f)?.restarts;
    (!r.is_empty()).then(|| r.iter().map(pick).sum::<f64>() / r.len() as f64)
}

fn deploy_rows() -> Rows {
    vec![
        ("clients", |f| Some(f.connections as f64), 0),
        ("publishes accepted", |f| Some(f.accepted as f64), 0),
        (
            "publishes refused or failed",
            |f| Some((f.refused + f.failed + f.unsent) as f64),
            0,
        ),
        ("messages due (all clients)", |f| Some(f.expected as f64), 0),
        ("lost (all clients)", |f| Some(f.lost as f64), 0),
        (
            "lost per client (mean)",
            |f| Some(f.lost as f64 / f.connections.max(1) as f64),
            2,
        ),
        (
            "most lost by one client",
            |f| deployed(f).map(|d| d.count.most_lost as f64),
            0,
        ),
        (
            "clients that lost any",
            |f| deployed(f).map(|d| d.count.sessions_with_loss as f64),
            0,
        ),
        ("repeated (all clients)", |f| Some(f.duplicated as f64), 0),
        (
            "repeated per client (mean)",
            |f| Some(f.duplicated as f64 / f.connections.max(1) as f64),
            2,
        ),
        (
            "most repeated to one client",
            |f| deployed(f).map(|d| d.count.most_duplicated as f64),
            0,
        ),
        (
            "out of order",
            |f| deployed(f).map(|d| d.count.out_of_order as f64),
            0,
        ),
        (
            "reconnections",
            |f| deployed(f).map(|d| d.reconnects as f64),
            0,
        ),
        (
            "peak reconnections per second (on the surviving nodes)",
            |f| deployed(f).map(|d| d.peak_reconnects_per_second as f64),
            0,
        ),
        (
            "longest a client was away, s",
            |f| deployed(f).map(|d| d.longest_away_ms / 1000.0),
            2,
        ),
        (
            "longest a message took to reach a client (publish → deliver, max), s",
            |f| {
                let d = deployed(f)?;
                let max = |l: &Option<crate::stats::Latency>| l.as_ref().map_or(0.0, |l| l.max_ms);
                Some(max(&d.replayed).max(max(&d.live)) / 1000.0)
            },
            2,
        ),
        (
            "replayed messages: publish → deliver p99, ms",
            |f| deployed(f)?.replayed.as_ref().map(|l| l.p99_ms),
            0,
        ),
        (
            "replayed messages: reconnect begun → delivered p99, ms",
            |f| deployed(f)?.replay_after_connect.as_ref().map(|l| l.p99_ms),
            1,
        ),
        (
            "live messages: publish → deliver p99, ms",
            |f| lat(f, |l| l.p99_ms),
            1,
        ),
        (
            "surviving nodes' CPU during a drain, cores busy (mean of 3)",
            |f| per_restart(f, |r| r.surviving_cores),
            2,
        ),
        (
            "surviving nodes' CPU during a drain, cores busy (most)",
            |f| {
                deployed(f)?
                    .restarts
                    .iter()
                    .map(|r| r.surviving_cores)
                    .reduce(f64::max)
            },
            2,
        ),
        (
            "SIGTERM → exit, s (mean)",
            |f| per_restart(f, |r| r.drain_seconds),
            2,
        ),
        (
            "SIGTERM → every client connected again, s (mean)",
            |f| per_restart(f, |r| r.back_seconds),
            2,
        ),
        (
            "exit → started and ready again, s (mean)",
            |f| per_restart(f, |r| r.start_seconds),
            2,
        ),
        (
            "namespace disconnects (`41`) received",
            |f| deployed(f).map(|d| d.kicked as f64),
            0,
        ),
        (
            "reconnections the server did not recover (socket.io)",
            |f| deployed(f).map(|d| d.not_recovered as f64),
            0,
        ),
        (
            "failed connection attempts",
            |f| deployed(f).map(|d| d.failed_attempts as f64),
            0,
        ),
        (
            "clients that never came back",
            |f| deployed(f).map(|d| d.never_back as f64),
            0,
        ),
        (
            "servers' CPU over the whole deploy, cores busy (all nodes)",
            |f| Some(f.server_cores),
            2,
        ),
        (
            "load generator CPU, cores busy",
            |f| Some(f.loadgen_cores),
            2,
        ),
        (
            "other load on the machine, cores busy",
            |f| Some(f.other_cores),
            2,
        ),
    ]
}

fn churned(f: &Figures) -> Option<&crate::figures::ChurnFigures> {
    f.churn.as_ref()
}

fn churn_rows() -> Rows {
    vec![
        ("clients", |f| Some(f.connections as f64), 0),
        (
            "forced closes",
            |f| churned(f).map(|c| c.forced_closes as f64),
            0,
        ),
        (
            "reconnections",
            |f| churned(f).map(|c| c.reconnects as f64),
            0,
        ),
        ("publishes accepted", |f| Some(f.accepted as f64), 0),
        ("messages due (all clients)", |f| Some(f.expected as f64), 0),
        (
            "delivered, % of due",
            |f| churned(f).map(|c| 100.0 * c.delivered_share),
            3,
        ),
        ("lost", |f| Some(f.lost as f64), 0),
        ("duplicated", |f| Some(f.duplicated as f64), 0),
        (
            "out of order",
            |f| churned(f).map(|c| c.count.out_of_order as f64),
            0,
        ),
        (
            "replayed messages",
            |f| churned(f)?.replayed.as_ref().map(|l| l.samples as f64),
            0,
        ),
        (
            "replay latency p50, ms",
            |f| churned(f)?.replayed.as_ref().map(|l| l.p50_ms),
            1,
        ),
        (
            "replay latency p99, ms",
            |f| churned(f)?.replayed.as_ref().map(|l| l.p99_ms),
            1,
        ),
        (
            "replay latency max, ms",
            |f| churned(f)?.replayed.as_ref().map(|l| l.max_ms),
            0,
        ),
        (
            "… of which the server's: reconnect begun → replayed message delivered, p50, ms",
            |f| churned(f)?.replay_after_connect.as_ref().map(|l| l.p50_ms),
            1,
        ),
        (
            "… the same, p99, ms",
            |f| churned(f)?.replay_after_connect.as_ref().map(|l| l.p99_ms),
            1,
        ),
        ("live latency p99, ms", |f| lat(f, |l| l.p99_ms), 1),
        (
            "longest a client was away, s",
            |f| churned(f).map(|c| c.longest_away_ms / 1000.0),
            2,
        ),
        (
            "reconnections the server did not recover (socket.io)",
            |f| churned(f).map(|c| c.not_recovered as f64),
            0,
        ),
        (
            "connections closed by the server",
            |f| churned(f).map(|c| c.closed_by_server as f64),
            0,
        ),
        (
            "clients not connected at the end",
            |f| churned(f).map(|c| c.never_back as f64),
            0,
        ),
        ("server CPU, cores busy", |f| Some(f.server_cores), 2),
        (
            "server CPU per reconnection, µs",
            |f| {
                churned(f)
                    .filter(|c| c.reconnects > 0)
                    .map(|c| f.server_cpu_seconds * 1e6 / c.reconnects as f64)
            },
            0,
        ),
        (
            "load generator CPU, cores busy",
            |f| Some(f.loadgen_cores),
            2,
        ),
        (
            "other load on the machine, cores busy",
            |f| Some(f.other_cores),
            2,
        ),
    ]
}

fn massed(f: &Figures) -> Option<&crate::figures::MassFigures> {
    f.mass.as_ref()
}

fn mass_rows() -> Rows {
    vec![
        ("members", |f| massed(f).map(|m| m.members as f64), 0),
        (
            "node CPU before, other room only, cores busy",
            |f| massed(f).map(|m| m.idle_cores),
            3,
        ),
        (
            "disconnect: node CPU per member, µs",
            |f| massed(f).map(|m| m.disconnect.cpu_us_per_member),
            1,
        ),
        (
            "disconnect: time until the node's CPU settled, s",
            |f| massed(f).map(|m| m.disconnect.settle_seconds),
            2,
        ),
        (
            "disconnect: other room's p99, ms",
            |f| massed(f)?.disconnect.other_room.as_ref().map(|l| l.p99_ms),
            1,
        ),
        (
            "disconnect: other room's max, ms",
            |f| massed(f)?.disconnect.other_room.as_ref().map(|l| l.max_ms),
            1,
        ),
        (
            "recovery: time until every member had its missed messages, s",
            |f| massed(f)?.recovery.done_seconds,
            2,
        ),
        (
            "recovery: time until the node's CPU settled, s",
            |f| massed(f).map(|m| m.recovery.settle_seconds),
            2,
        ),
        (
            "recovery: node CPU per member, µs",
            |f| massed(f).map(|m| m.recovery.cpu_us_per_member),
            1,
        ),
        (
            "recovery: other room's p99, ms",
            |f| massed(f)?.recovery.other_room.as_ref().map(|l| l.p99_ms),
            1,
        ),
        (
            "recovery: other room's max, ms",
            |f| massed(f)?.recovery.other_room.as_ref().map(|l| l.max_ms),
            1,
        ),
        (
            "members with every missed message",
            |f| massed(f).map(|m| m.complete as f64),
            0,
        ),
        (
            "members whose session was recovered",
            |f| massed(f).map(|m| m.recovered as f64),
            0,
        ),
        ("lost", |f| Some(f.lost as f64), 0),
        ("duplicated", |f| Some(f.duplicated as f64), 0),
        ("connect errors", |f| Some(f.connect_errors as f64), 0),
    ]
}

fn hooked(f: &Figures) -> Option<&crate::figures::HooksFigures> {
    f.hooks.as_ref()
}

/// A phase's latency quantile.
fn phase_lat(
    f: &Figures,
    phase: fn(&crate::figures::HooksFigures) -> &crate::figures::HooksPhase,
    q: fn(&crate::stats::Latency) -> f64,
) -> Option<f64> {
    phase(hooked(f)?).latency.as_ref().map(q)
}

fn hooks_rows() -> Rows {
    vec![
        ("clients", |f| hooked(f).map(|h| h.clients as f64), 0),
        (
            "connects per second",
            |f| hooked(f).map(|h| h.connect.per_second),
            0,
        ),
        (
            "connect latency p50, ms",
            |f| phase_lat(f, |h| &h.connect, |l| l.p50_ms),
            1,
        ),
        (
            "connect latency p99, ms",
            |f| phase_lat(f, |h| &h.connect, |l| l.p99_ms),
            1,
        ),
        (
            "connects refused or failed",
            |f| hooked(f).map(|h| (h.connects_refused + h.connects_failed) as f64),
            0,
        ),
        (
            "server CPU per connect, µs",
            |f| hooked(f).map(|h| h.connect.server_cpu_us),
            0,
        ),
        (
            "subscribes per second",
            |f| hooked(f).map(|h| h.subscribe.per_second),
            0,
        ),
        (
            "subscribe latency p50, ms",
            |f| phase_lat(f, |h| &h.subscribe, |l| l.p50_ms),
            1,
        ),
        (
            "subscribe latency p99, ms",
            |f| phase_lat(f, |h| &h.subscribe, |l| l.p99_ms),
            1,
        ),
        (
            "subscribes refused or unanswered",
            |f| hooked(f).map(|h| (h.subscribes_refused + h.subscribes_failed) as f64),
            0,
        ),
        (
            "server CPU per subscribe, µs",
            |f| hooked(f).map(|h| h.subscribe.server_cpu_us),
            0,
        ),
        (
            "client publishes per second",
            |f| hooked(f).map(|h| h.publish.per_second),
            0,
        ),
        (
            "publish → acknowledgement p50, ms",
            |f| phase_lat(f, |h| &h.publish, |l| l.p50_ms),
            1,
        ),
        (
            "publish → acknowledgement p99, ms",
            |f| phase_lat(f, |h| &h.publish, |l| l.p99_ms),
            1,
        ),
        (
            "publishes acknowledged ok",
            |f| hooked(f).map(|h| h.publishes_ok as f64),
            0,
        ),
        (
            "publishes refused",
            |f| hooked(f).map(|h| h.publishes_refused as f64),
            0,
        ),
        (
            "publishes unanswered",
            |f| hooked(f).map(|h| h.publishes_failed as f64),
            0,
        ),
        (
            "server CPU per publish, µs",
            |f| hooked(f).map(|h| h.publish.server_cpu_us),
            0,
        ),
        (
            "connect hook: calls",
            |f| hooked(f)?.connect_hook.as_ref().map(|h| h.calls),
            0,
        ),
        (
            "connect hook: mean per call, ms",
            |f| hooked(f)?.connect_hook.as_ref()?.mean_ms,
            2,
        ),
        (
            "subscribe hook: calls",
            |f| hooked(f)?.subscribe_hook.as_ref().map(|h| h.calls),
            0,
        ),
        (
            "subscribe hook: mean per call, ms",
            |f| hooked(f)?.subscribe_hook.as_ref()?.mean_ms,
            2,
        ),
        (
            "publish hook: calls",
            |f| hooked(f)?.publish_hook.as_ref().map(|h| h.calls),
            0,
        ),
        (
            "publish hook: mean per call, ms",
            |f| hooked(f)?.publish_hook.as_ref()?.mean_ms,
            2,
        ),
        (
            "hook calls failed (timeout, unreachable, garbled, busy)",
            |f| {
                let h = hooked(f)?;
                let calls = [&h.connect_hook, &h.subscribe_hook, &h.publish_hook];
                let failed: Vec<f64> = calls
                    .iter()
                    .filter_map(|c| Some(c.as_ref()?.failed))
                    .collect();
                (!failed.is_empty()).then(|| failed.iter().sum())
            },
            0,
        ),
        (
            "server CPU, cores busy (all three phases)",
            |f| Some(f.server_cores),
            2,
        ),
        ("backend CPU, cores busy", |f| hooked(f)?.backend_cores, 2),
        (
            "load generator CPU, cores busy",
            |f| Some(f.loadgen_cores),
            2,
        ),
        (
            "other load on the machine, cores busy",
            |f| Some(f.other_cores),
            2,
        ),
    ]
}

fn side<'a>(runs: &'a [Run], title: &str, side: Side) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| r.title == title && r.side == side)
        .collect()
}

fn table(out: &mut String, title: &str, ours: &[&Run], peer: &[&Run]) {
    let head = |rs: &[&Run]| rs.first().map_or("–".to_owned(), |r| r.label.clone());
    let _ = writeln!(out, "\n#### {title}\n");
    let _ = writeln!(out, "| figure | {} | {} | ratio |", head(ours), head(peer));
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let scenario = ours
        .first()
        .or(peer.first())
        .map_or("", |r| r.figures.scenario.as_str());
    for (name, pick, digits) in rows(scenario) {
        let (a, b) = (stat(ours, pick), stat(peer, pick));
        if a.is_none() && b.is_none() {
            continue;
        }
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            cell(a, digits),
            cell(b, digits),
            ratio(a, b, digits)
        );
    }
    if scenario == "LatencySearch" {
        for rs in [ours, peer] {
            for r in rs {
                let Some(search) = &r.figures.search else {
                    continue;
                };
                let probes: Vec<String> = search
                    .probes
                    .iter()
                    .map(|p| {
                        let p99 = p.latency.as_ref().map_or(f64::NAN, |l| l.p99_ms);
                        let refused = if p.not_accepted > 0 {
                            format!(", {} not accepted", p.not_accepted)
                        } else {
                            String::new()
                        };
                        format!(
                            "{:.0}/s {} (p99 {p99:.0} ms{refused})",
                            p.rate,
                            if p.passed { "✓" } else { "✗" }
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "\n{} run {}: {}",
                    r.label,
                    r.repeat + 1,
                    probes.join(", ")
                );
            }
        }
    }
}

/// The medians of one figure of a point, for the targets.
fn median(runs: &[Run], title_has: &[&str], side_: Side, pick: Pick) -> Option<f64> {
    let rs: Vec<&Run> = runs
        .iter()
        .filter(|r| r.side == side_ && title_has.iter().all(|t| r.title.contains(t)))
        .collect();
    stat(&rs, pick).map(|s| s.0)
}

/// One row of a targets table.
fn target_line(out: &mut String, target: &str, measured: Option<String>, met: Option<bool>) {
    let met = match met {
        Some(true) => "met",
        Some(false) => "not met",
        None => "not run",
    };
    let _ = writeln!(
        out,
        "| {target} | {} | {met} |",
        measured.unwrap_or_else(|| "–".into())
    );
}

fn targets(out: &mut String, runs: &[Run]) {
    let _ = writeln!(
        out,
        "\n## Targets (issue 11)\n\n| target | measured (medians) | met |\n|---|---|---|"
    );
    let mut line = |target: &str, measured: Option<String>, met: Option<bool>| {
        target_line(out, target, measured, met)
    };
    let kb = median(runs, &["idle, 10000 connections"], Side::Ours, |f| {
        Some(f.rss_per_connection_bytes / 1024.0)
    });
    line(
        "idle memory ≤ 16 KB per WebSocket connection at 10,000 (goal 8 KB)",
        kb.map(|k| format!("{k:.2} KB")),
        kb.map(|k| k <= 16.0),
    );
    let p99 = |f: &Figures| f.latency.as_ref().map(|l| l.p99_ms);
    for n in ["2000", "5000"] {
        let with = median(runs, &["fan-out, ", n, "acks on"], Side::Ours, p99);
        let without = median(runs, &["fan-out, ", n, "acks off"], Side::Ours, p99);
        let both = with.zip(without);
        line(
            &format!("{n} subscribers × 20/s: p99 with acks within 1.25× of p99 without"),
            both.map(|(a, b)| format!("{a:.1} ms with, {b:.1} ms without ({:.2}×)", a / b)),
            both.map(|(a, b)| a <= 1.25 * b),
        );
    }
    let per_cpu = |f: &Figures| Some(f.deliveries_per_cpu_second);
    let ours = median(runs, &["fan-out, 2000", "acks on"], Side::Ours, per_cpu);
    let node = median(runs, &["fan-out, 2000", "acks on"], Side::Peer, per_cpu);
    line(
        "deliveries per server CPU-second with acks ≥ 2× Node's at 2,000 × 20/s",
        ours.zip(node)
            .map(|(a, b)| format!("{a:.0} against {b:.0} ({:.2}×)", a / b)),
        ours.zip(node).map(|(a, b)| a >= 2.0 * b),
    );
    let ours = median(runs, &["fan-out, 5000", "acks on"], Side::Ours, per_cpu);
    line(
        "deliveries per server CPU-second with acks ≥ 200k at 5,000 × 20/s (goal 400k)",
        ours.map(|a| format!("{a:.0}")),
        ours.map(|a| a >= 200_000.0),
    );
    let found = |f: &Figures| f.search.as_ref().map(|s| s.found_rate);
    let ours = median(runs, &["latency search", "≤ 50 ms"], Side::Ours, found);
    let node = median(runs, &["latency search", "≤ 50 ms"], Side::Peer, found);
    line(
        "highest rate into 5,000 subscribers (acks on) with p99 ≤ 50 ms ≥ 2× Node's",
        ours.zip(node).map(|(a, b)| {
            let r = if b > 0.0 {
                format!("{:.2}×", a / b)
            } else {
                "–".into()
            };
            format!("{a:.0}/s against {b:.0}/s ({r})")
        }),
        ours.zip(node).map(|(a, b)| a >= 2.0 * b && a > 0.0),
    );
    let refused = median(runs, &["overload"], Side::Ours, |f| Some(f.refused as f64));
    let max = median(runs, &["overload"], Side::Ours, |f| {
        f.latency.as_ref().map(|l| l.max_ms)
    });
    let drain = median(runs, &["overload"], Side::Ours, |f| Some(f.drain_seconds));
    line(
        "overloaded: no seconds of hidden queue (max latency and drain < 1 s; refusing publishes is how)",
        refused.zip(max).zip(drain).map(|((r, m), d)| {
            format!(
                "{r:.0} refused, max latency {m:.0} ms, drained {d:.2} s after the last publish"
            )
        }),
        refused
            .zip(max)
            .zip(drain)
            .map(|((_, m), d)| m < 1000.0 && d < 1.0),
    );
    let hot = median(runs, &["Redis: publishes", "one room"], Side::Ours, |f| {
        Some(f.accepted_per_second)
    });
    let cpu = median(runs, &["Redis: publishes", "one room"], Side::Ours, |f| {
        f.redis.as_ref().map(|r| r.cpu_us_per_publish)
    });
    line(
        "Redis mode: ≥ 20k publishes/s into one room holding 10,000 messages, one node",
        hot.map(|h| {
            format!(
                "{h:.0}/s; Redis CPU {} µs per publish",
                cpu.map_or("–".into(), |c| format!("{c:.1}"))
            )
        }),
        hot.map(|h| h >= 20_000.0),
    );
    let lost = median(runs, &["reconnect storm"], Side::Ours, |f| {
        Some((f.lost + f.duplicated) as f64)
    });
    line(
        "Redis reconnect storm: zero lost or duplicated (ours)",
        lost.map(|l| format!("{l:.0} lost or duplicated")),
        lost.map(|l| l == 0.0),
    );
    later_targets(out, runs);
}

/// The targets of points 7–9, where they were run.
fn later_targets(out: &mut String, runs: &[Run]) {
    if !runs.iter().any(|r| {
        matches!(
            r.group,
            Group::QuietNode | Group::Deploy | Group::Churn | Group::Mass
        )
    }) {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Targets of points 7–10\n\n| target | measured (medians) | met |\n|---|---|---|"
    );
    let mut line = |target: &str, measured: Option<String>, met: Option<bool>| {
        target_line(out, target, measured, met)
    };
    for on in ["one Redis", "a Redis Cluster"] {
        let cores = median(runs, &["quiet node", on], Side::Ours, |f| {
            node(f, 1).map(|n| n.cores)
        });
        let taken = median(runs, &["quiet node", on], Side::Ours, |f| {
            node(f, 1).and_then(|n| n.redis_messages)
        });
        line(
            &format!("quiet node on {on}: node B under 0.02 cores, ~0 messages from Redis"),
            cores.map(|c| {
                format!(
                    "{c:.3} cores, {} messages",
                    taken.map_or("–".into(), |t| format!("{t:.0}"))
                )
            }),
            cores.map(|c| c < 0.02 && taken.is_none_or(|t| t < 10.0)),
        );
    }
    let bad = |f: &Figures| {
        let (order, never) = match (&f.deploy, &f.churn) {
            (Some(d), _) => (d.count.out_of_order, d.never_back),
            (_, Some(c)) => (c.count.out_of_order, c.never_back),
            _ => (0, 0),
        };
        Some((f.lost + f.duplicated + order + never as u64) as f64)
    };
    for (what, title) in [("deploy", "deploy:"), ("churn", "churn:")] {
        let n = median(runs, &[title], Side::Ours, bad);
        line(
            &format!("{what}: every message delivered once, in order, every client back (ours)"),
            n.map(|n| format!("{n:.0} lost, repeated, out of order or never back")),
            n.map(|n| n == 0.0),
        );
    }
    let title = ["mass disconnect", "18000 members"];
    let cpu = median(runs, &title, Side::Ours, |f| {
        f.mass.as_ref().map(|m| m.disconnect.cpu_us_per_member)
    });
    line(
        "18,000 members of one room drop at once: ≤ 20 µs of node CPU each",
        cpu.map(|c| format!("{c:.0} µs")),
        cpu.map(|c| c <= 20.0),
    );
    let p99 = median(runs, &title, Side::Ours, |f| {
        f.mass
            .as_ref()
            .and_then(|m| m.disconnect.other_room.as_ref())
            .map(|l| l.p99_ms)
    });
    line(
        "while they drop: another room's p99 publish → deliver ≤ 50 ms",
        p99.map(|p| format!("{p:.0} ms")),
        p99.map(|p| p <= 50.0),
    );
    let per_cpu = |f: &Figures| Some(f.deliveries_per_cpu_second);
    let ours = median(runs, &["fan-out, 5000", "acks on"], Side::Ours, per_cpu);
    line(
        "deliveries per server CPU-second with acks ≥ 150k at 5,000 × 20/s",
        ours.map(|a| format!("{a:.0}")),
        ours.map(|a| a >= 150_000.0),
    );
}

const COLORS: [RGBColor; 2] = [RGBColor(91, 91, 214), RGBColor(230, 120, 40)];

/// One chart: a line per side (with point markers when asked), axes from zero.
struct Chart<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_max: f64,
    y_max: f64,
    markers: bool,
}

impl Chart<'_> {
    fn draw(&self, path: &Path, lines: Vec<(String, Vec<(f64, f64)>)>) -> anyhow::Result<()> {
        let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..self.x_max, 0f64..self.y_max)?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .draw()?;
        for (i, (name, points)) in lines.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            if self.markers {
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// The CDF of the median run (by p99) of each side of the 5,000-subscriber fan-out with acks.
fn latency_chart(path: &Path, runs: &[Run]) -> anyhow::Result<()> {
    let title = runs
        .iter()
        .filter(|r| r.group == Group::Fanout && r.figures.ack)
        .min_by_key(|r| r.figures.connections)
        .map(|r| r.title.clone())
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut p99s = Vec::new();
    for s in [Side::Ours, Side::Peer] {
        let mut rs = side(runs, &title, s);
        rs.retain(|r| r.figures.latency.is_some());
        rs.sort_by(|a, b| {
            let p = |r: &Run| r.figures.latency.as_ref().map_or(0.0, |l| l.p99_ms);
            p(a).total_cmp(&p(b))
        });
        if let Some(r) = rs.get(rs.len() / 2) {
            p99s.push(r.figures.latency.as_ref().map_or(1.0, |l| l.p99_ms));
            lines.push((r.label.clone(), r.figures.latency_cdf.clone()));
        }
    }
    // A side far slower than the other would squash it: the axis stops at ten times the faster
    // side's p99, and slower deliveries are drawn at the edge.
    let fastest = p99s.iter().copied().fold(f64::INFINITY, f64::min);
    let slowest = p99s.iter().copied().fold(1.0, f64::max);
    let x_max = (slowest * 1.5).min(fastest * 15.0).max(1.0);
    for (_, points) in &mut lines {
        for p in points.iter_mut() {
            p.0 = p.0.min(x_max);
        }
    }
    let caption = format!("publish→deliver latency: {title}");
    let chart = Chart {
        caption: &caption,
        x_desc: "latency, ms",
        y_desc: "fraction of deliveries",
        x_max,
        y_max: 1.0,
        markers: false,
    };
    chart.draw(path, lines)
}

fn memory_chart(path: &Path, runs: &[Run]) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    for s in [Side::Ours, Side::Peer] {
        let mut titles: Vec<&str> = runs
            .iter()
            .filter(|r| r.group == Group::Idle && r.side == s)
            .map(|r| r.title.as_str())
            .collect();
        titles.dedup();
        let points: Vec<(f64, f64)> = titles
            .iter()
            .filter_map(|t| {
                let rs = side(runs, t, s);
                let n = rs.first()?.figures.connections as f64;
                let kb = stat(&rs, |f| Some(f.rss_per_connection_bytes / 1024.0))?.0;
                Some((n, kb))
            })
            .collect();
        if let Some(r) = runs.iter().find(|r| r.group == Group::Idle && r.side == s) {
            lines.push((r.label.clone(), points));
        }
    }
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = all.map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let chart = Chart {
        caption: "server memory per idle WebSocket connection (median)",
        x_desc: "connections",
        y_desc: "RSS per connection, KB",
        x_max,
        y_max,
        markers: true,
    };
    chart.draw(path, lines)
}

const HAND_FILLED: &str = "## What an idle connection holds";

const PROFILE: &str = "## Where the time goes";

/// `bench/profile.md` (a profile of a point, written by hand beside the raw figures), as the
/// report's last section: under its own `## ` heading if it has one, else under `PROFILE`.
fn profile(bench: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bench.join("profile.md")).ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(if text.starts_with("## ") {
        text.to_owned()
    } else {
        format!("{PROFILE}\n\n{text}")
    })
}

/// The hand-filled section of an existing report, if any, up to the next `## ` heading.
fn carried_over(out: &Path) -> Option<String> {
    let old = std::fs::read_to_string(out).ok()?;
    let start = old.find(HAND_FILLED)?;
    let rest = &old[start + HAND_FILLED.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    Some(
        format!("{HAND_FILLED}{}", &rest[..end])
            .trim_end()
            .to_owned(),
    )
}

fn method(text: &mut String, meta: &Meta) {
    let pinning = if meta.pinned {
        "Every server process is pinned to core 0 with `taskset -c 0` (two nodes share it), the \
         load generator to core 1 with `taskset -c 1`, and Redis, when a point uses it, shares \
         core 1 with the load generator (all three primaries of a Redis Cluster, and the deploy's \
         load balancer, which runs inside the load generator, too). The one exception is point 4, \
         where our server and the load generator both run unpinned on both cores, to show \
         delivery using more than one core."
    } else {
        "This machine has fewer than two cores, so nothing is pinned: the load generator and the \
         servers share its core, which inflates latency for both servers alike."
    };
    let _ = writeln!(
        text,
        "## Method\n\n\
         Our server and the peer a user would pick instead, measured in the same run on the same \
         machine with the same load generator (`loadgen/`), one point at a time, ours then the \
         peer, each on fresh processes (and a fresh Redis where one is used). Clients follow the \
         Twine flow over loopback (GET /set-cookie, WebSocket connect with the cookie, subscribe, \
         and, with acks on, `updateSessionTS` for every message as twine-client-library does), \
         from source addresses spread over 127.0.0.0/8. The peers are in `js-fixtures/node-peer/`: \
         `server.mjs` (socket.io 4.8, no adapter), `redis-adapter.mjs` (`@socket.io/redis-adapter`) \
         and `redis-streams.mjs` (`connectionStateRecovery` with `@socket.io/redis-streams-adapter`, \
         whose clients recover with `pid` and offset as stock socket.io-client does).\n\n\
         - **Pinning**: {pinning}\n\
         - **Same offered load**: the publisher is open-loop: it sends `POST /api/twine` on a fixed \
           schedule without waiting for earlier answers, on pooled keep-alive connections, at most \
           256 unanswered at once (64 for the publish-rate points, where it acts like wrk with 64 \
           connections). Each table reports publishes offered, accepted (`201`), refused (`503`/`429`: \
           our server refuses publishes while live delivery runs more than `--max-delivery-lag` \
           500 ms behind, its documented overload behaviour) and failed or not sent (no answer, \
           another status, or the in-flight bound reached).\n\
         - **What is measured**: server memory (RSS) and CPU time (user + system, summed over \
           nodes) from /proc; Redis's CPU from /proc and `INFO commandstats`; the load generator's \
           own CPU from /proc (\"load generator CPU, cores busy\" near 1.00 means it, not the \
           server, may have been the limit); publish→deliver latency from the send time each \
           payload carries (one clock); loss and duplicates per client against the publishes \
           accepted for its room; the queue a server builds as deliveries owed (publishes sent and \
           not refused × subscribers − delivered, sampled every 50 ms) and the time from the last \
           publish sent to the last delivery. \"Other load on the machine\" is the CPU time the \
           rest of the machine used meanwhile (from /proc/stat, less the servers, Redis and the \
           load generator): the machine is shared, so before each run the benchmark waits (up \
           to three minutes) for it to be quiet, and a run during which other work kept more \
           than 0.3 cores busy is run again (twice at most).\n\
         - **Repeats**: each point is run {} time(s); a cell is the median, with the range \
           (min–max) in parentheses when the runs differ. The ratio is ours / peer of the medians.\n\
         - Our server runs with `--max-connections-per-ip 0` (one source address carries every \
           connection) and `--publish-rate 1000000 --publish-burst 1000000` (the API key's rate \
           limit is not what is measured); everything else is default, `--max-delivery-lag 500ms` \
           included.\n\
         - Machine: {}\n\
         - Date: {}\n\
         - Our server: {}\n\
         - Command: `cargo build --release -p twine -p twine-loadgen && ./target/release/loadgen bench{}` \
           ({:.0} minutes)",
        meta.repeats,
        meta.machine,
        meta.date,
        meta.server,
        if meta.of_record { "" } else { " --scale smoke" },
        meta.minutes
    );
    if !meta.of_record {
        let _ = writeln!(
            text,
            "- Smoke run: seconds per point, not figures of record."
        );
    }
    let _ = writeln!(
        text,
        "\nPoints: (1) idle memory per connection at 1k/5k/10k/18k (one process may open 20,000 \
         files here); (2) fan-out into one room, 2,000 and 5,000 subscribers × 20 publishes/s, \
         acks on and off; (3) a search for the highest publish rate into 5,000 subscribers (acks \
         on) with p99 ≤ 50 ms, and the same with p99 ≤ 250 ms: each probe offers one rate for \
         3 s and passes only if every publish was accepted, every delivery arrived and p99 stayed \
         within the limit; rates double from 10/s while they pass (halve while they fail, down \
         to 1/s), then a geometric bisection narrows to about 10 %; then one point offered well \
         above both servers' capacity; (4) many rooms, our server on both cores against one; (5) \
         Redis mode: (a) publishes per second with no subscribers into one room already holding \
         10,000 messages and over 1,000 rooms, one node of ours against two Node nodes with the \
         redis-adapter (publishing into one), (b) fan-out across two nodes sharing one Redis, \
         subscribers split over both, publishing into one, (c) a reconnect storm: every session \
         receives one message, all drop, messages are published while they are away, then all \
         come back at once on the other node while publishing goes on at 20/s. (6) 5a on a Redis \
         Cluster of three primaries, against the sharded redis-adapter; (7) a node whose clients \
         are all in rooms without traffic, beside a node taking 10,000 publishes/s: what it \
         spends and what it takes from Redis; (8) a rolling deploy of three nodes behind a load \
         balancer that skips unready nodes, each node stopped with SIGTERM and started again \
         while 3,000 acknowledging clients reconnect by themselves, with our drain closing at \
         once and paced; (9) churn: 10,000 clients (fewer where the open-files limit is lower) \
         each force-closing its own connection about every 15 s for a minute while each of 50 \
         rooms gets one publish per second; (10) the mass disconnect and recovery of 5,000, \
         10,000 and 18,000 members of one room, with another room's latency meanwhile; (11) \
         2,000 clients connecting, subscribing and publishing 5 messages each with every backend \
         hook on (the backend on core 1) against our server without hooks: the cost of each \
         hook call. Each section says how its point runs."
    );
}

pub fn write(out: &Path, meta: &Meta, runs: &[Run]) -> anyhow::Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let charts = dir.join("bench");
    std::fs::create_dir_all(&charts).with_context(|| format!("creating {}", charts.display()))?;
    let mut text = String::new();
    let _ = writeln!(text, "# Benchmarks\n");
    method(&mut text, meta);
    let _ = writeln!(text, "\n## Results");
    let mut group = None;
    let mut titles: Vec<&str> = runs.iter().map(|r| r.title.as_str()).collect();
    titles.dedup();
    for title in titles {
        let ours = side(runs, title, Side::Ours);
        let peer = side(runs, title, Side::Peer);
        let g = ours.first().or(peer.first()).map(|r| r.group);
        if g != group {
            group = g;
            if let Some(g) = g {
                let _ = writeln!(text, "\n### {}", g.heading());
                if let Some(intro) = g.intro() {
                    let _ = writeln!(text, "\n{intro}");
                }
            }
        }
        table(&mut text, title, &ours, &peer);
    }
    targets(&mut text, runs);
    let _ = writeln!(text);
    match carried_over(out) {
        Some(section) => {
            let _ = writeln!(text, "{section}\n");
        }
        None => {
            let _ = writeln!(
                text,
                "{HAND_FILLED}\n\n_To be filled by hand: a table of what an idle WebSocket \
                 connection holds on our server, by owner, from a heaptrack profile of N idle \
                 connections (live heap per allocation site divided by N). `loadgen bench` keeps \
                 this section as it finds it._\n"
            );
        }
    }
    latency_chart(&charts.join("latency-cdf.svg"), runs)?;
    memory_chart(&charts.join("memory-per-connection.svg"), runs)?;
    let _ = writeln!(
        text,
        "## Charts\n\n![publish→deliver latency CDF](bench/latency-cdf.svg)\n\n![memory per connection](bench/memory-per-connection.svg)"
    );
    if let Some(profile) = profile(&charts) {
        let _ = writeln!(text, "\n{profile}");
    }
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    // The raw figures, so the report can be redrawn without measuring again.
    let raw = serde_json::json!({ "meta": meta, "runs": runs });
    std::fs::write(
        charts.join("runs.json"),
        serde_json::to_string_pretty(&raw)?,
    )?;
    Ok(())
}

/// Redraws a report from the `runs.json` a benchmark left beside it.
pub fn rewrite(out: &Path) -> anyhow::Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = dir.join("bench/runs.json");
    let raw: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let meta: Meta = serde_json::from_value(raw["meta"].clone())
        .with_context(|| format!("{}: no benchmark metadata", path.display()))?;
    let runs: Vec<Run> = serde_json::from_value(raw["runs"].clone())?;
    write(out, &meta, &runs)
}
