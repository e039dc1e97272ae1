//! The sockets this node holds, as the Admin UI lists them: each known by its id, in the order
//! they connected, holding only weak references (to the socket, whose handshake socketioxide
//! keeps anyway, and to its Twine connection, which knows its rooms), so the registry costs a
//! few dozen bytes a socket and describes one only when it is listed.
//!
//! A listing (`all_sockets`) is bounded: the [`LISTED`] newest sockets, with the count of all.
//!
//! The UI never sees a socket's own id: socketioxide's socket id is its Engine.IO session id,
//! which is all a long-polling request needs to act as that client. Each socket is shown under
//! a pseudonym instead (a keyed hash of its id, the key random per process), which the
//! operations name it by.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socketioxide::TransportType;
use socketioxide::adapter::LocalAdapter;
use socketioxide::socket::Socket;

use super::redact::{self, Secrets};
use crate::net::wire::Wire;
use crate::socket::connection::Connection;
use crate::transport::Sid;

/// Most sockets one `all_sockets` lists: the newest.
pub const LISTED: usize = 1_000;

/// One socket known to the registry.
#[derive(Clone)]
pub struct Entry {
    seq: u64,
    /// What the UI knows the socket by.
    pub shown: Arc<str>,
    pub issued: SystemTime,
    pub socket: Weak<Socket<LocalAdapter>>,
    pub connection: Weak<Connection>,
}

#[derive(Default)]
struct Inner {
    by_sid: HashMap<Sid, Entry>,
    by_shown: HashMap<Arc<str>, Sid>,
    order: BTreeMap<u64, Sid>,
    next: u64,
    /// Sockets on long-polling when last looked at ([`Registry::upgraded`]).
    polling: HashSet<Sid>,
}

pub struct Registry {
    inner: Mutex<Inner>,
    /// Keys the pseudonyms.
    key: [u8; 32],
}

impl Default for Registry {
    fn default() -> Self {
        let mut key = [0; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Registry {
            inner: Mutex::default(),
            key,
        }
    }
}

/// A bounded listing: the newest sockets described, and how many there are.
pub struct Listing {
    pub sockets: Vec<Value>,
    pub total: usize,
}

impl Registry {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pseudonym the UI knows `sid` by: 20 hex digits of a keyed hash.
    fn pseudonym(&self, sid: Sid) -> Arc<str> {
        let digest = Sha256::new()
            .chain_update(self.key)
            .chain_update(sid.as_str())
            .finalize();
        let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
        Arc::from(hex)
    }

    pub fn add(
        &self,
        socket: &Arc<Socket<LocalAdapter>>,
        connection: &Arc<Connection>,
        polling: bool,
    ) -> Entry {
        let mut inner = self.inner();
        let seq = inner.next;
        inner.next += 1;
        let entry = Entry {
            seq,
            shown: self.pseudonym(socket.id),
            issued: SystemTime::now(),
            socket: Arc::downgrade(socket),
            connection: Arc::downgrade(connection),
        };
        inner.order.insert(seq, socket.id);
        inner.by_shown.insert(entry.shown.clone(), socket.id);
        if polling {
            inner.polling.insert(socket.id);
        }
        inner.by_sid.insert(socket.id, entry.clone());
        entry
    }

    /// Forgets `sid`; its entry, if it was known.
    pub fn remove(&self, sid: Sid) -> Option<Entry> {
        let mut inner = self.inner();
        let entry = inner.by_sid.remove(&sid)?;
        inner.order.remove(&entry.seq);
        inner.by_shown.remove(&entry.shown);
        inner.polling.remove(&sid);
        Some(entry)
    }

    pub fn get(&self, sid: Sid) -> Option<Entry> {
        self.inner().by_sid.get(&sid).cloned()
    }

    /// The socket the UI knows as `shown`.
    pub fn shown(&self, shown: &str) -> Option<Entry> {
        let inner = self.inner();
        let sid = inner.by_shown.get(shown)?;
        inner.by_sid.get(sid).cloned()
    }

    /// How many sockets, and how many of them were on long-polling when last looked at.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner();
        (inner.by_sid.len(), inner.polling.len())
    }

    /// The sockets that have upgraded from long-polling since last asked (each is looked at
    /// until it upgrades or goes: most upgrade within their first round trips).
    pub fn upgraded(&self) -> Vec<Entry> {
        let mut inner = self.inner();
        let Inner {
            by_sid, polling, ..
        } = &mut *inner;
        let mut upgraded = Vec::new();
        polling.retain(|sid| {
            let Some(entry) = by_sid.get(sid) else {
                return false;
            };
            let on_polling = entry
                .socket
                .upgrade()
                .is_some_and(|s| s.transport_type() == TransportType::Polling);
            if !on_polling {
                upgraded.push(entry.clone());
            }
            on_polling
        });
        upgraded
    }

    /// Up to `most` sockets, newest first (the lock is held only to copy them).
    pub fn newest(&self, most: usize) -> Vec<(Sid, Entry)> {
        let inner = self.inner();
        inner
            .order
            .values()
            .rev()
            .take(most)
            .filter_map(|sid| inner.by_sid.get(sid).map(|e| (*sid, e.clone())))
            .collect()
    }

    /// The [`LISTED`] newest sockets, described.
    pub fn listing(&self, api_key: &str) -> Listing {
        let total = self.counts().0;
        let sockets = self
            .newest(LISTED)
            .into_iter()
            .filter_map(|(_, entry)| describe(&entry, api_key))
            .collect();
        Listing { sockets, total }
    }
}

/// A socket as the Admin UI's `SerializedSocket`: `id`, `clientId`, `transport`, `nsp`, `data`,
/// `handshake` (redacted) and `rooms` (its Twine rooms), under its pseudonym; `None` once it is
/// gone.
pub fn describe(entry: &Entry, api_key: &str) -> Option<Value> {
    let socket = entry.socket.upgrade()?;
    let parts = socket.req_parts();
    let peer = parts.extensions.get::<Arc<Wire>>().map(|w| w.peer);
    let twineid = crate::session::twineid(&parts.headers);
    let secrets = Secrets {
        api_key,
        twineid: twineid.as_deref(),
    };
    let rooms: Vec<String> = entry
        .connection
        .upgrade()
        .map(|c| c.rooms(|rooms| rooms.keys().map(|r| r.to_string()).collect()))
        .unwrap_or_default();
    let transport = match socket.transport_type() {
        TransportType::Polling => "polling",
        TransportType::Websocket => "websocket",
    };
    Some(json!({
        "id": &*entry.shown,
        "clientId": &entry.shown[..12],
        "transport": transport,
        "nsp": "/",
        "data": {},
        "handshake": redact::handshake(parts, peer, entry.issued, &secrets),
        "rooms": rooms,
    }))
}
