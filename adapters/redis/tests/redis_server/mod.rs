//! Starts a real `redis-server` on a free port for a test and stops it when dropped; can also
//! freeze it (SIGSTOP), as a stalled or overloaded Redis would be, read its statistics, and start
//! a replica of it; and a real Redis Cluster.
#![allow(dead_code, reason = "each test binary uses some of these")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// A file the server may save, removed when dropped.
    file: Option<std::path::PathBuf>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A replica of `primary` (`--replicaof`), syncing from it in the background: see
    /// [`RedisServer::replicas_online`].
    pub fn replica_of(primary: &RedisServer) -> RedisServer {
        let port = primary.port.to_string();
        // A replica saves the copy it syncs from: in the temporary folder, removed when dropped.
        let dir = std::env::temp_dir();
        let file = format!("twine-replica-of-{port}-{}.rdb", std::process::id());
        let mut replica = RedisServer::start_with(&[
            "--replicaof",
            "127.0.0.1",
            &port,
            "--dir",
            dir.to_str().expect("a UTF-8 temporary folder"),
            "--dbfilename",
            &file,
        ]);
        replica.file = Some(dir.join(file));
        replica
    }

    /// A server with `extra` arguments after the usual ones.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            // A replica syncs at once, not 5 s after it asked.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/install-test-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            child,
            port,
            file: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl RedisServer {
    /// The server's process id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes the server: connections stay open and commands queue up unanswered until
    /// [`RedisServer::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// One `INFO` section's `name:value` line, e.g. `cmdstat_evalsha` of `commandstats`.
    pub async fn info_line(&self, section: &str, name: &str) -> Option<String> {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis answers");
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await
            .expect("INFO answers");
        let prefix = format!("{name}:");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
    }

    /// Waits (up to 10 s) until `replicas` replicas confirm a write made now (`WAIT`). Being
    /// listed online is not enough: after a full sync Redis 7.0 may hold the stream back until
    /// the replica's next acknowledgement, a second later.
    pub async fn await_replicas(&self, replicas: usize) {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis answers");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // PUBLISH is replicated and stores nothing: the connection's write for WAIT to cover.
            let _: i64 = redis::cmd("PUBLISH")
                .arg("twine-test:replicas")
                .arg("")
                .query_async(&mut conn)
                .await
                .expect("PUBLISH answers");
            let held: usize = redis::cmd("WAIT")
                .arg(replicas)
                .arg(100)
                .query_async(&mut conn)
                .await
                .expect("WAIT answers");
            if held >= replicas {
                return;
            }
            assert!(Instant::now() < deadline, "the replicas did not sync");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too, so a test failing while Redis is paused still
        // cleans up.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A real Redis Cluster on free ports: three primaries with a replica each, stopped (and its
/// files removed) when dropped.
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "twine-cluster-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let listeners: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let nodes = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .arg("--dir")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server is installed")
            })
            .collect();
        let cluster = RedisCluster { nodes, ports, dir };
        for port in &cluster.ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.ports.iter().all(|p| cluster_ok(*p)) {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Replicas in sync, so a write can be confirmed by one.
        while !cluster.primaries().iter().all(|p| {
            cluster
                .cli(*p, &["INFO", "replication"])
                .contains("state=online")
        }) {
            assert!(Instant::now() < deadline, "the replicas did not sync");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The seeds, as `--redis-url` takes them.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The primaries' ports.
    pub fn primaries(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|p| {
                let out = Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "ROLE"])
                    .output()
                    .expect("redis-cli runs");
                String::from_utf8_lossy(&out.stdout).starts_with("master")
            })
            .collect()
    }

    /// What `redis-cli -p port args…` prints.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn cluster_ok(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok"))
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
