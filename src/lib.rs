//! A drop-in Twine server: browsers hold Socket.IO connections, backends publish to rooms over
//! HTTP, and a client that drops and comes back gets every message it missed, in order.
//!
//! # Layout
//!
//! - [`config`]: the one configuration struct, from flags and environment.
//! - [`stores`]: picks the history and session stores (crate `twine-store` and its siblings).
//! - [`http`]: `GET /`, `GET /set-cookie`, `POST /api/twine` and the CORS policy.
//! - [`socket`]: the Socket.IO events, per-connection state and recovery.
//! - [`fanout`]: live delivery on this node and the exact replay/live seam.
//! - [`session`]: the `twineid` cookie and the session store calls made for a connection.
//! - [`error`]: what the HTTP routes answer when they refuse.
//! - [`state`]: what every handler shares.

pub mod config;
pub mod error;
pub mod fanout;
pub mod http;
pub mod session;
pub mod socket;
pub mod state;
pub mod stores;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::serve::ListenerExt;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use twine_store::StoreError;

use crate::config::Config;
use crate::fanout::Fanout;
use crate::http::auth::ApiKey;
use crate::state::AppState;
use crate::stores::Stores;

/// A server ready to serve: its routes and its Socket.IO handle.
pub struct Server {
    pub router: Router,
    pub io: SocketIo,
    pub app: Arc<AppState>,
    /// Whether the API key was generated because none was configured.
    pub generated_key: bool,
}

impl Server {
    /// Wires the routes, Socket.IO and live delivery over `stores`.
    pub async fn build(config: Config, stores: Stores) -> Result<Server, StoreError> {
        let (layer, io) = SocketIo::builder()
            .ping_interval(config.ping_interval)
            .ping_timeout(config.ping_timeout)
            .connect_timeout(config.connect_timeout)
            .max_payload(config.max_payload)
            // Per-socket send queue, in packets. Its memory is taken only as it fills; a client
            // this far behind is the one that will be replayed to on reconnect anyway.
            .max_buffer_size(65_536)
            // Clients send small frames (subscribe, acknowledgements); the buffer grows for a
            // larger one. 1 KiB instead of 4 saves about 3 KB per idle connection.
            .ws_read_buffer_size(1024)
            .build_layer();
        let fanout = Fanout::new(io.clone(), stores.history.clone());
        let (api_key, generated_key) = ApiKey::configured_or_generated(config.api_key.as_deref());
        let feed = stores.history.subscribe().await?;
        tokio::spawn(fanout.clone().run(feed));
        let cors = http::cors(&config.cors_origins);
        let app = Arc::new(AppState {
            config,
            api_key,
            history: stores.history,
            sessions: stores.sessions,
            fanout,
        });
        socket::register(&io, app.clone());
        let router = http::routes(app.clone()).layer(layer).layer(cors);
        Ok(Server {
            router,
            io,
            app,
            generated_key,
        })
    }

    /// Serves on `listener` until `shutdown` completes, then closes every socket (clients see
    /// their transport close and reconnect, to another node if there is one) and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let io = self.io;
        // Small frames (one message, one heartbeat) must leave at once, not wait for Nagle.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY not set: {e}");
            }
        });
        axum::serve(listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: closing sockets");
                io.close().await;
            })
            .await
    }
}
