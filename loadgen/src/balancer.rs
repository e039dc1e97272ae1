//! A small TCP load balancer in front of several nodes, for the rolling deploy: each new
//! connection goes round robin to the next node whose `GET /ready` answered `200` in the last half
//! second (every node is asked every 250 ms), as a cloud balancer's readiness check does; a node
//! that answers anything else, or refuses the connection, is out at once. It never
//! cuts a connection to a node that stops being ready: closing those is the node's job, and what
//! the deploy measures. A node it cannot connect to is skipped for the next ready one (nginx's
//! `proxy_next_upstream error`). The load generator's clients use WebSocket only, so no
//! stickiness is needed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::http::{connect_from, ready};

/// How often every node is asked whether it is ready.
const POLL: Duration = Duration::from_millis(250);
/// How recent a node's last `200` must be for it to get new connections.
const FRESH: Duration = Duration::from_millis(500);

struct State {
    nodes: Vec<SocketAddr>,
    started: Instant,
    /// Per node: milliseconds after `started` of its last `200` from `/ready` (0: never).
    ready_at: Vec<AtomicU64>,
    next: AtomicUsize,
    /// Upstream connections come from 127.0.100.1–250 in turn, so a deploy's reconnections never
    /// run one source address out of ports.
    source: AtomicUsize,
}

impl State {
    fn is_ready(&self, node: usize) -> bool {
        let at = self.ready_at[node].load(Ordering::Relaxed);
        at > 0 && self.started.elapsed().as_millis() as u64 <= at + FRESH.as_millis() as u64
    }

    /// Connects to the next ready node in turn (trying the others when one refuses).
    async fn upstream(&self) -> Option<TcpStream> {
        let n = self.nodes.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let node = (first + k) % n;
            if !self.is_ready(node) {
                continue;
            }
            let i = self.source.fetch_add(1, Ordering::Relaxed) % 250;
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 100, 1 + i as u8));
            if let Ok(stream) = connect_from(source, self.nodes[node]).await {
                return Some(stream);
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
            ready_at: nodes.iter().map(|_| AtomicU64::new(0)).collect(),
            nodes,
            started: Instant::now(),
            next: AtomicUsize::new(0),
            source: AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(poll(state.clone(), stopped.clone()));
        tokio::spawn(accept(listener, state.clone(), stopped));
        let b = Balancer { addr, state, stop };
        let give_up = Instant::now() + Duration::from_secs(20);
        while !b.all_ready() {
            anyhow::ensure!(Instant::now() < give_up, "the nodes were not ready in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(b)
    }

    pub fn all_ready(&self) -> bool {
        (0..self.state.nodes.len()).all(|n| self.state.is_ready(n))
    }

    pub fn is_ready(&self, node: usize) -> bool {
        self.state.is_ready(node)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn poll(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let asks = state.nodes.iter().enumerate().map(|(i, &node)| {
            let state = state.clone();
            async move {
                match ready(node, POLL).await {
                    Some(true) => {
                        let now = state.started.elapsed().as_millis().max(1) as u64;
                        state.ready_at[i].store(now, Ordering::Relaxed);
                    }
                    Some(false) => state.ready_at[i].store(0, Ordering::Relaxed),
                    // No answer in time: the last one stands until it is half a second old.
                    None => {}
                }
            }
        });
        futures_util::future::join_all(asks).await;
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
            let Some(mut upstream) = state.upstream().await else {
                // No node is ready: the client sees its connection close and retries.
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
