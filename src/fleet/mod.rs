//! The fleet as this node sees it. Every node announces itself through the stores about once a
//! second (its address, sockets, capacity, rooms, whether it drains) and reads everyone's
//! announcements back; a node that stops announcing drops out within [`ANNOUNCE_TTL`]. With Redis
//! that is every node of the deployment; alone, the node sees itself.
//!
//! The view answers `GET /api/fleet` and the fleet metrics, finds the node holding an Engine.IO
//! session for [`forward`], and decides whether this node takes new handshakes: not at its own
//! capacity (`--max-sockets`), not while [`rebalance`] finds it over its share.

pub mod forward;
pub mod rebalance;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use twine_store::Fleet;

use crate::metrics::Metrics;

/// How often a node announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How long an announcement stands: a node that stops announcing (killed, cut off) drops out of
/// every view within this and one more announcement of theirs.
pub const ANNOUNCE_TTL: Duration = Duration::from_secs(3);

/// One node as it announces itself (the JSON of `GET /api/fleet`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub id: String,
    /// Where the other nodes reach it (`host:port`).
    pub address: String,
    /// Socket.IO connections it holds.
    pub sockets: u64,
    /// `--max-sockets`, if set.
    pub capacity: Option<u64>,
    /// Rooms with members on it.
    pub rooms: u64,
    pub draining: bool,
    /// Whether it holds Socket.IO connections at all (`--role publish` does not).
    #[serde(default = "holds_sockets")]
    pub holds_sockets: bool,
    /// Whether it is moving sockets to other nodes ([`rebalance`]).
    #[serde(default)]
    pub moving: bool,
    /// Admin UI connections logged in on it ([`crate::admin::relay`]).
    #[serde(default)]
    pub admins: u64,
    /// When it started, in milliseconds since the epoch.
    pub started_at: u64,
    pub version: String,
}

fn holds_sockets() -> bool {
    true
}

/// What this node reports of itself at an announcement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub sockets: u64,
    pub rooms: u64,
    pub draining: bool,
    pub admins: u64,
}

/// Why a handshake is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The node holds `--max-sockets`.
    AtCapacity,
    /// The node holds more than its share of the fleet's sockets and moves some away.
    OverShare,
}

/// This node's view of the fleet.
pub struct FleetView {
    me: String,
    started_at: u64,
    started: Instant,
    store: Arc<dyn Fleet>,
    /// Whether other nodes can see this one (the store is shared).
    shared: bool,
    address: OnceLock<String>,
    /// The nodes as last read, this one included.
    nodes: RwLock<Arc<Vec<Node>>>,
    /// The other nodes' IP addresses: their connections carry forwarded requests.
    member_ips: RwLock<HashSet<IpAddr>>,
    /// When the view was last read from the store.
    fresh: RwLock<Option<Instant>>,
    capacity: Option<u64>,
    full: AtomicBool,
    /// Set by [`rebalance`]: new handshakes are refused while the node holds this many
    /// sockets (none while it moves sockets away, its share while another node does).
    take_below: AtomicU64,
    holds_sockets: bool,
    metrics: Arc<Metrics>,
}

impl FleetView {
    /// The view of a node announcing through `store` (`shared` when other nodes use it too).
    pub fn new(
        store: Arc<dyn Fleet>,
        shared: bool,
        capacity: Option<u64>,
        holds_sockets: bool,
        metrics: Arc<Metrics>,
    ) -> Arc<FleetView> {
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        // Short, and only letters and digits: it rides in Engine.IO session ids.
        let me = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        Arc::new(FleetView {
            me,
            started_at,
            started: Instant::now(),
            store,
            shared,
            address: OnceLock::new(),
            nodes: RwLock::default(),
            member_ips: RwLock::default(),
            fresh: RwLock::default(),
            capacity,
            full: AtomicBool::new(false),
            take_below: AtomicU64::new(u64::MAX),
            holds_sockets,
            metrics,
        })
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether other nodes share this view (forwarding and rebalancing need them).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// How long this node has run.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sets where the other nodes reach this one; the first call wins.
    pub fn advertise(&self, address: String) {
        let _ = self.address.set(address);
    }

    /// The nodes as last read (this one included), oldest first.
    pub fn nodes(&self) -> Arc<Vec<Node>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the view was read from the store within the last few announcements: a view older
    /// than that says nothing about the others, and nothing is moved on it.
    pub fn is_fresh(&self) -> bool {
        self.fresh
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < ANNOUNCE_TTL)
    }

    /// When the view was last read from the store.
    pub fn fresh_at(&self) -> Option<Instant> {
        *self.fresh.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Where node `id` (another one) is reached, if it is in the fleet.
    pub fn address_of(&self, id: &str) -> Option<String> {
        if id == self.me {
            return None;
        }
        self.nodes()
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.address.clone())
    }

    /// Whether `ip` is another node's address.
    pub fn is_member(&self, ip: IpAddr) -> bool {
        self.shared
            && self
                .member_ips
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&ip)
    }

    /// Whether a new handshake is taken now, with `sockets` held (joined or joining). At
    /// capacity the node stays closed until it is 5 % under.
    pub fn admits(&self, sockets: u64) -> Result<(), Closed> {
        if self.at_capacity(sockets) {
            return Err(Closed::AtCapacity);
        }
        if sockets >= self.take_below.load(Ordering::Acquire) {
            return Err(Closed::OverShare);
        }
        Ok(())
    }

    /// Whether the node holds `--max-sockets`, with hysteresis.
    pub fn at_capacity(&self, sockets: u64) -> bool {
        let Some(max) = self.capacity else {
            return false;
        };
        let reopen_at = max - max.div_ceil(20);
        let full = if self.full.load(Ordering::Acquire) {
            sockets > reopen_at
        } else {
            sockets >= max
        };
        self.full.store(full, Ordering::Release);
        full
    }

    fn take_below(&self, sockets: u64) {
        self.take_below.store(sockets, Ordering::Release);
    }

    /// Announces this node with `load` and reads the fleet back.
    async fn announce(&self, load: Load) {
        let node = Node {
            id: self.me.clone(),
            address: self.address.get().cloned().unwrap_or_default(),
            sockets: load.sockets,
            capacity: self.capacity,
            rooms: load.rooms,
            draining: load.draining,
            holds_sockets: self.holds_sockets,
            moving: self.take_below.load(Ordering::Acquire) == 0,
            admins: load.admins,
            started_at: self.started_at,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let info = serde_json::to_string(&node).unwrap_or_default();
        let announced = match self.store.announce(&self.me, &info, ANNOUNCE_TTL).await {
            Ok(announced) => announced,
            Err(e) => {
                tracing::debug!("fleet: announcement not stored: {e}");
                return;
            }
        };
        let mut nodes: Vec<Node> = announced
            .iter()
            .filter_map(|a| serde_json::from_str(&a.info).ok())
            .collect();
        nodes.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        let ips = nodes
            .iter()
            .filter(|n| n.id != self.me)
            .filter_map(|n| host_ip(&n.address))
            .collect();
        self.metrics.fleet_nodes.set(nodes.len() as i64);
        self.metrics
            .fleet_sockets
            .set(nodes.iter().map(|n| n.sockets).sum::<u64>() as i64);
        *self.member_ips.write().unwrap_or_else(|e| e.into_inner()) = ips;
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(nodes);
        *self.fresh.write().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Announces this node every [`ANNOUNCE_EVERY`] with what `load` reports, until the view is
    /// dropped ([`FleetView::leave`] takes it out sooner).
    pub fn spawn_announcer(self: &Arc<Self>, load: impl Fn() -> Load + Send + 'static) {
        let view = Arc::downgrade(self);
        tokio::spawn(async move {
            // On the wall clock's whole seconds, so every node's figures in a snapshot are of
            // about the same moment (the nodes' clocks agree to a few milliseconds).
            let into_second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            let first = tokio::time::Instant::now()
                + Duration::from_nanos(u64::from(1_000_000_000 - into_second));
            let mut every = tokio::time::interval_at(first, ANNOUNCE_EVERY);
            // A late announcement skips to the next whole second, staying in step.
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let Some(view) = view.upgrade() else { break };
                view.announce(load()).await;
            }
        });
    }

    /// Takes this node out of the fleet now (it has drained and stops).
    pub async fn leave(&self) {
        if let Err(e) = self.store.leave(&self.me).await {
            tracing::debug!("fleet: leave not stored: {e}");
        }
    }
}

/// The IP in `host:port` (or a bare IP).
fn host_ip(address: &str) -> Option<IpAddr> {
    address
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| address.parse::<IpAddr>())
        .ok()
}

/// Where the other nodes reach this one: `configured` (`host:port`, or `host` with the port
/// listened on), else the address listened on when it is one, else the local address this
/// node reaches `redis_url` from, else the loopback address.
pub fn advertised(
    configured: Option<&str>,
    listening: SocketAddr,
    redis_url: Option<&str>,
) -> String {
    let port = listening.port();
    if let Some(configured) = configured {
        let bare = configured.trim_matches(['[', ']']);
        return match bare.parse::<IpAddr>() {
            // An address without a port (IPv6 ones too, bracketed or not).
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) if configured.parse::<SocketAddr>().is_ok() => configured.to_owned(),
            // A host name, with its port or without.
            Err(_) => match configured.rsplit_once(':') {
                Some((_, p)) if p.parse::<u16>().is_ok() => configured.to_owned(),
                _ => format!("{configured}:{port}"),
            },
        };
    }
    if !listening.ip().is_unspecified() {
        return listening.to_string();
    }
    let outward = redis_url.and_then(redis_host).and_then(|host| {
        let socket = UdpSocket::bind((IpAddr::from([0u8; 4]), 0)).ok()?;
        socket.connect(host).ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    });
    SocketAddr::new(outward.unwrap_or(IpAddr::from([127, 0, 0, 1])), port).to_string()
}

/// `host:port` of a Redis URL (`redis://[user:pass@]host:port/db`, the first of a list).
fn redis_host(url: &str) -> Option<String> {
    let first = url.split(',').next()?.trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?']).next()?;
    if host.is_empty() {
        return None;
    }
    Some(if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use twine_store::MemoryFleet;

    #[test]
    fn capacity_closes_at_the_bound_and_reopens_five_percent_under() {
        let view = FleetView::new(
            Arc::new(MemoryFleet::new()),
            false,
            Some(100),
            true,
            Metrics::new(),
        );
        assert_eq!(view.admits(99), Ok(()));
        assert_eq!(view.admits(100), Err(Closed::AtCapacity));
        assert_eq!(
            view.admits(99),
            Err(Closed::AtCapacity),
            "no flapping at the edge"
        );
        assert_eq!(view.admits(96), Err(Closed::AtCapacity));
        assert_eq!(view.admits(95), Ok(()));
        assert_eq!(view.admits(99), Ok(()));
        let unbounded = FleetView::new(
            Arc::new(MemoryFleet::new()),
            false,
            None,
            true,
            Metrics::new(),
        );
        assert_eq!(unbounded.admits(1 << 40), Ok(()));
    }

    #[test]
    fn the_advertised_address_is_configured_or_listened_on_or_faces_redis() {
        let any: SocketAddr = "0.0.0.0:3005".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            advertised(Some("10.0.0.7:9000"), any, None),
            "10.0.0.7:9000"
        );
        assert_eq!(advertised(Some("10.0.0.7"), any, None), "10.0.0.7:3005");
        assert_eq!(
            advertised(Some("pod-1.twine"), any, None),
            "pod-1.twine:3005"
        );
        assert_eq!(advertised(Some("::1"), any, None), "[::1]:3005");
        assert_eq!(advertised(Some("[::1]:9"), any, None), "[::1]:9");
        assert_eq!(
            advertised(Some("pod-1.twine:3005"), any, None),
            "pod-1.twine:3005"
        );
        assert_eq!(
            advertised(None, local, Some("redis://127.0.0.1:6379")),
            "127.0.0.1:4000"
        );
        assert_eq!(
            advertised(None, any, Some("redis://127.0.0.1:6379/0")),
            "127.0.0.1:3005",
            "the address Redis is reached from"
        );
        assert_eq!(
            redis_host("rediss://u:p@cache.example:6380/1").as_deref(),
            Some("cache.example:6380")
        );
        assert_eq!(
            redis_host("redis://cache.example").as_deref(),
            Some("cache.example:6379")
        );
    }

    #[tokio::test]
    async fn nodes_see_each_other_and_a_silent_one_drops_out() {
        let store = MemoryFleet::new();
        let a = FleetView::new(Arc::new(store.clone()), true, None, true, Metrics::new());
        let b = FleetView::new(Arc::new(store), true, Some(10), true, Metrics::new());
        a.advertise("10.0.0.1:3005".into());
        b.advertise("10.0.0.2:3005".into());
        a.announce(Load {
            sockets: 3,
            rooms: 1,
            draining: false,
            admins: 0,
        })
        .await;
        b.announce(Load {
            sockets: 4,
            rooms: 2,
            draining: true,
            admins: 0,
        })
        .await;
        a.announce(Load {
            sockets: 3,
            rooms: 1,
            draining: false,
            admins: 0,
        })
        .await;
        let nodes = a.nodes();
        assert_eq!(nodes.len(), 2);
        assert_eq!(a.address_of(b.me()).as_deref(), Some("10.0.0.2:3005"));
        assert_eq!(a.address_of(a.me()), None, "never forwards to itself");
        assert!(a.is_member("10.0.0.2".parse().unwrap()));
        assert!(!a.is_member("10.0.0.1".parse().unwrap()));
        let seen_b = nodes.iter().find(|n| n.id == b.me()).unwrap();
        assert_eq!(
            (seen_b.sockets, seen_b.capacity, seen_b.draining),
            (4, Some(10), true)
        );
        assert_eq!(a.metrics.fleet_sockets.get(), 7);
        b.leave().await;
        a.announce(Load::default()).await;
        assert_eq!(a.nodes().len(), 1);
        assert_eq!(a.address_of(b.me()), None);
    }
}
