//! `server_stats`, every [`EVERY`] while an admin watches: this node's figures as the Admin UI
//! charts them (`serverId`, `hostname`, `pid`, `uptime`, `clientsCount`, `pollingClientsCount`,
//! `aggregatedEvents`, `namespaces`), plus `listedSockets`/`droppedEvents` of our own bounds;
//! with Redis, one more for every other node of the fleet from its announcement (its id, socket
//! count, age; `pid` 0, as it is not known here).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::state::AppState;

/// How often `server_stats` is emitted (as the Admin UI's own server does).
pub const EVERY: Duration = Duration::from_secs(2);

#[derive(Serialize)]
pub struct Namespace {
    name: &'static str,
    #[serde(rename = "socketsCount")]
    sockets_count: u64,
}

#[derive(Serialize)]
pub struct Aggregated {
    timestamp: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStats {
    server_id: String,
    hostname: String,
    pid: u32,
    uptime: f64,
    clients_count: u64,
    polling_clients_count: u64,
    aggregated_events: Vec<Aggregated>,
    namespaces: Vec<Namespace>,
    /// Sockets an `all_sockets` lists at most ([`super::registry::LISTED`]).
    listed_sockets: usize,
    /// Live events dropped over their bound since the last `server_stats`.
    dropped_events: u64,
}

/// Connections and disconnections counted between two `server_stats`.
#[derive(Default)]
pub struct Tally {
    connections: AtomicU64,
    disconnections: AtomicU64,
}

impl Tally {
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn disconnected(&self) {
        self.disconnections.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self, now: SystemTime) -> Vec<Aggregated> {
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() * 1000);
        [
            ("rawConnection", self.connections.swap(0, Ordering::Relaxed)),
            (
                "rawDisconnection",
                self.disconnections.swap(0, Ordering::Relaxed),
            ),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(kind, count)| Aggregated {
            timestamp: second,
            kind,
            count,
        })
        .collect()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// This node's `server_stats`, then the other nodes' of the fleet.
pub fn collect(app: &Arc<AppState>, admin: &super::Admin) -> Vec<ServerStats> {
    let fleet = &app.fleet;
    let (sockets, polling) = admin.registry.counts();
    let admins = admin.watchers() as u64;
    let hostname = hostname();
    let mine = ServerStats {
        server_id: fleet.me().to_owned(),
        hostname: hostname.clone(),
        pid: std::process::id(),
        uptime: fleet.age().as_secs_f64(),
        clients_count: sockets as u64 + admins,
        polling_clients_count: polling as u64,
        aggregated_events: admin.tally.take(SystemTime::now()),
        namespaces: vec![
            Namespace {
                name: "/",
                sockets_count: sockets as u64,
            },
            Namespace {
                name: super::NAMESPACE,
                sockets_count: admins,
            },
        ],
        listed_sockets: super::registry::LISTED,
        dropped_events: admin.feed.take_dropped(),
    };
    let mut all = vec![mine];
    if !fleet.is_shared() {
        return all;
    }
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for node in fleet
        .nodes()
        .iter()
        .filter(|n| n.id != fleet.me() && n.holds_sockets)
    {
        all.push(ServerStats {
            server_id: node.id.clone(),
            hostname: node.address.clone(),
            pid: 0,
            uptime: now_ms.saturating_sub(node.started_at) as f64 / 1000.0,
            clients_count: node.sockets,
            polling_clients_count: 0,
            aggregated_events: Vec::new(),
            namespaces: vec![Namespace {
                name: "/",
                sockets_count: node.sockets,
            }],
            listed_sockets: super::registry::LISTED,
            dropped_events: 0,
        });
    }
    all
}
