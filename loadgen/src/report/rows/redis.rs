//! The rows of the Redis points on publishing and recovering: publishes accepted per second on
//! one Redis or a Redis Cluster (5a, 6), the reconnect storm (5c) and the quiet node (7).

use crate::report::runs::{Row, lat, node};
use crate::scenario::Figures;

/// Points 5a and 6: publishes with no subscribers, on one Redis or a Redis Cluster.
pub(super) fn publish_rate() -> Vec<Row> {
    vec![
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
    ]
}

/// Point 5c: the reconnect storm, and the recovery of every session.
pub(super) fn storm() -> Vec<Row> {
    vec![
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
    ]
}

/// One Redis Cluster primary's CPU per publish.
fn primary(f: &Figures, i: usize) -> Option<f64> {
    f.redis
        .as_ref()
        .and_then(|r| r.primaries.get(i))
        .map(|p| p.cpu_us_per_publish)
}

/// Point 7: what a node whose rooms get no traffic spends beside a busy one.
pub(super) fn quiet_node() -> Vec<Row> {
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
            "node B: channels subscribed, as Redis reports (CLIENT LIST sub + ssub)",
            |f| node(f, 1).and_then(|n| n.redis_channels).map(|c| c as f64),
            0,
        ),
        (
            "node B: patterns subscribed, as Redis reports (CLIENT LIST psub)",
            |f| node(f, 1).and_then(|n| n.redis_patterns).map(|c| c as f64),
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
