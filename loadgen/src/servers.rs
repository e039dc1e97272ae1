//! The processes under test, started fresh for every run and killed when dropped: our server or a
//! Node peer, one node or several, with a Redis of their own when the run needs one (one primary,
//! or a Redis Cluster of three primaries).
//!
//! On a machine with two or more cores the servers are pinned to core 0 and Redis to core 1,
//! which it shares with the load generator (pinned there by the benchmark); a deployment can
//! also run unpinned, free to use every core.
//!
//! A deployment of ours may also have an app backend for its hooks (`js-fixtures/backend.mjs`,
//! every hook allowing), pinned to core 1 beside the load generator, as an app's backend would
//! run beside the server rather than on its core.
//!
//! Each node is started from a [`Recipe`] (its whole command line, its port fixed), which a
//! scenario that restarts nodes (the rolling deploy) uses to start one again exactly as it was.

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
    /// Node socket.io 4.8 with `@socket.io/redis-adapter`'s sharded adapter ("dynamic") on a
    /// Redis Cluster.
    NodeRedisSharded,
    /// Node socket.io 4.8 with connection state recovery, in memory (one process).
    NodeRecovery,
}

impl Server {
    fn needs_redis(self) -> bool {
        matches!(
            self,
            Server::NodeRedisAdapter | Server::NodeRedisStreams | Server::NodeRedisSharded
        )
    }
}

/// The Redis a deployment shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redis {
    None,
    /// One primary.
    One,
    /// A Redis Cluster of three primaries, no replicas.
    Cluster,
}

/// Primaries of the benchmark's Redis Cluster.
const CLUSTER_PRIMARIES: usize = 3;

/// What to start for one run.
#[derive(Clone, Copy, Debug)]
pub struct Deployment {
    pub server: Server,
    pub nodes: usize,
    pub redis: Redis,
    /// Servers on core 0, Redis on core 1 (when the machine has two cores or more).
    pub pinned: bool,
    /// Flags our server gets beyond the benchmark's own (e.g. the drain's).
    pub flags: &'static [&'static str],
    /// Environment every node gets beyond the benchmark's own (a Node peer's `DRAIN_DELAY_MS`:
    /// how long it stays up, not ready, after SIGTERM before it closes, as a `preStop` sleep).
    pub env: &'static [(&'static str, &'static str)],
    /// An app backend for our server's hooks: every hook on (connect, subscribe, publish),
    /// clients publishing through the publish hook.
    pub backend: bool,
    /// Nodes prepared (port and command line) but left for the scenario to start (the
    /// scale-out's third node): their recipes follow the started nodes'.
    pub later: usize,
}

/// The key of the benchmark backend's `Twine-Signature`s.
const HOOK_SECRET: &str = "bench-secret";

/// The flags a deployment with a backend adds to our server's (checked against `--help` before a
/// point that needs them runs).
pub const HOOK_FLAGS: &[&str] = &[
    "--connect-hook-url",
    "--subscribe-hook-url",
    "--publish-hook-url",
    "--hook-secret",
    "--client-publish",
];

/// Where the programs are.
pub struct Programs {
    pub twine: PathBuf,
    pub peer_dir: PathBuf,
    /// The machine has the two cores pinning needs.
    pub can_pin: bool,
    /// Our binary takes `--advertise-address` (given to every node of ours on Redis: all nodes
    /// run on 127.0.0.1, each on its own port).
    pub advertise: bool,
}

/// How to start one node: its whole command line (pinning and port included) and environment.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Recipe {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A node while it runs.
pub struct Node {
    pub child: Child,
    pub pid: u32,
    /// `http://IP:PORT`.
    pub url: String,
}

/// A started deployment; everything in it is killed when it is dropped.
pub struct Running {
    nodes: Vec<Node>,
    recipes: Vec<Recipe>,
    redis: Vec<(Child, SocketAddr)>,
    /// The cluster's configuration files, removed when the deployment is dropped.
    cluster_dir: Option<PathBuf>,
    /// The app backend of the hooks.
    backend: Option<Node>,
}

impl Running {
    pub fn targets(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    /// Every Redis primary.
    pub fn redis(&self) -> Vec<String> {
        self.redis.iter().map(|r| r.1.to_string()).collect()
    }

    /// Every node's recipe: the started nodes', then those left for the scenario to start.
    pub fn recipes(&self) -> Vec<Recipe> {
        self.recipes.clone()
    }

    /// The hooks' backend's process id, when the deployment has one.
    pub fn backend_pid(&self) -> Option<u32> {
        self.backend.as_ref().map(|b| b.pid)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.start_kill();
        }
        for r in &mut self.redis {
            let _ = r.0.start_kill();
        }
        if let Some(b) = &mut self.backend {
            let _ = b.child.start_kill();
        }
        if let Some(dir) = &self.cluster_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
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

async fn start_redis(
    core: Option<u32>,
    cluster_dir: Option<&Path>,
) -> anyhow::Result<(Child, SocketAddr)> {
    let port = free_port()?;
    let mut c = command("redis-server", core);
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    if let Some(dir) = cluster_dir {
        c.arg("--dir")
            .arg(dir)
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
    }
    let child = c
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

/// Three primaries joined into a cluster (`redis-cli --cluster create`, no replicas), returned
/// once every primary reports `cluster_state:ok`.
async fn start_cluster(core: Option<u32>, dir: &Path) -> anyhow::Result<Vec<(Child, SocketAddr)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut primaries = Vec::with_capacity(CLUSTER_PRIMARIES);
    for _ in 0..CLUSTER_PRIMARIES {
        primaries.push(start_redis(core, Some(dir)).await?);
    }
    let created = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(primaries.iter().map(|p| p.1.to_string()))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running redis-cli --cluster create")?;
    if !created.status.success() {
        bail!(
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
    }
    for _ in 0..200 {
        let mut ok = true;
        for p in &primaries {
            ok &= redis::cluster_ok(p.1).await.unwrap_or(false);
        }
        if ok {
            return Ok(primaries);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the Redis Cluster did not reach cluster_state:ok")
}

/// The hooks' backend (`backend.mjs`, beside the peers' folder), every hook allowing.
async fn start_backend(programs: &Programs, core: Option<u32>) -> anyhow::Result<Node> {
    let script = programs.peer_dir.join("../backend.mjs");
    let mut argv: Vec<String> = Vec::new();
    if let Some(core) = core {
        argv.extend(["taskset".into(), "-c".into(), core.to_string()]);
    }
    argv.extend(["node".into(), script.display().to_string()]);
    argv.extend(
        ["--port", "0", "--secret", HOOK_SECRET, "--quiet"]
            .iter()
            .map(|a| a.to_string()),
    );
    // It prints `backend listening on 127.0.0.1:<port>`, as a node does.
    spawn(&Recipe {
        argv,
        env: Vec::new(),
    })
    .await
    .context("the hooks' backend")
}

/// Our server's flags for every hook on, calling the backend at `url`.
fn hook_flags(url: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for hook in ["connect", "subscribe", "publish"] {
        flags.push(format!("--{hook}-hook-url"));
        flags.push(format!("{url}/{hook}"));
    }
    flags.extend(["--hook-secret", HOOK_SECRET, "--client-publish", "hook"].map(str::to_owned));
    flags
}

/// The command line of one node of `deployment` on `port`, its hooks calling `backend`.
fn recipe(
    deployment: Deployment,
    programs: &Programs,
    redis_url: Option<&str>,
    backend: Option<&str>,
    port: u16,
    core: Option<u32>,
) -> Recipe {
    let mut argv: Vec<String> = Vec::new();
    if let Some(core) = core {
        argv.extend(["taskset".into(), "-c".into(), core.to_string()]);
    }
    // Every server gets the same open-files limit, raised by the shell before it becomes the
    // server (`exec`, so the pid is the server's).
    let raise = "ulimit -n 1048576 2>/dev/null || ulimit -n $(ulimit -Hn); exec \"$0\" \"$@\"";
    argv.extend(["sh".into(), "-c".into(), raise.into()]);
    let mut env = Vec::new();
    match deployment.server {
        Server::Twine => {
            argv.push(programs.twine.display().to_string());
            let port = port.to_string();
            let flags = [
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--api-key",
                "test-key",
                // One source address carries every benchmark connection.
                "--max-connections-per-ip",
                "0",
                // The API key's rate limit is for production; the benchmark offers its own rate.
                "--publish-rate",
                "1000000",
                "--publish-burst",
                "1000000",
                // Nor the clients' own (the hooks point's client publishes).
                "--client-publish-rate",
                "1000000",
                "--client-publish-burst",
                "1000000",
            ];
            argv.extend(flags.iter().map(|f| f.to_string()));
            argv.extend(deployment.flags.iter().map(|f| f.to_string()));
            if let Some(url) = backend {
                argv.extend(hook_flags(url));
            }
            if let Some(url) = redis_url {
                argv.extend(["--redis-url".into(), url.to_owned()]);
                if programs.advertise {
                    argv.extend(["--advertise-address".into(), format!("127.0.0.1:{port}")]);
                }
            }
            env.push(("TWINE_LOG".into(), "info".into()));
        }
        peer => {
            let script = match peer {
                Server::NodeRedisAdapter => "redis-adapter.mjs",
                Server::NodeRedisStreams => "redis-streams.mjs",
                Server::NodeRedisSharded => "redis-sharded.mjs",
                Server::NodeRecovery => "recovery.mjs",
                _ => "server.mjs",
            };
            argv.push("node".into());
            argv.push(programs.peer_dir.join(script).display().to_string());
            env.extend([
                ("PORT".into(), port.to_string()),
                ("TWINE_HOST".into(), "127.0.0.1".into()),
                ("TWINE_API_KEY".into(), "test-key".into()),
            ]);
            if let Some(url) = redis_url {
                env.push(("REDIS_URL".into(), url.to_owned()));
            }
        }
    }
    env.extend(
        deployment
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Recipe { argv, env }
}

/// Starts one node from its recipe and returns it once it is listening.
pub async fn spawn(recipe: &Recipe) -> anyhow::Result<Node> {
    let (program, args) = recipe.argv.split_first().context("an empty recipe")?;
    let mut child = Command::new(program)
        .args(args)
        .envs(recipe.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", recipe.argv.join(" ")))?;
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
    Ok(Node {
        child,
        pid,
        url: format!("http://{address}"),
    })
}

pub async fn start(deployment: Deployment, programs: &Programs) -> anyhow::Result<Running> {
    let pin = deployment.pinned && programs.can_pin;
    let redis_core = pin.then_some(1);
    let mut running = Running {
        nodes: Vec::new(),
        recipes: Vec::new(),
        redis: Vec::new(),
        cluster_dir: None,
        backend: None,
    };
    if deployment.backend && deployment.server == Server::Twine {
        // On the other core from the server's, as an app's backend runs on its own machine.
        running.backend = Some(start_backend(programs, pin.then_some(1)).await?);
    }
    let backend_url = running.backend.as_ref().map(|b| b.url.clone());
    let redis = if deployment.server.needs_redis() && deployment.redis == Redis::None {
        Redis::One
    } else {
        deployment.redis
    };
    match redis {
        Redis::None => {}
        Redis::One => running.redis.push(start_redis(redis_core, None).await?),
        Redis::Cluster => {
            let dir = std::env::temp_dir().join(format!(
                "loadgen-cluster-{}-{}",
                std::process::id(),
                free_port()?
            ));
            running.cluster_dir = Some(dir.clone());
            running.redis = start_cluster(redis_core, &dir).await?;
        }
    }
    // One primary's URL, or the cluster's seeds comma-separated (both sides read that form).
    let redis_url = (!running.redis.is_empty()).then(|| {
        running
            .redis
            .iter()
            .map(|r| format!("redis://{}", r.1))
            .collect::<Vec<_>>()
            .join(",")
    });
    for started in 0..deployment.nodes.max(1) + deployment.later {
        let r = recipe(
            deployment,
            programs,
            redis_url.as_deref(),
            backend_url.as_deref(),
            free_port()?,
            pin.then_some(0),
        );
        if started >= deployment.nodes.max(1) {
            running.recipes.push(r);
            continue;
        }
        running.nodes.push(
            spawn(&r)
                .await
                .with_context(|| format!("{:?}", deployment.server))?,
        );
        running.recipes.push(r);
    }
    Ok(running)
}
