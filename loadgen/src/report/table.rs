//! One point's table: a row per figure with ours, the peer and their ratio, each cell the median
//! of the runs and their range; under the latency search's table, every run's probes.

use std::fmt::Write as _;

use super::rows::rows;
use super::runs::{NEVER, Pick, Run, stat};

/// One figure at the table's precision ("never" for [`NEVER`]).
fn number(v: f64, digits: usize) -> String {
    if v == NEVER {
        "never".into()
    } else {
        format!("{v:.digits$}")
    }
}

/// The median, with the range where the runs differ at the table's precision.
fn cell(s: Option<(f64, f64, f64)>, digits: usize) -> String {
    match s {
        None => "–".into(),
        Some((m, lo, hi)) if lo == hi || (hi - lo).abs() < 0.5 * 10f64.powi(-(digits as i32)) => {
            number(m, digits)
        }
        Some((m, lo, hi)) => format!(
            "{} ({}–{})",
            number(m, digits),
            number(lo, digits),
            number(hi, digits)
        ),
    }
}

/// Rows whose cell shows a count beside its share, and the count: a share that rounds to 100.000
/// must not hide a few losses.
const BESIDE: &[(&str, Pick, &str)] = &[(
    "delivered, % of due",
    |f| Some(f.expected.saturating_sub(f.lost) as f64),
    "delivered",
)];

/// `cell`, with the median of the row's count beside it where it has one.
fn cell_of(name: &str, s: Option<(f64, f64, f64)>, digits: usize, runs: &[&Run]) -> String {
    let shown = cell(s, digits);
    match BESIDE.iter().find(|(row, ..)| *row == name) {
        Some((_, count, what)) if s.is_some() => match stat(runs, *count) {
            Some((m, ..)) => {
                let due = stat(runs, |f| Some(f.expected as f64)).map_or(0.0, |d| d.0);
                format!("{shown} ({m:.0} {what} of {due:.0})")
            }
            None => shown,
        },
        _ => shown,
    }
}

/// Ours / peer of the medians, where both show as non-zero at the table's precision.
fn ratio(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>, digits: usize) -> String {
    let shown = |v: f64| v.is_finite() && v.abs() >= 0.5 * 10f64.powi(-(digits as i32));
    match (a, b) {
        (Some((a, ..)), Some((b, ..))) if shown(a) && shown(b) => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

/// The table of the point titled `title`, from the runs of each side.
pub(super) fn table(out: &mut String, title: &str, ours: &[&Run], peer: &[&Run]) {
    let head = |rs: &[&Run]| rs.first().map_or("–".to_owned(), |r| r.label.clone());
    let _ = writeln!(out, "\n#### {title}\n");
    let _ = writeln!(out, "| figure | {} | {} | ratio |", head(ours), head(peer));
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let scenario = ours
        .first()
        .or(peer.first())
        .map_or("", |r| r.figures.scenario.as_str());
    for (name, pick, digits) in rows(scenario) {
        let (a, b) = (stat(ours, pick), stat(peer, pick));
        if a.is_none() && b.is_none() {
            continue;
        }
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            cell_of(name, a, digits, ours),
            cell_of(name, b, digits, peer),
            ratio(a, b, digits)
        );
    }
    if scenario == "LatencySearch" {
        for rs in [ours, peer] {
            for r in rs {
                let Some(search) = &r.figures.search else {
                    continue;
                };
                let probes: Vec<String> = search
                    .probes
                    .iter()
                    .map(|p| {
                        let p99 = p.latency.as_ref().map_or(f64::NAN, |l| l.p99_ms);
                        let refused = if p.not_accepted > 0 {
                            format!(", {} not accepted", p.not_accepted)
                        } else {
                            String::new()
                        };
                        format!(
                            "{:.0}/s {} (p99 {p99:.0} ms{refused})",
                            p.rate,
                            if p.passed { "✓" } else { "✗" }
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "\n{} run {}: {}",
                    r.label,
                    r.repeat + 1,
                    probes.join(", ")
                );
            }
        }
    }
}
