//! The Admin UI across the fleet: an admin logged in on one node sees and acts on every node's
//! sockets, as the Admin UI's own server does behind a Socket.IO adapter. With Redis, the nodes
//! ask each other over HTTP (`POST /api/fleet/admin` at the address each announces, under the
//! deployment's secret like forwarded requests):
//!
//! - [`Ask::Sockets`]: a node's bounded listing, merged into the admin's `all_sockets` (the
//!   [`registry::LISTED`] newest of the whole fleet);
//! - [`Ask::Events`]: the live events a node kept since a cursor ([`super::events`]); a node
//!   keeps them only while the fleet's announcements say an admin is logged in on another node,
//!   and each node with one reads every other node's every [`POLL_EVERY`];
//! - [`Ask::Operate`]: an operation (join, leave, disconnect), which each node runs on its own
//!   sockets and never passes on.
//!
//! Every node needs `--admin on` for its sockets to be seen (the others answer `404` and show
//! only in `server_stats`). A request is signed `<from>:<at>:<HMAC>` over its body and time; one
//! more than [`SKEW`] old, or signed under another secret, is refused `403`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::{Since, now_ms};
use super::{Admin, registry};
use crate::auth::Signer;
use crate::fleet::Node;
use crate::state::AppState;

/// The path the nodes ask each other on.
pub const PATH: &str = "/api/fleet/admin";
/// The header a node's request is signed in: `<from node>:<at, ms since the epoch>:<HMAC>`.
pub const SIGNED: HeaderName = HeaderName::from_static("twine-relay");
/// How often a node with an admin logged in reads the other nodes' events.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// How far a request's time may be from this node's clock.
pub const SKEW: Duration = Duration::from_secs(30);
/// The largest request body: an operation names a room and a socket.
pub const MAX_BODY: usize = 4 * 1024;
/// The largest answer read: a listing of [`registry::LISTED`] redacted handshakes.
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// How long another node has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// What one node asks another.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Ask {
    Sockets,
    Events { after: Option<u64> },
    Operate { text: String },
}

/// A node's answer to [`Ask::Sockets`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Sockets {
    pub total: usize,
    pub sockets: Vec<Value>,
}

/// Why a request is not answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("Not Found: the Admin UI is off on this node (--admin off).")]
    Off,
    #[error("Forbidden: only the deployment's nodes may ask this.")]
    NotSigned,
    #[error("Malformed Request: not an admin relay request.")]
    Malformed,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Off => StatusCode::NOT_FOUND,
            Refusal::NotSigned => StatusCode::FORBIDDEN,
            Refusal::Malformed => StatusCode::BAD_REQUEST,
        }
    }
}

/// Asks the other nodes, and remembers where it stands in each one's events.
pub struct Relay {
    client: Client<HttpConnector, Body>,
    /// The cursor in each other node's events.
    cursors: Mutex<HashMap<String, u64>>,
}

impl Default for Relay {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(ANSWER_WITHIN));
        connector.set_nodelay(true);
        Relay {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(2)
                .build(connector),
            cursors: Mutex::default(),
        }
    }
}

fn signed_text(from: &str, at: u64, body: &[u8]) -> Vec<u8> {
    let mut text = format!("admin-relay:{from}:{at}:").into_bytes();
    text.extend_from_slice(body);
    text
}

/// The [`SIGNED`] value for a request from `from` with `body`, made at `at`.
pub fn sign(signer: &Signer, from: &str, at: u64, body: &[u8]) -> String {
    format!(
        "{from}:{at}:{}",
        signer.sign_hex(&signed_text(from, at, body))
    )
}

/// Whether `headers` sign `body` under this deployment's secret, within [`SKEW`] of `now`.
pub fn verify(signer: &Signer, headers: &HeaderMap, body: &[u8], now: u64) -> bool {
    let Some(value) = headers.get(SIGNED).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.splitn(3, ':');
    let (Some(from), Some(at), Some(signature)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(at) = at.parse::<u64>() else {
        return false;
    };
    at.abs_diff(now) <= SKEW.as_millis() as u64
        && signer.verify_hex(&signed_text(from, at, body), signature)
}

/// Answers another node's request (the route's handler).
pub fn answer(app: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Value, Refusal> {
    let admin = app.admin.as_ref().ok_or(Refusal::Off)?;
    if !verify(&app.signer, headers, body, now_ms()) {
        return Err(Refusal::NotSigned);
    }
    let ask: Ask = serde_json::from_slice(body).map_err(|_| Refusal::Malformed)?;
    let answer = match ask {
        Ask::Sockets => {
            let listing = admin.registry.listing(app.api_key.as_str());
            serde_json::to_value(Sockets {
                total: listing.total,
                sockets: listing.sockets,
            })
        }
        Ask::Events { after } => serde_json::to_value(admin.feed.since(after)),
        Ask::Operate { text } => {
            admin.operate_here(&text);
            Ok(Value::Null)
        }
    };
    Ok(answer.unwrap_or(Value::Null))
}

/// The other nodes of the fleet that hold sockets.
fn others(app: &AppState) -> Vec<Node> {
    app.fleet
        .nodes()
        .iter()
        .filter(|n| n.id != app.fleet.me() && n.holds_sockets && !n.address.is_empty())
        .cloned()
        .collect()
}

impl Relay {
    /// Sends `ask` to the node at `address`; its answer, if it gave one in time.
    async fn ask<T: DeserializeOwned>(
        &self,
        app: &AppState,
        address: &str,
        ask: &Ask,
    ) -> Option<T> {
        let body = serde_json::to_vec(ask).ok()?;
        let signature = sign(&app.signer, app.fleet.me(), now_ms(), &body);
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{address}{PATH}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(SIGNED, HeaderValue::from_str(&signature).ok()?)
            .body(Body::from(body))
            .ok()?;
        let answered = tokio::time::timeout(ANSWER_WITHIN, async {
            let response = self.client.request(request).await.ok()?;
            if !response.status().is_success() {
                tracing::debug!(%address, status = %response.status(), "admin relay refused");
                return None;
            }
            axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER)
                .await
                .ok()
        });
        let bytes = answered.await.ok().flatten()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The `all_sockets` an admin gets: every node's listing merged, the [`registry::LISTED`]
/// newest of them.
pub async fn all_sockets(app: &AppState, admin: &Admin) -> Vec<Value> {
    let mine = admin.registry.listing(app.api_key.as_str());
    let mut total = mine.total;
    let mut sockets = mine.sockets;
    let theirs = futures_util::future::join_all(others(app).into_iter().map(|node| async move {
        admin
            .relay
            .ask::<Sockets>(app, &node.address, &Ask::Sockets)
            .await
    }))
    .await;
    for listing in theirs.into_iter().flatten() {
        total += listing.total;
        sockets.extend(listing.sockets.into_iter().take(registry::LISTED));
    }
    let issued = |s: &Value| s["handshake"]["issued"].as_u64().unwrap_or(0);
    sockets.sort_by_key(|s| std::cmp::Reverse(issued(s)));
    sockets.truncate(registry::LISTED);
    if total > sockets.len() {
        tracing::debug!(total, "all_sockets lists the newest sockets only");
    }
    sockets
}

/// Runs an admin's operation on this node, and asks every other node to run it on theirs.
pub async fn operate(app: Arc<AppState>, text: String) {
    let Some(admin) = app.admin.as_ref() else {
        return;
    };
    if !admin.operate_here(&text) {
        return;
    }
    let ask = Ask::Operate { text };
    let asked = others(&app).into_iter().map(|node| {
        let (app, ask) = (&app, &ask);
        async move {
            let answered: Option<Value> = admin.relay.ask(app, &node.address, ask).await;
            if answered.is_none() {
                tracing::debug!(node = %node.id, "admin operation not taken by a node");
            }
        }
    });
    futures_util::future::join_all(asked).await;
}

/// One round, every [`POLL_EVERY`]: notes whether an admin is logged in on another node (so
/// this node keeps its events for them) and, while one is logged in here, reads the other nodes'
/// events and hands them to this node's admins.
pub async fn poll(app: &AppState, admin: &Admin) {
    let nodes = others(app);
    admin
        .feed
        .watched_elsewhere(nodes.iter().any(|n| n.admins > 0));
    if admin.watchers() == 0 {
        admin.relay.forget();
        return;
    }
    let reads = nodes.iter().map(|node| {
        let after = admin.relay.cursor(&node.id);
        async move {
            let ask = Ask::Events { after };
            let since: Option<Since> = admin.relay.ask(app, &node.address, &ask).await;
            (node.id.clone(), since)
        }
    });
    for (node, since) in futures_util::future::join_all(reads).await {
        let Some(since) = since else { continue };
        admin.feed.missed(since.missed);
        for event in since.events {
            admin.feed.relay(event);
        }
        admin.relay.moved_to(node, since.cursor);
    }
}

impl Relay {
    fn cursor(&self, node: &str) -> Option<u64> {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .copied()
    }

    fn moved_to(&self, node: String, cursor: u64) {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, cursor);
    }

    /// No admin is logged in here: the next starts from where the other nodes stand then.
    fn forget(&self) {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recent_request_signed_under_the_deployments_secret_is_answered() {
        let signer = Signer::new(b"deployment secret");
        let body = br#"{"ask":"sockets"}"#;
        let now = 1_800_000_000_000;
        let headers = |value: String| {
            let mut headers = HeaderMap::new();
            headers.insert(SIGNED, HeaderValue::from_str(&value).unwrap());
            headers
        };
        let good = headers(sign(&signer, "node-a", now, body));
        assert!(verify(&signer, &good, body, now + 1_000));
        assert!(
            !verify(&signer, &good, br#"{"ask":"events"}"#, now),
            "another body"
        );
        assert!(!verify(&signer, &good, body, now + 31_000), "too old");
        let elsewhere = Signer::new(b"another deployment");
        assert!(!verify(&elsewhere, &good, body, now));
        let other_time = sign(&signer, "node-a", now, body).replacen(
            &now.to_string(),
            &(now + 1).to_string(),
            1,
        );
        assert!(
            !verify(&signer, &headers(other_time), body, now),
            "the time is signed"
        );
        assert!(!verify(&signer, &HeaderMap::new(), body, now));
        assert!(!verify(&signer, &headers("node-a:x:00".into()), body, now));
    }

    #[test]
    fn asks_read_as_the_nodes_send_them() {
        let read = |text: &str| serde_json::from_str::<Ask>(text).ok();
        assert_eq!(read(r#"{"ask":"sockets"}"#), Some(Ask::Sockets));
        assert_eq!(
            read(r#"{"ask":"events","after":7}"#),
            Some(Ask::Events { after: Some(7) })
        );
        assert_eq!(
            read(r#"{"ask":"operate","text":"[\"_disconnect\",\"/\",false]"}"#),
            Some(Ask::Operate {
                text: r#"["_disconnect","/",false]"#.into()
            })
        );
        assert_eq!(read(r#"{"ask":"shutdown"}"#), None);
    }
}
