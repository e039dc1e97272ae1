//! The rows of churn (9): connections force-closed by their clients again and again, what each
//! recovery replayed and what the clients lost.

use crate::report::runs::{Row, lat};
use crate::scenario::Figures;

/// The churn's own figures.
fn churned(f: &Figures) -> Option<&crate::figures::ChurnFigures> {
    f.churn.as_ref()
}

/// Point 9: connections force-closed by their clients, and recovered.
pub(super) fn rows() -> Vec<Row> {
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
