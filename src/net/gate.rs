//! The gate in front of the Engine.IO endpoint (`/socket.io/`): it refuses handshakes from
//! origins outside the allow-list, refuses requests for connections the server has cut, and
//! ties each transport request to its connection's [`SendMeter`] (a WebSocket by its wire, a
//! long-polling response by its body). It also gives the CONNECT reply its `pid` when it leaves
//! in a long-polling response ([`super::connect_reply`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use socketioxide::socket::Sid;

use super::connect_reply;
use super::meter::{Meters, SendMeter};
use super::wire::Wire;

/// Where Socket.IO is served.
pub const ENGINE_PATH: &str = "/socket.io/";

/// What the gate needs to decide.
pub struct Gate {
    /// Allowed `Origin` values; `None` allows any.
    pub origins: Option<Vec<String>>,
    pub meters: Arc<Meters>,
}

impl Gate {
    /// Whether a request with this `Origin` header may use the Engine.IO endpoint. Requests
    /// without one come from programs, not pages, and cannot carry a victim's cookie.
    pub fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        match (&self.origins, origin) {
            (Some(allowed), Some(origin)) => origin
                .to_str()
                .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
            _ => true,
        }
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

pub async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
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
    let Some(sid) = sid else {
        return next.run(request).await; // a handshake
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
    let upgrading = transport == Some("websocket");
    let polling = transport == Some("polling") && request.method() == axum::http::Method::GET;
    let wire = request.extensions().get::<Arc<Wire>>().cloned();
    let response = next.run(request).await;
    if upgrading && response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(wire) = wire {
            wire.carry(&gate.meters.meter(sid));
        }
    } else if polling && let Some(meter) = gate.meters.get(sid) {
        let response = match meter.pending_pid() {
            Some(pid) => with_pid(response, &pid, &meter).await,
            None => response,
        };
        return response.map(|body| Body::new(Counted { body, meter }));
    }
    response
}

/// A long-polling response, with the connection's CONNECT reply given its `pid` if the reply
/// is in it.
async fn with_pid(response: Response, pid: &str, meter: &SendMeter) -> Response {
    let (parts, body) = response.into_parts();
    // A polling response is already whole in memory (Engine.IO builds it at once).
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!("polling response not read: {e}");
            return Response::from_parts(parts, Body::empty());
        }
    };
    let body = match connect_reply::rewrite_polling(&bytes, pid) {
        Some(rewritten) => {
            meter.pid_sent();
            Body::from(rewritten)
        }
        None => Body::from(bytes),
    };
    let mut response = Response::from_parts(parts, body);
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
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
    fn origins_outside_the_list_are_refused_and_programs_without_one_allowed() {
        let gate = Gate {
            origins: Some(vec!["https://a.example".into()]),
            meters: Arc::default(),
        };
        let origin = |o: &'static str| Some(HeaderValue::from_static(o));
        assert!(gate.allows(origin("https://a.example").as_ref()));
        assert!(gate.allows(origin("https://A.example").as_ref()));
        assert!(!gate.allows(origin("https://evil.example").as_ref()));
        assert!(!gate.allows(origin("null").as_ref()));
        assert!(gate.allows(None));
        let open = Gate {
            origins: None,
            meters: Arc::default(),
        };
        assert!(open.allows(origin("https://evil.example").as_ref()));
    }
}
