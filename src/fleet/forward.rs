//! Engine.IO requests for a session another node holds, taken to that node, so a balancer needs
//! no sticky sessions. With a shared fleet, the long-polling handshake's session id carries the
//! id of the node that made it (`<sid>.<node>`); a later poll, POST or WebSocket upgrade that
//! reaches another node is forwarded to the node named, at the address it announces:
//!
//! - a poll or POST is sent on over a pooled HTTP connection and its answer streamed back;
//! - a WebSocket upgrade is sent on, and once the owner switches protocols the two connections
//!   are joined, so the socket runs through this node for its life.
//!
//! Only fleet members are forwarded to: the node id a client sends is looked up in the fleet
//! view, never taken as an address. A forwarded request carries [`FORWARDED`], `<from>:<HMAC of
//! the session id>` under the deployment's secret; the owner serves a request with a bad
//! signature no further and never forwards a forwarded one again, so a request makes at most
//! one hop. What a forwarded request holds is bounded like any request: one connection on
//! each node, within their connection limits.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::auth::Signer;
use crate::metrics::Metrics;
use std::sync::Arc;

/// The header a forwarded request carries: `<from node>:<signature>`.
pub const FORWARDED: HeaderName = HeaderName::from_static("twine-forwarded");

/// How long connecting to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes each way a joined WebSocket buffers at a time.
const TUNNEL_BUFFER: usize = 4 * 1024;
/// Idle pooled connections kept per node.
const POOL_PER_NODE: usize = 64;

/// Headers not sent on: they describe one hop's connection.
const HOP_BY_HOP: [HeaderName; 4] = [
    header::HOST,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What a forwarded request's signature says.
#[derive(Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// It came from the client.
    No,
    /// It came from another node of this deployment.
    FromMember,
    /// It says it was forwarded, and its signature is wrong.
    Forged,
}

/// Sends requests on to the nodes holding their sessions.
pub struct Forwarder {
    me: String,
    signer: Signer,
    client: Client<HttpConnector, Body>,
    /// How long a forwarded poll may wait for its answer (a poll waits up to a ping interval).
    answer_within: Duration,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// A forwarder for node `me`, signing with the deployment's `secret`.
    pub fn new(
        me: &str,
        secret: &[u8],
        answer_within: Duration,
        metrics: Arc<Metrics>,
    ) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_PER_NODE)
            .build(connector);
        Forwarder {
            me: me.to_owned(),
            signer: Signer::new(secret),
            client,
            answer_within,
            metrics,
        }
    }

    fn signed(&self, from: &str, sid: &str) -> String {
        self.signer
            .sign_hex(format!("forward:{from}:{sid}").as_bytes())
    }

    /// Whether `headers` say the request was forwarded, and by whom.
    pub fn check(&self, headers: &HeaderMap, sid: &str) -> Forwarded {
        let Some(value) = headers.get(FORWARDED) else {
            return Forwarded::No;
        };
        let verified = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(':'))
            .is_some_and(|(from, signature)| {
                self.signer
                    .verify_hex(format!("forward:{from}:{sid}").as_bytes(), signature)
            });
        if verified {
            Forwarded::FromMember
        } else {
            Forwarded::Forged
        }
    }

    /// `request` (for session `sid`) sent to the node at `address`, and its answer.
    pub async fn forward(&self, mut request: Request, address: &str, sid: &str) -> Response {
        self.metrics.forwarded.inc();
        let signature = format!("{}:{}", self.me, self.signed(&self.me, sid));
        let Ok(signature) = HeaderValue::from_str(&signature) else {
            return unavailable();
        };
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let upgrading = request.headers().contains_key(header::UPGRADE);
        if upgrading {
            let client_side = hyper::upgrade::on(&mut request);
            let mut headers = request.headers().clone();
            headers.insert(FORWARDED, signature);
            return tunnel(address, &path, headers, client_side).await;
        }
        let Ok(uri) = Uri::try_from(format!("http://{address}{path}")) else {
            return unavailable();
        };
        let (parts, body) = request.into_parts();
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.headers_mut() = parts.headers;
        for name in HOP_BY_HOP {
            out.headers_mut().remove(name);
        }
        out.headers_mut().insert(FORWARDED, signature);
        match tokio::time::timeout(self.answer_within, self.client.request(out)).await {
            Ok(Ok(response)) => response.map(Body::new),
            Ok(Err(e)) => {
                tracing::debug!(%address, "forwarding failed: {e}");
                unavailable()
            }
            Err(_) => {
                tracing::debug!(%address, "forwarded request not answered in time");
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "Gateway Timeout: the node holding this session did not answer.",
                )
                    .into_response()
            }
        }
    }
}

/// What a client gets when the node holding its session cannot be reached: its library starts
/// a new session, and recovers what it missed.
fn unavailable() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        "Bad Gateway: the node holding this session cannot be reached.",
    )
        .into_response()
}

/// A WebSocket upgrade sent to `address`; once it switches protocols, the client's connection
/// (`client_side`) and the owner's are joined until either ends.
async fn tunnel(
    address: &str,
    path: &str,
    headers: HeaderMap,
    client_side: hyper::upgrade::OnUpgrade,
) -> Response {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await;
    let Ok(Ok(tcp)) = connected else {
        tracing::debug!(%address, "forwarding: the owner cannot be reached");
        return unavailable();
    };
    let _ = tcp.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tcp)).await
    else {
        return unavailable();
    };
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("forwarded WebSocket ended: {e}");
        }
    });
    let mut out = Request::new(Body::empty());
    *out.uri_mut() = Uri::try_from(path).unwrap_or_default();
    *out.headers_mut() = headers;
    if let Ok(host) = HeaderValue::from_str(address) {
        out.headers_mut().insert(header::HOST, host);
    }
    let mut answer = match sender.send_request(out).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(%address, "forwarded upgrade failed: {e}");
            return unavailable();
        }
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return answer.map(Body::new);
    }
    let owner_side = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (Ok(client), Ok(owner)) = tokio::join!(client_side, owner_side) else {
            return;
        };
        let (mut client, mut owner) = (TokioIo::new(client), TokioIo::new(owner));
        let _ = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut owner,
            TUNNEL_BUFFER,
            TUNNEL_BUFFER,
        )
        .await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = answer.headers().clone();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_signature_under_the_deployments_secret_counts_as_forwarded() {
        let a = Forwarder::new("node-a", b"secret", Duration::from_secs(1), Metrics::new());
        let b = Forwarder::new("node-b", b"secret", Duration::from_secs(1), Metrics::new());
        let elsewhere = Forwarder::new("node-c", b"other", Duration::from_secs(1), Metrics::new());
        let headers = |value: String| {
            let mut headers = HeaderMap::new();
            headers.insert(FORWARDED, HeaderValue::from_str(&value).unwrap());
            headers
        };
        let signed = headers(format!("node-a:{}", a.signed("node-a", "sid1")));
        assert_eq!(b.check(&signed, "sid1"), Forwarded::FromMember);
        assert_eq!(
            b.check(&signed, "sid2"),
            Forwarded::Forged,
            "another session"
        );
        assert_eq!(elsewhere.check(&signed, "sid1"), Forwarded::Forged);
        assert_eq!(
            b.check(&headers("node-a:00".into()), "sid1"),
            Forwarded::Forged
        );
        assert_eq!(b.check(&HeaderMap::new(), "sid1"), Forwarded::No);
    }
}
