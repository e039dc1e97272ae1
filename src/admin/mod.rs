//! The Socket.IO Admin UI's server side (`@socket.io/admin-ui` 0.5), on the `/admin` namespace
//! of the same Engine.IO endpoint, with `--admin on`:
//!
//! - [`auth`]: the login (`{username, password}` in the handshake's auth against a bcrypt hash,
//!   or a session id from an earlier one), bounded per client address;
//! - on connect: `session`, `config` (the features offered: `AGGREGATED_EVENTS`, `ALL_EVENTS`
//!   (for the UI's pages; no event arguments are ever sent), and `JOIN`,
//!   `LEAVE`, `DISCONNECT` with `--admin-readonly off`), `all_sockets` ([`registry`]: the
//!   [`registry::LISTED`] newest of this node's sockets, their handshakes redacted by
//!   [`redact`], each under a pseudonym: its id is its Engine.IO session's);
//! - [`stats`]: `server_stats` every two seconds, for this node and, with Redis, the fleet's
//!   others;
//! - [`events`]: `socket_connected`, `socket_updated` (an upgrade), `socket_disconnected`,
//!   `room_joined` and `room_left` for the sockets and their Twine rooms, within a node-wide
//!   rate;
//! - [`ops`]: the operator's joins, leaves and disconnects;
//! - [`relay`]: with Redis, the same across the fleet: the listing merged from every node, the
//!   other nodes' live events, the operations run on every node.
//!
//! Admin connections are Engine.IO connections like the others (the edge's connection limits
//! and the gate's pending sessions hold them), and at most [`MAX_WATCHERS`] are logged in at
//! once on a node.

pub mod auth;
pub mod events;
pub mod ops;
pub mod redact;
pub mod registry;
pub mod relay;
pub mod stats;

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::handler::{ConnectHandler, DisconnectHandler, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};

use crate::config::{Config, Switch};
use crate::net::pending::Pending;
use crate::net::wire::Wire;
use crate::rate::{Limiter, limiter};
use crate::socket::connection::Connection;
use crate::state::AppState;
use crate::transport::Sid;
use crate::transport::socketio::Handled;
use auth::{LoggedIn, Login};
use events::{Feed, Live};
use registry::Registry;
use relay::Relay;
use stats::Tally;

/// The namespace the Admin UI connects to.
pub const NAMESPACE: &str = "/admin";
/// Admin connections logged in at once on one node, at most.
pub const MAX_WATCHERS: usize = 16;
/// Operations (join, leave, disconnect) per second on one node, and at once.
const OPERATIONS_PER_SECOND: u32 = 10;
const OPERATIONS_BURST: u32 = 20;

pub struct Admin {
    login: Login,
    readonly: bool,
    pub registry: Registry,
    pub feed: Feed,
    pub tally: Tally,
    pub relay: Relay,
    watchers: AtomicUsize,
    operations: Limiter,
}

impl Admin {
    /// The admin `config` asks for; `None` with `--admin off` (the configuration has checked
    /// that `on` comes with a login).
    pub fn configured(config: &Config) -> Option<Admin> {
        if config.admin == Switch::Off {
            return None;
        }
        let username = config.admin_username.as_deref()?;
        let hash = config.admin_password_hash.as_deref()?;
        Some(Admin {
            login: Login::new(username, hash),
            readonly: config.admin_readonly == Switch::On,
            registry: Registry::default(),
            feed: Feed::default(),
            tally: Tally::default(),
            relay: Relay::default(),
            watchers: AtomicUsize::new(0),
            operations: limiter(OPERATIONS_PER_SECOND, OPERATIONS_BURST),
        })
    }

    /// Admin connections logged in now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Whether an admin is logged in on this node.
    fn watched_here(&self) -> bool {
        self.watchers() > 0
    }

    /// Runs an operation on this node's sockets, within the node's rate of operations; whether
    /// it ran.
    fn operate_here(&self, text: &str) -> bool {
        if self.operations.check().is_err() {
            tracing::debug!("admin operation dropped over its rate");
            return false;
        }
        ops::operate(self, text);
        true
    }

    /// The features the UI is offered.
    fn features(&self) -> Vec<&'static str> {
        let mut features = if self.readonly {
            Vec::new()
        } else {
            vec!["JOIN", "LEAVE", "DISCONNECT"]
        };
        // ALL_EVENTS turns on the UI's sockets, rooms, clients and events pages; of the events
        // only the connections and rooms are sent, never a message's arguments.
        features.extend(["AGGREGATED_EVENTS", "ALL_EVENTS"]);
        features
    }

    /// A socket joined the namespace `/`.
    pub fn opened(
        &self,
        socket: &Arc<Socket<LocalAdapter>>,
        connection: &Arc<Connection>,
        polling: bool,
    ) {
        let entry = self.registry.add(socket, connection, polling);
        self.tally.connected();
        let api_key = connection.app.api_key.as_str();
        self.feed.push(self.watched_here(), || {
            let socket = registry::describe(&entry, api_key)?;
            Some(Live::Connected { socket })
        });
    }

    /// A socket of `/` is gone.
    pub fn closed(&self, sid: Sid, reason: &str) {
        let Some(entry) = self.registry.remove(sid) else {
            return;
        };
        self.tally.disconnected();
        self.feed.push(self.watched_here(), || {
            Some(Live::Disconnected {
                id: entry.shown.to_string(),
                reason: reason.to_owned(),
            })
        });
    }

    pub fn joined(&self, sid: Sid, room: &str) {
        self.feed.push(self.watched_here(), || {
            let id = self.registry.get(sid)?.shown.to_string();
            let room = room.to_owned();
            Some(Live::Joined { id, room })
        });
    }

    pub fn left(&self, sid: Sid, room: &str) {
        self.feed.push(self.watched_here(), || {
            let id = self.registry.get(sid)?.shown.to_string();
            let room = room.to_owned();
            Some(Live::Left { id, room })
        });
    }

    /// Tells the admins of the sockets that upgraded from long-polling since last looked at
    /// (engineioxide tells a socket's handler nothing of an upgrade, so it is looked for).
    fn look_for_upgrades(&self) {
        if !self.watched_here() && !self.feed.is_watched_elsewhere() {
            return;
        }
        for entry in self.registry.upgraded() {
            self.feed.push(self.watched_here(), || {
                Some(Live::Updated {
                    id: entry.shown.to_string(),
                    transport: "websocket".to_owned(),
                })
            });
        }
    }
}

/// Serves the `/admin` namespace, and starts its live events and its `server_stats`.
pub fn register(io: &SocketIo, app: Arc<AppState>) {
    let Some(admin) = app.admin.clone() else {
        return;
    };
    admin.feed.spawn(io.clone());
    spawn_rounds(io.clone(), Arc::downgrade(&app));
    io.ns(NAMESPACE, Door { app, admin });
}

/// The namespace's timed work: the fleet's events every [`relay::POLL_EVERY`], and every
/// [`stats::EVERY`] the upgrades looked for and `server_stats` emitted. A round of the fleet's
/// events runs on its own task (a slow node holds up no `server_stats`); the next starts once it
/// has ended.
fn spawn_rounds(io: SocketIo, app: std::sync::Weak<AppState>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(relay::POLL_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stats_every = (stats::EVERY.as_millis() / relay::POLL_EVERY.as_millis()).max(1);
        let mut polling: Option<tokio::task::JoinHandle<()>> = None;
        for round in 0u128.. {
            every.tick().await;
            let Some(app) = app.upgrade() else { return };
            let Some(admin) = app.admin.as_ref() else {
                return;
            };
            if polling.as_ref().is_none_or(|p| p.is_finished()) {
                let app = app.clone();
                polling = Some(tokio::spawn(async move {
                    if let Some(admin) = app.admin.as_ref() {
                        relay::poll(&app, admin).await;
                    }
                }));
            }
            if round % stats_every != 0 {
                continue;
            }
            admin.look_for_upgrades();
            if !admin.watched_here() {
                continue;
            }
            for node in stats::collect(&app, admin) {
                let Some(admins) = io.of(NAMESPACE) else {
                    break;
                };
                if let Err(e) = admins.emit("server_stats", &node).await {
                    tracing::debug!("server_stats not sent: {e}");
                }
            }
        }
    });
}

/// Logs admins in, and greets them.
#[derive(Clone)]
struct Door {
    app: Arc<AppState>,
    admin: Arc<Admin>,
}

/// The session id a login made, from the middleware to the connect handler.
#[derive(Clone)]
struct NewSession(String);

type Checking<'a> = Pin<Box<dyn Future<Output = Result<(), Box<dyn Display + Send>>> + Send + 'a>>;

impl ConnectHandler<LocalAdapter, Handled> for Door {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, _auth: Option<Value>) {
        let admin = &self.admin;
        admin.watchers.fetch_add(1, Ordering::Relaxed);
        s.on_disconnect(Gone(admin.clone()));
        if !admin.readonly {
            s.on_fallback(Operations(self.app.clone()));
        }
        if let Some(NewSession(id)) = s.extensions.remove::<NewSession>() {
            let _ = s.emit("session", &id);
        }
        let _ = s.emit("config", &json!({ "supportedFeatures": admin.features() }));
        let app = self.app.clone();
        tokio::spawn(async move {
            let Some(admin) = app.admin.as_ref() else {
                return;
            };
            admin.look_for_upgrades();
            let sockets = relay::all_sockets(&app, admin).await;
            let _ = s.emit("all_sockets", &(sockets,));
            for node in stats::collect(&app, admin) {
                let _ = s.emit("server_stats", &node);
            }
        });
    }

    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket<LocalAdapter>>,
        auth: &'a Option<Value>,
    ) -> Checking<'a> {
        let auth = auth.as_ref().and_then(|a| a.as_str()).map(|a| a.as_str());
        Box::pin(async move {
            let parts = s.req_parts();
            let address = parts.extensions.get::<Arc<Wire>>().map(|w| w.peer.ip());
            let logged_in = self.admin.login.check(auth, address).await;
            let logged_in = logged_in.map_err(|e| Box::new(e) as Box<dyn Display + Send>)?;
            if self.admin.watchers() >= MAX_WATCHERS {
                let full = format!("at most {MAX_WATCHERS} admins at once");
                return Err(Box::new(full) as Box<dyn Display + Send>);
            }
            if let Some(pending) = parts.extensions.get::<Pending>() {
                pending.joined();
            }
            if let LoggedIn::Password(Some(id)) = logged_in {
                s.extensions.insert(NewSession(id));
            }
            Ok(())
        })
    }
}

/// An admin connection went.
struct Gone(Arc<Admin>);

impl DisconnectHandler<LocalAdapter, Handled> for Gone {
    fn call_with_defer(
        &self,
        s: Arc<Socket<LocalAdapter>>,
        _reason: DisconnectReason,
        defer: fn(Arc<Socket<LocalAdapter>>),
    ) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
        defer(s);
    }
}

/// The admin's events: operations, with `--admin-readonly off`.
struct Operations(Arc<AppState>);

impl MessageHandler<LocalAdapter, Handled> for Operations {
    fn call(&self, _s: Arc<Socket<LocalAdapter>>, data: Value, _ack: Option<i64>) {
        if let Some(text) = data.as_str() {
            tokio::spawn(relay::operate(self.0.clone(), text.as_str().to_owned()));
        }
    }
}
