//! A drop-in Twine server: browsers hold Socket.IO connections, backends publish to rooms over
//! HTTP, and a client that drops and comes back gets every message it missed, in order.
//!
//! # Layout
//!
//! A published message goes one way: [`http`] route → store → feed → [`fanout`] → [`outbox`]
//! → [`transport`].
//!
//! - [`config`]: the one configuration struct, from flags and environment.
//! - [`admin`]: the Socket.IO Admin UI's server side on `/admin` (login, stats, the sockets
//!   listed within bounds and redacted, live events within a rate), with `--admin on`.
//! - [`auth`]: who may publish (the API key) and who may connect (signed tokens).
//! - [`stores`]: picks the history and session stores (crate `twine-store` and its siblings).
//! - [`net`]: the network edge: connection limits, HTTP timeouts, per-connection byte meters,
//!   the gate in front of Engine.IO.
//! - [`http`]: `GET /`, `GET /set-cookie`, `POST /api/twine`, the CORS policy.
//! - [`socket`]: admitting Socket.IO connections; their events decoded into commands (one file
//!   each), queued within bounds and run in order; and recovery.
//! - [`publish`]: the one path of every publish (HTTP or client): checks, admission, the store.
//! - [`hooks`]: the app's backend asked about connects, subscribes and client publishes, and
//!   the word filter.
//! - [`rate`]: a rate with a burst, for publishes and each connection's events.
//! - [`budget`]: the node's bytes of client events waiting to be handled.
//! - [`fanout`]: live delivery on this node, sharded by room, and the exact replay/live seam.
//! - [`outbox`]: what one client is sent: encoding, its send budget, its acknowledgements.
//! - [`transport`]: the one seam to the Socket.IO wire (socketioxide's socket, or an in-memory
//!   one in tests).
//! - [`presence`]: who is present in each room, kept alive by this node's heartbeat and
//!   announced to the room's members.
//! - [`room`]: what a room name may be, for every entry point.
//! - [`fleet`]: the deployment's nodes as this one sees them (`GET /api/fleet`), Engine.IO
//!   requests forwarded to the node holding their session (no sticky balancer needed),
//!   capacity, and rebalancing sockets across the nodes.
//! - [`drain`]: the slow drain between the signal to stop and the exit.
//! - [`session`]: the `twineid` cookie, the session store calls made for a connection, and the
//!   flusher that stores acknowledged positions.
//! - [`metrics`]: the node's figures for `GET /metrics`, and the store decorators that time
//!   every store call.
//! - [`error`]: what the HTTP routes answer when they refuse.
//! - [`state`]: what every handler shares.

pub mod admin;
pub mod auth;
pub mod budget;
pub mod config;
pub mod drain;
pub mod error;
pub mod fanout;
pub mod fleet;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod presence;
pub mod publish;
pub mod rate;
pub mod room;
pub mod session;
pub mod socket;
pub mod state;
pub mod stores;
pub mod transport;

pub use net::App;

use std::future::Future;
use std::sync::Arc;

use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use twine_store::StoreError;

use crate::auth::ApiKey;
use crate::config::Config;
use crate::drain::Draining;
use crate::net::gate::Gate;
use crate::net::limits::ConnectionLimits;
use crate::net::pending::PendingSessions;
use crate::state::AppState;
use crate::stores::Stores;

/// Packets a client's transport may queue besides the byte budget: at least this many, and one
/// per 256 bytes of the budget (tiny messages cost more in the queue than in bytes).
const MIN_QUEUED_PACKETS: usize = 1024;

/// What engineioxide is told a long-polling payload may hold. Its one `max_payload` bounds three
/// things: a client's POST, what the handshake tells clients to batch their POSTs under, and how
/// much of the connection's queue one poll's response takes. The third must never bind: a packet
/// a response leaves behind is set aside for the next poll, and is lost if the connection
/// upgrades to WebSocket first (the WebSocket writer never sends it). So engineioxide gets a
/// bound no queue reaches (`--send-queue` is at most 1 GiB), and the gate holds POSTs and the
/// polling handshake to `--max-payload` ([`net::gate`]). A WebSocket handshake still tells this
/// number, which clients use only to batch long-polling POSTs; it fits in 32 bits for clients
/// that read it into one. WebSocket messages are held to `--max-payload` below.
pub const ENGINE_MAX_PAYLOAD: u64 = i32::MAX as u64;

/// WebSocket read buffer per connection. Clients send small frames (subscribe,
/// acknowledgements), and the buffer grows for a larger one; every idle connection keeps it.
const WS_READ_BUFFER: usize = 128;

/// A server ready to serve: its routes and its Socket.IO handle.
pub struct Server {
    pub app_service: App,
    pub io: SocketIo,
    pub app: Arc<AppState>,
    /// Whether the API key was generated because none was configured.
    pub generated_key: bool,
}

impl Server {
    /// What a second signal calls: the drain closes everything at once.
    pub fn hurry(&self) -> Arc<Draining> {
        self.app.draining.clone()
    }

    /// Wires the routes, Socket.IO and live delivery over `stores`.
    pub async fn build(config: Config, stores: Stores) -> Result<Server, StoreError> {
        let send_queue = config.send_queue as usize;
        let (layer, io) = SocketIo::builder()
            .ping_interval(config.ping_interval)
            .ping_timeout(config.ping_timeout)
            .connect_timeout(config.connect_timeout)
            .max_payload(ENGINE_MAX_PAYLOAD)
            .ws_max_message_size(config.max_payload as usize)
            .ws_max_frame_size(config.max_payload as usize)
            .max_buffer_size((send_queue / 256).max(MIN_QUEUED_PACKETS))
            .ws_read_buffer_size(WS_READ_BUFFER)
            .build_layer();
        let (api_key, generated_key) = ApiKey::configured_or_generated(config.api_key.as_deref());
        let origins = config.parsed.origins.clone();
        if origins.is_none() {
            tracing::warn!(
                "no --cors-origins set: a page on any origin may connect with its visitors' twineid cookies and receive their messages; set the origins of your apps"
            );
        }
        let app = AppState::start(config, api_key, stores).await?;
        let events = if app.config.role.holds_sockets() {
            socket::event_names()
        } else {
            Vec::new()
        };
        let metrics = app.metrics.clone();
        metrics.name_surface(&events, &http::served(app.config.demo, app.config.role));
        let config = &app.config;
        let gate = Arc::new(Gate {
            origins: origins.clone(),
            meters: app.meters.clone(),
            max_payload: config.max_payload,
            pending: PendingSessions::new(
                config.max_pending_sessions as usize,
                config.max_pending_sessions_per_ip as usize,
            ),
            metrics,
            draining: app.draining.clone(),
            fleet: app.fleet.clone(),
            forwarder: app.forwarder.clone(),
        });
        let routes = http::routes(app.clone());
        let app_service = if app.config.role.holds_sockets() {
            socket::register(&io, app.clone());
            admin::register(&io, app.clone());
            // Socket.IO sits outside the router, so an Engine.IO request carries nothing of the
            // router's (engineioxide keeps the handshake request for the socket's whole life).
            BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(http::cors(origins))
                    .layer(axum::middleware::from_fn_with_state(gate, net::gate::gate))
                    .layer(layer)
                    .service(routes),
            )
        } else {
            // A publishing node holds no sockets: `/socket.io/` is not served at all.
            BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(http::cors(origins))
                    .service(routes),
            )
        };
        Ok(Server {
            app_service,
            io,
            app,
            generated_key,
        })
    }

    /// Serves on `listener` until `stop` completes, then drains ([`drain`]): unready, new
    /// connections refused, sockets closed paced (clients see their transport close and
    /// reconnect, to another node if there is one); a second signal ([`Server::hurry`]) closes
    /// everything at once. Returns once the node has drained.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let config = &self.app.config;
        let limits = ConnectionLimits::new(
            config.max_connections() as usize,
            config.max_connections_per_ip as usize,
        );
        self.join_fleet(listener.local_addr()?);
        let (io, app) = (self.io, self.app.clone());
        let shutdown = async move {
            stop.await;
            let plan = drain::Plan {
                delay: app.config.drain_delay,
                period: app.config.drain_period,
            };
            // The WebSockets forwarded through this node go back to their nodes' drains,
            // paced within the same period.
            let forwarder = app.forwarder.clone();
            let hand_back = tokio::spawn(async move {
                tokio::time::sleep(plan.delay).await;
                forwarder.hand_back(plan.period).await;
            });
            drain::drain(&app.draining, plan, &io, &app.metrics, &app.flusher).await;
            // Their nodes close them once their last acknowledgements are stored; the exit
            // waits for that, a few seconds at most (a second signal does not).
            if !app.draining.hurried() {
                let _ = hand_back.await;
                app.forwarder
                    .carried_closed(fleet::forward::HAND_BACK_SETTLE)
                    .await;
            }
            app.fleet.leave().await;
        };
        let timeouts = net::Timeouts {
            header: config.header_timeout,
            body: config.body_timeout,
        };
        let metrics = self.app.metrics.clone();
        let fleet = self.app.fleet.clone();
        net::serve(
            listener,
            self.app_service,
            net::Edge {
                limits,
                timeouts,
                metrics,
                fleet,
            },
            shutdown,
        )
        .await
    }

    /// Announces this node to the fleet, listening at `listening`, and rebalances its sockets
    /// when configured to.
    fn join_fleet(&self, listening: std::net::SocketAddr) {
        let app = &self.app;
        let config = &app.config;
        let fleet = &app.fleet;
        fleet.advertise(fleet::advertised(
            config.advertise_address.as_deref(),
            listening,
            config.redis_url(),
        ));
        let state = Arc::downgrade(app);
        fleet.spawn_announcer(move || {
            state
                .upgrade()
                .map_or_else(Default::default, |app| fleet::Load {
                    sockets: app.sockets(),
                    rooms: app.fanout.rooms_served() as u64,
                    draining: app.draining.is_on(),
                    admins: app.admin.as_ref().map_or(0, |a| a.watchers() as u64),
                })
        });
        if config.rebalances() && config.role.holds_sockets() {
            let plan = fleet::rebalance::Plan {
                tolerance: f64::from(config.rebalance_tolerance) / 100.0,
                rate: config.rebalance_rate,
            };
            fleet::rebalance::spawn(
                fleet.clone(),
                app.draining.clone(),
                app.metrics.clone(),
                plan,
            );
        }
    }
}
