//! The rows of the mass disconnect and recovery of one room (10): the node's CPU per member, how
//! soon it settled, and another room's latency meanwhile.

use crate::report::runs::Row;
use crate::scenario::Figures;

/// The mass disconnect's own figures.
fn massed(f: &Figures) -> Option<&crate::figures::MassFigures> {
    f.mass.as_ref()
}

/// Point 10: the mass disconnect and recovery of one room.
pub(super) fn rows() -> Vec<Row> {
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
