//! The rows of the points that hold and feed subscribers on one node or two: idle memory (1),
//! fan-out (2, 4, 5b) and the latency search (3).

use crate::report::runs::{Row, lat};

/// Point 1: connections held idle, and the memory they take.
pub(super) fn idle() -> Vec<Row> {
    vec![
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
    ]
}

/// Points 2, 4 and 5b: publishes fanned out to subscribers.
pub(super) fn fanout() -> Vec<Row> {
    vec![
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
    ]
}

/// Point 3: the highest rate within a p99 limit, and what it cost.
pub(super) fn latency_search() -> Vec<Row> {
    vec![
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
    ]
}
