//! BENCHMARKS.md: the method, a table per point with ours, the peer and their ratio (each cell
//! the median of the runs and their range), the targets of issue 11, two SVG charts, the section
//! filled by hand and the profile kept beside the raw figures. This module puts the report
//! together and keeps its raw figures (`bench/runs.json`) to redraw it from; what it draws lives
//! below: the runs and their summaries in `runs`, the prose in `prose`, a point's table in `table`
//! with its rows by scenario in `rows`, the targets in `targets` and the charts in `charts`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

mod charts;
mod prose;
mod rows;
mod runs;
mod table;
mod targets;

pub use runs::{
    Group, Later, Meta, Run, Side, commit, label, machine, node_version, now, redis_version,
};

use charts::{latency_chart, memory_chart};
use prose::{hand_filled, method, profile};
use runs::side;
use table::table;
use targets::targets;

/// Writes the report to `out`, its charts and raw figures to `bench/` beside it.
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
                let older_balancer = runs.iter().any(|r| {
                    r.group == g
                        && r.figures
                            .deploy
                            .as_ref()
                            .is_some_and(|d| d.no_ready_node.is_none())
                });
                if older_balancer {
                    let _ = writeln!(
                        text,
                        "\nThe runs below are from before the balancer checked as described: it \
                         asked every 250 ms, took a node out at its first failed check or 0.5 s \
                         after its last `200`, and did not count the sockets at the end nor the \
                         connections it could not place (those rows are missing)."
                    );
                }
            }
        }
        table(&mut text, title, &ours, &peer);
    }
    targets(&mut text, runs);
    let _ = writeln!(text);
    let _ = writeln!(text, "{}\n", hand_filled(out));
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

/// The metadata and runs of the `runs.json` a benchmark left beside the report at `out`.
fn read(out: &Path) -> anyhow::Result<(Meta, Vec<Run>)> {
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
    Ok((meta, runs))
}

/// Redraws a report from the `runs.json` a benchmark left beside it.
pub fn rewrite(out: &Path) -> anyhow::Result<()> {
    let (meta, runs) = read(out)?;
    write(out, &meta, &runs)
}

/// Puts `runs` (some points, measured now) into the report at `out` in place of those points'
/// earlier runs, keeping every other point's runs and the report's metadata, which records when
/// and on what build these points were measured.
pub fn merge(out: &Path, meta: &Meta, runs: Vec<Run>) -> anyhow::Result<()> {
    let (mut old, earlier) = read(out)?;
    anyhow::ensure!(
        old.of_record == meta.of_record,
        "{}: a smoke run and a run of record do not mix",
        out.display()
    );
    let mut titles: Vec<String> = runs.iter().map(|r| r.title.clone()).collect();
    titles.dedup();
    let mut all: Vec<Run> = earlier
        .into_iter()
        .filter(|r| !titles.contains(&r.title))
        .collect();
    all.extend(runs);
    // The report's order of sections (a stable sort keeps each section's points in order).
    all.sort_by_key(|r| r.group);
    for later in &mut old.later {
        later.titles.retain(|t| !titles.contains(t));
    }
    old.later.retain(|l| !l.titles.is_empty());
    old.later.push(Later {
        titles,
        repeats: meta.repeats,
        minutes: meta.minutes,
        date: meta.date.clone(),
        server: meta.server.clone(),
        commit: meta.commit.clone(),
        node: meta.node.clone(),
        redis: meta.redis.clone(),
    });
    write(out, &old, &all)
}
