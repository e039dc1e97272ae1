//! The rows of the scale-out (8b): a third node added behind the round-robin balancer, how soon
//! every node held its share, where the sockets stood at the end, and what the clients lost on the
//! way.

use crate::figures::ScaleOutFigures;
use crate::report::runs::{NEVER, Row};
use crate::scenario::Figures;

/// The scale-out's own figures.
fn scaled(f: &Figures) -> Option<&ScaleOutFigures> {
    f.scale_out.as_ref()
}

/// Sockets on node `i` at the end of the watch.
fn at_end(f: &Figures, i: usize) -> Option<f64> {
    scaled(f)?.sockets_at_end.get(i).map(|&n| n as f64)
}

/// Nodes within their share (clients ÷ nodes) ± the tolerance at the end of the watch.
fn within(f: &Figures) -> Option<f64> {
    let s = scaled(f)?;
    let share = f.connections as f64 / s.sockets_at_end.len().max(1) as f64;
    Some(
        s.sockets_at_end
            .iter()
            .filter(|&&c| (c as f64 - share).abs() <= s.tolerance * share)
            .count() as f64,
    )
}

/// A count per client.
fn per_client(f: &Figures, n: u64) -> Option<f64> {
    Some(n as f64 / f.connections.max(1) as f64)
}

/// Point 8b: the scale-out.
pub(super) fn rows() -> Vec<Row> {
    vec![
        ("clients", |f| Some(f.connections as f64), 0),
        ("publishes accepted", |f| Some(f.accepted as f64), 0),
        (
            "publishes refused or failed",
            |f| Some((f.refused + f.failed + f.unsent) as f64),
            0,
        ),
        (
            "node started → in service at the balancer, s",
            |f| scaled(f)?.ready_seconds,
            2,
        ),
        (
            "node started → every node within its share ± 10 %, s (never: not within the watch)",
            |f| scaled(f).map(|s| s.balanced_seconds.unwrap_or(NEVER)),
            1,
        ),
        (
            "nodes within their share ± 10 % at the end of the watch (of 3)",
            within,
            0,
        ),
        (
            "node 1: sockets at the end of the watch",
            |f| at_end(f, 0),
            0,
        ),
        (
            "node 2: sockets at the end of the watch",
            |f| at_end(f, 1),
            0,
        ),
        (
            "node 3 (added): sockets at the end of the watch",
            |f| at_end(f, 2),
            0,
        ),
        (
            "reconnections during the watch",
            |f| scaled(f).map(|s| s.reconnects as f64),
            0,
        ),
        (
            "peak reconnections per second",
            |f| scaled(f).map(|s| s.peak_reconnects_per_second as f64),
            0,
        ),
        (
            "failed connection attempts during the watch (refused handshakes among them)",
            |f| scaled(f).map(|s| s.failed_attempts as f64),
            0,
        ),
        (
            "connections the balancer closed: no node ready",
            |f| scaled(f).map(|s| s.no_ready_node as f64),
            0,
        ),
        ("messages due (all clients)", |f| Some(f.expected as f64), 0),
        ("lost per client (mean)", |f| per_client(f, f.lost), 3),
        (
            "most lost by one client",
            |f| scaled(f).map(|s| s.count.most_lost as f64),
            0,
        ),
        (
            "repeated per client (mean)",
            |f| per_client(f, f.duplicated),
            3,
        ),
        (
            "most repeated to one client",
            |f| scaled(f).map(|s| s.count.most_duplicated as f64),
            0,
        ),
        (
            "out of order per client (mean)",
            |f| per_client(f, scaled(f)?.count.out_of_order),
            3,
        ),
        (
            "live messages during the watch: publish → deliver p99, ms",
            |f| scaled(f)?.live.as_ref().map(|l| l.p99_ms),
            1,
        ),
        (
            "live messages during the watch: publish → deliver max, ms",
            |f| scaled(f)?.live.as_ref().map(|l| l.max_ms),
            0,
        ),
        (
            "replayed messages: publish → deliver p99, ms",
            |f| scaled(f)?.replayed.as_ref().map(|l| l.p99_ms),
            0,
        ),
        (
            "longest a client was away, s",
            |f| scaled(f).map(|s| s.longest_away_ms / 1000.0),
            2,
        ),
        (
            "namespace disconnects (`41`) received",
            |f| scaled(f).map(|s| s.kicked as f64),
            0,
        ),
        (
            "reconnections the server did not recover (socket.io)",
            |f| scaled(f).map(|s| s.not_recovered as f64),
            0,
        ),
        (
            "clients that never came back",
            |f| scaled(f).map(|s| s.never_back as f64),
            0,
        ),
        (
            "servers' CPU during the watch, cores busy (3 nodes)",
            |f| Some(f.server_cores),
            2,
        ),
        (
            "load generator CPU during the watch, cores busy",
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
