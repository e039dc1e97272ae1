//! The gate in front of the Engine.IO endpoint (`/socket.io/`): it refuses handshakes from
//! origins outside the allow-list, refuses requests for connections the server has cut, and
//! ties each transport request to its connection's byte meter (a WebSocket by its wire, a
//! long-polling response by its body, see [`polling`]). It holds long-polling POSTs to
//! `--max-payload`, and has either handshake tell clients that bound (engineioxide's own is set
//! out of reach: see [`crate::ENGINE_MAX_PAYLOAD`]). Every handshake takes a place among the
//! pending sessions ([`super::pending`]) until its client joins the namespace, and is refused
//! while the node is at capacity or moving sockets away ([`crate::fleet`]). A request for a
//! session another node of the fleet holds is forwarded to it ([`crate::fleet::forward`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};

use super::limits::Refusal;
use super::pending::PendingSessions;
use super::wire::Wire;
use crate::drain::Draining;
use crate::fleet::forward::{Forwarded, Forwarder};
use crate::fleet::{Closed, FleetView};
use crate::metrics::{Limit, Metrics};
use crate::transport::socketio::frames::Rewrite;
use crate::transport::socketio::meter::Meters;
use crate::transport::socketio::polling;
use crate::transport::socketio::query::{EngineQuery, without_node};

/// Where Socket.IO is served.
pub const ENGINE_PATH: &str = "/socket.io/";

/// What the gate needs to decide.
pub struct Gate {
    /// Allowed `Origin` values; `None` allows any.
    pub origins: Option<Vec<String>>,
    pub meters: Arc<Meters>,
    /// `--max-payload`: the largest long-polling POST, as the handshake tells clients.
    pub max_payload: u64,
    /// Sessions that have not joined the namespace yet.
    pub pending: PendingSessions,
    pub metrics: Arc<Metrics>,
    /// A draining node takes no new sessions.
    pub draining: Arc<Draining>,
    /// The other nodes, and whether this one takes new sessions.
    pub fleet: Arc<FleetView>,
    pub forwarder: Arc<Forwarder>,
}

impl Gate {
    /// Whether a request with this `Origin` header may use the Engine.IO endpoint.
    pub fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        origin_allowed(self.origins.as_deref(), origin)
    }
}

/// Whether `origin` is in `allowed` (`None` allows any). Requests without an `Origin` come from
/// programs, not pages, and cannot carry a victim's cookie.
fn origin_allowed(allowed: Option<&[String]>, origin: Option<&HeaderValue>) -> bool {
    match (allowed, origin) {
        (Some(allowed), Some(origin)) => origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
        _ => true,
    }
}

pub async fn gate(State(gate): State<Arc<Gate>>, mut request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with(ENGINE_PATH) {
        return next.run(request).await;
    }
    if !gate.allows(request.headers().get(header::ORIGIN)) {
        tracing::debug!(origin = ?request.headers().get(header::ORIGIN), "Engine.IO request from an origin not allowed");
        return (
            StatusCode::FORBIDDEN,
            "Forbidden: this origin may not connect.",
        )
            .into_response();
    }
    let query = EngineQuery::parse(request.uri().query());
    let (long_polling, upgrading, sid) = (query.is_polling(), query.is_websocket(), query.sid);
    if let (Some(sid_text), Some(node)) = (query.sid_text, query.node) {
        let (sid_text, node) = (sid_text.to_owned(), node.to_owned());
        request = match to_owner(&gate, request, &sid_text, &node, upgrading).await {
            Ok(ours) => ours,
            Err(answered) => return answered,
        };
    }
    let Some(sid) = sid else {
        if gate.draining.is_on() {
            // The client retries, and its load balancer sends it to a node that is not stopping.
            return unavailable("Service Unavailable: this node is stopping; connect to another.");
        }
        let sockets = gate.metrics.connections.get().max(0) as u64 + gate.pending.count() as u64;
        if let Err(closed) = gate.fleet.admits(sockets) {
            let (limit, body) = match closed {
                Closed::AtCapacity => (
                    Limit::MaxSockets,
                    "Service Unavailable: this node holds all the sockets it should; connect to another.",
                ),
                Closed::OverShare => (
                    Limit::Rebalancing,
                    "Service Unavailable: this node is moving sockets to other nodes; connect to another.",
                ),
            };
            gate.metrics.limit(limit);
            return unavailable(body);
        }
        // A handshake: it takes a place among the pending sessions until the client joins.
        let peer = request.extensions().get::<Arc<Wire>>().map(|w| w.peer.ip());
        if let Some(ip) = peer {
            match gate.pending.admit(ip) {
                Ok(pending) => {
                    request.extensions_mut().insert(pending);
                }
                Err(refusal) => return refuse_handshake(&gate, refusal),
            }
        }
        // Tells clients the largest POST, as `--max-payload`.
        if upgrading && let Some(wire) = request.extensions().get::<Arc<Wire>>() {
            wire.rewrite(Rewrite::MaxPayload(gate.max_payload));
        }
        let response = next.run(request).await;
        return if long_polling {
            let node = gate.fleet.is_shared().then(|| gate.fleet.me());
            polling::handshake(response, gate.max_payload, node).await
        } else {
            response
        };
    };
    if gate.meters.get(sid).is_some_and(|m| m.is_cut()) {
        return session_unknown();
    }
    let polling = long_polling && request.method() == axum::http::Method::GET;
    if long_polling && request.method() == axum::http::Method::POST {
        if let Some(length) = content_length(&request).filter(|n| *n > gate.max_payload) {
            tracing::debug!(%sid, "long-polling POST over --max-payload");
            // As Engine.IO does: refuse it and end the session; the client starts anew.
            if let Some(meter) = gate.meters.get(sid) {
                meter.cut();
            }
            // Closing a connection with unread bytes resets it, which can destroy the answer
            // before the client reads it: a body not far over the bound is read and dropped
            // first (within the body timeout); a larger one is answered at once.
            if length <= DRAINED_OVER_LIMIT.saturating_mul(gate.max_payload) {
                discard(request.into_body()).await;
            }
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large: over --max-payload.",
            )
                .into_response();
        }
        // A body without a length fails when it passes the bound, and its session ends.
        let limit = usize::try_from(gate.max_payload).unwrap_or(usize::MAX);
        request = request.map(|body| Body::new(Limited::new(body, limit)));
    }
    let wire = request.extensions().get::<Arc<Wire>>().cloned();
    let response = next.run(request).await;
    if upgrading && response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(wire) = wire {
            wire.carry(&gate.meters.meter(sid));
        }
    } else if polling && let Some(meter) = gate.meters.get(sid) {
        return polling::response(response, meter).await;
    }
    response
}

/// A request for a session whose id names the node holding it (`<sid>.<node>`): another node's
/// is forwarded there, once (`Err` with its answer); this node's goes on with the node taken off
/// the session id, as Engine.IO knows it (`Ok`).
async fn to_owner(
    gate: &Gate,
    mut request: Request,
    sid_text: &str,
    node: &str,
    upgrading: bool,
) -> Result<Request, Response> {
    let forwarded = gate.forwarder.check(request.headers(), sid_text);
    if forwarded == Forwarded::Forged {
        tracing::debug!("Engine.IO request with a forged forwarding signature");
        return Err((
            StatusCode::FORBIDDEN,
            "Forbidden: bad forwarding signature.",
        )
            .into_response());
    }
    if node != gate.fleet.me() {
        if upgrading && gate.draining.is_on() {
            // A WebSocket joined through a node about to stop would be cut when it exits: the
            // balancer (or the client, staying on long-polling) goes to another node.
            return Err(unavailable(
                "Service Unavailable: this node is stopping; connect to another.",
            ));
        }
        let owner = (forwarded == Forwarded::No)
            .then(|| gate.fleet.address_of(node))
            .flatten();
        return Err(match owner {
            Some(address) => gate.forwarder.forward(request, &address, sid_text).await,
            None => session_unknown(),
        });
    }
    if forwarded == Forwarded::FromMember && request.method() == Method::DELETE {
        // The node carrying this session's WebSocket drains: so does the session, gently.
        let sid = EngineQuery::parse(request.uri().query()).sid;
        let drained = sid.is_some_and(|sid| gate.draining.drain_one(sid));
        return Err(if drained {
            StatusCode::NO_CONTENT.into_response()
        } else {
            session_unknown()
        });
    }
    let query = request.uri().query().map(without_node);
    if let Some(uri) = query.and_then(|q| format!("{}?{q}", request.uri().path()).parse().ok()) {
        *request.uri_mut() = uri;
    }
    Ok(request)
}

/// What Engine.IO answers for a session it does not know: the client starts anew.
fn session_unknown() -> Response {
    let body = r#"{"code":1,"message":"Session ID unknown"}"#;
    let mut response = (StatusCode::BAD_REQUEST, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A handshake this node does not take now: the client retries, and its balancer may send it
/// to another node.
fn unavailable(body: &'static str) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A handshake over the pending sessions' bounds: the client retries after a while, as it does
/// after any failed handshake.
fn refuse_handshake(gate: &Gate, refusal: Refusal) -> Response {
    let (status, limit, body) = match refusal {
        Refusal::Full => (
            StatusCode::SERVICE_UNAVAILABLE,
            Limit::PendingSessions,
            "Service Unavailable: too many sessions are waiting to connect; retry later.",
        ),
        Refusal::TooManyFromAddress => (
            StatusCode::TOO_MANY_REQUESTS,
            Limit::PendingSessionsPerAddress,
            "Too Many Requests: too many sessions from this address are waiting to connect; retry later.",
        ),
    };
    gate.metrics.limit(limit);
    tracing::debug!(
        ?refusal,
        "Engine.IO handshake refused: too many pending sessions"
    );
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A POST over `--max-payload` by up to this many times is read to its end before it is refused.
const DRAINED_OVER_LIMIT: u64 = 4;

/// Reads `body` to its end (or its first error), keeping nothing.
async fn discard(mut body: Body) {
    while let Some(Ok(_)) = body.frame().await {}
}

fn content_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_outside_the_list_are_refused_and_programs_without_one_allowed() {
        let allowed = vec!["https://a.example".to_string()];
        let gate = |origin: Option<HeaderValue>| origin_allowed(Some(&allowed), origin.as_ref());
        let origin = |o: &'static str| Some(HeaderValue::from_static(o));
        assert!(gate(origin("https://a.example")));
        assert!(gate(origin("https://A.example")));
        assert!(!gate(origin("https://evil.example")));
        assert!(!gate(origin("null")));
        assert!(gate(None));
        assert!(origin_allowed(
            None,
            origin("https://evil.example").as_ref()
        ));
    }
}
