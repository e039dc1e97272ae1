//! The processes under test, started fresh for every run and killed when dropped: our server or a
//! Node peer, one node or several, with a Redis of their own when the run needs one.
//!
//! On a machine with two or more cores the servers are pinned to core 0 and Redis to core 1,
//! which it shares with the load generator (pinned there by the benchmark); a deployment can
//! also run unpinned, free to use every core.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::redis;

/// Which server a deployment runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Server {
    /// Ours.
    Twine,
    /// Node socket.io 4.8, one process, no adapter.
    Node,
    /// Node socket.io 4.8 with `@socket.io/redis-adapter`.
    NodeRedisAdapter,
    /// Node socket.io 4.8 with connection state recovery and `@socket.io/redis-streams-adapter`.
    NodeRedisStreams,
}

impl Server {
    pub fn needs_redis(self) -> bool {
        matches!(self, Server::NodeRedisAdapter | Server::NodeRedisStreams)
    }
}

/// What to start for one run.
#[derive(Clone, Copy, Debug)]
pub struct Deployment {
    pub server: Server,
    pub nodes: usize,
    pub redis: bool,
    /// Servers on core 0, Redis on core 1 (when the machine has two cores or more).
    pub pinned: bool,
}

/// Where the programs are.
pub struct Programs {
    pub twine: PathBuf,
    pub peer_dir: PathBuf,
    /// The machine has the two cores pinning needs.
    pub can_pin: bool,
}

/// A started deployment; everything in it is killed when it is dropped.
pub struct Running {
    nodes: Vec<(Child, u32, String)>,
    redis: Option<(Child, SocketAddr)>,
}

impl Running {
    pub fn targets(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.2.clone()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.1).collect()
    }

    pub fn redis(&self) -> Option<SocketAddr> {
        self.redis.as_ref().map(|r| r.1)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `taskset -c <core>` in front of `program` when pinning.
fn command(program: &str, core: Option<u32>) -> Command {
    match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

async fn start_redis(core: Option<u32>) -> anyhow::Result<(Child, SocketAddr)> {
    let port = free_port()?;
    let child = command("redis-server", core)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server (scripts/install-test-deps.sh installs it)")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    for _ in 0..100 {
        if redis::ping(addr).await.is_ok() {
            return Ok((child, addr));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("redis-server did not answer on {addr}")
}

async fn start_node(
    deployment: Deployment,
    programs: &Programs,
    redis: Option<SocketAddr>,
    core: Option<u32>,
) -> anyhow::Result<(Child, u32, String)> {
    // Every server gets the same open-files limit, raised by the shell before it becomes the
    // server (`exec`, so the pid is the server's).
    let raise = "ulimit -n 1048576 2>/dev/null || ulimit -n $(ulimit -Hn); exec \"$0\" \"$@\"";
    let mut c = command("sh", core);
    c.arg("-c").arg(raise);
    let redis_url = redis.map(|r| format!("redis://{r}"));
    match deployment.server {
        Server::Twine => {
            c.arg(&programs.twine)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--api-key",
                    "test-key",
                ])
                // One source address carries every benchmark connection.
                .args(["--max-connections-per-ip", "0"])
                // The API key's rate limit is for production; the benchmark offers its own rate.
                .args(["--publish-rate", "1000000", "--publish-burst", "1000000"])
                .env("TWINE_LOG", "info");
            if let Some(url) = &redis_url {
                c.args(["--redis-url", url]);
            }
        }
        peer => {
            let script = match peer {
                Server::NodeRedisAdapter => "redis-adapter.mjs",
                Server::NodeRedisStreams => "redis-streams.mjs",
                _ => "server.mjs",
            };
            c.arg("node")
                .arg(Path::new(&programs.peer_dir).join(script))
                .env("PORT", "0")
                .env("TWINE_HOST", "127.0.0.1")
                .env("TWINE_API_KEY", "test-key");
            if let Some(url) = &redis_url {
                c.env("REDIS_URL", url);
            }
        }
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {:?}", deployment.server))?;
    let pid = child.id().context("server pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("server stdout")?).lines();
    let address = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("server did not start in 20 s")??
            .context("server exited before listening")?;
        if let Some(at) = line.find("listening on ") {
            break line[at + "listening on ".len()..].trim().to_owned();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid, format!("http://{address}")))
}

pub async fn start(deployment: Deployment, programs: &Programs) -> anyhow::Result<Running> {
    let pin = deployment.pinned && programs.can_pin;
    let redis = if deployment.redis || deployment.server.needs_redis() {
        Some(start_redis(pin.then_some(1)).await?)
    } else {
        None
    };
    let mut nodes = Vec::with_capacity(deployment.nodes);
    for _ in 0..deployment.nodes.max(1) {
        nodes.push(
            start_node(
                deployment,
                programs,
                redis.as_ref().map(|r| r.1),
                pin.then_some(0),
            )
            .await?,
        );
    }
    Ok(Running { nodes, redis })
}
