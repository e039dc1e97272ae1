//! The targets the figures are held against: a table of issue 11's targets and, where points
//! 7–10 (8b among them) were run, one of theirs, each target with its measured medians and
//! whether it was met.

use std::fmt::Write as _;

use super::runs::{Group, Pick, Run, Side, node, stat};
use crate::scenario::Figures;

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

/// The targets of issue 11, then those of points 7–10.
pub(super) fn targets(out: &mut String, runs: &[Run]) {
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
            Group::QuietNode | Group::Deploy | Group::ScaleOut | Group::Churn | Group::Mass
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
        // Redis's account, not the node's own counter (which counts only its rooms' messages):
        // no pattern, and no more channels than its own rooms and a heartbeat per partition.
        let patterns = median(runs, &["quiet node", on], Side::Ours, |f| {
            node(f, 1).and_then(|n| n.redis_patterns).map(|p| p as f64)
        });
        let channels = median(runs, &["quiet node", on], Side::Ours, |f| {
            node(f, 1).and_then(|n| n.redis_channels).map(|c| c as f64)
        });
        let rooms = median(runs, &["quiet node", on], Side::Ours, |f| {
            Some(f.rooms as f64)
        });
        line(
            &format!(
                "quiet node on {on}: node B under 0.02 cores, subscribed (as Redis reports) to no pattern and to no more channels than its own rooms and 64 heartbeats"
            ),
            cores.map(|c| {
                format!(
                    "{c:.3} cores, {} patterns, {} channels for {} rooms",
                    patterns.map_or("–".into(), |p| format!("{p:.0}")),
                    channels.map_or("–".into(), |c| format!("{c:.0}")),
                    rooms.map_or("–".into(), |r| format!("{r:.0}")),
                )
            }),
            cores.map(|c| {
                c < 0.02
                    && patterns.is_some_and(|p| p == 0.0)
                    && channels.zip(rooms).is_some_and(|(c, r)| c <= r + 64.0)
            }),
        );
    }
    let bad = |f: &Figures| {
        let (order, never) = match (&f.deploy, &f.churn, &f.scale_out) {
            (Some(d), ..) => (d.count.out_of_order, d.never_back),
            (_, Some(c), _) => (c.count.out_of_order, c.never_back),
            (.., Some(s)) => (s.count.out_of_order, s.never_back),
            _ => (0, 0),
        };
        Some((f.lost + f.duplicated + order + never as u64) as f64)
    };
    let balanced = median(runs, &["scale-out:"], Side::Ours, |f| {
        f.scale_out
            .as_ref()
            .map(|s| s.balanced_seconds.unwrap_or(super::runs::NEVER))
    });
    line(
        "scale-out: every node within its share ± 10 % before the watch ends (ours)",
        balanced.map(|b| {
            if b.is_finite() {
                format!("{b:.1} s after the third node started")
            } else {
                "not within the watch".into()
            }
        }),
        balanced.map(f64::is_finite),
    );
    for (what, title) in [
        ("deploy", "deploy:"),
        ("scale-out", "scale-out:"),
        ("churn", "churn:"),
    ] {
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
