//! The two SVG charts beside the report, drawn with plotters: the publish→deliver latency CDF of
//! the smallest fan-out with acks, and server memory per idle connection.

use std::path::Path;

use plotters::prelude::*;

use super::runs::{Group, Run, Side, side, stat};

const COLORS: [RGBColor; 2] = [RGBColor(91, 91, 214), RGBColor(230, 120, 40)];

/// One chart: a line per side (with point markers when asked), axes from zero.
struct Chart<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_max: f64,
    y_max: f64,
    markers: bool,
}

impl Chart<'_> {
    fn draw(&self, path: &Path, lines: Vec<(String, Vec<(f64, f64)>)>) -> anyhow::Result<()> {
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
        for (i, (name, points)) in lines.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
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

/// The CDF of the median run (by p99) of each side of the smallest fan-out with acks.
pub(super) fn latency_chart(path: &Path, runs: &[Run]) -> anyhow::Result<()> {
    let title = runs
        .iter()
        .filter(|r| r.group == Group::Fanout && r.figures.ack)
        .min_by_key(|r| r.figures.connections)
        .map(|r| r.title.clone())
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut p99s = Vec::new();
    for s in [Side::Ours, Side::Peer] {
        let mut rs = side(runs, &title, s);
        rs.retain(|r| r.figures.latency.is_some());
        rs.sort_by(|a, b| {
            let p = |r: &Run| r.figures.latency.as_ref().map_or(0.0, |l| l.p99_ms);
            p(a).total_cmp(&p(b))
        });
        if let Some(r) = rs.get(rs.len() / 2) {
            p99s.push(r.figures.latency.as_ref().map_or(1.0, |l| l.p99_ms));
            lines.push((r.label.clone(), r.figures.latency_cdf.clone()));
        }
    }
    // A side far slower than the other would squash it: the axis stops at ten times the faster
    // side's p99, and slower deliveries are drawn at the edge.
    let fastest = p99s.iter().copied().fold(f64::INFINITY, f64::min);
    let slowest = p99s.iter().copied().fold(1.0, f64::max);
    let x_max = (slowest * 1.5).min(fastest * 15.0).max(1.0);
    for (_, points) in &mut lines {
        for p in points.iter_mut() {
            p.0 = p.0.min(x_max);
        }
    }
    let caption = format!("publish→deliver latency: {title}");
    let chart = Chart {
        caption: &caption,
        x_desc: "latency, ms",
        y_desc: "fraction of deliveries",
        x_max,
        y_max: 1.0,
        markers: false,
    };
    chart.draw(path, lines)
}

/// The median memory per idle connection of each side, by the connections held.
pub(super) fn memory_chart(path: &Path, runs: &[Run]) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    for s in [Side::Ours, Side::Peer] {
        let mut titles: Vec<&str> = runs
            .iter()
            .filter(|r| r.group == Group::Idle && r.side == s)
            .map(|r| r.title.as_str())
            .collect();
        titles.dedup();
        let points: Vec<(f64, f64)> = titles
            .iter()
            .filter_map(|t| {
                let rs = side(runs, t, s);
                let n = rs.first()?.figures.connections as f64;
                let kb = stat(&rs, |f| Some(f.rss_per_connection_bytes / 1024.0))?.0;
                Some((n, kb))
            })
            .collect();
        if let Some(r) = runs.iter().find(|r| r.group == Group::Idle && r.side == s) {
            lines.push((r.label.clone(), points));
        }
    }
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = all.map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let chart = Chart {
        caption: "server memory per idle WebSocket connection (median)",
        x_desc: "connections",
        y_desc: "RSS per connection, KB",
        x_max,
        y_max,
        markers: true,
    };
    chart.draw(path, lines)
}
