//! The network edge: the accept loop (within connection limits), HTTP/1 with header and idle
//! timeouts, the per-connection byte meters and the gate in front of Engine.IO, and graceful
//! shutdown.

mod deadline;
pub mod gate;
pub mod limits;
pub mod pending;
pub mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Uri, header};
use axum::response::Response;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::fleet::FleetView;
use crate::fleet::forward::FORWARDED;
use crate::metrics::{Limit, Metrics};
use deadline::Deadline;
use gate::ENGINE_PATH;
use limits::{ConnectionLimits, Refusal};
use wire::{MeteredStream, Wire};

/// Everything the node serves over HTTP, as one service: CORS, the Engine.IO gate and Socket.IO
/// in front of the routes.
pub type App = BoxCloneSyncService<Request<Body>, Response, Infallible>;

/// When a request arrived, as a request extension (the Socket.IO handshake's tells how long a
/// reconnecting page has had to set itself up).
#[derive(Clone, Copy, Debug)]
pub struct Received(pub Instant);

/// How long shutdown waits for open HTTP requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long clients have to send what they send.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A request's headers, from when the connection opened or last went idle.
    pub header: Duration,
    /// A request's whole body, from when its headers arrived.
    pub body: Duration,
}

/// What the accept loop needs besides the service.
pub struct Edge {
    pub limits: Arc<ConnectionLimits>,
    pub timeouts: Timeouts,
    pub metrics: Arc<Metrics>,
    /// The fleet's other nodes: their connections carry many clients' forwarded requests, and
    /// are bound only by the total.
    pub fleet: Arc<FleetView>,
}

/// Serves `app` on `listener` until `shutdown` completes and open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: App,
    edge: Edge,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let Edge {
        limits,
        timeouts,
        metrics,
        fleet,
    } = edge;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .max_buf_size(MAX_HEAD_BYTES);
    let (close_tx, close_rx) = watch::channel(());
    // Every connection task holds a sender; when all are gone, every connection is closed.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = if fleet.is_member(peer.ip()) {
            limits.admit_fleet_member(peer.ip())
        } else {
            limits.admit(peer.ip())
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                metrics.limit(match refusal {
                    Refusal::Full => Limit::Connections,
                    Refusal::TooManyFromAddress => Limit::ConnectionsPerAddress,
                });
                // The response fits in a fresh socket's buffer; no task waits on a flood.
                let _ = tcp.try_write(&refusal.response());
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
        let wire = Wire::new(peer);
        let io = TokioIo::new(MeteredStream::new(tcp, wire.clone(), slot));
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            if request.uri().path().starts_with(ENGINE_PATH) {
                detach_from_read_buffer(&mut request);
            }
            request.extensions_mut().insert(wire.clone());
            request.extensions_mut().insert(Received(Instant::now()));
            let request = request.map(|body| {
                if body.is_end_stream() {
                    // Nothing to wait for; and a WebSocket handshake's request lives as long as
                    // its socket, so it should hold no more than it needs.
                    Body::empty()
                } else {
                    Body::new(Deadline::new(body, timeouts.body))
                }
            });
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(io, service).with_upgrades();
        let mut close = close_rx.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
                _ = close.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = close_tx.send(());
    drop(open_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, open_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections were still open at shutdown");
    }
    Ok(())
}

/// Headers an Engine.IO request needs: for the WebSocket handshake, for the session cookie, for
/// telling a page from a program, for long-polling bodies, for a request another node forwarded.
const ENGINE_HEADERS: [HeaderName; 12] = [
    header::HOST,
    header::COOKIE,
    header::ORIGIN,
    header::USER_AGENT,
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    FORWARDED,
];

/// engineioxide keeps an Engine.IO handshake's request parts for the socket's whole life. hyper's
/// header values and URI are slices of its connection read buffer, which would keep that whole
/// buffer (about 16 KB) alive per connection: owned copies of the few headers needed, and of the
/// URI, let it go.
fn detach_from_read_buffer(request: &mut Request<Incoming>) {
    let kept = ENGINE_HEADERS
        .iter()
        .filter(|name| request.headers().contains_key(*name))
        .count();
    let mut headers = HeaderMap::with_capacity(kept);
    for name in &ENGINE_HEADERS {
        for value in request.headers().get_all(name) {
            if let Ok(mut owned) = HeaderValue::from_bytes(value.as_bytes()) {
                owned.set_sensitive(value.is_sensitive());
                headers.append(name.clone(), owned);
            }
        }
    }
    *request.headers_mut() = headers;
    if let Ok(uri) = Uri::try_from(request.uri().to_string()) {
        *request.uri_mut() = uri;
    }
}
