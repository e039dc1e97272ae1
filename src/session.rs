//! Sessions: which session a connection belongs to (its `twineid` cookie) and the session store
//! calls made on its behalf. A connection without a usable cookie gets a session of its own that is
//! never stored, so no other connection can reach it.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use twine_store::{Position, Session, SessionStore, StoreError};

/// The cookie that carries the session id.
pub const COOKIE_NAME: &str = "twineid";

/// Longest session id accepted from a cookie.
const MAX_ID_LEN: usize = 128;

/// The `twineid` cookie of a request, if it has a usable one (1 to 128 characters of
/// `[A-Za-z0-9_-]`; anything else is treated as no cookie).
pub fn twineid(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The session of one connection.
#[derive(Clone)]
pub struct SessionHandle {
    id: Option<String>,
    store: Arc<dyn SessionStore>,
}

impl SessionHandle {
    /// The session named by the request's cookie, or a private unstored one.
    pub fn for_request(headers: &HeaderMap, store: Arc<dyn SessionStore>) -> SessionHandle {
        SessionHandle {
            id: twineid(headers).map(str::to_owned),
            store,
        }
    }

    pub async fn load(&self) -> Result<Option<Session>, StoreError> {
        match &self.id {
            Some(id) => self.store.load(id).await,
            None => Ok(None),
        }
    }

    pub async fn join(&self, room: &str, at: Position) -> Result<(), StoreError> {
        match &self.id {
            Some(id) => self.store.join(id, room, at).await,
            None => Ok(()),
        }
    }

    pub async fn leave(&self, room: &str) -> Result<(), StoreError> {
        match &self.id {
            Some(id) => self.store.leave(id, room).await,
            None => Ok(()),
        }
    }

    pub async fn advance(&self, positions: &[(String, Position)]) -> Result<(), StoreError> {
        match &self.id {
            Some(id) if !positions.is_empty() => self.store.advance(id, positions).await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn finds_the_twineid_among_other_cookies() {
        let h = headers("a=1; twineid=0f8c1d2e-aaaa-4bbb-8ccc-123456789abc; b=2");
        assert_eq!(twineid(&h), Some("0f8c1d2e-aaaa-4bbb-8ccc-123456789abc"));
    }

    #[test]
    fn unusable_cookies_count_as_none() {
        assert_eq!(twineid(&headers("twineid=")), None);
        assert_eq!(twineid(&headers("twineid=a b")), None);
        assert_eq!(
            twineid(&headers(&format!("twineid={}", "x".repeat(200)))),
            None
        );
        assert_eq!(twineid(&headers("other=1")), None);
        assert_eq!(twineid(&HeaderMap::new()), None);
    }
}
