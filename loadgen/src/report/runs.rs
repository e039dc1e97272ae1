//! What the report is drawn from: the runs that `bench/runs.json` keeps ([`Run`], [`Meta`], the
//! [`Group`] and [`Side`] of each), the names a benchmark gives its deployments and its machine,
//! and how one figure is picked from a run ([`Pick`], [`lat`], [`node`]) and summarised over a
//! point's repeats ([`side`], [`stat`]).

use crate::scenario::Figures;
use crate::servers::{Deployment, Redis, Server};
use crate::stats::spread;

/// The sections of the report, in order (their headings and intros are in `prose`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Group {
    Idle,
    Fanout,
    Latency,
    Cores,
    RedisPublish,
    RedisFanout,
    RedisStorm,
    RedisCluster,
    QuietNode,
    Deploy,
    ScaleOut,
    Churn,
    Mass,
    Hooks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Side {
    Ours,
    Peer,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub group: Group,
    pub title: String,
    pub side: Side,
    pub server: Server,
    pub label: String,
    /// The load generator was pinned to its own core.
    pub pinned: bool,
    pub repeat: usize,
    pub figures: Figures,
}

/// What the whole benchmark was.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub of_record: bool,
    /// Servers and load generator pinned to separate cores.
    pub pinned: bool,
    pub repeats: usize,
    pub minutes: f64,
    pub machine: String,
    pub date: String,
    /// Our server's binary, version and build time.
    #[serde(default)]
    pub server: String,
    /// Points run again, or added, after the run the rest comes from (`loadgen bench --only …
    /// --merge`).
    #[serde(default)]
    pub later: Vec<Later>,
    /// The commit measured (`git describe`), and the versions of what the peers and Redis ran on.
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub redis: String,
}

/// Points measured in a later run than the rest of the report.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Later {
    pub titles: Vec<String>,
    pub repeats: usize,
    pub minutes: f64,
    pub date: String,
    pub server: String,
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub redis: String,
}

/// The first line a command prints, trimmed; empty when it cannot run.
fn first_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The commit of the working tree (`-dirty` when it has changes not committed).
pub fn commit() -> String {
    first_line(
        "git",
        &[
            "describe",
            "--always",
            "--dirty",
            "--abbrev=12",
            "--exclude=*",
        ],
    )
}

/// `node --version`.
pub fn node_version() -> String {
    first_line("node", &["--version"])
}

/// `redis-server --version`'s version (`v=7.0.15` → `7.0.15`).
pub fn redis_version() -> String {
    let line = first_line("redis-server", &["--version"]);
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or(&line)
        .to_owned()
}

/// A deployment's name in table headers.
pub fn label(d: Deployment) -> String {
    let nodes = |n: usize| {
        let then = if d.later > 0 {
            format!(", then {}", n + d.later)
        } else {
            String::new()
        };
        if n == 1 {
            format!("1 node{then}")
        } else {
            format!("{n} nodes{then}")
        }
    };
    let redis = match d.redis {
        Redis::None => "",
        Redis::One => " + Redis",
        Redis::Cluster => " + Redis Cluster (3 primaries)",
    };
    let mut name = match d.server {
        Server::Twine if d.redis != Redis::None => format!("twine, {}{redis}", nodes(d.nodes)),
        Server::Twine => "twine".to_owned(),
        Server::Node => "Node socket.io 4.8".to_owned(),
        Server::NodeRecovery => "Node socket.io 4.8 + connectionStateRecovery".to_owned(),
        Server::NodeRedisAdapter => {
            format!("Node socket.io 4.8 + redis-adapter, {}", nodes(d.nodes))
        }
        Server::NodeRedisSharded => format!(
            "Node socket.io 4.8 + sharded redis-adapter (dynamic), {}{redis}",
            nodes(d.nodes)
        ),
        Server::NodeRedisStreams => format!(
            "Node socket.io 4.8 + connectionStateRecovery + redis-streams-adapter, {}",
            nodes(d.nodes)
        ),
    };
    if d.backend {
        name.push_str(", every hook on (backend on core 1)");
    }
    if !d.flags.is_empty() {
        name.push_str(&format!(", {}", d.flags.join(" ")));
    }
    for (key, value) in d.env {
        name.push_str(&format!(", {key}={value}"));
    }
    if !d.pinned {
        name.push_str(", both cores (unpinned)");
    }
    name
}

pub fn machine() -> String {
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

pub fn now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A figure of a run; `None` where the run does not have it.
pub(super) type Pick = fn(&Figures) -> Option<f64>;

/// One row of a point's table: its name, the figure and the digits it is shown with.
pub(super) type Row = (&'static str, Pick, usize);

/// What a figure is in a run that never got there (e.g. a balance not reached within the watch):
/// shown as "never", and the slowest of all in a median.
pub(super) const NEVER: f64 = f64::INFINITY;

/// The median (and range) of one figure over a side's runs of a point.
pub(super) fn stat(runs: &[&Run], pick: Pick) -> Option<(f64, f64, f64)> {
    let values: Vec<f64> = runs.iter().filter_map(|r| pick(&r.figures)).collect();
    let never = values.iter().filter(|&&v| v == NEVER).count();
    if never == 0 {
        return spread(&values);
    }
    if never == values.len() {
        return Some((NEVER, NEVER, NEVER));
    }
    // The runs that never got there sort last.
    let lo = spread(&values)?.1;
    let mut all: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    all.sort_by(f64::total_cmp);
    let m = all.len() / 2;
    let median = if all.len() % 2 == 1 {
        all[m]
    } else {
        (all[m - 1] + all[m]) / 2.0
    };
    Some((median, lo, NEVER))
}

/// A quantile of a run's publish→deliver latency.
pub(super) fn lat(f: &Figures, q: fn(&crate::stats::Latency) -> f64) -> Option<f64> {
    f.latency.as_ref().map(q)
}

/// Node A (`0`) or B (`1`) of the quiet node.
pub(super) fn node(f: &Figures, i: usize) -> Option<&crate::scenario::NodeFigures> {
    f.nodes_each.get(i)
}

/// A side's runs of the point titled `title`.
pub(super) fn side<'a>(runs: &'a [Run], title: &str, side: Side) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| r.title == title && r.side == side)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: Option<f64>) -> Run {
        Run {
            group: Group::ScaleOut,
            title: "t".into(),
            side: Side::Ours,
            server: Server::Twine,
            label: "l".into(),
            pinned: true,
            repeat: 0,
            figures: Figures {
                seconds: value.unwrap_or(f64::NAN),
                ..Figures::default()
            },
        }
    }

    #[test]
    fn never_sorts_last() {
        let pick: Pick = |f| (!f.seconds.is_nan()).then_some(f.seconds);
        let stat_of = |vs: &[Option<f64>]| {
            let runs: Vec<Run> = vs.iter().map(|&v| run(v)).collect();
            stat(&runs.iter().collect::<Vec<_>>(), pick)
        };
        assert_eq!(stat_of(&[]), None);
        assert_eq!(stat_of(&[Some(2.0), Some(1.0)]), Some((1.5, 1.0, 2.0)));
        assert_eq!(
            stat_of(&[Some(NEVER), Some(NEVER)]),
            Some((NEVER, NEVER, NEVER))
        );
        assert_eq!(
            stat_of(&[Some(NEVER), Some(3.0), Some(1.0)]),
            Some((3.0, 1.0, NEVER))
        );
        assert_eq!(stat_of(&[None, Some(4.0)]), Some((4.0, 4.0, 4.0)));
    }
}
