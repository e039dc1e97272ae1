//! `loadgen`: drives a Twine server (ours or the Node peer) the way Twine clients do, from one
//! machine, and reports what the server spent.
//!
//! # Layout
//!
//! - [`client`]: one simulated client: cookie, Engine.IO/Socket.IO over WebSocket, subscribe.
//! - [`http`]: the few plain HTTP/1.1 requests a client or publisher makes.
//! - [`addrs`]: source addresses spread over 127.0.0.0/8 and the open-files limit.
//! - [`procfs`]: the server's memory and CPU time, read from /proc.
//! - [`scenario`]: `idle`, `fanout` and `reconnect-storm`, each returning its figures.
//! - [`bench`]: runs every scenario against both servers, interleaved, and writes the report.
//! - [`report`]: BENCHMARKS.md and its SVG charts.

mod addrs;
mod bench;
mod client;
mod http;
mod procfs;
mod report;
mod scenario;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for Twine servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario against a running server and print its figures as JSON.
    Run(scenario::Args),
    /// Start our server and the Node peer, run every scenario against both, write BENCHMARKS.md.
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
            let figures = scenario::run(&args).await?;
            println!("{}", serde_json::to_string_pretty(&figures)?);
        }
        Command::Bench(args) => bench::run(args).await?,
        Command::Report { out } => report::rewrite(&out)?,
    }
    Ok(())
}
