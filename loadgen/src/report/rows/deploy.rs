//! The rows of the rolling deploy (8): every node restarted in turn behind the load balancer,
//! each restart's figures and their mean, what the clients lost and how soon they were back.

use crate::report::runs::{Row, lat};
use crate::scenario::Figures;

/// The deploy's own figures.
fn deployed(f: &Figures) -> Option<&crate::figures::DeployFigures> {
    f.deploy.as_ref()
}

/// The mean of one figure over a deploy's restarts.
fn per_restart(f: &Figures, pick: fn(&crate::figures::Restart) -> f64) -> Option<f64> {
    let r = &deployed(f)?.restarts;
    (!r.is_empty()).then(|| r.iter().map(pick).sum::<f64>() / r.len() as f64)
}

/// Connections the balancer held open to node `i` at the end of the deploy (not measured before
/// the balancer counted them).
fn at_end(f: &Figures, i: usize) -> Option<f64> {
    deployed(f)?.sockets_at_end.get(i).map(|&n| n as f64)
}

/// Point 8: the rolling deploy behind the load balancer.
pub(super) fn rows() -> Vec<Row> {
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
            "connections the balancer closed: no node ready",
            |f| deployed(f)?.no_ready_node.map(|n| n as f64),
            0,
        ),
        (
            "clients that never came back",
            |f| deployed(f).map(|d| d.never_back as f64),
            0,
        ),
        ("node 1: sockets at the end", |f| at_end(f, 0), 0),
        ("node 2: sockets at the end", |f| at_end(f, 1), 0),
        ("node 3: sockets at the end", |f| at_end(f, 2), 0),
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
