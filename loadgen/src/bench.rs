//! The side-by-side benchmark: starts our server and the Node socket.io peer one scenario at a
//! time (a fresh process each, interleaved: ours, then the peer), runs the same scenario with the
//! same load generator against both, and writes the report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::report::{self, Run, Server};
use crate::scenario::{self, Figures, Kind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// The figures of record: up to 100,000 connections (takes about 20 minutes).
    Full,
    /// A few seconds per scenario, to check the harness end to end.
    Smoke,
}

#[derive(clap::Args)]
pub struct Args {
    /// Our server's binary.
    #[arg(long, default_value = "target/release/twine")]
    pub twine: PathBuf,
    /// The Node peer's entry point.
    #[arg(long, default_value = "js-fixtures/node-peer/server.mjs")]
    pub peer: PathBuf,
    /// Where the report goes; its charts go beside it, in `bench/`.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "full")]
    pub scale: Scale,
    /// Exit non-zero if our server lost, duplicated or dropped anything.
    #[arg(long)]
    pub strict: bool,
}

/// A server under test; killed when dropped.
struct Process {
    child: Child,
    pid: u32,
    url: String,
}

async fn start(server: Server, args: &Args) -> anyhow::Result<Process> {
    // Both get the same open-files limit, raised by the shell before it becomes the server.
    let raise = "ulimit -n 1048576 2>/dev/null || ulimit -n $(ulimit -Hn); exec \"$0\" \"$@\"";
    let mut command = Command::new("sh");
    command.arg("-c").arg(raise);
    match server {
        Server::Twine => {
            command
                .arg(&args.twine)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--api-key",
                    "test-key",
                ])
                .env("TWINE_LOG", "info");
        }
        Server::NodePeer => {
            command
                .arg("node")
                .arg(&args.peer)
                .env("PORT", "0")
                .env("TWINE_HOST", "127.0.0.1")
                .env("TWINE_API_KEY", "test-key");
        }
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {server:?}"))?;
    let pid = child.id().context("server pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("server stdout")?).lines();
    let address = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .context("server did not start in 20 s")??
            .context("server exited before listening")?;
        if let Some(at) = line.find("listening on ") {
            break line[at + "listening on ".len()..].trim().to_owned();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Process {
        child,
        pid,
        url: format!("http://{address}"),
    })
}

/// A scenario with the defaults; target and server pid are filled in when its server starts.
fn scenario_args(kind: Kind) -> scenario::Args {
    scenario::Args {
        scenario: kind,
        target: String::new(),
        server_pid: 0,
        connections: 1000,
        rooms: 1,
        rate: 20.0,
        seconds: 10,
        missed: 100,
        ack: true,
        connect_rate: 2500,
        api_key: "test-key".into(),
        // A progress line only where someone watches it.
        quiet: !std::io::stderr().is_terminal(),
    }
}

/// The runs of record (or their smoke-sized versions), each for both servers unless noted.
fn plan(scale: Scale) -> Vec<(String, scenario::Args, bool)> {
    let full = scale == Scale::Full;
    let mut runs = Vec::new();
    // 100,000 where the open-files limit allows it; the largest size is held for 60 s.
    let ceiling = crate::addrs::connection_ceiling();
    let idle_sizes: Vec<usize> = if full {
        [1_000, 5_000, 10_000, 50_000, 100_000]
            .into_iter()
            .filter(|n| *n < ceiling)
            .chain(std::iter::once(ceiling))
            .collect()
    } else {
        vec![200, 500]
    };
    let largest = idle_sizes.last().copied().unwrap_or(0);
    for &n in &idle_sizes {
        let mut a = scenario_args(Kind::Idle);
        a.connections = n;
        a.seconds = if full && n == largest { 60 } else { 3 };
        runs.push((format!("idle, {n} connections"), a, true));
    }
    let mut a = scenario_args(Kind::Fanout);
    (a.connections, a.seconds) = if full { (10_000, 20) } else { (300, 5) };
    runs.push((
        format!(
            "fanout, {} subscribers in 1 room, 20 publishes/s",
            a.connections
        ),
        a,
        true,
    ));
    let mut a = scenario_args(Kind::Fanout);
    (a.connections, a.rooms, a.rate, a.seconds) = if full {
        (10_000, 100, 200.0, 20)
    } else {
        (300, 10, 50.0, 5)
    };
    runs.push((
        format!(
            "fanout, {} subscribers over {} rooms, {} publishes/s",
            a.connections, a.rooms, a.rate
        ),
        a,
        true,
    ));
    let mut a = scenario_args(Kind::ReconnectStorm);
    (a.connections, a.missed) = if full { (10_000, 100) } else { (200, 20) };
    // The peer has no recovery: a storm against it only measures loss.
    runs.push((
        format!(
            "reconnect storm, {} sessions missing {} messages each",
            a.connections, a.missed
        ),
        a,
        false,
    ));
    runs
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut runs: Vec<Run> = Vec::new();
    for (title, scenario_args, with_peer) in plan(args.scale) {
        let servers: &[Server] = if with_peer {
            &[Server::Twine, Server::NodePeer]
        } else {
            &[Server::Twine]
        };
        for &server in servers {
            eprintln!("== {title}: {}", server.name());
            let process = start(server, &args).await?;
            let mut a = scenario_args.clone();
            a.target = process.url.clone();
            a.server_pid = process.pid;
            let figures: Figures = scenario::run(&a).await?;
            drop(process.child);
            runs.push(Run {
                title: title.clone(),
                server,
                figures,
            });
        }
    }
    report::write(&args.out, &runs, args.scale == Scale::Full)?;
    eprintln!("wrote {}", args.out.display());
    if args.strict {
        let bad: Vec<&Run> = runs
            .iter()
            .filter(|r| r.server == Server::Twine)
            .filter(|r| {
                r.figures.lost > 0
                    || r.figures.duplicated > 0
                    || r.figures.dropped > 0
                    || r.figures.connect_errors > 0
            })
            .collect();
        if !bad.is_empty() {
            for r in &bad {
                eprintln!(
                    "{}: lost {}, duplicated {}, dropped {}, connect errors {}",
                    r.title,
                    r.figures.lost,
                    r.figures.duplicated,
                    r.figures.dropped,
                    r.figures.connect_errors
                );
            }
            bail!("our server lost, duplicated or dropped something");
        }
        let storm_ok = runs
            .iter()
            .filter(|r| r.figures.scenario == "ReconnectStorm")
            .all(|r| r.figures.recovery_seconds.is_some());
        if !storm_ok {
            bail!("not every session recovered in the reconnect storm");
        }
    }
    Ok(())
}
