//! A small TCP load balancer in front of several nodes, for the rolling deploy and the scale-out:
//! round robin with no stickiness (each new TCP connection goes to the next ready node; nothing of
//! the request, no cookie and no `sid`, is looked at), among the nodes whose readiness check
//! passes, checked as a cloud balancer checks its targets: every node is asked `GET /ready` every
//! second with a 2 s timeout; a `200` puts it in service, two failed checks in a row (another
//! answer, a refused connection, no answer in time) take it out, and so does a last `200` more than
//! 3 s old. It never cuts a connection to a node that stops being ready: closing those is the
//! node's job, and what the deploy measures. A node it cannot connect to is skipped for the next
//! ready one (nginx's `proxy_next_upstream error`); a connection for which no node is ready (or
//! every ready one refused) is closed at once and counted. Nodes may be added while it runs (the
//! scale-out), and it counts the connections it holds open to each node.
//!
//! The load generator's clients use WebSocket only: one TCP connection per Engine.IO session, so
//! round robin needs no stickiness (a long-polling client would need it, or a server that forwards
//! a session's requests to the node holding it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::http::{connect_from, ready};

/// How often every node is asked whether it is ready.
const POLL: Duration = Duration::from_secs(1);
/// How long one check may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Failed checks in a row that take a node out of service.
const FAILURES: u32 = 2;
/// How recent a node's last `200` must be for it to get new connections.
const FRESH: Duration = Duration::from_secs(3);

/// One node behind the balancer.
struct Node {
    addr: SocketAddr,
    /// In service: its last check passed, or fewer than [`FAILURES`] have failed since.
    in_service: AtomicBool,
    /// Milliseconds after the balancer started of its last `200` from `/ready` (0: never).
    ready_at: AtomicU64,
    /// Failed checks since the last `200`.
    failures: AtomicU32,
    /// Connections open to it now.
    open: AtomicUsize,
}

struct State {
    nodes: RwLock<Vec<Arc<Node>>>,
    started: Instant,
    next: AtomicUsize,
    /// Upstream connections come from 127.0.100.1–250 in turn, so a deploy's reconnections never
    /// run one source address out of ports.
    source: AtomicUsize,
    /// Client connections closed because no node was ready (or every ready one refused).
    no_ready: AtomicU64,
}

/// Counts a connection open to a node for as long as it lives.
struct Open(Arc<Node>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl State {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis().max(1) as u64
    }

    fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.read().expect("balancer nodes").clone()
    }

    fn is_ready(&self, node: &Node) -> bool {
        let at = node.ready_at.load(Ordering::Relaxed);
        node.in_service.load(Ordering::Relaxed)
            && at > 0
            && self.now_ms() <= at + FRESH.as_millis() as u64
    }

    /// Connects to the next ready node in turn (trying the others when one refuses).
    async fn upstream(&self) -> Option<(TcpStream, Open)> {
        let nodes = self.nodes();
        let n = nodes.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let node = &nodes[(first + k) % n];
            if !self.is_ready(node) {
                continue;
            }
            let i = self.source.fetch_add(1, Ordering::Relaxed) % 250;
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 100, 1 + i as u8));
            if let Ok(stream) = connect_from(source, node.addr).await {
                node.open.fetch_add(1, Ordering::Relaxed);
                return Some((stream, Open(node.clone())));
            }
        }
        None
    }
}

/// A running balancer; it stops (and closes every connection it carries) when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
}

impl Balancer {
    /// Listens on a free loopback port and returns once every node has been found ready.
    pub async fn start(nodes: Vec<SocketAddr>) -> anyhow::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            nodes: RwLock::new(Vec::new()),
            started: Instant::now(),
            next: AtomicUsize::new(0),
            source: AtomicUsize::new(0),
            no_ready: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept(listener, state.clone(), stopped));
        let b = Balancer { addr, state, stop };
        for node in nodes {
            b.add(node);
        }
        let give_up = Instant::now() + Duration::from_secs(20);
        while !b.all_ready() {
            anyhow::ensure!(Instant::now() < give_up, "the nodes were not ready in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(b)
    }

    /// Puts `node` behind the balancer (checked from now on, in service once a check passes);
    /// returns its index.
    pub fn add(&self, node: SocketAddr) -> usize {
        let entry = Arc::new(Node {
            addr: node,
            in_service: AtomicBool::new(false),
            ready_at: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            open: AtomicUsize::new(0),
        });
        let index = {
            let mut nodes = self.state.nodes.write().expect("balancer nodes");
            nodes.push(entry.clone());
            nodes.len() - 1
        };
        tokio::spawn(check(self.state.clone(), entry, self.stop.subscribe()));
        index
    }

    pub fn all_ready(&self) -> bool {
        self.state.nodes().iter().all(|n| self.state.is_ready(n))
    }

    pub fn is_ready(&self, node: usize) -> bool {
        self.state
            .nodes()
            .get(node)
            .is_some_and(|n| self.state.is_ready(n))
    }

    /// Connections open to each node now (in the order the nodes were added).
    pub fn open(&self) -> Vec<usize> {
        self.state
            .nodes()
            .iter()
            .map(|n| n.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Client connections closed so far because no node was ready.
    pub fn no_ready(&self) -> u64 {
        self.state.no_ready.load(Ordering::Relaxed)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Checks one node every [`POLL`] until the balancer stops.
async fn check(state: Arc<State>, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let passed = tokio::select! {
            answer = ready(node.addr, TIMEOUT) => answer == Some(true),
            _ = stop.changed() => return,
        };
        if passed {
            node.failures.store(0, Ordering::Relaxed);
            node.ready_at.store(state.now_ms(), Ordering::Relaxed);
            node.in_service.store(true, Ordering::Relaxed);
        } else if node.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES {
            node.in_service.store(false, Ordering::Relaxed);
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    loop {
        let mut stopping = stop.clone();
        let client = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
            _ = stopping.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let Some((mut upstream, _open)) = state.upstream().await else {
                // No node is ready: the client sees its connection close and retries.
                state.no_ready.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = stopping.changed() => {}
            }
        });
    }
}
