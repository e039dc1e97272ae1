//! The rows of the backend hooks (11): connects, subscribes and client publishes, their rates,
//! latency and server CPU per operation, and the server's own account of each hook call.

use crate::report::runs::Row;
use crate::scenario::Figures;

/// The hooks scenario's own figures.
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

/// Point 11: connects, subscribes and client publishes with every hook on.
pub(super) fn rows() -> Vec<Row> {
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
