//! What the Admin UI is shown of a client's handshake, redacted by construction: only headers
//! and query parameters known to carry nothing secret keep their values; every other one is
//! listed by name with its value replaced. So no cookie (the `twineid` among them), no
//! `Authorization` (the API key, a bearer token), no token in the query and no app header of
//! the app's own reaches the UI. As a last guard, a shown value that contains the API key or the
//! client's `twineid` is replaced too. The Socket.IO `auth` payload is never shown (as the Admin
//! UI's own server does not show it).

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::http::request::Parts;
use serde_json::{Map, Value, json};

/// What replaces a value that is not shown.
pub const REDACTED: &str = "[redacted]";
/// Longest value shown (longer ones are cut), and most headers and query parameters listed.
const MAX_VALUE: usize = 256;
const MAX_FIELDS: usize = 32;

/// Headers whose values are shown (proxies' client addresses, what the browser is).
const SHOWN_HEADERS: [&str; 14] = [
    "host",
    "origin",
    "user-agent",
    "accept",
    "accept-language",
    "accept-encoding",
    "connection",
    "upgrade",
    "sec-websocket-version",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
    "cf-connecting-ip",
    "content-type",
];
/// Headers shown without their query string (a page's URL may carry a token).
const SHOWN_WITHOUT_QUERY: [&str; 1] = ["referer"];
/// Query parameters whose values are shown (Engine.IO's own).
const SHOWN_QUERY: [&str; 4] = ["EIO", "transport", "t", "b64"];

/// Values that must never be shown wherever they appear.
pub struct Secrets<'a> {
    pub api_key: &'a str,
    pub twineid: Option<&'a str>,
}

impl Secrets<'_> {
    fn clean(&self, value: &str) -> String {
        let cut: String = value.chars().take(MAX_VALUE).collect();
        let leaks = |secret: &str| secret.len() >= 8 && cut.contains(secret);
        if leaks(self.api_key) || self.twineid.is_some_and(leaks) {
            REDACTED.to_owned()
        } else {
            cut
        }
    }
}

/// The handshake as the Admin UI shows it: `address`, `headers`, `query`, `issued`, `time`,
/// `secure`, `xdomain`, `url`.
pub fn handshake(
    parts: &Parts,
    peer: Option<SocketAddr>,
    issued: SystemTime,
    secrets: &Secrets<'_>,
) -> Value {
    let mut headers = Map::new();
    for (name, value) in parts.headers.iter().take(MAX_FIELDS) {
        let name = name.as_str();
        let value = value.to_str().unwrap_or("");
        let shown = if SHOWN_HEADERS.contains(&name) {
            secrets.clean(value)
        } else if SHOWN_WITHOUT_QUERY.contains(&name) {
            secrets.clean(value.split(['?', '#']).next().unwrap_or(""))
        } else {
            REDACTED.to_owned()
        };
        headers.insert(name.to_owned(), Value::String(shown));
    }
    let mut query = Map::new();
    let mut url_query = Vec::new();
    for pair in parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .take(MAX_FIELDS)
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = secrets.clean(key);
        let shown = if SHOWN_QUERY.contains(&key.as_str()) {
            secrets.clean(value)
        } else {
            REDACTED.to_owned()
        };
        url_query.push(format!("{key}={shown}"));
        query.insert(key, Value::String(shown));
    }
    let forwarded = ["cf-connecting-ip", "x-forwarded-for"]
        .iter()
        .find_map(|h| parts.headers.get(*h).and_then(|v| v.to_str().ok()));
    let address = match (forwarded, peer) {
        (Some(forwarded), _) => secrets.clean(forwarded),
        (None, Some(peer)) => peer.ip().to_string(),
        (None, None) => String::new(),
    };
    let issued_ms = issued
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let secure = parts
        .headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https");
    json!({
        "address": address,
        "headers": headers,
        "query": query,
        "issued": issued_ms,
        "time": humantime::format_rfc3339_millis(issued).to_string(),
        "secure": secure,
        "xdomain": parts.headers.contains_key("origin"),
        "url": format!("{}?{}", parts.uri.path(), url_query.join("&")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    #[test]
    fn nothing_secret_is_shown() {
        let request = Request::get("/socket.io/?EIO=4&transport=polling&token=tok3n-value&t=x")
            .header("cookie", "twineid=cookie-value-123; other=abc")
            .header("authorization", "Bearer the-api-key-000")
            .header("x-app-key", "app-secret-999")
            .header("user-agent", "node with the-api-key-000 inside")
            .header("referer", "https://app.example/page?token=tok3n-value")
            .header("origin", "https://app.example")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let secrets = Secrets {
            api_key: "the-api-key-000",
            twineid: Some("cookie-value-123"),
        };
        let shown = handshake(&parts, None, SystemTime::now(), &secrets).to_string();
        for secret in [
            "cookie-value-123",
            "twineid=",
            "abc",
            "the-api-key-000",
            "app-secret-999",
            "tok3n-value",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("https://app.example/page\""), "{shown}");
        assert!(shown.contains("\"transport\":\"polling\""), "{shown}");
        assert!(shown.contains("\"x-app-key\":\"[redacted]\""), "{shown}");
    }
}
