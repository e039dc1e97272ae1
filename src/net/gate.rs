//! The gate in front of the Engine.IO endpoint (`/socket.io/`): it refuses handshakes from
//! origins outside the allow-list, refuses requests for connections the server has cut, and
//! ties each transport request to its connection's [`SendMeter`] (a WebSocket by its wire, a
//! long-polling response by its body). It also gives the CONNECT reply its `pid` when it leaves
//! in a long-polling response ([`super::connect_reply`]), and holds long-polling POSTs and the
//! handshake's `maxPayload` to `--max-payload` (engineioxide's own bound is set out of reach:
//! see [`crate::ENGINE_MAX_PAYLOAD`]). Every handshake takes a place among the pending sessions
//! ([`super::pending`]) until its client joins the namespace.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use socketioxide::socket::Sid;

use super::connect_reply;
use super::limits::Refusal;
use super::meter::{Meters, SendMeter};
use super::pending::PendingSessions;
use super::wire::Wire;
use crate::drain::Draining;
use crate::metrics::{Limit, Metrics};

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

/// The transport and session id an Engine.IO request names in its query.
fn transport_and_sid(query: Option<&str>) -> (Option<&str>, Option<Sid>) {
    let mut transport = None;
    let mut sid = None;
    for pair in query.unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("transport", t)) => transport = Some(t),
            Some(("sid", s)) => sid = s.parse().ok(),
            _ => {}
        }
    }
    (transport, sid)
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
    let (transport, sid) = transport_and_sid(request.uri().query());
    let (long_polling, upgrading) = (transport == Some("polling"), transport == Some("websocket"));
    let Some(sid) = sid else {
        if gate.draining.is_on() {
            // The client retries, and its load balancer sends it to a node that is not stopping.
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable: this node is stopping; connect to another.",
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
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
        let response = next.run(request).await;
        return if long_polling {
            // Tells clients the largest POST, as `--max-payload`.
            rewritten(response, |open| with_max_payload(open, gate.max_payload)).await
        } else {
            response
        };
    };
    if gate.meters.get(sid).is_some_and(|m| m.is_cut()) {
        // What Engine.IO answers for a session it does not know: the client starts anew.
        let body = r#"{"code":1,"message":"Session ID unknown"}"#;
        let mut response = (StatusCode::BAD_REQUEST, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
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
        let response = match meter.pending_pid() {
            // The CONNECT reply, if it is in this response, gets its `pid`.
            Some(pid) => {
                rewritten(response, |payload| {
                    let with_pid = connect_reply::rewrite_polling(payload, &pid)?;
                    meter.pid_sent();
                    Some(with_pid)
                })
                .await
            }
            None => response,
        };
        return response.map(|body| Body::new(Counted { body, meter }));
    }
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

/// An Engine.IO OPEN packet (`0{...,"maxPayload":N}`) with `N` replaced by `max_payload`.
fn with_max_payload(packet: &[u8], max_payload: u64) -> Option<Vec<u8>> {
    const FIELD: &[u8] = b"\"maxPayload\":";
    if packet.first() != Some(&b'0') {
        return None;
    }
    let at = packet.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits = packet[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let mut out = Vec::with_capacity(packet.len());
    out.extend_from_slice(&packet[..at]);
    out.extend_from_slice(max_payload.to_string().as_bytes());
    out.extend_from_slice(&packet[at + digits..]);
    Some(out)
}

/// `response` with its body replaced by what `rewrite` makes of it, or as it was when `rewrite`
/// gives `None`. Engine.IO builds long-polling bodies whole in memory, so reading one whole holds
/// nothing more.
async fn rewritten(response: Response, rewrite: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!("long-polling response not read: {e}");
            return Response::from_parts(parts, Body::empty());
        }
    };
    match rewrite(&bytes) {
        Some(new) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(new))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// A long-polling response body whose bytes count as written for its connection.
struct Counted {
    body: Body,
    meter: Arc<SendMeter>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.meter.written(data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_transport_and_session() {
        let sid = Sid::new();
        let query = format!("EIO=4&transport=polling&t=abc&sid={sid}");
        assert_eq!(
            transport_and_sid(Some(&query)),
            (Some("polling"), Some(sid))
        );
        assert_eq!(
            transport_and_sid(Some("EIO=4&transport=websocket")),
            (Some("websocket"), None)
        );
        assert_eq!(transport_and_sid(None), (None, None));
    }

    #[test]
    fn the_handshake_tells_the_configured_max_payload() {
        let open = br#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":2147483647}"#;
        let out = with_max_payload(open, 1_000_000).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out[1..]).unwrap();
        assert_eq!(json["maxPayload"], 1_000_000);
        assert_eq!(json["pingInterval"], 25000);
        assert_eq!(with_max_payload(b"40{\"sid\":\"x\"}", 1), None);
        assert_eq!(with_max_payload(b"0{\"sid\":\"x\"}", 1), None);
    }

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
