//! `loadgen`: drives a Twine server (ours or a Node peer) the way Twine clients do, from one
//! machine, and reports what the server spent.
//!
//! # Layout
//!
//! - [`client`]: one simulated client: cookie or socket.io recovery, Engine.IO/Socket.IO over
//!   WebSocket, subscribe, acknowledge.
//! - [`fleet`]: many clients connecting, counting and acknowledging, with shared counters.
//! - [`publisher`]: the open-loop publisher (fixed schedule, bounded in-flight publishes).
//! - [`http`]: the few plain HTTP/1.1 requests a client or publisher makes.
//! - [`redis`]: Redis's process id and command statistics, over RESP.
//! - [`addrs`]: source addresses spread over 127.0.0.0/8 and the open-files limit.
//! - [`procfs`]: memory and CPU time of the servers, Redis and the load generator, from /proc.
//! - [`stats`]: lock-free latency histograms, medians and ranges.
//! - [`scenario`]: the scenarios' arguments and figures; `idle` and `fanout`.
//! - [`search`], [`throughput`], [`storm`]: the latency search, the publish rate, the reconnect
//!   storm.
//! - [`quiet`], [`deploy`], [`scaleout`], [`churn`], [`mass`]: the node whose rooms get no
//!   traffic, the rolling restart behind a load balancer, a node added behind it, connections
//!   force-closed over and over, the mass disconnect and recovery of one room.
//! - [`hooks`]: connects, subscribes and client publishes decided by the app's backend.
//! - [`session`]: clients that reconnect by themselves (socket.io-client's backoff) and recover.
//! - [`balancer`]: the round-robin TCP load balancer of the rolling restart and the scale-out
//!   (ready nodes only, nodes added while it runs).
//! - [`servers`]: starting the servers, the Node peers and Redis (one primary or a cluster),
//!   pinned to their cores; starting a node again.
//! - [`bench`]: every point against both sides, repeated, then the report.
//! - [`report`]: BENCHMARKS.md and its SVG charts.

mod addrs;
mod balancer;
mod bench;
mod churn;
mod client;
mod deploy;
mod figures;
mod fleet;
mod hooks;
mod http;
mod mass;
mod procfs;
mod publisher;
mod quiet;
mod redis;
mod report;
mod scaleout;
mod scenario;
mod search;
mod servers;
mod session;
mod stats;
mod storm;
mod throughput;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scenario::Kind;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for Twine servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario against running servers and print its figures as JSON.
    Run(scenario::Args),
    /// A scenario given whole as JSON (how the benchmark runs the load generator on its core).
    #[command(hide = true)]
    Spec { json: String },
    /// Start our server and the peers, run every point against both, write BENCHMARKS.md.
    Bench(bench::Args),
    /// Redraw BENCHMARKS.md (and its charts) from the raw figures a benchmark left in bench/.
    Report {
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    addrs::raise_open_files_limit()?;
    match Cli::parse().command {
        Command::Run(args) => {
            let figures = run(&args).await?;
            println!("{}", serde_json::to_string_pretty(&figures)?);
        }
        Command::Spec { json } => {
            let args: scenario::Args = serde_json::from_str(&json).context("scenario JSON")?;
            let figures = run(&args).await?;
            println!("{}", serde_json::to_string(&figures)?);
        }
        Command::Bench(args) => bench::run(args).await?,
        Command::Report { out } => report::rewrite(&out)?,
    }
    Ok(())
}

/// Runs one scenario against the servers `args` names and returns its figures.
async fn run(args: &scenario::Args) -> anyhow::Result<scenario::Figures> {
    let setup = scenario::Setup::new(args).await?;
    let mut figures = scenario::Figures::of(args, &setup);
    match args.scenario {
        Kind::Idle => scenario::idle(args, &setup, &mut figures).await?,
        Kind::Fanout => scenario::fanout(args, &setup, &mut figures).await?,
        Kind::LatencySearch => search::run(args, &setup, &mut figures).await?,
        Kind::PublishRate => throughput::run(args, &setup, &mut figures).await?,
        Kind::ReconnectStorm => storm::run(args, &setup, &mut figures).await?,
        Kind::QuietNode => quiet::run(args, &setup, &mut figures).await?,
        Kind::Deploy => deploy::run(args, &setup, &mut figures).await?,
        Kind::ScaleOut => scaleout::run(args, &setup, &mut figures).await?,
        Kind::Churn => churn::run(args, &setup, &mut figures).await?,
        Kind::MassDrop => mass::run(args, &setup, &mut figures).await?,
        Kind::Hooks => hooks::run(args, &setup, &mut figures).await?,
    }
    Ok(figures)
}
