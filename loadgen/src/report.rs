//! BENCHMARKS.md: the machine, the command, a table per scenario with both servers side by side
//! and their ratio, the targets, and two SVG charts drawn here (latency CDF, memory per
//! connection against the number of connections).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::scenario::Figures;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Server {
    Twine,
    NodePeer,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Twine => "twine (this server)",
            Server::NodePeer => "Node socket.io 4.8 peer",
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub title: String,
    pub server: Server,
    pub figures: Figures,
}

fn machine() -> String {
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

fn now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// One table row: a label and a figure for each server; the ratio when both are numbers.
fn row(out: &mut String, label: &str, ours: Option<f64>, peer: Option<f64>, digits: usize) {
    let cell = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.digits$}"));
    let ratio = match (ours, peer) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    };
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {ratio} |",
        cell(ours),
        cell(peer)
    );
}

fn table(out: &mut String, title: &str, ours: &Figures, peer: Option<&Figures>) {
    let _ = writeln!(out, "\n### {title}\n");
    let _ = writeln!(
        out,
        "| figure | {} | {} | ours / peer |",
        Server::Twine.name(),
        Server::NodePeer.name()
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let both = |f: fn(&Figures) -> f64| (Some(f(ours)), peer.map(f));
    let mut put = |label: &str, f: fn(&Figures) -> f64, digits: usize| {
        let (a, b) = both(f);
        row(out, label, a, b, digits);
    };
    match ours.scenario.as_str() {
        "Idle" => {
            put(
                "connections held",
                |f| (f.connections - f.connect_errors) as f64,
                0,
            );
            put("connect errors", |f| f.connect_errors as f64, 0);
            put("dropped while held", |f| f.dropped as f64, 0);
            put("seconds held", |f| f.held_seconds, 0);
            put("server RSS, MiB", |f| f.rss_bytes as f64 / 1048576.0, 1);
            put(
                "server RSS per connection, KB",
                |f| f.rss_per_connection_bytes / 1024.0,
                2,
            );
        }
        "Fanout" => {
            put("publishes", |f| f.publishes as f64, 0);
            put("deliveries", |f| f.deliveries as f64, 0);
            put("lost", |f| f.lost as f64, 0);
            put("duplicated", |f| f.duplicated as f64, 0);
            put("deliveries per second", |f| f.deliveries_per_second, 0);
            put("server CPU seconds", |f| f.server_cpu_seconds, 2);
            put(
                "deliveries per server CPU-second",
                |f| f.deliveries_per_cpu_second,
                0,
            );
            put(
                "latency p50, ms",
                |f| f.latency.as_ref().map_or(f64::NAN, |l| l.p50_ms),
                1,
            );
            put(
                "latency p99, ms",
                |f| f.latency.as_ref().map_or(f64::NAN, |l| l.p99_ms),
                1,
            );
            put(
                "latency max, ms",
                |f| f.latency.as_ref().map_or(f64::NAN, |l| l.max_ms),
                1,
            );
            if let Some(peer) = peer
                && peer.publishes != ours.publishes
            {
                let _ = writeln!(
                    out,
                    "\nThe publisher waits for each `201`, so in the same window the two servers \
                     accepted different numbers of publishes ({} and {}) and carried different \
                     loads: compare deliveries per CPU-second here, not latency.",
                    ours.publishes, peer.publishes
                );
            }
        }
        _ => {
            put("sessions", |f| f.connections as f64, 0);
            put(
                "all recovered (1 = yes)",
                |f| f64::from(u8::from(f.recovery_seconds.is_some())),
                0,
            );
            put(
                "time until every session recovered, s",
                |f| f.recovery_seconds.unwrap_or(f64::NAN),
                2,
            );
            put(
                "replayed messages per second",
                |f| f.replayed_per_second.unwrap_or(f64::NAN),
                0,
            );
            put("messages due (missed + live)", |f| f.expected as f64, 0);
            put("lost", |f| f.lost as f64, 0);
            put("duplicated", |f| f.duplicated as f64, 0);
            put("server CPU seconds", |f| f.server_cpu_seconds, 2);
        }
    }
}

fn targets(out: &mut String, runs: &[Run]) {
    let ours = |scenario: &str, connections: usize, rooms: usize| {
        runs.iter().find(|r| {
            r.server == Server::Twine
                && r.figures.scenario == scenario
                && r.figures.connections == connections
                && r.figures.rooms == rooms
        })
    };
    let _ = writeln!(
        out,
        "\n## Targets\n\n| target | measured | met |\n|---|---|---|"
    );
    let mut line = |target: &str, measured: String, met: Option<bool>| {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not run",
        };
        let _ = writeln!(out, "| {target} | {measured} | {met} |");
    };
    // The largest idle run: 100,000 connections where the open-files limit allows it.
    let idle = runs
        .iter()
        .filter(|r| r.server == Server::Twine && r.figures.scenario == "Idle")
        .max_by_key(|r| r.figures.connections)
        .map(|r| &r.figures);
    let at = idle.map_or(0, |f| f.connections);
    let limited = if at < 100_000 {
        " (one process may open 20,000 files on this machine, and the limit cannot be raised: 100k cannot be held here)"
    } else {
        ""
    };
    line(
        "idle memory ≤ 8 KB per WebSocket connection at 100k",
        idle.map_or("–".into(), |f| {
            format!(
                "{:.2} KB at {at}{limited}",
                f.rss_per_connection_bytes / 1024.0
            )
        }),
        idle.map(|f| f.rss_per_connection_bytes <= 8.0 * 1024.0),
    );
    line(
        "100k connections held 60 s with zero errors",
        idle.map_or("–".into(), |f| {
            format!(
                "{at} held {:.0} s: {} connect errors, {} dropped{limited}",
                f.held_seconds, f.connect_errors, f.dropped
            )
        }),
        idle.map(|f| {
            at >= 100_000 && f.connect_errors == 0 && f.dropped == 0 && f.held_seconds >= 60.0
        }),
    );
    let fanout = ours("Fanout", 10_000, 1).map(|r| &r.figures);
    line(
        "fan-out ≥ 400k deliveries per server CPU-second, 10k subscribers",
        fanout.map_or("–".into(), |f| {
            format!("{:.0}", f.deliveries_per_cpu_second)
        }),
        fanout.map(|f| f.deliveries_per_cpu_second >= 400_000.0),
    );
    line(
        "p99 publish→deliver ≤ 50 ms at 10k subscribers, 20 publishes/s",
        fanout
            .and_then(|f| f.latency.as_ref())
            .map_or("–".into(), |l| format!("{:.1} ms", l.p99_ms)),
        fanout
            .and_then(|f| f.latency.as_ref())
            .map(|l| l.p99_ms <= 50.0),
    );
    let storm = ours("ReconnectStorm", 10_000, 1).map(|r| &r.figures);
    line(
        "reconnect storm: 10k sessions recover 100 messages each, zero loss and duplicates",
        storm.map_or("–".into(), |f| {
            let recovered = f
                .recovery_seconds
                .map_or("not every session recovered".into(), |s| {
                    format!("all recovered in {s:.2} s")
                });
            format!("{} lost, {} duplicated, {recovered}", f.lost, f.duplicated)
        }),
        storm.map(|f| f.lost == 0 && f.duplicated == 0 && f.recovery_seconds.is_some()),
    );
}

const COLORS: [RGBColor; 2] = [RGBColor(91, 91, 214), RGBColor(230, 120, 40)];

/// One chart: a line per server (with point markers when asked), axes from zero.
struct Chart<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_max: f64,
    y_max: f64,
    markers: bool,
}

impl Chart<'_> {
    fn draw(&self, path: &Path, lines: Vec<(Server, Vec<(f64, f64)>)>) -> anyhow::Result<()> {
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
        for (server, points) in lines {
            let color = COLORS[server as usize % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(server.name())
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

fn latency_chart(path: &Path, runs: &[&Run]) -> anyhow::Result<()> {
    let x_max = runs
        .iter()
        .filter_map(|r| r.figures.latency.as_ref().map(|l| l.p99_ms * 1.5))
        .fold(1.0f64, f64::max);
    let chart = Chart {
        caption: "publish→deliver latency (fan-out, 1 room)",
        x_desc: "latency, ms",
        y_desc: "fraction of deliveries",
        x_max,
        y_max: 1.0,
        markers: false,
    };
    chart.draw(
        path,
        runs.iter()
            .map(|r| (r.server, r.figures.latency_cdf.clone()))
            .collect(),
    )
}

fn memory_chart(path: &Path, runs: &[Run]) -> anyhow::Result<()> {
    let lines: Vec<(Server, Vec<(f64, f64)>)> = [Server::Twine, Server::NodePeer]
        .into_iter()
        .map(|server| {
            let points = runs
                .iter()
                .filter(|r| r.server == server && r.figures.scenario == "Idle")
                .map(|r| {
                    (
                        r.figures.connections as f64,
                        r.figures.rss_per_connection_bytes / 1024.0,
                    )
                })
                .collect();
            (server, points)
        })
        .collect();
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = all.map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let chart = Chart {
        caption: "server memory per idle WebSocket connection",
        x_desc: "connections",
        y_desc: "RSS per connection, KB",
        x_max,
        y_max,
        markers: true,
    };
    chart.draw(path, lines)
}

pub fn write(out: &Path, runs: &[Run], of_record: bool) -> anyhow::Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let charts = dir.join("bench");
    std::fs::create_dir_all(&charts).with_context(|| format!("creating {}", charts.display()))?;
    let mut text = String::new();
    let _ = writeln!(text, "# Benchmarks\n");
    let _ = writeln!(
        text,
        "Our server and the peer a user would pick instead (a minimal Node.js socket.io 4.8 server \
         with the same contract, `js-fixtures/node-peer/`), measured in the same run on the same \
         machine with the same load generator (`loadgen/`), one scenario at a time, ours then the \
         peer, each on a fresh process. Clients follow the Twine flow (GET /set-cookie, WebSocket \
         connect with the cookie, subscribe, acknowledge each message with updateSessionTS) over \
         loopback, from source addresses spread over 127.0.0.0/8. Memory is the server's RSS and \
         CPU its user+system time, both from /proc. The load generator shares the machine's two \
         cores with the server, which inflates latency for both servers alike.\n"
    );
    let _ = writeln!(text, "- Machine: {}", machine());
    let _ = writeln!(text, "- Date: {}", now());
    let _ = writeln!(
        text,
        "- Command: `cargo build --release && ./target/release/loadgen bench{}`",
        if of_record { "" } else { " --scale smoke" }
    );
    if !of_record {
        let _ = writeln!(
            text,
            "- Smoke run: seconds per scenario, not figures of record."
        );
    }
    let _ = writeln!(text, "\n## Results");
    let mut titles: Vec<&str> = runs.iter().map(|r| r.title.as_str()).collect();
    titles.dedup();
    for title in titles {
        let ours = runs
            .iter()
            .find(|r| r.title == title && r.server == Server::Twine);
        let peer = runs
            .iter()
            .find(|r| r.title == title && r.server == Server::NodePeer);
        if let Some(ours) = ours {
            table(&mut text, title, &ours.figures, peer.map(|p| &p.figures));
        }
    }
    targets(&mut text, runs);
    let fanout: Vec<&Run> = runs
        .iter()
        .filter(|r| r.figures.scenario == "Fanout" && r.figures.rooms == 1)
        .collect();
    latency_chart(&charts.join("latency-cdf.svg"), &fanout)?;
    memory_chart(&charts.join("memory-per-connection.svg"), runs)?;
    let _ = writeln!(
        text,
        "\n## Charts\n\n![publish→deliver latency CDF](bench/latency-cdf.svg)\n\n![memory per connection](bench/memory-per-connection.svg)"
    );
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    // The raw figures, so the report can be redrawn without measuring again.
    let raw = serde_json::json!({ "of_record": of_record, "runs": runs });
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
    let runs: Vec<Run> = serde_json::from_value(raw["runs"].clone())?;
    write(out, &runs, raw["of_record"].as_bool().unwrap_or(false))
}
