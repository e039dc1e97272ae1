//! Socket.IO on `/socket.io`: admitting each connection, handing its events to it, and ending it.
//!
//! A connection is admitted before the server answers the client's namespace connect, so its
//! session is known and its events are handled from the very first one; under Socket.IO's
//! recovery, whether it recovers is decided then too ([`resume`]). Events are handed over
//! on the connection's read path, in arrival order, without a task per event
//! ([`connection`]), decoded into commands ([`command`]: one file each) and queued within bounds
//! ([`queue`]); its first work is to replay what the session missed ([`replay`]).

pub mod command;
pub mod connection;
pub mod context;
mod queue;
mod replay;
mod resume;

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::header;
use axum::http::request::Parts;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{ConnectHandler, DisconnectHandler, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};
use tokio::time::Instant;

use crate::auth::Grant;
use crate::hooks::{Admitted, ConnectHeaders, ConnectRequest, Decision, MAX_HOOK_AUTH};
use crate::metrics::{Limit, Transport as TransportKind, TransportLabel};
use crate::net::Received;
use crate::net::pending::Pending;
use crate::net::wire::Wire;
use crate::session::{SessionHandle, twineid};
use crate::state::AppState;
use crate::transport::socketio::query::EngineQuery;
use crate::transport::socketio::{Handled, SocketTransport};
use connection::Connection;
use resume::Resume;

/// Serves the Twine events on the default namespace.
pub fn register(io: &SocketIo, app: Arc<AppState>) {
    io.ns("/", Admission { app });
}

/// Admits connections to the namespace and starts their recovery once connected.
#[derive(Clone)]
struct Admission {
    app: Arc<AppState>,
}

pub use command::event_names;

type Admitting<'a> = Pin<Box<dyn Future<Output = Result<(), Box<dyn Display + Send>>> + Send + 'a>>;

impl ConnectHandler<LocalAdapter, Handled> for Admission {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, _auth: Option<Value>) {
        // Handed over by the middleware; from here on the socket's handlers hold it.
        if let Some(connection) = s.extensions.remove::<Arc<Connection>>() {
            connection.connected();
        }
    }

    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket<LocalAdapter>>,
        auth: &'a Option<Value>,
    ) -> Admitting<'a> {
        let auth = auth.as_ref().and_then(|a| a.as_str()).map(|a| a.as_str());
        Box::pin(async move {
            let wire = s.req_parts().extensions.get::<Arc<Wire>>().cloned();
            // A few connects decided at once per TCP connection, and a bounded number refused.
            let _deciding = match &wire {
                Some(wire) => Some(wire.connecting().ok_or_else(|| {
                    self.app.metrics.limit(Limit::HookRefusals);
                    Box::new("connects are refused on this connection; reconnect later")
                        as Box<dyn Display + Send>
                })?),
                None => None,
            };
            let refused = |reason: Box<dyn Display + Send>| {
                if let Some(wire) = &wire {
                    wire.connect_refused();
                }
                reason
            };
            // Sent to the client as the connect error's message.
            let grant = self
                .app
                .tokens
                .admit(auth)
                .map_err(|e| refused(Box::new(e)))?;
            let app = &self.app;
            if app.hooks.on_connect() && auth.is_some_and(|a| a.len() > MAX_HOOK_AUTH) {
                let message = format!("auth is over {MAX_HOOK_AUTH} bytes");
                return Err(refused(Box::new(message)));
            }
            let (grant, joins) = match self.ask_backend(&s, auth).await {
                Decision::Allow(admitted) => {
                    let joins = admitted
                        .rooms
                        .iter()
                        .filter_map(|r| named_room(r))
                        .collect();
                    (grant.with_user(admitted.user), joins)
                }
                Decision::Refuse(reason) => return Err(refused(Box::new(reason))),
            };
            let resume =
                if app.config.socketio_recovery && twineid(&s.req_parts().headers).is_none() {
                    Some(Resume::decide(auth, app).await)
                } else {
                    None
                };
            self.admit(&s, grant, resume, joins);
            Ok(())
        })
    }
}

/// A room the connect hook named, if it is one (else logged and left out).
fn named_room(room: &str) -> Option<Arc<str>> {
    match crate::room::check(room) {
        Ok(()) => Some(Arc::from(room)),
        Err(e) => {
            tracing::warn!(room, "the connect hook named a room that is not one: {e}");
            None
        }
    }
}

impl Admission {
    /// The connect hook's decision (allowed, with nothing more, when there is no hook).
    async fn ask_backend(
        &self,
        s: &Arc<Socket<LocalAdapter>>,
        auth: Option<&str>,
    ) -> Decision<Admitted> {
        let hooks = &self.app.hooks;
        if !hooks.on_connect() {
            return Decision::Allow(Admitted::default());
        }
        let parts = s.req_parts();
        let header =
            |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let auth = auth.and_then(|a| serde_json::from_str::<&RawValue>(a).ok());
        let twineid = twineid(&parts.headers);
        let request = ConnectRequest {
            twineid: twineid.as_deref(),
            auth,
            headers: ConnectHeaders {
                cookie: header(header::COOKIE),
                origin: header(header::ORIGIN),
                user_agent: header(header::USER_AGENT),
                forwarded_for: header(header::HeaderName::from_static("x-forwarded-for")),
            },
            address: parts
                .extensions
                .get::<Arc<Wire>>()
                .map(|w| w.peer.ip().to_string()),
        };
        hooks.connect(&request).await
    }

    fn admit(
        &self,
        s: &Arc<Socket<LocalAdapter>>,
        grant: Grant,
        resume: Option<Resume>,
        joins: Vec<Arc<str>>,
    ) {
        let app = &self.app;
        let config = &app.config;
        let parts = s.req_parts();
        if let Some(pending) = parts.extensions.get::<Pending>() {
            pending.joined();
        }
        let meter = app.meters.meter(s.id);
        if is_websocket_handshake(parts)
            && let Some(wire) = parts.extensions.get::<Arc<Wire>>()
        {
            wire.carry(&meter);
        }
        let transport = SocketTransport::new(SocketRef::from(s.clone()), meter);
        let kind = if is_websocket_handshake(parts) {
            TransportKind::Websocket
        } else {
            TransportKind::Polling
        };
        app.metrics
            .connections_opened
            .get_or_create(&TransportLabel { transport: kind })
            .inc();
        let session = match &resume {
            Some(resume) => SessionHandle::named(&resume.pid, app.sessions.clone()),
            None => SessionHandle::for_request(&parts.headers, app.sessions.clone()),
        };
        let not_before = replay_not_before(parts, config.replay_grace);
        let connection =
            Connection::open(app, transport, session, not_before, grant, resume, joins);
        s.on_fallback(Events(connection.clone()));
        s.on_disconnect(Ended(connection.clone()));
        if let Some(admin) = &app.admin {
            admin.opened(s, &connection, !is_websocket_handshake(parts));
        }
        s.extensions.insert(connection);
    }
}

/// The Socket.IO handshake came as a WebSocket (its request is the WebSocket's).
fn is_websocket_handshake(parts: &Parts) -> bool {
    EngineQuery::parse(parts.uri.query()).is_websocket()
}

/// When a reconnecting client's replay may start. Pages (a request with an `Origin`, or from a
/// browser) may attach their `message` listeners on a timer after creating the socket, as
/// twine-client-library does, so they get `grace` from their handshake; programs attach theirs
/// before connecting and are replayed to at once.
fn replay_not_before(parts: &Parts, grace: std::time::Duration) -> Option<Instant> {
    let from_page = parts.headers.contains_key(header::ORIGIN)
        || parts
            .headers
            .get(header::USER_AGENT)
            .is_some_and(|ua| ua.as_bytes().starts_with(b"Mozilla/"));
    if grace.is_zero() || !from_page {
        return None;
    }
    let received = parts
        .extensions
        .get::<Received>()
        .map_or_else(Instant::now, |r| Instant::from_std(r.0));
    Some(received + grace)
}

/// Hands every event to its connection, synchronously and in arrival order.
struct Events(Arc<Connection>);

impl MessageHandler<LocalAdapter, Handled> for Events {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, mut data: Value, ack: Option<i64>) {
        let reply = crate::transport::socketio::reply(&s, &mut data, ack);
        if let Some(text) = data.as_str() {
            self.0.on_event(text, reply);
        }
    }
}

/// Ends the connection when its socket goes.
struct Ended(Arc<Connection>);

impl DisconnectHandler<LocalAdapter, Handled> for Ended {
    fn call_with_defer(
        &self,
        s: Arc<Socket<LocalAdapter>>,
        reason: DisconnectReason,
        defer: fn(Arc<Socket<LocalAdapter>>),
    ) {
        tracing::debug!(sid = %s.id, ?reason, "disconnected");
        if let Some(admin) = &self.0.app.admin {
            admin.closed(s.id, &reason.to_string());
        }
        self.0.end();
        defer(s);
    }
}

#[cfg(test)]
mod tests;
